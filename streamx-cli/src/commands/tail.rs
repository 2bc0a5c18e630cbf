//! `streamx tail`: follows a stream with XREAD (no group, nothing changes), or as a group
//! member with XREADGROUP (`--group`: entries become pending under the consumer unless
//! `--ack`), decoding entries with the runtime's wire format.

use std::time::{SystemTime, UNIX_EPOCH};

use fred::interfaces::StreamsInterface;
use fred::types::Value;
use serde::Serialize;
use serde_json::value::RawValue;
use streamx_runtime::wire::{parse_entries, parse_read_reply, RawEntry};
use streamx_runtime::{is_placeholder_consumer, MessageId};

use crate::cli::TailArgs;
use crate::connection::Connection;
use crate::error::{redis, CliError, Result};
use crate::output::{json_payload, print_json_line, printable};
use crate::overview;

/// Entries per XREAD.
const READ_COUNT: u64 = 500;
/// How long one XREAD waits for new entries (Ctrl-C is answered at once regardless).
const BLOCK_MS: u64 = 1_000;

/// `streamx tail STREAM`.
pub async fn tail(conn: &Connection, args: &TailArgs, json: bool) -> Result<()> {
    // Following a stream that does not exist yet waits for it; anything else needs it.
    if args.group.is_some() && is_placeholder_consumer(&args.consumer) {
        // Entries read as the engine's retry schedule or suspects list would sit pending
        // under it with no retry scheduled and no take-over due: stranded.
        return Err(CliError::InvalidInput {
            what: format!("--consumer `{}`", args.consumer),
            reason: "the engine's own placeholder member (it holds scheduled retries or crash suspects); \
                     entries read as it would be stranded: name another consumer"
                .to_string(),
        });
    }
    match &args.group {
        Some(group) => drop(conn.require_group(&args.stream, group).await?),
        None if args.no_follow => conn.require_stream(&args.stream).await?,
        None => {}
    }
    let mut printer = Printer { args, json, printed: 0, wanted: args.count.unwrap_or(u64::MAX) };
    let mut after = match (args.from, args.since, args.last) {
        (Some(from), _, _) => before(from),
        (None, Some(since), _) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let start = now.saturating_sub(since).as_millis() as u64;
            before(MessageId::new(start, 0))
        }
        (None, None, Some(last)) => {
            let newest = last_generated_id(conn, &args.stream).await?;
            let entries = last_entries(conn, &args.stream, last.min(printer.wanted)).await?;
            let mut after = newest;
            for entry in entries {
                after = entry.id;
                printer.print(&entry);
            }
            if args.no_follow {
                return Ok(());
            }
            after.max(newest)
        }
        (None, None, None) => last_generated_id(conn, &args.stream).await?,
    };
    while printer.printed < printer.wanted {
        let count = READ_COUNT.min(printer.wanted - printer.printed);
        let block = (!args.no_follow).then_some(BLOCK_MS);
        let client = conn.client();
        let read = async {
            match &args.group {
                Some(group) => client
                    .xreadgroup::<Value, _, _, _, _>(
                        group.as_str(),
                        args.consumer.as_str(),
                        Some(count),
                        block,
                        false,
                        args.stream.as_str(),
                        ">",
                    )
                    .await
                    .map_err(|e| redis("XREADGROUP", &args.stream, e)),
                None => client
                    .xread::<Value, _, _>(Some(count), block, args.stream.as_str(), after.to_string())
                    .await
                    .map_err(|e| redis("XREAD", &args.stream, e)),
            }
        };
        let reply = tokio::select! {
            reply = read => reply?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let entries = parse_read_reply(reply);
        let got = entries.len() as u64;
        for entry in &entries {
            after = entry.id;
            printer.print(entry);
        }
        if let (Some(group), true, false) = (&args.group, args.ack, entries.is_empty()) {
            let ids: Vec<String> = entries.iter().map(|e| e.id.to_string()).collect();
            let _: u64 =
                client.xack(args.stream.as_str(), group, ids).await.map_err(|e| redis("XACK", &args.stream, e))?;
        }
        if args.no_follow && got < count {
            break;
        }
    }
    Ok(())
}

/// The last `n` entries of `stream`, oldest first (XREVRANGE + - COUNT n).
async fn last_entries(conn: &Connection, stream: &str, n: u64) -> Result<Vec<RawEntry>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let reply: Value =
        conn.client().xrevrange(stream, "+", "-", Some(n)).await.map_err(|e| redis("XREVRANGE", stream, e))?;
    let mut entries = parse_entries(reply);
    entries.reverse();
    Ok(entries)
}

/// Prints entries and counts them.
struct Printer<'a> {
    args: &'a TailArgs,
    json: bool,
    printed: u64,
    wanted: u64,
}

impl Printer<'_> {
    fn print(&mut self, entry: &RawEntry) {
        if self.printed >= self.wanted {
            return;
        }
        self.printed += 1;
        match &self.args.format {
            _ if self.json => print_json_entry(entry),
            Some(template) => println!("{}", template.render(&self.args.stream, entry)),
            None => println!("{}", line(entry)),
        }
    }
}

/// The id just before `id`, so that XREAD (exclusive) starts at `id`.
fn before(id: MessageId) -> MessageId {
    match (id.millis(), id.sequence()) {
        (ms, seq) if seq > 0 => MessageId::new(ms, seq - 1),
        (ms, _) if ms > 0 => MessageId::new(ms - 1, u64::MAX),
        _ => MessageId::MIN,
    }
}

/// Where "only new entries" starts: the stream's last generated id (0-0 if it does not exist
/// yet: everything it will hold is new).
async fn last_generated_id(conn: &Connection, stream: &str) -> Result<MessageId> {
    Ok(overview::stream(conn, stream).await?.and_then(|s| s.last_generated_id).unwrap_or(MessageId::MIN))
}

/// One entry as a JSON line: the payload as published when it is JSON, else its text in
/// `data` (see docs/cli-json.md).
fn print_json_entry(entry: &RawEntry) {
    #[derive(Serialize)]
    struct Line {
        id: MessageId,
        time: String,
        headers: serde_json::Map<String, serde_json::Value>,
        /// The payload when it is JSON, as published.
        payload: Option<Box<RawValue>>,
        /// The `data` field as text when it is not JSON.
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<String>,
    }
    let (payload, data) = match entry.data.as_deref().map(json_payload) {
        Some(Ok(raw)) => (Some(raw), None),
        Some(Err(text)) => (None, Some(text)),
        None => (None, None),
    };
    let headers = entry.headers.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v))).collect();
    print_json_line(&Line { id: entry.id, time: overview::id_time(entry.id), headers, payload, data });
}

/// One entry for people: `id [name=value ...] payload`, control characters escaped.
fn line(entry: &RawEntry) -> String {
    let mut line = entry.id.to_string();
    for (name, value) in entry.headers.iter() {
        line.push_str(&format!(" {}={}", printable(name), printable(value)));
    }
    line.push(' ');
    match &entry.data {
        Some(data) => line.push_str(&printable(&String::from_utf8_lossy(data))),
        None => line.push_str("<no data field>"),
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_just_before_the_id() {
        assert_eq!(before(MessageId::new(5, 2)), MessageId::new(5, 1));
        assert_eq!(before(MessageId::new(5, 0)), MessageId::new(4, u64::MAX));
        assert_eq!(before(MessageId::MIN), MessageId::MIN);
    }
}
