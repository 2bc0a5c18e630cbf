//! Run with: `cargo run --example audit_log` (the security worker; needs Redis on
//! 127.0.0.1:6379, or set `STREAMX_REDIS_URL`), then in another terminal
//! `cargo run --example audit_log -- record`, which prints each session's time window;
//! query one with `cargo run --example audit_log -- query --from MS --to MS [--export FILE]`.
//! Stop the worker with Ctrl-C; `-- cleanup` deletes the recipe's keys.
//!
//! An audit log: a keep-everything stream (no `MAXLEN`; acknowledging never deletes), a
//! consumer flagging sensitive actions, a query by wall-clock time range (`History` with id
//! bounds made from timestamps: an entry id starts with the Unix milliseconds of its XADD),
//! and an export of that range as JSON lines.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx::{History, RedisUrl};
use streamx_examples::{delete_stream_keys, exit, init_logging, option, subcommand, RecipeError};

const AUDIT: &str = "audit";

/// Who did what to which resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuditEvent {
    actor: String,
    action: String,
    resource: String,
}

/// One exported line: the event with its id and time.
#[derive(Debug, Serialize)]
struct ExportLine {
    id: MessageId,
    /// Unix ms, from the id.
    at_ms: u64,
    #[serde(flatten)]
    event: AuditEvent,
}

/// Flags deletions as they are recorded.
#[stream_consumer(stream = "audit", group = "security", name = "security")]
async fn flag_deletions(msg: Message<AuditEvent>) {
    let event = msg.payload();
    if event.action == "delete" {
        println!("security: ALERT {} deleted {} (entry {})", event.actor, event.resource, msg.id());
    }
}

/// The three sessions `record` writes, one after the other.
fn sessions() -> [Vec<AuditEvent>; 3] {
    let event = |actor: &str, action: &str, resource: &str| AuditEvent {
        actor: actor.into(),
        action: action.into(),
        resource: resource.into(),
    };
    [
        vec![
            event("alice", "login", "console"),
            event("alice", "read", "invoice/17"),
            event("alice", "update", "invoice/17"),
            event("alice", "logout", "console"),
        ],
        vec![
            event("bob", "login", "console"),
            event("bob", "read", "customer/3"),
            event("bob", "delete", "customer/3"),
        ],
        vec![event("carol", "login", "api"), event("carol", "export", "customers")],
    ]
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let (command, args) = subcommand("worker");
    let result = match command.as_str() {
        "worker" => worker().await,
        "record" => record().await,
        "query" => query(&args).await,
        "cleanup" => delete_stream_keys(&[(AUDIT, &["security"])]).await.map(drop),
        other => Err(RecipeError::Usage(format!(
            "unknown command `{other}`: worker, record, query --from MS --to MS [--export FILE] or cleanup"
        ))),
    };
    exit("audit_log", result)
}

async fn worker() -> Result<(), RecipeError> {
    let runtime = streamx::Runtime::builder().build()?;
    println!("audit_log: security reading `{AUDIT}` on {}; Ctrl-C to stop", runtime.url());
    runtime.run().await?;
    println!("audit_log: stopped");
    Ok(())
}

/// Records the sessions, each in its own stretch of time, and prints each one's window.
async fn record() -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    for (i, session) in sessions().iter().enumerate() {
        let started = unix_ms(SystemTime::now());
        for event in session {
            producer.publish(AUDIT, event).await?; // no MAXLEN: keep everything
        }
        let ended = unix_ms(SystemTime::now());
        println!("session {}: {} events, query with --from {started} --to {ended}", i + 1, session.len());
        // Let the clock leave this millisecond, so the next session's ids are later.
        while unix_ms(SystemTime::now()) <= ended {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(())
}

/// Prints (and optionally exports as JSON lines) what was recorded from `--from` to `--to`
/// (Unix ms, inclusive).
async fn query(args: &[String]) -> Result<(), RecipeError> {
    let ms = |name: &str| -> Result<u64, RecipeError> {
        let value = option(args, name).ok_or_else(|| RecipeError::Usage(format!("query needs {name} MS")))?;
        value.parse().map_err(|_| RecipeError::Usage(format!("{name} {value:?} is not Unix milliseconds")))
    };
    // An entry id starts with the milliseconds of its XADD: the range of ids is the range
    // of times.
    let range = MessageId::new(ms("--from")?, 0)..=MessageId::new(ms("--to")?, u64::MAX);
    let history = History::connect_with(&RedisUrl::from_env()?).await?;
    let lines: Vec<ExportLine> = history
        .read::<AuditEvent>(AUDIT, range)
        .map_ok(|m| ExportLine { id: m.id(), at_ms: m.id().millis(), event: m.into_payload() })
        .try_collect()
        .await?;
    for line in &lines {
        println!("{} {} {} {}", line.id, line.event.actor, line.event.action, line.event.resource);
    }
    println!("{} event(s) in the window", lines.len());
    if let Some(path) = option(args, "--export") {
        let file = std::fs::File::create(path).map_err(RecipeError::io(format!("creating {path}")))?;
        let mut out = std::io::BufWriter::new(file);
        for line in &lines {
            serde_json::to_writer(&mut out, line).map_err(RecipeError::json("an export line"))?;
            out.write_all(b"\n").map_err(RecipeError::io(format!("writing {path}")))?;
        }
        out.flush().map_err(RecipeError::io(format!("writing {path}")))?;
        println!("exported to {path}");
    }
    Ok(())
}
