//! `streamx retries list|run|delete`: the retry schedule of a group, on the runtime's
//! [`RetrySchedule`] API.

use serde::Serialize;
use serde_json::value::RawValue;
use streamx_runtime::admin::{RetrySchedule, ScheduledRetry};
use streamx_runtime::MessageId;

use crate::cli::RetriesCommand;
use crate::confirm::confirm_one;
use crate::connection::Connection;
use crate::error::{CliError, Result};
use crate::output::{json_payload, millis, or_dash, print_json, printable, shorten, table, time_ms};

/// Runs a `retries` command.
pub async fn run(conn: &Connection, command: &RetriesCommand, json: bool) -> Result<()> {
    match command {
        RetriesCommand::List { stream, group, limit, offset, payloads } => {
            list(conn, stream, group, *offset, *limit, *payloads, json).await
        }
        RetriesCommand::Run { stream, group, id } => run_now(conn, stream, group, *id, json).await,
        RetriesCommand::Delete { stream, group, id, yes } => delete(conn, stream, group, *id, *yes, json).await,
    }
}

/// A scheduled retry as printed by `--json`.
#[derive(Serialize)]
struct RetryView {
    id: MessageId,
    /// When due, RFC 3339.
    due_at: String,
    due_at_ms: u64,
    /// Milliseconds until due (negative: overdue, waiting for a consumer of the group).
    due_in_ms: i64,
    attempts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exists: Option<bool>,
    /// The payload as published when it is JSON, else null (with `--payloads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Option<Box<RawValue>>>,
    /// Its text when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    headers: serde_json::Map<String, serde_json::Value>,
}

impl RetryView {
    fn new(r: &ScheduledRetry, now_ms: u64) -> Self {
        let (payload, data) = match r.payload.as_deref().map(json_payload) {
            Some(Ok(json)) => (Some(Some(json)), None),
            Some(Err(text)) => (Some(None), Some(text)),
            None => (None, None),
        };
        RetryView {
            id: r.id,
            due_at: time_ms(r.due_at_ms),
            due_at_ms: r.due_at_ms,
            due_in_ms: due_in(r.due_at_ms, now_ms),
            attempts: r.attempts,
            exists: r.exists,
            payload,
            data,
            headers: r.headers.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v))).collect(),
        }
    }
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

async fn list(
    conn: &Connection,
    stream: &str,
    group: &str,
    offset: u64,
    limit: u64,
    payloads: bool,
    json: bool,
) -> Result<()> {
    conn.require_group(stream, group).await?;
    let schedule = RetrySchedule::with_client(conn.client(), stream, group);
    let page = schedule.list(offset, limit, payloads).await?;
    if json {
        #[derive(Serialize)]
        struct List<'a> {
            stream: &'a str,
            group: &'a str,
            schedule: &'a str,
            total: u64,
            now: String,
            next_offset: Option<u64>,
            entries: Vec<RetryView>,
        }
        let entries = page.entries.iter().map(|r| RetryView::new(r, page.now_ms)).collect();
        print_json(&List {
            stream,
            group,
            schedule: schedule.key(),
            total: page.total,
            now: time_ms(page.now_ms),
            next_offset: page.next_offset,
            entries,
        });
        return Ok(());
    }
    if page.entries.is_empty() {
        println!("no retries scheduled in {} (of {} in all)", printable(schedule.key()), page.total);
        return Ok(());
    }
    let mut headers = vec!["ID", "DUE", "DUE AT", "ATTEMPTS"];
    if payloads {
        headers.push("PAYLOAD");
    }
    let rows = page.entries.iter().map(|r| {
        let mut row =
            vec![r.id.to_string(), when(due_in(r.due_at_ms, page.now_ms)), time_ms(r.due_at_ms), or_dash(r.attempts)];
        if payloads {
            row.push(match (&r.payload, r.exists) {
                (_, Some(false)) => "<deleted from the stream>".to_string(),
                (Some(p), _) => shorten(&String::from_utf8_lossy(p), 40),
                (None, _) => "-".to_string(),
            });
        }
        row
    });
    println!("{}", table(&headers, rows));
    let more = match page.next_offset {
        Some(next) => format!("; --offset {next} for more"),
        None => String::new(),
    };
    println!("{} shown; {} scheduled in {}{more}", page.entries.len(), page.total, printable(schedule.key()));
    Ok(())
}

fn not_scheduled(schedule: &RetrySchedule, id: MessageId) -> CliError {
    CliError::NotFound { what: format!("no retry {id} scheduled in `{}`", schedule.key()) }
}

async fn run_now(conn: &Connection, stream: &str, group: &str, id: MessageId, json: bool) -> Result<()> {
    conn.require_group(stream, group).await?;
    let schedule = RetrySchedule::with_client(conn.client(), stream, group);
    let due = schedule.run_now(id).await?.ok_or_else(|| not_scheduled(&schedule, id))?;
    if json {
        #[derive(Serialize)]
        struct Ran<'a> {
            stream: &'a str,
            group: &'a str,
            id: MessageId,
            due_at: String,
            due_at_ms: u64,
        }
        print_json(&Ran { stream, group, id, due_at: time_ms(due), due_at_ms: due });
    } else {
        println!(
            "{id} is due now ({}): a running consumer of {} delivers it at its next tick",
            time_ms(due),
            printable(group)
        );
    }
    Ok(())
}

async fn delete(conn: &Connection, stream: &str, group: &str, id: MessageId, yes: bool, json: bool) -> Result<()> {
    conn.require_group(stream, group).await?;
    let schedule = RetrySchedule::with_client(conn.client(), stream, group);
    if schedule.get(id, false).await?.is_none() {
        return Err(not_scheduled(&schedule, id));
    }
    confirm_one(&format!("delete retry {id} of group `{group}` (the group will never handle it)"), yes).await?;
    if !schedule.delete(id).await? {
        return Err(not_scheduled(&schedule, id));
    }
    if json {
        #[derive(Serialize)]
        struct Deleted<'a> {
            stream: &'a str,
            group: &'a str,
            id: MessageId,
            deleted: bool,
        }
        print_json(&Deleted { stream, group, id, deleted: true });
    } else {
        println!("deleted retry {id}: acknowledged in {}, which will never handle it", printable(group));
    }
    Ok(())
}
