//! The append script: one `EVAL` adds a round trip's entries to one stream, each with its own
//! `XADD`, in order, and answers each entry's id or error.
//!
//! Why a script: the client's cost of a publish is per command, not per byte. A fred
//! command is a `Command` with its argument vector, its routing, its encoding and its reply
//! (`perf` on the benchmark: ~3 µs of client CPU per pipelined `XADD`, spread over
//! allocation, copies of the command structures and fred's router). One command carrying 500
//! entries costs the client a few argument values per entry (0.66 µs of client CPU per
//! message against 3.3 in the benchmark), so the client stops being the limit on publish;
//! Redis pays for it, about 1.4 µs of CPU per entry against about 1.1 µs for pipelined
//! `XADD`s (BENCHMARKS.md, issue 26).
//!
//! Each entry is added by its own `redis.pcall('XADD', ...)`: an entry that fails (`OOM`, a
//! refused key) fails alone and the others are added, as in a pipeline of `XADD`s. The script
//! is sent with `EVAL`, not `EVALSHA`: a script cache emptied by a restart or a failover
//! would answer `NOSCRIPT` to one round trip while the next, sent behind it, could already
//! run after another client loaded the script, and the entries would land out of order.
//! Sending the text (about 700 bytes per round trip of up to 500 entries) never misses.
//!
//! A user whom the server's ACL does not allow `EVAL` publishes with pipelined `XADD`s
//! instead (the producer learns it at the first refusal; nothing was written then).

use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use fred::types::Value;

use crate::error::{Error, Result};
use crate::message::{Headers, MessageId};
use crate::wire::{value_bytes, HEADER_PREFIX};

/// The script's text. KEYS[1]: the stream. ARGV[1]: `1` for NOMKSTREAM; ARGV[2]: the
/// `MAXLEN ~` cap, or empty; ARGV[3]: `1` when every entry is its data alone (no headers), and
/// then the data of each entry; otherwise, per entry: how many field/value arguments follow
/// its data (its headers), its data, those arguments. Reply: per entry, its id; `false` when
/// NOMKSTREAM found no stream; `!` followed by the error of an `XADD` that failed.
pub(super) const APPEND: &str = r#"
local head = {'XADD', KEYS[1]}
if ARGV[1] == '1' then head[#head + 1] = 'NOMKSTREAM' end
if ARGV[2] ~= '' then
  head[#head + 1] = 'MAXLEN'
  head[#head + 1] = '~'
  head[#head + 1] = ARGV[2]
end
head[#head + 1] = '*'
head[#head + 1] = 'data'
local out = {}
local k = 0
local n = #ARGV
local function add(call)
  local reply = redis.pcall(unpack(call))
  if type(reply) == 'table' and reply.err then reply = '!' .. reply.err end
  k = k + 1
  out[k] = reply
end
if ARGV[3] == '1' and #head == 4 then
  local key = KEYS[1]
  for i = 4, n do
    local reply = redis.pcall('XADD', key, '*', 'data', ARGV[i])
    if type(reply) == 'table' and reply.err then reply = '!' .. reply.err end
    k = k + 1
    out[k] = reply
  end
elseif ARGV[3] == '1' then
  local call = {unpack(head)}
  local at = #call + 1
  for i = 4, n do
    call[at] = ARGV[i]
    add(call)
  end
else
  local i = 4
  while i <= n do
    local extra = tonumber(ARGV[i])
    local call = {unpack(head)}
    local at = #call
    call[at + 1] = ARGV[i + 1]
    for j = 1, extra do call[at + 1 + j] = ARGV[i + 1 + j] end
    add(call)
    i = i + 2 + extra
  end
end
return out
"#;

/// The most header pairs an entry may have to go through the script (Lua's `unpack` stops
/// near 8,000 values); an entry with more is added by a plain `XADD`.
pub(super) const MAX_SCRIPT_HEADERS: usize = 3_000;

/// Whether this producer's user may run the script: not known until the first round trip
/// that tries, then allowed or refused for the producer's lifetime (clones share it).
#[derive(Debug, Default)]
pub(super) struct ScriptUse(AtomicU8);

impl ScriptUse {
    const UNKNOWN: u8 = 0;
    const ALLOWED: u8 = 1;
    const REFUSED: u8 = 2;

    /// Whether round trips may try the script.
    pub fn may_try(&self) -> bool {
        self.0.load(Relaxed) != Self::REFUSED
    }

    /// Whether no round trip has tried yet (a batch then sends its first round trip alone, so
    /// a refusal cannot reorder round trips that fall back to `XADD`s).
    pub fn unknown(&self) -> bool {
        self.0.load(Relaxed) == Self::UNKNOWN
    }

    /// A script ran.
    pub fn allowed(&self) {
        let _ = self.0.compare_exchange(Self::UNKNOWN, Self::ALLOWED, Relaxed, Relaxed);
    }

    /// The server refused the script: pipelined `XADD`s from now on.
    pub fn refused(&self) {
        self.0.store(Self::REFUSED, Relaxed);
    }
}

/// The script's arguments, built entry by entry.
pub(super) struct AppendArgs {
    args: Vec<Value>,
    entries: usize,
    bare: bool,
}

impl AppendArgs {
    /// For a round trip to one stream of about `entries` entries; `bare` when no entry will
    /// have headers or a key.
    pub fn new(no_mkstream: bool, max_len: Option<u64>, entries: usize, bare: bool) -> Self {
        let mut args = Vec::with_capacity(3 + entries * if bare { 1 } else { 2 });
        args.push(Value::from_static_str(if no_mkstream { "1" } else { "0" }));
        args.push(max_len.map_or_else(|| Value::from_static_str(""), |len| Value::from(len.to_string())));
        args.push(Value::from_static_str(if bare { "1" } else { "0" }));
        AppendArgs { args, entries: 0, bare }
    }

    /// Adds an entry: its data and headers (already prefixed field names and values, as
    /// [`header_args`] gives them), and a message key when given (an entry with either in
    /// arguments made `bare` is a bug, caught in debug builds).
    pub fn push(&mut self, data: Bytes, headers: &[Value], key: Option<&str>) {
        let extra = headers.len() + if key.is_some() { 2 } else { 0 };
        if self.bare {
            debug_assert_eq!(extra, 0, "a bare append got headers");
            self.args.push(Value::Bytes(data));
            self.entries += 1;
            return;
        }
        self.args.push(if extra == 0 { Value::from_static_str("0") } else { Value::from(extra.to_string()) });
        self.args.push(Value::Bytes(data));
        self.args.extend(headers.iter().cloned());
        if let Some(key) = key {
            self.args.push(Value::from(format!("{HEADER_PREFIX}{}", crate::message::MESSAGE_KEY_HEADER)));
            self.args.push(Value::from(key));
        }
        self.entries += 1;
    }

    /// The entries added so far.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// The arguments of the `EVAL`.
    pub fn into_args(self) -> Vec<Value> {
        self.args
    }
}

/// `headers` as the field/value arguments of an entry (`h:<name>`, value), leaving out the
/// message key when each entry carries its own.
pub(super) fn header_args(headers: &Headers, keyed: bool) -> Vec<Value> {
    headers
        .iter()
        .filter(|(name, _)| !(keyed && *name == crate::message::MESSAGE_KEY_HEADER))
        .flat_map(|(name, value)| [Value::from(format!("{HEADER_PREFIX}{name}")), Value::from(value)])
        .collect()
}

/// What the script answered for `sent` entries: per entry, its id or its error (as a pipeline
/// of `XADD`s would have answered). A reply of another length (never expected) fails every
/// entry.
pub(super) fn entry_replies(stream: &str, sent: usize, reply: Value) -> Vec<Result<MessageId>> {
    let replies = match reply {
        Value::Array(replies) if replies.len() == sent => replies,
        other => {
            let reason = format!("the append script answered {other:?} for {sent} entries");
            return (0..sent)
                .map(|_| Err(Error::Decode { stream: stream.to_string(), id: "*".to_string(), reason: reason.clone() }))
                .collect();
        }
    };
    replies.into_iter().map(|reply| entry_outcome(stream, reply)).collect()
}

/// One entry's reply: an id, `nil` (NOMKSTREAM and no stream), or `!<error>`.
fn entry_outcome(stream: &str, reply: Value) -> Result<MessageId> {
    match value_bytes(reply.clone()) {
        Some(text) if text.first() == Some(&b'!') => {
            let details = String::from_utf8_lossy(&text[1..]).into_owned();
            Err(Error::redis(
                "XADD",
                stream,
                fred::error::Error::new(fred::error::ErrorKind::Unknown, acl_text(details)),
            ))
        }
        _ => super::parse_added_id(stream, reply),
    }
}

/// An `XADD` the ACL refused inside the script is answered as a script error (Redis 7.0:
/// `ERR The user executing the script can't run this command or subcommand`; 8.2 and Valkey:
/// `ERR ACL failure in script: ...`): told as the `NOPERM` a plain `XADD` gets, so a caller sees
/// the same error whether or not its publish shared a round trip.
fn acl_text(details: String) -> String {
    let refused = details.contains("ACL failure in script") || details.contains("can't run this command");
    if refused && !details.starts_with("NOPERM") {
        format!("NOPERM this user has no permissions to run the 'xadd' command (in the append script: {details})")
    } else {
        details
    }
}

/// Whether `e`, the failure of the whole `EVAL`, means the server does not let this user run
/// scripts (so nothing ran, and pipelined `XADD`s may still be allowed).
pub(super) fn scripts_refused(e: &fred::error::Error) -> bool {
    let details = e.details().to_ascii_lowercase();
    (details.contains("noperm") && details.contains("eval"))
        || (details.contains("unknown command") && details.contains("eval"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::DATA_FIELD;

    #[test]
    fn the_script_writes_the_data_field_of_the_wire_format() {
        assert_eq!(DATA_FIELD, "data");
        assert!(APPEND.contains("'data'"));
    }

    #[test]
    fn arguments_carry_each_entry_with_its_headers_and_key() {
        let headers = header_args(&Headers::new().with("trace", "t1").with(crate::MESSAGE_KEY_HEADER, "k0"), true);
        assert_eq!(headers.len(), 2, "the common key is left out when each entry has its own");
        let mut args = AppendArgs::new(true, Some(10), 2, false);
        args.push(Bytes::from_static(b"a"), &[], None);
        args.push(Bytes::from_static(b"b"), &headers, Some("k1"));
        assert_eq!(args.len(), 2);
        let text: Vec<String> = args.into_args().into_iter().map(|v| v.as_string().unwrap_or_default()).collect();
        assert_eq!(text, ["1", "10", "0", "0", "a", "4", "b", "h:trace", "t1", "h:streamx-key", "k1"]);
        let mut bare = AppendArgs::new(false, None, 2, true);
        bare.push(Bytes::from_static(b"a"), &[], None);
        bare.push(Bytes::from_static(b"b"), &[], None);
        let text: Vec<String> = bare.into_args().into_iter().map(|v| v.as_string().unwrap_or_default()).collect();
        assert_eq!(text, ["0", "", "1", "a", "b"]);
    }

    #[test]
    fn each_entry_reply_is_an_id_or_its_own_error() {
        let replies = Value::Array(vec![
            Value::from("1-0"),
            Value::from("!OOM command not allowed when used memory > 'maxmemory'."),
            Value::Null,
        ]);
        let out = entry_replies("s", 3, replies);
        assert_eq!(out[0].as_ref().map(ToString::to_string).ok(), Some("1-0".to_string()));
        assert!(
            matches!(&out[1], Err(Error::Redis { command: "XADD", source, .. }) if source.details().starts_with("OOM")),
            "{:?}",
            out[1]
        );
        assert!(matches!(&out[2], Err(Error::Decode { .. })), "NOMKSTREAM without a stream: {:?}", out[2]);
        let short = entry_replies("s", 2, Value::Array(vec![Value::from("1-0")]));
        assert!(short.iter().all(Result::is_err));
    }

    #[test]
    fn an_xadd_refused_inside_the_script_is_a_noperm() {
        for text in [
            "!ERR The user executing the script can't run this command or subcommand script: abc, on @user_script:27.",
            "!ERR ACL failure in script: User u has no permissions to run the 'xadd' command script: abc",
        ] {
            let out = entry_replies("s", 1, Value::Array(vec![Value::from(text)]));
            assert!(
                matches!(&out[0], Err(Error::Redis { source, .. }) if source.details().starts_with("NOPERM") && source.details().contains("'xadd'")),
                "{:?}",
                out[0]
            );
        }
    }

    #[test]
    fn a_refused_script_is_told_from_other_failures() {
        let err = |text: &'static str| fred::error::Error::new(fred::error::ErrorKind::Unknown, text);
        assert!(scripts_refused(&err("NOPERM User p has no permissions to run the 'eval' command")));
        assert!(scripts_refused(&err("ERR unknown command 'EVAL', with args beginning with: ")));
        assert!(!scripts_refused(&err("NOPERM No permissions to access a key")));
        assert!(!scripts_refused(&err("OOM command not allowed")));
    }
}
