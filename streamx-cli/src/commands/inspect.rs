//! The read-only commands: `streams`, `info`, `pending`.

use std::collections::BTreeMap;

use serde::Serialize;
use streamx_runtime::{ConsumerInfo, PendingEntry};

use crate::connection::Connection;
use crate::discovery::Discovery;
use crate::error::{CliError, Result};
use crate::output::{self, millis, or_dash, print_json, printable, table};
use crate::overview::{self, StreamOverview};

/// `streamx streams`: the registry's streams and, with `scan`, those a full SCAN finds;
/// only those matching `pattern` when given. Streams the user may not read are listed as such.
pub async fn streams(conn: &Connection, pattern: Option<&str>, scan: bool, json: bool) -> Result<()> {
    let mut discovery = Discovery::new();
    let names = if scan { discovery.full(conn, pattern).await? } else { discovery.registered(conn, pattern).await? };
    let streams = overview::all(conn, names).await?;
    if json {
        // The same group objects as `info --json` (see docs/cli-json.md).
        #[derive(Serialize)]
        struct Row<'a> {
            stream: &'a str,
            length: u64,
            groups: &'a [overview::GroupOverview],
            dead_letter_stream: &'a str,
            dead_letters: u64,
            no_permission: bool,
        }
        let rows: Vec<Row> = streams
            .iter()
            .map(|s| Row {
                stream: &s.stream,
                length: s.length,
                groups: &s.groups,
                dead_letter_stream: &s.dead_letter_stream,
                dead_letters: s.dead_letters,
                no_permission: s.no_permission,
            })
            .collect();
        print_json(&rows);
        return Ok(());
    }
    if streams.is_empty() {
        println!("no streams at {}", printable(conn.redacted_url()));
        return Ok(());
    }
    let rows = streams.iter().map(|s| {
        if s.no_permission {
            return vec![s.stream.clone(), "no permission".to_string(), "-".to_string(), "-".to_string()];
        }
        vec![s.stream.clone(), s.length.to_string(), s.groups.len().to_string(), s.dead_letters.to_string()]
    });
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
        vec!["delayed messages".to_string(), info.scheduled.to_string()],
    ];
    println!("{}\n", output::facts(facts));
    if info.groups.is_empty() {
        println!("no consumer groups");
        return Ok(());
    }
    let rows = info.groups.iter().map(|g| {
        let names = members.get(&g.name).map(|m| m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "));
        vec![
            output::group_name(&g.name, g.paused),
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
    // Who paused a paused group, and when (the pause key's value; see `streamx pause`).
    for g in info.groups.iter().filter(|g| g.paused) {
        if let Some(pause) = inspector.pause_info(stream, &g.name).await? {
            let by = if pause.by.is_empty() { String::new() } else { format!(" by {}", printable(&pause.by)) };
            let since = pause.at_ms.map(|ms| format!(" since {}", output::time_ms(ms))).unwrap_or_default();
            println!("group `{}` is paused{by}{since}: `streamx resume` starts it again", printable(&g.name));
        }
    }
    Ok(())
}

/// `streamx pending STREAM GROUP`: the `limit` oldest pending entries (one XPENDING of that
/// many rows) and the total (XPENDING's summary, or the consumer's count in it).
pub async fn pending(
    conn: &Connection,
    stream: &str,
    group: &str,
    consumer: Option<&str>,
    limit: u64,
    json: bool,
) -> Result<()> {
    conn.require_group(stream, group).await?;
    let inspector = conn.inspector();
    let (summary, entries) = tokio::try_join!(
        inspector.pending_summary(stream, group),
        inspector.pending_page(stream, group, consumer, None, limit)
    )?;
    let total = match consumer {
        Some(c) => summary.consumers.iter().find(|(name, _)| name == c).map_or(0, |(_, n)| *n),
        None => summary.total,
    };
    if json {
        #[derive(Serialize)]
        struct Row {
            id: streamx_runtime::MessageId,
            consumer: String,
            idle_ms: u64,
            deliveries: u64,
        }
        #[derive(Serialize)]
        struct Pending<'a> {
            stream: &'a str,
            group: &'a str,
            consumer: Option<&'a str>,
            /// Pending entries in all (of `consumer` when given).
            total: u64,
            /// The oldest `limit` of them.
            entries: Vec<Row>,
        }
        let rows: Vec<Row> = entries
            .into_iter()
            .map(|PendingEntry { id, consumer, idle_ms, deliveries }| Row { id, consumer, idle_ms, deliveries })
            .collect();
        print_json(&Pending { stream, group, consumer, total, entries: rows });
        return Ok(());
    }
    let whose = consumer.map(|c| format!(" held by `{}`", printable(c))).unwrap_or_default();
    if total == 0 {
        println!("no pending entries{whose} in group `{}` of `{}`", printable(group), printable(stream));
        return Ok(());
    }
    let shown = entries.len() as u64;
    if shown > 0 {
        let rows = entries
            .into_iter()
            .map(|e| vec![e.id.to_string(), e.consumer, millis(e.idle_ms), e.deliveries.to_string()]);
        println!("{}", table(&["ID", "CONSUMER", "IDLE", "DELIVERIES"], rows));
    }
    if shown < total {
        println!("{shown} of {total} pending entries{whose} shown (oldest first)");
    }
    Ok(())
}
