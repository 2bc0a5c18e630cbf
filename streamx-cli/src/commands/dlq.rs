//! `streamx dlq list|show|replay|purge`, on the runtime's [`DeadLetters`] API.

use serde::Serialize;
use serde_json::value::RawValue;
use streamx_runtime::{DeadLetter, DeadLetters, FailureKind, MessageId};

use crate::cli::{DlqAction, DlqCommand, DlqSelection};
use crate::confirm::{confirm, Progress};
use crate::connection::Connection;
use crate::error::{CliError, Result};
use crate::output::{json_payload, or_dash, print_json, printable, shorten, table};
use crate::overview::id_time;

/// Dead letters read per XRANGE while selecting.
const PAGE: u64 = 500;
/// Letters replayed per call (one script per origin stream and group among them).
const REPLAYED_AT_ONCE: usize = 100;
/// Letters listed when neither --limit nor --all is given.
const DEFAULT_LIST: u64 = 20;

/// Runs a `dlq` command.
pub async fn run(conn: &Connection, command: &DlqCommand, json: bool) -> Result<()> {
    match command {
        DlqCommand::List(selection) => list(conn, selection, json).await,
        DlqCommand::Show { stream, id, dlq_stream } => show(conn, stream, *id, dlq_stream.as_deref(), json).await,
        DlqCommand::Replay(action) => replay(conn, action, json).await,
        DlqCommand::Purge(action) => purge(conn, action, json).await,
        DlqCommand::Overview { limit } => super::dlq_overview::overview(conn, *limit, json).await,
    }
}

/// A dead letter as printed by `--json`.
#[derive(Serialize)]
pub struct LetterView {
    /// Its id in the dead-letter stream.
    pub id: MessageId,
    /// When it was dead-lettered, RFC 3339.
    pub at: String,
    /// The stream it came from.
    pub origin_stream: String,
    /// Its id there.
    pub origin_id: Option<MessageId>,
    /// The group that gave up on it.
    pub group: String,
    /// The consumer that moved it.
    pub consumer: String,
    /// Deliveries.
    pub deliveries: u32,
    /// Why.
    pub kind: Option<String>,
    /// The last error.
    pub error: String,
    /// Its headers.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The payload as text (`None` when the entry had no `data`).
    pub payload: Option<String>,
}

/// A dead letter as `dlq list --json` and `dlq show --json` print it (docs/cli-json.md):
/// [`LetterView`]'s fields, with the payload as JSON, as published, when it is JSON, and
/// its text in `data` otherwise.
#[derive(Serialize)]
struct LetterJson {
    id: MessageId,
    at: String,
    origin_stream: String,
    origin_id: Option<MessageId>,
    group: String,
    consumer: String,
    deliveries: u32,
    kind: Option<String>,
    error: String,
    headers: serde_json::Map<String, serde_json::Value>,
    /// The payload when it is JSON, as published; `null` when not JSON or absent.
    payload: Option<Box<RawValue>>,
    /// The payload as text when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
}

impl From<&DeadLetter> for LetterJson {
    fn from(l: &DeadLetter) -> Self {
        let (payload, data) = match l.payload.as_deref().map(json_payload) {
            Some(Ok(raw)) => (Some(raw), None),
            Some(Err(text)) => (None, Some(text)),
            None => (None, None),
        };
        let view = LetterView::from(l);
        LetterJson {
            id: view.id,
            at: view.at,
            origin_stream: view.origin_stream,
            origin_id: view.origin_id,
            group: view.group,
            consumer: view.consumer,
            deliveries: view.deliveries,
            kind: view.kind,
            error: view.error,
            headers: view.headers,
            payload,
            data,
        }
    }
}

impl From<&DeadLetter> for LetterView {
    fn from(l: &DeadLetter) -> Self {
        LetterView {
            id: l.id,
            at: id_time(l.id),
            origin_stream: l.origin_stream.clone(),
            origin_id: l.origin_id,
            group: l.group.clone(),
            consumer: l.consumer.clone(),
            deliveries: l.deliveries,
            kind: l.kind.map(|k| k.as_str().to_string()),
            error: l.error.clone(),
            headers: l.headers.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v))).collect(),
            payload: l.payload.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()),
        }
    }
}

/// The dead letters `selection` names, oldest first, with the dead-letter stream's total.
/// `default_limit` applies when neither --limit nor --all is given.
pub async fn select(
    dead_letters: &DeadLetters,
    selection: &DlqSelection,
    default_limit: Option<u64>,
) -> Result<(Vec<DeadLetter>, u64)> {
    let kind = match &selection.kind {
        Some(k) => Some(FailureKind::parse(k).ok_or_else(|| CliError::InvalidInput {
            what: format!("kind `{k}`"),
            reason: format!("expected one of {}", FailureKind::ALL.map(|k| k.as_str()).join(", ")),
        })?),
        None => None,
    };
    let limit = if selection.all { None } else { selection.limit.or(default_limit) };
    let wanted = |l: &DeadLetter| {
        selection.group.as_ref().is_none_or(|g| *g == l.group) && kind.is_none_or(|k| l.kind == Some(k))
    };
    let mut selected = Vec::new();
    let mut after = None;
    loop {
        let page = dead_letters.list(after, PAGE).await?;
        for letter in page.entries.into_iter().filter(wanted) {
            if limit.is_some_and(|l| selected.len() as u64 >= l) {
                return Ok((selected, page.total));
            }
            selected.push(letter);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((selected, page.total)),
        }
    }
}

/// Fails with [`CliError::UnknownStream`] when neither the stream nor its dead letters exist.
async fn require_known(conn: &Connection, selection_stream: &str, dead_letters: &DeadLetters) -> Result<()> {
    if dead_letters.count().await? > 0 {
        return Ok(());
    }
    conn.require_stream(selection_stream).await
}

async fn list(conn: &Connection, selection: &DlqSelection, json: bool) -> Result<()> {
    let dead_letters = conn.dead_letters(&selection.stream, selection.dlq_stream.as_deref());
    require_known(conn, &selection.stream, &dead_letters).await?;
    let (letters, total) = select(&dead_letters, selection, Some(DEFAULT_LIST)).await?;
    if json {
        #[derive(Serialize)]
        struct List<'a> {
            dead_letter_stream: &'a str,
            total: u64,
            entries: Vec<LetterJson>,
        }
        let entries = letters.iter().map(LetterJson::from).collect();
        print_json(&List { dead_letter_stream: dead_letters.stream(), total, entries });
        return Ok(());
    }
    if letters.is_empty() {
        println!("no dead letters in {} match", printable(dead_letters.stream()));
        return Ok(());
    }
    let shown = letters.len();
    let rows = letters.iter().map(|l| {
        vec![
            l.id.to_string(),
            or_dash(l.origin_id),
            l.group.clone(),
            or_dash(l.kind),
            l.deliveries.to_string(),
            shorten(&l.error, 60),
            shorten(&l.payload.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default(), 40),
        ]
    });
    println!("{}", table(&["ID", "ORIGIN ID", "GROUP", "KIND", "DELIVERIES", "ERROR", "PAYLOAD"], rows));
    println!("{shown} shown; {total} dead letters in {}", printable(dead_letters.stream()));
    Ok(())
}

async fn show(conn: &Connection, stream: &str, id: MessageId, dlq_stream: Option<&str>, json: bool) -> Result<()> {
    let dead_letters = conn.dead_letters(stream, dlq_stream);
    let letter = dead_letters.get(id).await?.ok_or_else(|| CliError::UnknownDeadLetter {
        dlq_stream: dead_letters.stream().to_string(),
        id: id.to_string(),
    })?;
    if json {
        print_json(&LetterJson::from(&letter));
        return Ok(());
    }
    let view = LetterView::from(&letter);
    let facts = vec![
        vec!["id".to_string(), format!("{} (dead-lettered {})", view.id, view.at)],
        vec!["origin".to_string(), format!("{} {}", view.origin_stream, or_dash(view.origin_id))],
        vec!["group".to_string(), view.group.clone()],
        vec!["consumer".to_string(), view.consumer.clone()],
        vec!["deliveries".to_string(), view.deliveries.to_string()],
        vec!["kind".to_string(), or_dash(view.kind.clone())],
        vec!["error".to_string(), view.error.clone()],
    ];
    println!("{}", crate::output::facts(facts));
    // Headers and payload may span lines: each line printed on its own, escaped.
    println!("headers");
    if letter.headers.iter().next().is_none() {
        println!("  -");
    }
    for (name, value) in letter.headers.iter() {
        println!("  {}={}", printable(name), printable(value));
    }
    println!("payload");
    // As published (no re-sorted keys).
    let payload = view.payload.clone().unwrap_or_else(|| "<no data field>".to_string());
    for line in payload.lines() {
        println!("  {}", printable(line));
    }
    Ok(())
}

/// The letters an action works on: by id (each must exist), or a selection (`--all`,
/// `--limit`).
async fn chosen(conn: &Connection, action: &DlqAction, dead_letters: &DeadLetters) -> Result<Vec<DeadLetter>> {
    if !action.ids.is_empty() {
        let mut letters = Vec::with_capacity(action.ids.len());
        for id in &action.ids {
            let letter = dead_letters.get(*id).await?.ok_or_else(|| CliError::UnknownDeadLetter {
                dlq_stream: dead_letters.stream().to_string(),
                id: id.to_string(),
            })?;
            letters.push(letter);
        }
        return Ok(letters);
    }
    let selection = &action.selection;
    if !selection.all && selection.limit.is_none() {
        return Err(CliError::InvalidInput {
            what: "selection".to_string(),
            reason: "say which dead letters: --id ID (repeatable), --limit N or --all".to_string(),
        });
    }
    require_known(conn, &selection.stream, dead_letters).await?;
    Ok(select(dead_letters, selection, None).await?.0)
}

/// What `replay` and `purge` print.
#[derive(Serialize)]
struct Outcome<'a> {
    dead_letter_stream: &'a str,
    selected: u64,
    done: u64,
    /// Letters gone before they could be handled (replayed or purged by someone else).
    gone: u64,
    /// Letters not replayed and kept: their group is gone, or a consumer holds their entry.
    kept: u64,
    remaining: u64,
}

fn report(verb: &str, outcome: &Outcome, json: bool) {
    if json {
        print_json(outcome);
    } else {
        let gone = if outcome.gone > 0 { format!(" ({} were gone already)", outcome.gone) } else { String::new() };
        let kept = if outcome.kept > 0 {
            format!(" ({} kept: their group is gone, or a consumer holds their entry)", outcome.kept)
        } else {
            String::new()
        };
        println!(
            "{verb} {} of {} dead letters{gone}{kept}; {} left in {}",
            outcome.done,
            outcome.selected,
            outcome.remaining,
            printable(outcome.dead_letter_stream)
        );
    }
}

async fn replay(conn: &Connection, action: &DlqAction, json: bool) -> Result<()> {
    let dead_letters =
        conn.dead_letters_to_change(&action.selection.stream, action.selection.dlq_stream.as_deref()).await?;
    let letters = chosen(conn, action, &dead_letters).await?;
    let selected = letters.len() as u64;
    confirm("replay", selected, dead_letters.stream(), action.yes).await?;
    let mut progress = Progress::new("replay", selected);
    let (mut done, mut gone, mut kept) = (0, 0, 0);
    for chunk in letters.chunks(REPLAYED_AT_ONCE) {
        for outcome in dead_letters.replay_letters(chunk).await? {
            match outcome {
                o if o.id().is_some() => done += 1,
                o if o.kept() => kept += 1,
                _ => gone += 1,
            }
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    let remaining = dead_letters.count().await?;
    let outcome = Outcome { dead_letter_stream: dead_letters.stream(), selected, done, gone, kept, remaining };
    report("replayed", &outcome, json);
    Ok(())
}

async fn purge(conn: &Connection, action: &DlqAction, json: bool) -> Result<()> {
    let selection = &action.selection;
    let dead_letters = conn.dead_letters_to_change(&selection.stream, selection.dlq_stream.as_deref()).await?;
    let everything = action.ids.is_empty() && selection.all && selection.group.is_none() && selection.kind.is_none();
    if everything {
        // One atomic delete; the count asked about is what is there now.
        require_known(conn, &selection.stream, &dead_letters).await?;
        let count = dead_letters.count().await?;
        confirm("purge", count, dead_letters.stream(), action.yes).await?;
        let done = dead_letters.purge().await?;
        let outcome =
            Outcome { dead_letter_stream: dead_letters.stream(), selected: done, done, gone: 0, kept: 0, remaining: 0 };
        report("purged", &outcome, json);
        return Ok(());
    }
    let letters = chosen(conn, action, &dead_letters).await?;
    let selected = letters.len() as u64;
    confirm("purge", selected, dead_letters.stream(), action.yes).await?;
    let mut progress = Progress::new("purge", selected);
    let mut done = 0;
    for chunk in letters.chunks(PAGE as usize) {
        let ids: Vec<MessageId> = chunk.iter().map(|l| l.id).collect();
        done += dead_letters.delete(&ids).await?;
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    let remaining = dead_letters.count().await?;
    let outcome = Outcome {
        dead_letter_stream: dead_letters.stream(),
        selected,
        done,
        gone: selected - done,
        kept: 0,
        remaining,
    };
    report("purged", &outcome, json);
    Ok(())
}
