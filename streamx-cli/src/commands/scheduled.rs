//! `streamx scheduled list|cancel`: the delayed messages of a stream, on the runtime's
//! [`Scheduled`] API.

use serde::Serialize;
use serde_json::value::RawValue;
use streamx_runtime::{ScheduleId, Scheduled, ScheduledMessage};

use crate::cli::ScheduledCommand;
use crate::confirm::confirm_one;
use crate::connection::Connection;
use crate::error::{CliError, Result};
use crate::output::{json_payload, millis, print_json, printable, shorten, table, time_ms};

/// Runs a `scheduled` command.
pub async fn run(conn: &Connection, command: &ScheduledCommand, json: bool) -> Result<()> {
    let scheduled = Scheduled::with_client(conn.client());
    match command {
        ScheduledCommand::List { stream, limit } => list(&scheduled, stream, *limit, json).await,
        ScheduledCommand::Cancel { stream, ids, yes } => cancel(&scheduled, stream, ids, *yes, json).await,
    }
}

/// A delayed message as printed by `--json`.
#[derive(Serialize)]
struct MessageView {
    id: ScheduleId,
    /// When due, RFC 3339.
    due_at: String,
    due_at_ms: u64,
    /// Milliseconds until due (negative: overdue, waiting for a runtime with a consumer of
    /// the stream).
    due_in_ms: i64,
    /// The payload when it is JSON, else null.
    payload: Option<Box<RawValue>>,
    /// Its text when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    headers: serde_json::Map<String, serde_json::Value>,
}

impl MessageView {
    fn new(m: &ScheduledMessage, now_ms: u64) -> Self {
        let (payload, data) = match json_payload(&m.data) {
            Ok(json) => (Some(json), None),
            Err(text) => (None, Some(text)),
        };
        MessageView {
            id: m.id,
            due_at: time_ms(m.due_ms()),
            due_at_ms: m.due_ms(),
            due_in_ms: due_in(m.due_ms(), now_ms),
            payload,
            data,
            headers: m.headers.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v))).collect(),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn due_in(due_ms: u64, now_ms: u64) -> i64 {
    i64::try_from(due_ms).unwrap_or(i64::MAX) - i64::try_from(now_ms).unwrap_or(i64::MAX)
}

/// `in 4.2s`, or `due 1.5s ago`.
fn when(due_in_ms: i64) -> String {
    if due_in_ms > 0 {
        format!("in {}", millis(due_in_ms.unsigned_abs()))
    } else {
        format!("due {} ago", millis(due_in_ms.unsigned_abs()))
    }
}

async fn list(scheduled: &Scheduled, stream: &str, limit: usize, json: bool) -> Result<()> {
    let total = scheduled.count(stream).await?;
    let entries = if limit == 0 { Vec::new() } else { scheduled.list(stream, limit).await? };
    let now = now_ms();
    if json {
        #[derive(Serialize)]
        struct List<'a> {
            stream: &'a str,
            total: u64,
            now: String,
            entries: Vec<MessageView>,
        }
        let entries = entries.iter().map(|m| MessageView::new(m, now)).collect();
        print_json(&List { stream, total, now: time_ms(now), entries });
        return Ok(());
    }
    if entries.is_empty() {
        println!("no delayed messages shown for {} ({total} scheduled in all)", printable(stream));
        return Ok(());
    }
    let rows = entries.iter().map(|m| {
        vec![
            m.id.to_string(),
            when(due_in(m.due_ms(), now)),
            time_ms(m.due_ms()),
            shorten(&String::from_utf8_lossy(&m.data), 40),
        ]
    });
    println!("{}", table(&["ID", "DUE", "DUE AT", "PAYLOAD"], rows));
    println!("{} shown; {total} scheduled for {}", entries.len(), printable(stream));
    Ok(())
}

async fn cancel(scheduled: &Scheduled, stream: &str, ids: &[ScheduleId], yes: bool, json: bool) -> Result<()> {
    let what = match ids {
        [id] => format!("cancel the delayed message {id} of `{stream}` (it will never be delivered)"),
        _ => format!("cancel {} delayed messages of `{stream}` (they will never be delivered)", ids.len()),
    };
    confirm_one(&what, yes).await?;
    let mut cancelled = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        if scheduled.cancel(stream, id).await? {
            cancelled.push(*id);
        } else {
            missing.push(*id);
        }
    }
    if json {
        #[derive(Serialize)]
        struct Cancelled<'a> {
            stream: &'a str,
            cancelled: &'a [ScheduleId],
            not_scheduled: &'a [ScheduleId],
        }
        print_json(&Cancelled { stream, cancelled: &cancelled, not_scheduled: &missing });
    } else {
        for id in &cancelled {
            println!("cancelled {id}");
        }
        for id in &missing {
            println!("{id} is not scheduled (promoted already, cancelled, or unknown)");
        }
    }
    if cancelled.is_empty() {
        return Err(CliError::NotFound {
            what: format!("no delayed message of `{stream}` among the ids given is scheduled"),
        });
    }
    Ok(())
}
