//! Read-only figures for operators and tests: stream length, and per group the pending
//! count, lag, consumers and whether it is paused (XINFO GROUPS / XINFO CONSUMERS / XLEN);
//! a topic's figures per shard in [`topic`]; pausing and resuming a group in [`pause`].

mod pause;
mod topic;

pub use pause::PauseInfo;
pub use topic::{ShardGroup, ShardInfo, ShardOwner, TopicGroupTotals, TopicInfo};

use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::Value;

use crate::connection::{tool_client, RedisUrl};
use crate::error::{Error, Result};
use crate::message::MessageId;
use crate::wire::value_bytes;
use crate::worker::{SCHEDULED_CONSUMER, SUSPECTS_CONSUMER};

/// One consumer group of a stream, as XINFO GROUPS reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group name.
    pub name: String,
    /// Consumers of the group: XINFO GROUPS's count without streamx's placeholder members
    /// ([`SCHEDULED_CONSUMER`], [`SUSPECTS_CONSUMER`]), which hold entries but consume
    /// nothing.
    pub consumers: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// The last id delivered to the group.
    pub last_delivered_id: Option<MessageId>,
    /// Entries the group has read (Redis 7+).
    pub entries_read: Option<u64>,
    /// Entries not yet delivered to the group (Redis 7+). When Redis cannot tell,
    /// [`Inspector::groups`] gives [`estimate_lag`]'s estimate and sets `lag_estimated`;
    /// `None` only when not even that is known.
    pub lag: Option<u64>,
    /// True when `lag` is [`estimate_lag`]'s estimate rather than Redis's figure.
    pub lag_estimated: bool,
    /// Whether the group is paused (see [`Inspector::pause`]); filled by
    /// [`Inspector::groups`] (one pipelined `EXISTS` per group).
    pub paused: bool,
}

/// One consumer of a group, as XINFO CONSUMERS reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The consumer name.
    pub name: String,
    /// Entries it holds unacknowledged.
    pub pending: u64,
    /// Milliseconds since it last interacted with the group.
    pub idle_ms: u64,
}

/// One entry of a group's pending entries list, as XPENDING reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// The entry id.
    pub id: MessageId,
    /// The consumer holding it.
    pub consumer: String,
    /// Milliseconds since it was last delivered or claimed.
    pub idle_ms: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// The summary form of XPENDING: how many entries a group has pending, the oldest and
/// newest of them, and how many each consumer holds. One command, whatever the list's size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingSummary {
    /// Entries pending in the group.
    pub total: u64,
    /// The smallest pending id.
    pub oldest: Option<MessageId>,
    /// The largest pending id.
    pub newest: Option<MessageId>,
    /// Consumers holding entries, with how many each holds.
    pub consumers: Vec<(String, u64)>,
}

/// Reads stream and group figures.
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// let inspector = streamx_runtime::Inspector::connect("redis://127.0.0.1:6379").await?;
/// for g in inspector.groups("orders").await? {
///     println!("{}: pending {}, lag {:?}", g.name, g.pending, g.lag);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Inspector {
    pub(crate) client: Client,
}

impl Inspector {
    /// Connects to `url`. For a `rediss://` URL the CA file in
    /// `STREAMX_REDIS_TLS_CA` and the client certificate in `STREAMX_REDIS_TLS_CERT` /
    /// `STREAMX_REDIS_TLS_KEY` are used when set, as by the runtime (see [`RedisUrl`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(&RedisUrl::parse(url)?).await
    }

    /// Connects with a parsed URL (with TLS or credentials options). TLS files it does not
    /// set are taken from the environment, as for [`connect`](Self::connect); its own
    /// settings win.
    pub async fn connect_with(url: &RedisUrl) -> Result<Self> {
        Ok(Inspector { client: tool_client(url).await? })
    }

    /// Uses an existing client.
    pub fn with_client(client: Client) -> Self {
        Inspector { client }
    }

    /// The number of entries in `stream` (0 when it does not exist).
    pub async fn stream_len(&self, stream: &str) -> Result<u64> {
        self.client.xlen(stream).await.map_err(|e| Error::redis("XLEN", stream, e))
    }

    /// The streams in the registry of stream names ([`crate::keys::STREAM_NAMES`]), sorted:
    /// every stream a streamx consumer started on or a streamx producer published to (some
    /// may have been deleted since). One `SMEMBERS`; streams written only by other clients
    /// are not there.
    pub async fn registered_streams(&self) -> Result<Vec<String>> {
        crate::stream_names::registered(&self.client).await
    }

    /// The groups of `stream` (empty when the stream does not exist), their consumers
    /// counted without streamx's placeholder members (one XINFO CONSUMERS per group that
    /// has any), and a lag Redis cannot tell estimated (one XINFO STREAM, only then).
    pub async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        let reply: Result<Value, _> = self.client.xinfo_groups(stream).await;
        let reply = match reply {
            Ok(v) => v,
            Err(e) if e.details().contains("no such key") => return Ok(Vec::new()),
            Err(e) => return Err(Error::redis("XINFO GROUPS", stream, e)),
        };
        let mut groups: Vec<GroupInfo> = reply.into_array().into_iter().map(parse_group).collect();
        // The members without the placeholders: one XINFO CONSUMERS per group that has any,
        // sent together.
        let recounts = groups.iter().filter(|g| g.consumers > 0).map(|g| async move {
            Ok::<_, Error>((g.name.clone(), self.consumers(stream, &g.name).await?.len() as u64))
        });
        let recounted: std::collections::HashMap<String, u64> =
            futures_util::future::try_join_all(recounts).await?.into_iter().collect();
        for group in &mut groups {
            if let Some(n) = recounted.get(&group.name) {
                group.consumers = *n;
            }
        }
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let paused = self.paused_among(stream, &names).await?;
        for (group, paused) in groups.iter_mut().zip(paused) {
            group.paused = paused;
        }
        if groups.iter().any(|g| g.lag.is_none()) {
            if let Some(counters) = self.stream_counters(stream).await? {
                for group in groups.iter_mut().filter(|g| g.lag.is_none()) {
                    group.lag = Some(estimate_lag(group, &counters));
                    group.lag_estimated = true;
                }
            }
        }
        Ok(groups)
    }

    /// The counters of `stream` (XINFO STREAM), `None` when it does not exist.
    pub async fn stream_counters(&self, stream: &str) -> Result<Option<StreamCounters>> {
        let reply: Result<Value, _> = self.client.xinfo_stream(stream, false, None).await;
        let reply = match reply {
            Ok(v) => v,
            Err(e) if e.details().contains("no such key") => return Ok(None),
            Err(e) => return Err(Error::redis("XINFO STREAM", stream, e)),
        };
        let mut counters = StreamCounters::default();
        for (k, v) in pairs(reply) {
            match k.as_str() {
                "length" => counters.length = v.as_u64().unwrap_or(0),
                "entries-added" => counters.entries_added = known(&v),
                "last-generated-id" => {
                    counters.last_generated_id = value_bytes(v).and_then(|b| MessageId::parse_bytes(&b))
                }
                _ => {}
            }
        }
        Ok(Some(counters))
    }

    /// The group `group` of `stream`, if it exists.
    pub async fn group(&self, stream: &str, group: &str) -> Result<Option<GroupInfo>> {
        Ok(self.groups(stream).await?.into_iter().find(|g| g.name == group))
    }

    /// The consumers of `group` on `stream`, without streamx's placeholder members (see
    /// [`is_placeholder_consumer`]).
    pub async fn consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        let all = self.consumers_and_placeholders(stream, group).await?;
        Ok(all.into_iter().filter(|c| !is_placeholder_consumer(&c.name)).collect())
    }

    /// The consumers of `group` on `stream` as XINFO CONSUMERS lists them, placeholders
    /// included.
    pub(crate) async fn consumers_and_placeholders(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        let reply: Value =
            self.client.xinfo_consumers(stream, group).await.map_err(|e| Error::redis("XINFO CONSUMERS", stream, e))?;
        Ok(parse_consumers(reply))
    }
}

impl Inspector {
    /// At most `count` pending entries of `group` on `stream` (of one consumer when given),
    /// oldest first, after the id `after` (from the start without it): one
    /// `XPENDING key group (after + count [consumer]`, so the cost is that of the rows read,
    /// not of the list. Page on with the last id returned.
    pub async fn pending_page(
        &self,
        stream: &str,
        group: &str,
        consumer: Option<&str>,
        after: Option<MessageId>,
        count: u64,
    ) -> Result<Vec<PendingEntry>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
        let reply: Value = match consumer {
            Some(c) => self.client.xpending(stream, group, (start.as_str(), "+", count, c)).await,
            None => self.client.xpending(stream, group, (start.as_str(), "+", count)).await,
        }
        .map_err(|e| Error::redis("XPENDING", stream, e))?;
        Ok(parse_pending(reply))
    }

    /// The summary of `group`'s pending entries on `stream` (`XPENDING key group`): the total,
    /// the oldest and newest ids and the count per consumer, in one command.
    pub async fn pending_summary(&self, stream: &str, group: &str) -> Result<PendingSummary> {
        let reply: Value =
            self.client.xpending(stream, group, ()).await.map_err(|e| Error::redis("XPENDING", stream, e))?;
        Ok(parse_pending_summary(reply))
    }

    /// Every pending entry of `group` on `stream` (of one consumer when given), oldest
    /// first, read page by page to the end of the list.
    pub async fn pending(&self, stream: &str, group: &str, consumer: Option<&str>) -> Result<Vec<PendingEntry>> {
        let mut out = Vec::new();
        let mut start = "-".to_string();
        loop {
            let reply: Value = match consumer {
                Some(c) => self.client.xpending(stream, group, (start.as_str(), "+", 1000, c)).await,
                None => self.client.xpending(stream, group, (start.as_str(), "+", 1000)).await,
            }
            .map_err(|e| Error::redis("XPENDING", stream, e))?;
            let rows = parse_pending(reply);
            let full = rows.len() >= 1000;
            out.extend(rows);
            match out.last() {
                Some(last) if full => start = format!("({}", last.id),
                _ => return Ok(out),
            }
        }
    }
}

/// True for the group members streamx creates to hold entries rather than to consume:
/// [`SCHEDULED_CONSUMER`] (scheduled retries) and [`SUSPECTS_CONSUMER`] (crash suspects).
/// They are not counted or listed as consumers by the [`Inspector`].
pub fn is_placeholder_consumer(name: &str) -> bool {
    name == SCHEDULED_CONSUMER || name == SUSPECTS_CONSUMER
}

/// A stream's counters, as XINFO STREAM reports them: what [`estimate_lag`] needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Entries in the stream now.
    pub length: u64,
    /// Entries ever added (Redis 7+).
    pub entries_added: Option<u64>,
    /// The id of the last entry added.
    pub last_generated_id: Option<MessageId>,
}

/// The lag of `group` when Redis cannot tell it (XINFO GROUPS `lag` is nil: entries were
/// deleted inside the unread range, or the group's read counter is unknown, as for a group
/// created at `$`), from the stream's counters: the entries added minus those the group
/// read when its read counter is known; else 0 when the group has read up to the last
/// entry; else the whole stream's length (an upper bound). The group's lag gauge and the
/// command line's `info`, `streams` and `top` use this one estimate.
///
/// ```
/// use streamx_runtime::{estimate_lag, GroupInfo, MessageId, StreamCounters};
/// let stream = StreamCounters { length: 3, entries_added: Some(3), last_generated_id: Some(MessageId::new(9, 0)) };
/// let at_end = GroupInfo { last_delivered_id: Some(MessageId::new(9, 0)), ..GroupInfo::default() };
/// assert_eq!(estimate_lag(&at_end, &stream), 0);
/// let behind = GroupInfo { last_delivered_id: Some(MessageId::new(5, 0)), ..GroupInfo::default() };
/// assert_eq!(estimate_lag(&behind, &stream), 3);
/// ```
pub fn estimate_lag(group: &GroupInfo, stream: &StreamCounters) -> u64 {
    match (group.entries_read, stream.entries_added) {
        (Some(read), Some(added)) => added.saturating_sub(read),
        _ if group.last_delivered_id.is_some() && group.last_delivered_id == stream.last_generated_id => 0,
        _ => stream.length,
    }
}

/// Parses an XINFO CONSUMERS reply; a consumer missing its name, pending count or idle
/// time is left out (so no caller acts on a default).
pub(crate) fn parse_consumers(reply: Value) -> Vec<ConsumerInfo> {
    reply
        .into_array()
        .into_iter()
        .filter_map(|c| {
            let (mut name, mut pending, mut idle_ms) = (None, None, None);
            for (k, v) in pairs(c) {
                match k.as_str() {
                    "name" => name = Some(text(v)),
                    "pending" => pending = v.as_u64(),
                    "idle" => idle_ms = v.as_u64(),
                    _ => {}
                }
            }
            Some(ConsumerInfo { name: name?, pending: pending?, idle_ms: idle_ms? })
        })
        .collect()
}

/// Parses an extended XPENDING reply (`[id, consumer, idle, deliveries]` rows).
pub(crate) fn parse_pending(reply: Value) -> Vec<PendingEntry> {
    if reply.is_null() {
        return Vec::new();
    }
    reply
        .into_array()
        .into_iter()
        .filter_map(|row| {
            let mut parts = row.into_array().into_iter();
            let id = MessageId::parse_bytes(&value_bytes(parts.next()?)?)?;
            let consumer = text(parts.next()?);
            let idle_ms = parts.next()?.as_u64()?;
            let deliveries = parts.next()?.as_u64()?;
            Some(PendingEntry { id, consumer, idle_ms, deliveries })
        })
        .collect()
}

/// Parses the summary form of XPENDING: `[total, oldest, newest, [[consumer, count], ...]]`.
pub(crate) fn parse_pending_summary(reply: Value) -> PendingSummary {
    let mut parts = reply.into_array().into_iter();
    let total = parts.next().and_then(|v| v.as_u64()).unwrap_or(0);
    let id = |v: Option<Value>| v.and_then(value_bytes).and_then(|b| MessageId::parse_bytes(&b));
    let oldest = id(parts.next());
    let newest = id(parts.next());
    let consumers = parts
        .next()
        .map(|v| v.into_array())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|row| {
            let mut row = row.into_array().into_iter();
            let name = text(row.next()?);
            let count = row.next()?;
            // Redis sends the count as a bulk string.
            let count = count.as_u64().or_else(|| count.as_str().and_then(|s| s.parse().ok()))?;
            Some((name, count))
        })
        .collect();
    PendingSummary { total, oldest, newest, consumers }
}

fn pairs(v: Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut it = v.into_array().into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((text(k), v));
    }
    out
}

fn text(v: Value) -> String {
    value_bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// A number Redis may answer with nil for "unknown" (fred reads nil as 0 with
/// `default-nil-types`, which would show an unknown lag as no lag).
fn known(v: &Value) -> Option<u64> {
    if v.is_null() {
        None
    } else {
        v.as_u64()
    }
}

fn parse_group(v: Value) -> GroupInfo {
    let mut g = GroupInfo::default();
    for (k, v) in pairs(v) {
        match k.as_str() {
            "name" => g.name = text(v),
            "consumers" => g.consumers = v.as_u64().unwrap_or(0),
            "pending" => g.pending = v.as_u64().unwrap_or(0),
            "last-delivered-id" => g.last_delivered_id = value_bytes(v).and_then(|b| MessageId::parse_bytes(&b)),
            "entries-read" => g.entries_read = known(&v),
            "lag" => g.lag = known(&v),
            _ => {}
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_summary_is_read_with_its_counts() {
        let reply = Value::Array(vec![
            Value::Integer(3),
            "1-0".into(),
            "5-0".into(),
            Value::Array(vec![
                Value::Array(vec!["w1".into(), "2".into()]),
                Value::Array(vec!["w2".into(), "1".into()]),
            ]),
        ]);
        let summary = parse_pending_summary(reply);
        assert_eq!(summary.total, 3);
        assert_eq!(summary.oldest.map(|i| i.to_string()).as_deref(), Some("1-0"));
        assert_eq!(summary.consumers, vec![("w1".to_string(), 2), ("w2".to_string(), 1)]);
        let empty = parse_pending_summary(Value::Array(vec![Value::Integer(0), Value::Null, Value::Null, Value::Null]));
        assert_eq!(empty, PendingSummary::default());
    }

    #[test]
    fn an_unknown_lag_is_estimated_from_the_stream_counters() {
        let stream =
            StreamCounters { length: 4, entries_added: Some(10), last_generated_id: Some(MessageId::new(9, 0)) };
        let read = GroupInfo { entries_read: Some(7), ..GroupInfo::default() };
        assert_eq!(estimate_lag(&read, &stream), 3);
        let at_end = GroupInfo { last_delivered_id: Some(MessageId::new(9, 0)), ..GroupInfo::default() };
        assert_eq!(estimate_lag(&at_end, &stream), 0);
        let behind = GroupInfo { last_delivered_id: Some(MessageId::new(2, 0)), ..GroupInfo::default() };
        assert_eq!(estimate_lag(&behind, &stream), 4);
        assert!(is_placeholder_consumer(SCHEDULED_CONSUMER) && is_placeholder_consumer(SUSPECTS_CONSUMER));
        assert!(!is_placeholder_consumer("worker-1"));
    }

    #[test]
    fn an_unknown_lag_stays_unknown() {
        let reply = Value::Array(vec![
            "name".into(),
            "billing".into(),
            "lag".into(),
            Value::Null,
            "entries-read".into(),
            Value::Integer(3),
        ]);
        let group = parse_group(reply);
        assert_eq!(group.lag, None);
        assert_eq!(group.entries_read, Some(3));
    }
}
