//! `streamx tail`: follows a stream with XREAD (no group, nothing changes), decoding entries
//! with the runtime's wire format.

use fred::interfaces::StreamsInterface;
use fred::types::Value;
use serde::Serialize;
use streamx_runtime::wire::{parse_read_reply, RawEntry};
use streamx_runtime::MessageId;

use crate::cli::TailArgs;
use crate::connection::Connection;
use crate::error::{redis, Result};
use crate::output::print_json_line;
use crate::overview;

/// Entries per XREAD.
const READ_COUNT: u64 = 500;
/// How long one XREAD waits for new entries (Ctrl-C is answered at once regardless).
const BLOCK_MS: u64 = 1_000;

/// `streamx tail STREAM`.
pub async fn tail(conn: &Connection, args: &TailArgs, json: bool) -> Result<()> {
    let mut after = match args.from {
        Some(from) => before(from),
        None => last_generated_id(conn, &args.stream).await?,
    };
    let mut printed = 0u64;
    let wanted = args.count.unwrap_or(u64::MAX);
    while printed < wanted {
        let count = READ_COUNT.min(wanted - printed);
        let block = (!args.no_follow).then_some(BLOCK_MS);
        let client = conn.client();
        let read = client.xread::<Value, _, _>(Some(count), block, args.stream.as_str(), after.to_string());
        let reply = tokio::select! {
            reply = read => reply.map_err(|e| redis("XREAD", &args.stream, e))?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let entries = parse_read_reply(reply);
        let got = entries.len() as u64;
        for entry in entries {
            after = entry.id;
            print_entry(&entry, json);
            printed += 1;
        }
        if args.no_follow && got < count {
            break;
        }
    }
    Ok(())
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

/// One entry: `id [name=value ...] payload`, or a JSON line.
fn print_entry(entry: &RawEntry, json: bool) {
    let text = entry.data.as_ref().map(|d| String::from_utf8_lossy(d).into_owned());
    if json {
        #[derive(Serialize)]
        struct Line<'a> {
            id: MessageId,
            time: String,
            headers: serde_json::Map<String, serde_json::Value>,
            /// The payload when it is JSON.
            payload: Option<serde_json::Value>,
            /// The `data` field as text when it is not JSON.
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<&'a str>,
        }
        let payload = text.as_deref().and_then(|t| serde_json::from_str(t).ok());
        let data = if payload.is_none() { text.as_deref() } else { None };
        let headers = entry.headers.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v))).collect();
        print_json_line(&Line { id: entry.id, time: overview::id_time(entry.id), headers, payload, data });
        return;
    }
    let mut line = entry.id.to_string();
    for (name, value) in entry.headers.iter() {
        line.push_str(&format!(" {name}={value}"));
    }
    line.push(' ');
    line.push_str(text.as_deref().unwrap_or("<no data field>"));
    println!("{line}");
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
