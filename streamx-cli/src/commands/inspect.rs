//! The read-only commands: `streams`, `info`, `pending`.

use std::collections::BTreeMap;

use serde::Serialize;
use streamx_runtime::{ConsumerInfo, PendingEntry};

use crate::connection::Connection;
use crate::error::{CliError, Result};
use crate::output::{self, millis, or_dash, print_json, printable, table};
use crate::overview::{self, StreamOverview};

/// `streamx streams`.
pub async fn streams(conn: &Connection, json: bool) -> Result<()> {
    let streams = overview::all(conn).await?;
    if json {
        // The same group objects as `info --json` (see docs/cli-json.md).
        #[derive(Serialize)]
        struct Row<'a> {
            stream: &'a str,
            length: u64,
            groups: &'a [overview::GroupOverview],
            dead_letter_stream: &'a str,
            dead_letters: u64,
        }
        let rows: Vec<Row> = streams
            .iter()
            .map(|s| Row {
                stream: &s.stream,
                length: s.length,
                groups: &s.groups,
                dead_letter_stream: &s.dead_letter_stream,
                dead_letters: s.dead_letters,
            })
            .collect();
        print_json(&rows);
        return Ok(());
    }
    if streams.is_empty() {
        println!("no streams at {}", printable(conn.redacted_url()));
        return Ok(());
    }
    let rows = streams
        .iter()
        .map(|s| vec![s.stream.clone(), s.length.to_string(), s.groups.len().to_string(), s.dead_letters.to_string()]);
    println!("{}", table(&["STREAM", "LENGTH", "GROUPS", "DEAD LETTERS"], rows));
    Ok(())
}

/// A consumer of a group, for `info --json`.
#[derive(Serialize)]
struct Member {
    name: String,
    pending: u64,
    idle_ms: u64,
}

impl From<ConsumerInfo> for Member {
    fn from(c: ConsumerInfo) -> Self {
        Member { name: c.name, pending: c.pending, idle_ms: c.idle_ms }
    }
}

/// `streamx info STREAM`.
pub async fn info(conn: &Connection, stream: &str, json: bool) -> Result<()> {
    let Some(info) = overview::stream(conn, stream).await? else {
        return Err(CliError::UnknownStream { stream: stream.to_string() });
    };
    let inspector = conn.inspector();
    let mut members = BTreeMap::new();
    for group in &info.groups {
        let consumers = inspector.consumers(stream, &group.name).await?;
        members.insert(group.name.clone(), consumers.into_iter().map(Member::from).collect::<Vec<_>>());
    }
    if json {
        #[derive(Serialize)]
        struct Info<'a> {
            #[serde(flatten)]
            stream: &'a StreamOverview,
            consumers: &'a BTreeMap<String, Vec<Member>>,
        }
        print_json(&Info { stream: &info, consumers: &members });
        return Ok(());
    }
    let mark = |m: &Option<overview::EntryMark>| m.as_ref().map(|m| format!("{} ({})", m.id, m.time));
    let facts = vec![
        vec!["stream".to_string(), info.stream.clone()],
        vec!["length".to_string(), info.length.to_string()],
        vec!["entries added".to_string(), or_dash(info.entries_added)],
        vec!["first entry".to_string(), or_dash(mark(&info.first_entry))],
        vec!["last entry".to_string(), or_dash(mark(&info.last_entry))],
        vec!["dead letters".to_string(), format!("{} in {}", info.dead_letters, info.dead_letter_stream)],
    ];
    println!("{}\n", output::facts(facts));
    if info.groups.is_empty() {
        println!("no consumer groups");
        return Ok(());
    }
    let rows = info.groups.iter().map(|g| {
        let names = members.get(&g.name).map(|m| m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "));
        vec![
            g.name.clone(),
            output::lag(g.lag, g.lag_estimated),
            g.pending.to_string(),
            format!(
                "{} {}",
                g.consumers,
                names.filter(|n| !n.is_empty()).map(|n| format!("({n})")).unwrap_or_default()
            ),
            or_dash(g.last_delivered_id),
        ]
    });
    println!("{}", table(&["GROUP", "LAG", "PENDING", "CONSUMERS", "LAST DELIVERED"], rows));
    Ok(())
}

/// `streamx pending STREAM GROUP`.
pub async fn pending(
    conn: &Connection,
    stream: &str,
    group: &str,
    consumer: Option<&str>,
    limit: Option<usize>,
    json: bool,
) -> Result<()> {
    conn.require_group(stream, group).await?;
    let mut entries = conn.inspector().pending(stream, group, consumer).await?;
    let total = entries.len();
    if let Some(limit) = limit {
        entries.truncate(limit);
    }
    if json {
        #[derive(Serialize)]
        struct Row {
            id: streamx_runtime::MessageId,
            consumer: String,
            idle_ms: u64,
            deliveries: u64,
        }
        let rows: Vec<Row> = entries
            .into_iter()
            .map(|PendingEntry { id, consumer, idle_ms, deliveries }| Row { id, consumer, idle_ms, deliveries })
            .collect();
        print_json(&rows);
        return Ok(());
    }
    if entries.is_empty() {
        println!("no pending entries in group `{}` of `{}`", printable(group), printable(stream));
        return Ok(());
    }
    let shown = entries.len();
    let rows =
        entries.into_iter().map(|e| vec![e.id.to_string(), e.consumer, millis(e.idle_ms), e.deliveries.to_string()]);
    println!("{}", table(&["ID", "CONSUMER", "IDLE", "DELIVERIES"], rows));
    if shown < total {
        println!("{shown} of {total} pending entries shown (oldest first)");
    }
    Ok(())
}
