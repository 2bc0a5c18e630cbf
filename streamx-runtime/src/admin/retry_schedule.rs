//! The retry schedule of a group, for operators: which failed entries wait for their next
//! attempt and when, run one now, delete one.
//!
//! The engine keeps the schedule in `{stream}:retries:<group>` (see
//! [`keys::retry_schedule`](crate::keys::retry_schedule)): a sorted set of entry ids scored
//! by the time their next attempt is due (Unix ms, Redis clock). Each scheduled entry stays
//! in the group's pending entries list under the placeholder consumer
//! [`SCHEDULED_CONSUMER`], where no take-over touches it: an id is in the schedule exactly
//! when it is pending under the placeholder. A running consumer of the group promotes due
//! entries every tick (a quarter of its initial backoff, 20 ms to 1 s).

use std::sync::LazyLock;

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::scripts::Script;
use fred::types::Value;

use super::command;
use crate::clock::redis_now_ms;
use crate::connection::{tool_client, RedisUrl};
use crate::error::{Error, Result};
use crate::inspect::parse_pending;
use crate::message::{Headers, MessageId};
use crate::scripts::{assemble, NOW_MS};
use crate::wire::{parse_entries, value_bytes};
use crate::worker::SCHEDULED_CONSUMER;

/// The most retries one page lists.
const MOST_LISTED: u64 = 1_000;

/// Makes one scheduled retry due now: its score becomes the Redis clock's now, only if it is
/// in the schedule and due later (an entry due already keeps its place). One command that
/// writes (ZADD XX), so a crash before it changes nothing and after it the next promoter
/// tick delivers the entry; nothing else can be half done.
static RUN_NOW: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS],
        r#"
-- KEYS: schedule; ARGV: id
-- Returns false when the id is not scheduled, else the time it is due now (Unix ms).
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due then return false end
local now = now_ms()
if tonumber(due) <= now then return tostring(due) end
redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
return tostring(now)
"#,
    )
});

/// Deletes one scheduled retry: the entry leaves the group for good (XACK), then the
/// schedule (ZREM). Only an entry pending under the placeholder is acknowledged: one a
/// consumer has just promoted is being handled and is left alone. XACK comes first: were
/// the ZREM to fail after it, the id would be scheduled without being pending under the
/// placeholder, which the promoter settles by dropping it; the other order could leave an
/// entry pending under the placeholder and unscheduled, never delivered again. A crash
/// before the script changes nothing; the script runs whole or not at all.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[],
        r#"
-- KEYS: stream, schedule; ARGV: group, id, scheduled consumer
-- Returns 1 when the retry was deleted, 0 when it was not scheduled.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
local acked = 0
if p[1] then acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) end
local removed = redis.call('ZREM', KEYS[2], ARGV[2])
if acked + removed > 0 then return 1 end
return 0
"#,
    )
});

/// One scheduled retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRetry {
    /// The entry's id in the stream.
    pub id: MessageId,
    /// When its next attempt is due (Unix ms, Redis clock). A time in the past means it is
    /// due and waits for a running consumer of the group to take it.
    pub due_at_ms: u64,
    /// Its attempts so far: the delivery count Redis keeps for it (XPENDING). `None` when it
    /// is not pending under the placeholder consumer (a consumer took it meanwhile).
    pub attempts: Option<u64>,
    /// Whether the entry is still in the stream: one trimmed or deleted meanwhile becomes a
    /// `trimmed` dead letter when it is promoted. `None` when not read (no payloads asked).
    pub exists: Option<bool>,
    /// Its payload (`data`), when payloads were asked for and it has one.
    pub payload: Option<Bytes>,
    /// Its headers, when payloads were asked for.
    pub headers: Headers,
}

/// A page of the schedule, by due time (soonest first), with its total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledPage {
    /// The retries of this page.
    pub entries: Vec<ScheduledRetry>,
    /// How many retries the schedule holds in all (ZCARD).
    pub total: u64,
    /// The Redis clock when the page was read (Unix ms): compare `due_at_ms` to it.
    pub now_ms: u64,
    /// The offset of the next page; `None` on the last page.
    pub next_offset: Option<u64>,
}

/// The retry schedule of one group of one stream.
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// use streamx_runtime::admin::RetrySchedule;
/// let schedule = RetrySchedule::connect("redis://127.0.0.1:6379", "orders", "billing").await?;
/// let page = schedule.list(0, 50, false).await?;
/// println!("{} retries scheduled", page.total);
/// if let Some(first) = page.entries.first() {
///     println!("{} due in {} ms", first.id, first.due_at_ms.saturating_sub(page.now_ms));
///     schedule.run_now(first.id).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RetrySchedule {
    client: Client,
    stream: String,
    group: String,
    key: String,
}

impl RetrySchedule {
    /// Connects to `url` (TLS files from the environment, as for the runtime; see
    /// [`RedisUrl`]) and opens the schedule of `group` on `stream`.
    pub async fn connect(url: &str, stream: &str, group: &str) -> Result<Self> {
        Ok(Self::with_client(tool_client(&RedisUrl::parse(url)?).await?, stream, group))
    }

    /// Uses an existing client.
    pub fn with_client(client: Client, stream: &str, group: &str) -> Self {
        RetrySchedule {
            client,
            stream: stream.to_string(),
            group: group.to_string(),
            key: crate::keys::retry_schedule(stream, group),
        }
    }

    /// The schedule's key (`{orders}:retries:billing`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How many retries are scheduled (ZCARD).
    pub async fn count(&self) -> Result<u64> {
        Ok(command(&self.client, "ZCARD", &self.key, vec![self.key.as_str().into()]).await?.as_u64().unwrap_or(0))
    }

    /// Up to `limit` retries (at most 1,000) from position `offset` (0: the soonest due),
    /// with the total.
    /// Costs O(log n + limit): one ZRANGE by rank, ZCARD, TIME, and per retry one XPENDING
    /// of that id (and one XRANGE of it with `payloads`). Only reads: works for a read-only
    /// user. The schedule changes while it is read (the promoter takes due entries), so
    /// offsets are a position at one moment, not a cursor. `now_ms` is the Redis clock's,
    /// or this machine's when the user may not run TIME.
    pub async fn list(&self, offset: u64, limit: u64, payloads: bool) -> Result<ScheduledPage> {
        // Ranks are signed in Redis (a negative one counts from the end); a page reads one
        // command per retry, so it is bounded too.
        let limit = limit.clamp(1, MOST_LISTED);
        let offset = offset.min(i64::MAX as u64 - MOST_LISTED);
        let range = command(
            &self.client,
            "ZRANGE",
            &self.key,
            vec![
                self.key.as_str().into(),
                Value::from(offset as i64),
                Value::from((offset + limit - 1) as i64),
                "WITHSCORES".into(),
            ],
        );
        let (range, total, now_ms) = tokio::try_join!(range, self.count(), redis_now_ms(&self.client, &self.key))?;
        let scheduled = scored(range);
        let entries = futures_util::future::try_join_all(
            scheduled.into_iter().map(|(id, due_at_ms)| self.describe(id, due_at_ms, payloads)),
        )
        .await?;
        let next = offset + entries.len() as u64;
        let next_offset = (entries.len() as u64 == limit && next < total).then_some(next);
        Ok(ScheduledPage { entries, total, now_ms, next_offset })
    }

    /// One scheduled retry, if `id` is scheduled.
    pub async fn get(&self, id: MessageId, payloads: bool) -> Result<Option<ScheduledRetry>> {
        let score =
            command(&self.client, "ZSCORE", &self.key, vec![self.key.as_str().into(), id.to_string().into()]).await?;
        match score_of(score) {
            Some(due_at_ms) => Ok(Some(self.describe(id, due_at_ms, payloads).await?)),
            None => Ok(None),
        }
    }

    async fn describe(&self, id: MessageId, due_at_ms: u64, payloads: bool) -> Result<ScheduledRetry> {
        let ids = id.to_string();
        let pending: Value = self
            .client
            .xpending(&self.stream, &self.group, (ids.as_str(), ids.as_str(), 1, SCHEDULED_CONSUMER))
            .await
            .map_err(|e| Error::redis("XPENDING", &self.stream, e))?;
        let attempts = parse_pending(pending).first().map(|p| p.deliveries);
        let mut retry =
            ScheduledRetry { id, due_at_ms, attempts, exists: None, payload: None, headers: Headers::new() };
        if payloads {
            let found: Value = self
                .client
                .xrange(&self.stream, ids.as_str(), ids.as_str(), Some(1))
                .await
                .map_err(|e| Error::redis("XRANGE", &self.stream, e))?;
            let entry = parse_entries(found).into_iter().next();
            retry.exists = Some(entry.is_some());
            if let Some(entry) = entry {
                retry.payload = entry.data;
                retry.headers = entry.headers;
            }
        }
        Ok(retry)
    }

    /// Makes the retry `id` due now (on the Redis clock), so a running consumer of the
    /// group delivers it at its next promotion tick, as its next attempt. Returns when it is
    /// due now, or `None` when `id` is not scheduled (delivered meanwhile, or never failed).
    /// An entry already due keeps its due time.
    pub async fn run_now(&self, id: MessageId) -> Result<Option<u64>> {
        let reply: Value = RUN_NOW
            .evalsha_with_reload(&self.client, vec![self.key.clone()], vec![id.to_string()])
            .await
            .map_err(|e| Error::redis("EVALSHA (retry run now)", &self.key, e))?;
        Ok(score_of(reply))
    }

    /// Deletes the retry `id`: it leaves the schedule and is acknowledged in the group, so
    /// **the group will never handle this entry** (other groups are not affected, and the
    /// entry stays in the stream). Returns false when `id` was not scheduled (nothing
    /// changed). A retry a consumer promoted a moment ago is not acknowledged: it is being
    /// handled.
    pub async fn delete(&self, id: MessageId) -> Result<bool> {
        let reply: i64 = DELETE
            .evalsha_with_reload(
                &self.client,
                vec![self.stream.clone(), self.key.clone()],
                vec![self.group.clone(), id.to_string(), SCHEDULED_CONSUMER.to_string()],
            )
            .await
            .map_err(|e| Error::redis("EVALSHA (retry delete)", &self.stream, e))?;
        Ok(reply == 1)
    }
}

/// A score (`"1712000000000"`, or a float from RESP3) as whole milliseconds.
fn score_of(v: Value) -> Option<u64> {
    if v.is_null() {
        return None;
    }
    if let Some(f) = v.as_f64() {
        return Some(f.max(0.0) as u64);
    }
    value_bytes(v).and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse::<f64>().ok())).map(|f| f as u64)
}

/// A `ZRANGE ... WITHSCORES` reply (flat in RESP2, pairs in RESP3) as `(id, score)`.
fn scored(reply: Value) -> Vec<(MessageId, u64)> {
    let mut flat = Vec::new();
    for v in reply.into_array() {
        match v {
            Value::Array(pair) => flat.extend(pair),
            v => flat.push(v),
        }
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(member), Some(score)) = (it.next(), it.next()) {
        if let (Some(id), Some(score)) = (value_bytes(member).and_then(|b| MessageId::parse_bytes(&b)), score_of(score))
        {
            out.push((id, score));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_read_from_resp2_and_resp3_replies() {
        let resp2 = Value::Array(vec!["5-1".into(), "1712000000000".into(), "6-0".into(), "1712000000500".into()]);
        let resp3 = Value::Array(vec![
            Value::Array(vec!["5-1".into(), Value::Double(1_712_000_000_000.0)]),
            Value::Array(vec!["6-0".into(), Value::Double(1_712_000_000_500.0)]),
        ]);
        let want = vec![(MessageId::new(5, 1), 1_712_000_000_000), (MessageId::new(6, 0), 1_712_000_000_500)];
        assert_eq!(scored(resp2), want);
        assert_eq!(scored(resp3), want);
        assert_eq!(score_of(Value::Null), None);
    }
}
