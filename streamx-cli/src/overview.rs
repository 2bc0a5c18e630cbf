//! What a stream looks like now: length, first and last entry, groups, dead letters, delayed
//! messages. One place that reads it for `streams`, `info`, `top` and the dashboard.

use std::time::Duration;

use fred::interfaces::StreamsInterface;
use fred::types::Value;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use streamx_runtime::wire::parse_entries;
use streamx_runtime::{GroupInfo, MessageId, Scheduled};

use crate::connection::{dead_letter_key, Connection};
use crate::discovery::Discovery;
use crate::error::{exit, redis, CliError, Result};

/// Streams read at once when listing them all.
const CONCURRENT_READS: usize = 16;

/// The longest a refresh of `top` or the dashboard may take: past it, Redis counts as
/// unreachable for that refresh (the next one is tried on time).
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// One stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamOverview {
    /// The key.
    pub stream: String,
    /// Entries in it (XLEN).
    pub length: u64,
    /// Entries ever added (XINFO STREAM `entries-added`, Redis 7+).
    pub entries_added: Option<u64>,
    /// The id of the last entry added, even if deleted since.
    pub last_generated_id: Option<MessageId>,
    /// The oldest entry.
    pub first_entry: Option<EntryMark>,
    /// The newest entry.
    pub last_entry: Option<EntryMark>,
    /// Where its dead letters go (the engine's default name).
    pub dead_letter_stream: String,
    /// How many dead letters are there.
    pub dead_letters: u64,
    /// How many delayed messages wait to be added to it (`publish_after` / `publish_at`).
    pub scheduled: u64,
    /// Its consumer groups.
    pub groups: Vec<GroupOverview>,
    /// The Redis user may not read it (`NOPERM`): listed, with no figures.
    pub no_permission: bool,
}

impl StreamOverview {
    /// A stream the user may not read: its name and nothing else.
    fn denied(stream: &str) -> Self {
        StreamOverview {
            stream: stream.to_string(),
            length: 0,
            entries_added: None,
            last_generated_id: None,
            first_entry: None,
            last_entry: None,
            dead_letter_stream: dead_letter_key(stream),
            dead_letters: 0,
            scheduled: 0,
            groups: Vec::new(),
            no_permission: true,
        }
    }
}

/// An entry's id and the time in it.
#[derive(Debug, Clone, Serialize)]
pub struct EntryMark {
    /// The id.
    pub id: MessageId,
    /// Its millisecond part as an RFC 3339 time.
    pub time: String,
}

impl EntryMark {
    fn new(id: MessageId) -> Self {
        EntryMark { id, time: id_time(id) }
    }
}

/// One consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupOverview {
    /// The group name.
    pub name: String,
    /// Consumers in the group.
    pub consumers: u64,
    /// Entries delivered and not acknowledged (scheduled retries included).
    pub pending: u64,
    /// Entries not yet delivered to the group; estimated when Redis cannot tell (see
    /// `lag_estimated`).
    pub lag: Option<u64>,
    /// True when `lag` is the runtime's estimate (`streamx_runtime::estimate_lag`).
    pub lag_estimated: bool,
    /// Entries the group has read.
    pub entries_read: Option<u64>,
    /// The last id delivered to the group.
    pub last_delivered_id: Option<MessageId>,
    /// The group is paused (`streamx pause`): its consumers start no handler.
    pub paused: bool,
}

impl From<GroupInfo> for GroupOverview {
    fn from(g: GroupInfo) -> Self {
        GroupOverview {
            name: g.name,
            consumers: g.consumers,
            pending: g.pending,
            lag: g.lag,
            lag_estimated: g.lag_estimated,
            entries_read: g.entries_read,
            last_delivered_id: g.last_delivered_id,
            paused: g.paused,
        }
    }
}

/// The time in an id, RFC 3339 with milliseconds (see [`crate::output::time_ms`]).
pub fn id_time(id: MessageId) -> String {
    crate::output::time_ms(id.millis())
}

/// Every stream key, dead-letter streams included, sorted: a whole pass of `SCAN ... TYPE
/// stream` on every master (one call per 1,000 keys; see [`Discovery::scan_all`]).
pub async fn stream_keys(conn: &Connection) -> Result<Vec<String>> {
    Discovery::new().scan_all(conn).await
}

/// `stream` now; `None` when it does not exist (or is not a stream).
pub async fn stream(conn: &Connection, stream: &str) -> Result<Option<StreamOverview>> {
    let dead_letter_stream = dead_letter_key(stream);
    let info = async {
        let client = conn.client();
        let reply: std::result::Result<Value, _> = client.xinfo_stream(stream, false, None).await;
        match reply {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.details().contains("no such key") || e.details().contains("WRONGTYPE") => Ok(None),
            Err(e) => Err(redis("XINFO STREAM", stream, e)),
        }
    };
    let groups = async { Ok::<_, CliError>(conn.inspector().groups(stream).await?) };
    let dead_letters = async { Ok::<_, CliError>(conn.dead_letters(stream, None).count().await?) };
    let scheduled = async { Ok::<_, CliError>(Scheduled::with_client(conn.client()).count(stream).await?) };
    // All at once; a stream that is gone (or no stream) makes the others' errors moot.
    let (info, groups, dead_letters, scheduled) = tokio::join!(info, groups, dead_letters, scheduled);
    let Some(info) = info? else { return Ok(None) };
    let mut overview = StreamOverview {
        stream: stream.to_string(),
        length: 0,
        entries_added: None,
        last_generated_id: None,
        first_entry: None,
        last_entry: None,
        dead_letter_stream,
        dead_letters: dead_letters?,
        scheduled: scheduled?,
        groups: groups?.into_iter().map(GroupOverview::from).collect(),
        no_permission: false,
    };
    let mut fields = info.into_array().into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match name.as_str().as_deref() {
            Some("length") => overview.length = value.as_u64().unwrap_or(0),
            Some("entries-added") => overview.entries_added = value.as_u64(),
            Some("last-generated-id") => overview.last_generated_id = value.as_str().and_then(|s| s.parse().ok()),
            Some("first-entry") => overview.first_entry = entry_mark(value),
            Some("last-entry") => overview.last_entry = entry_mark(value),
            _ => {}
        }
    }
    Ok(Some(overview))
}

/// The id of an XINFO STREAM `first-entry` / `last-entry` (nil for an empty stream).
fn entry_mark(entry: Value) -> Option<EntryMark> {
    if entry.is_null() {
        return None;
    }
    parse_entries(Value::Array(vec![entry])).first().map(|e| EntryMark::new(e.id))
}

/// The streams named (see [`crate::discovery`]), read concurrently, in the same order; those
/// gone since are left out, and those the user may not read (`NOPERM`) are listed as such
/// ([`StreamOverview::no_permission`]).
pub async fn all(conn: &Connection, names: Vec<String>) -> Result<Vec<StreamOverview>> {
    // Owned futures (a connection clone and the key each), so the set can run in a spawned task.
    let reads = names.into_iter().map(|key| {
        let conn = conn.clone();
        async move {
            match stream(&conn, &key).await {
                Err(e) if e.code() == exit::PERMISSION => Ok(Some(StreamOverview::denied(&key))),
                other => other,
            }
        }
    });
    let found: Vec<Option<StreamOverview>> =
        futures_util::stream::iter(reads).buffered(CONCURRENT_READS).try_collect().await?;
    Ok(found.into_iter().flatten().collect())
}

/// One refresh of `top` or the dashboard: the streams `discovery` knows after one step (see
/// [`Discovery::tick`]), read; fails when it takes longer than [`REFRESH_TIMEOUT`] (a dead
/// Redis, a connection being re-made), so a view never waits on Redis for longer.
pub async fn refresh(conn: &Connection, discovery: &mut Discovery) -> Result<Vec<StreamOverview>> {
    let read = async {
        let names = discovery.tick(conn, None).await?;
        all(conn, names).await
    };
    match tokio::time::timeout(REFRESH_TIMEOUT, read).await {
        Ok(result) => result,
        Err(_) => Err(CliError::NoAnswer { secs: REFRESH_TIMEOUT.as_secs() }),
    }
}
