//! An audit log: a keep-everything stream (no `MAXLEN`; acknowledging never deletes), a
//! consumer flagging sensitive actions, a query by wall-clock time range (`History` with id
//! bounds made from timestamps: an entry id starts with the Unix milliseconds of its XADD),
//! and an export of that range as JSON lines.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use streamx::{Consumer, History, Inspector, Message, MessageId, Producer, Runtime};

use crate::{wait_settled, RecipeError};

/// Who did what to which resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The user or service.
    pub actor: String,
    /// What they did.
    pub action: String,
    /// What they did it to.
    pub resource: String,
}

impl AuditEvent {
    fn new(actor: &str, action: &str, resource: &str) -> Self {
        AuditEvent { actor: actor.into(), action: action.into(), resource: resource.into() }
    }
}

/// One exported line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportLine {
    /// The entry id.
    pub id: MessageId,
    /// When it was recorded (Unix ms, from the id).
    pub at_ms: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// The id range of everything recorded from `from` to `to` (inclusive, wall-clock time).
pub fn id_range(from: SystemTime, to: SystemTime) -> std::ops::RangeInclusive<MessageId> {
    MessageId::new(unix_ms(from), 0)..=MessageId::new(unix_ms(to), u64::MAX)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Waits until the wall clock has left the millisecond of `t`, so what is recorded next has
/// a later timestamp (a pause for the clock, at most 1 ms).
async fn next_millisecond(t: SystemTime) {
    while unix_ms(SystemTime::now()) <= unix_ms(t) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Deletions seen by the security consumer: `(actor, resource)`.
#[derive(Debug, Default)]
struct Deletions(Mutex<Vec<(String, String)>>);

async fn flag_deletions(msg: Message<AuditEvent>) -> Result<(), streamx::HandlerError> {
    let event = msg.payload();
    if event.action == "delete" {
        let seen = msg.state::<Arc<Deletions>>().ok_or("no Deletions in the state")?;
        seen.0.lock().unwrap_or_else(|e| e.into_inner()).push((event.actor.clone(), event.resource.clone()));
    }
    Ok(())
}

/// The three sessions of events the recipe records, one after the other.
pub fn sessions() -> [Vec<AuditEvent>; 3] {
    [
        vec![
            AuditEvent::new("alice", "login", "console"),
            AuditEvent::new("alice", "read", "invoice/17"),
            AuditEvent::new("alice", "update", "invoice/17"),
            AuditEvent::new("alice", "logout", "console"),
        ],
        vec![
            AuditEvent::new("bob", "login", "console"),
            AuditEvent::new("bob", "read", "customer/3"),
            AuditEvent::new("bob", "delete", "customer/3"),
        ],
        vec![AuditEvent::new("carol", "login", "api"), AuditEvent::new("carol", "export", "customers")],
    ]
}

/// What the recipe did.
#[derive(Debug)]
pub struct Report {
    /// Events recorded.
    pub recorded: usize,
    /// The stream's length after the consumer acknowledged everything (nothing removed).
    pub stream_len: u64,
    /// The events of the queried window (the second session), oldest first.
    pub in_window: Vec<ExportLine>,
    /// Where they were exported, one JSON object per line.
    pub export: PathBuf,
    /// Deletions the security consumer flagged.
    pub deletions: Vec<(String, String)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "recorded {} events; the stream still holds {} after consumption", self.recorded, self.stream_len)?;
        writeln!(f, "the second session's time window holds {} events:", self.in_window.len())?;
        for line in &self.in_window {
            writeln!(f, "  {} {} {} {}", line.id, line.event.actor, line.event.action, line.event.resource)?;
        }
        writeln!(f, "exported as JSON lines to {}", self.export.display())?;
        write!(f, "flagged deletions: {:?}", self.deletions)
    }
}

/// Runs the recipe against `url`, with the stream `<prefix>.audit`; exports to
/// `<temp dir>/<prefix>.jsonl`.
pub async fn run(url: String, prefix: String) -> Result<Report, RecipeError> {
    let stream = format!("{prefix}.audit");
    let deletions = Arc::new(Deletions::default());
    let running = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(Consumer::new(stream.clone(), "security", flag_deletions).name_as("security"))
        .state(deletions.clone())
        .build()?
        .start()
        .await?;
    let producer = Producer::connect(&url).await?;

    // Three sessions in three distinct stretches of time; remember when the second ran.
    let (mut recorded, mut window) = (0, None);
    for (i, session) in sessions().iter().enumerate() {
        let started = SystemTime::now();
        for event in session {
            producer.publish(&stream, event).await?; // no MAXLEN: keep everything
        }
        let ended = SystemTime::now();
        recorded += session.len();
        if i == 1 {
            window = Some((started, ended));
        }
        next_millisecond(ended).await;
    }
    wait_settled(&running, recorded as u64, "the security consumer to read everything").await?;
    running.shutdown().await?;

    let (from, to) = window.ok_or_else(|| RecipeError::Unexpected("no second session".into()))?;
    let history = History::connect(&url).await?;
    let in_window: Vec<ExportLine> = history
        .read::<AuditEvent>(&stream, id_range(from, to))
        .map_ok(|m| ExportLine { id: m.id(), at_ms: m.id().millis(), event: m.into_payload() })
        .try_collect()
        .await?;
    let export = std::env::temp_dir().join(format!("{prefix}.jsonl"));
    write_json_lines(&export, &in_window)?;

    let stream_len = Inspector::connect(&url).await?.stream_len(&stream).await?;
    let deletions = deletions.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Report { recorded, stream_len, in_window, export, deletions })
}

/// Writes `lines` to `path`, one JSON object per line.
fn write_json_lines(path: &PathBuf, lines: &[ExportLine]) -> Result<(), RecipeError> {
    let file = std::fs::File::create(path).map_err(RecipeError::io(format!("creating {}", path.display())))?;
    let mut out = std::io::BufWriter::new(file);
    for line in lines {
        serde_json::to_writer(&mut out, line).map_err(RecipeError::json("an export line"))?;
        out.write_all(b"\n").map_err(RecipeError::io(format!("writing {}", path.display())))?;
    }
    out.flush().map_err(RecipeError::io(format!("writing {}", path.display())))
}
