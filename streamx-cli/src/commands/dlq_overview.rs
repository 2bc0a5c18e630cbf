//! `streamx dlq overview`: every dead-letter stream, its letters counted by origin stream,
//! group and kind (the runtime's [`DeadLetterSummary`]).

use serde::Serialize;
use streamx_runtime::admin::{DeadLetterCount, DeadLetterSummary};

use crate::connection::Connection;
use crate::error::{exit, CliError, Result};
use crate::output::{print_json, printable, table};
use crate::overview::stream_keys;

/// One dead-letter stream, as printed by `--json`.
#[derive(Serialize)]
struct SummaryView {
    dead_letter_stream: String,
    total: u64,
    scanned: u64,
    complete: bool,
    counts: Vec<CountView>,
}

#[derive(Serialize)]
struct CountView {
    origin_stream: String,
    group: String,
    kind: String,
    count: u64,
}

impl From<DeadLetterCount> for CountView {
    fn from(c: DeadLetterCount) -> Self {
        CountView { origin_stream: c.origin_stream, group: c.group, kind: c.kind, count: c.count }
    }
}

/// Finds the dead-letter streams among every stream (one XRANGE of one entry each: those
/// whose first entry has a `dlq:stream` field, custom dead-letter streams included), then
/// counts each one's letters, at most `limit` per stream when given. A stream the Redis user
/// may not read (`NOPERM`) is listed as such and skipped, as `streams` does.
pub async fn overview(conn: &Connection, limit: Option<u64>, json: bool) -> Result<()> {
    let client = conn.client();
    let (mut summaries, mut denied) = (Vec::new(), Vec::new());
    for key in stream_keys(conn).await? {
        let read = async {
            if DeadLetterSummary::is_dead_letter_stream(&client, &key).await? {
                return Ok::<_, CliError>(Some(DeadLetterSummary::read(&client, &key, limit).await?));
            }
            Ok(None)
        };
        match read.await {
            Ok(summary) => summaries.extend(summary),
            Err(e) if e.code() == exit::PERMISSION => denied.push(key),
            Err(e) => return Err(e),
        }
    }
    if json {
        let views: Vec<SummaryView> = summaries
            .into_iter()
            .map(|s| SummaryView {
                dead_letter_stream: s.dead_letter_stream,
                total: s.total,
                scanned: s.scanned,
                complete: s.complete,
                counts: s.counts.into_iter().map(CountView::from).collect(),
            })
            .collect();
        print_json(&serde_json::json!({ "dead_letter_streams": views, "no_permission": denied }));
        return Ok(());
    }
    let denied_note = || {
        if !denied.is_empty() {
            let names: Vec<_> = denied.iter().map(|k| printable(k).into_owned()).collect();
            println!("no permission to read {} streams: {}", denied.len(), names.join(", "));
        }
    };
    if summaries.is_empty() {
        println!("no dead letters at {}", printable(conn.redacted_url()));
        denied_note();
        return Ok(());
    }
    let rows = summaries.iter().flat_map(|s| {
        s.counts.iter().map(move |c| {
            vec![
                s.dead_letter_stream.clone(),
                c.origin_stream.clone(),
                c.group.clone(),
                c.kind.clone(),
                c.count.to_string(),
            ]
        })
    });
    println!("{}", table(&["DEAD-LETTER STREAM", "ORIGIN", "GROUP", "KIND", "LETTERS"], rows));
    for s in summaries.iter().filter(|s| !s.complete) {
        println!(
            "{}: counted the oldest {} of {} letters (--limit)",
            printable(&s.dead_letter_stream),
            s.scanned,
            s.total
        );
    }
    let total: u64 = summaries.iter().map(|s| s.total).sum();
    println!("{total} dead letters in {} dead-letter streams", summaries.len());
    denied_note();
    Ok(())
}
