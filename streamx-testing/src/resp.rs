//! A tiny blocking RESP2 client, just enough for readiness checks and admin commands.
//!
//! Test support must not depend on the client library it helps to test, so this speaks the
//! wire protocol over a plain [`TcpStream`]. Each call opens its own short-lived connection:
//! the callers poll servers that may be starting, loading, failing over or dead.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::error::TestingError;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one reply may take (`MIGRATE` of a batch of keys is the slowest caller).
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest line or bulk string accepted from a server: a guard against reading garbage.
const MAX_LEN: usize = 512 * 1024 * 1024;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: kept as a value so callers can react to `LOADING`, `MOVED`, ...
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`; `None` for the nil bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`; `None` for the nil array `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text, for simple and bulk strings.
    pub(crate) fn as_text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{s}"),
            Reply::Error(e) => write!(f, "-{e}"),
            Reply::Integer(i) => write!(f, ":{i}"),
            Reply::Bulk(None) | Reply::Array(None) => f.write_str("(nil)"),
            Reply::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Reply::Array(Some(items)) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Sends one command to `addr` and returns its reply, error replies included.
///
/// Fails only on I/O and protocol errors; `-ERR` replies are `Ok(Reply::Error(..))`.
pub(crate) fn send<S: AsRef<[u8]>>(addr: SocketAddr, args: &[S]) -> io::Result<Reply> {
    let mut replies = send_all(addr, &[args])?;
    replies.pop().ok_or_else(|| protocol_error("no reply"))
}

/// Sends `commands` in order over one connection and returns their replies, error replies
/// included. Commands whose meaning depends on the connection need this: `WAIT` counts
/// the replicas that acknowledged the *same connection's* last write, so on a fresh
/// connection, which has written nothing, it returns at once with every connected replica.
fn send_all<S: AsRef<[u8]>>(addr: SocketAddr, commands: &[&[S]]) -> io::Result<Vec<Reply>> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut writer = &stream;
    for args in commands {
        writer.write_all(&encode(args))?;
    }
    writer.flush()?;
    let mut reader = BufReader::new(&stream);
    commands.iter().map(|_| read_reply(&mut reader)).collect()
}

/// Sends one command and turns I/O failures and error replies into [`TestingError`]s that
/// name the port and the command.
pub(crate) fn call<S: AsRef<[u8]>>(addr: SocketAddr, args: &[S]) -> Result<Reply, TestingError> {
    let mut replies = call_all(addr, &[args])?;
    replies.pop().ok_or_else(|| TestingError::UnexpectedReply {
        port: addr.port(),
        command: describe(args),
        reply: "(none)".to_owned(),
    })
}

/// Like [`call`], for several commands sent in order over one connection (see
/// [`send_all`]); the first error reply fails the whole call.
pub(crate) fn call_all<S: AsRef<[u8]>>(addr: SocketAddr, commands: &[&[S]]) -> Result<Vec<Reply>, TestingError> {
    let describe_all = || commands.iter().map(|args| describe(args)).collect::<Vec<_>>().join("; ");
    let replies = send_all(addr, commands).map_err(|source| TestingError::Io {
        port: addr.port(),
        command: describe_all(),
        source,
    })?;
    for (args, reply) in commands.iter().zip(&replies) {
        if let Reply::Error(message) = reply {
            return Err(TestingError::Redis { port: addr.port(), command: describe(args), message: message.clone() });
        }
    }
    Ok(replies)
}

/// Like [`call`], for commands whose reply is text (`CLUSTER INFO`, `CLUSTER NODES`, `INFO`).
pub(crate) fn call_text<S: AsRef<[u8]>>(addr: SocketAddr, args: &[S]) -> Result<String, TestingError> {
    let reply = call(addr, args)?;
    reply.as_text().ok_or_else(|| TestingError::UnexpectedReply {
        port: addr.port(),
        command: describe(args),
        reply: reply.to_string(),
    })
}

/// The value of `field` in an `INFO` or `CLUSTER INFO` reply (`field:value` lines).
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim())
    })
}

/// The command as a short string for error messages.
pub(crate) fn describe<S: AsRef<[u8]>>(args: &[S]) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let text = String::from_utf8_lossy(arg.as_ref());
        if text.is_empty() || text.contains(char::is_whitespace) {
            out.push_str(&format!("{text:?}"));
        } else {
            out.push_str(&text);
        }
        if out.len() > 200 {
            out.truncate(200);
            out.push_str("...");
            break;
        }
    }
    out
}

/// Encodes a command as a RESP array of bulk strings.
fn encode<S: AsRef<[u8]>>(args: &[S]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn protocol_error(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.into())
}

/// Reads one line without its trailing CRLF.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = reader.by_ref().take(MAX_LEN as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a reply"));
    }
    if !line.ends_with(b"\r\n") {
        return Err(protocol_error("reply line not terminated by CRLF"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| protocol_error("reply line is not UTF-8"))
}

fn parse_len(text: &str) -> io::Result<Option<usize>> {
    let n: i64 = text.parse().map_err(|_| protocol_error(format!("bad length {text:?}")))?;
    if n < 0 {
        return Ok(None);
    }
    let n = usize::try_from(n).map_err(|_| protocol_error(format!("bad length {text:?}")))?;
    if n > MAX_LEN {
        return Err(protocol_error(format!("length {n} too large")));
    }
    Ok(Some(n))
}

/// Reads one RESP2 reply.
pub(crate) fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = match line.char_indices().nth(1) {
        Some((i, _)) => line.split_at(i),
        None => (line.as_str(), ""),
    };
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => rest.parse().map(Reply::Integer).map_err(|_| protocol_error(format!("bad integer {rest:?}"))),
        "$" => match parse_len(rest)? {
            None => Ok(Reply::Bulk(None)),
            Some(len) => {
                let mut data = vec![0; len + 2];
                reader.read_exact(&mut data)?;
                if !data.ends_with(b"\r\n") {
                    return Err(protocol_error("bulk string not terminated by CRLF"));
                }
                data.truncate(len);
                Ok(Reply::Bulk(Some(data)))
            }
        },
        "*" => match parse_len(rest)? {
            None => Ok(Reply::Array(None)),
            Some(len) => {
                let mut items = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    items.push(read_reply(reader)?);
                }
                Ok(Reply::Array(Some(items)))
            }
        },
        _ => Err(protocol_error(format!("unknown reply type in {line:?}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut BufReader::new(bytes))
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        assert_eq!(encode(&["SET", "k", ""]), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(parse(b"+PONG\r\n").unwrap(), Reply::Simple("PONG".into()));
        assert_eq!(parse(b"-LOADING Redis is loading\r\n").unwrap(), Reply::Error("LOADING Redis is loading".into()));
        assert_eq!(parse(b":-3\r\n").unwrap(), Reply::Integer(-3));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(parse(b"$4\r\na\r\nb\r\n").unwrap(), Reply::Bulk(Some(b"a\r\nb".to_vec())));
        assert_eq!(
            parse(b"*2\r\n$1\r\nx\r\n*-1\r\n").unwrap(),
            Reply::Array(Some(vec![Reply::Bulk(Some(b"x".to_vec())), Reply::Array(None)]))
        );
    }

    #[test]
    fn rejects_truncated_and_malformed_replies() {
        assert!(parse(b"").is_err());
        assert!(parse(b"$5\r\nab\r\n").is_err());
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b"+no crlf").is_err());
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n";
        assert_eq!(info_field(info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(info, "cluster_slots_assigned"), Some("16384"));
        assert_eq!(info_field(info, "cluster_size"), None);
    }

    #[test]
    fn describes_commands_for_errors() {
        assert_eq!(describe(&["CONFIG", "SET", "save", ""]), r#"CONFIG SET save """#);
    }
}
