//! Consumer group management: create, delete, reset the position, remove a stopped
//! consumer (its pending entries handed to the others first).

use std::sync::LazyLock;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::scripts::Script;
use fred::types::Value;

use super::{command, text};
use crate::clock::redis_now_ms;
use crate::connection::{tool_client, RedisUrl};
use crate::error::{is_busy_group, Error, Result};
use crate::inspect::Inspector;
use crate::keys::{self, KeyKind};
use crate::message::MessageId;
use crate::scripts::{assemble, CLAIM_BY_COUNT, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, NOW_MS, PAGED};
use crate::wire::value_bytes;
use crate::worker::{SCHEDULED_CONSUMER, SUSPECTS_CONSUMER};

/// The most entries a count walks (XRANGE in pages of 1,000) before it answers "more than".
pub const MAX_COUNTED: u64 = 100_000;

/// A consumer active in Redis, or with a heartbeat, within this long looks alive:
/// [`GroupAdmin::remove_consumer`] refuses it unless forced. The engine's default
/// `claim_idle` (after which a silent member's entries are taken over) is 30 s.
pub const DEFAULT_ALIVE_WITHIN: Duration = Duration::from_secs(30);

/// Pending entries handed over per script by [`GroupAdmin::remove_consumer`].
const HAND_OVER_PAGE: u64 = 1000;

/// Destroys a group and its bookkeeping keys (retry schedule, heartbeats, take-over marks,
/// member deadlines; not the dead letters, which may hold other groups' letters and are
/// worth keeping). One script: a crash before it changes nothing, after it all is gone.
static DELETE_GROUP: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[],
        r#"
-- KEYS: stream, then the group's bookkeeping keys; ARGV: group
-- Returns {1 if the group existed, bookkeeping keys deleted}
local existed = 0
if redis.call('TYPE', KEYS[1]).ok == 'stream' then
  existed = redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
end
local deleted = 0
for i = 2, #KEYS do deleted = deleted + redis.call('DEL', KEYS[i]) end
return {existed, deleted}
"#,
    )
});

/// Hands up to a page of a consumer's pending entries to the group through the retry
/// schedule, due now, exactly as the engine parks a failed entry (see the worker's
/// `retries`): ZADD the ids to the schedule, then XCLAIM them to the placeholder consumer
/// keeping their delivery counts (`JUSTID RETRYCOUNT n`: the next attempt has the number
/// the interrupted one had plus one, as a promotion counts). An entry deleted from the
/// stream meanwhile becomes a `trimmed` dead letter in the default dead-letter stream. The
/// take-over marks of the moved ids go. When the consumer holds nothing more, the same
/// script deletes it (XGROUP DELCONSUMER) and its heartbeat and deadline: the check and the
/// delete are atomic, so an entry it read a moment before cannot be lost with it.
///
/// A crash before a page's script leaves that page with the consumer; the script runs
/// whole; after it, the page is in the schedule and any running member of the group
/// delivers it at its next promotion tick. Running it again continues where it stopped.
static HAND_OVER: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, CLAIM_BY_COUNT, PAGED],
        r#"
-- KEYS: stream, schedule, heartbeats, marks, deadlines, dead letters
-- ARGV: group, consumer, scheduled consumer, page size
-- Returns {moved, dead-lettered, 1 if the consumer was deleted}
local now = now_ms()
local page = tonumber(ARGV[4])
local rows = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', page, ARGV[2])
local due, by_count, unmarked = {}, {}, {}
local moved, lettered = 0, 0
for _, row in ipairs(rows) do
  local id, count = row[1], row[4]
  if redis.call('XRANGE', KEYS[1], id, id)[1] then
    table.insert(due, now)
    table.insert(due, id)
    by_count[count] = by_count[count] or {}
    table.insert(by_count[count], id)
    moved = moved + 1
  else
    dead_letter_trimmed(KEYS[1], KEYS[6], 0, ARGV[1], id, ARGV[2], count, now)
    lettered = lettered + 1
  end
  table.insert(unmarked, id)
  table.insert(unmarked, 'i:' .. id)
  table.insert(unmarked, 'c:' .. id)
end
-- The schedule first, then the moves to the placeholder (as the engine parks).
paged('ZADD', KEYS[2], due)
claim_by_count(KEYS[1], ARGV[1], ARGV[3], by_count)
paged('SREM', KEYS[4], unmarked)
local removed = 0
if not redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])[1] then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
  removed = 1
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('ZREM', KEYS[5], ARGV[2])
end
return {moved, lettered, removed}
"#,
    )
});

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStart {
    /// Every entry in the stream (`0`).
    Beginning,
    /// Only entries added from now on (`$`).
    End,
    /// Entries after this id (the id itself is taken as delivered).
    After(MessageId),
    /// Entries added at or after this time (Unix ms).
    Time(u64),
}

/// Where [`GroupAdmin::reset`] moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    /// Just after this id: the next delivery is the first entry after it.
    Id(MessageId),
    /// To this time (Unix ms): the next delivery is the first entry added at or after it.
    Time(u64),
    /// The beginning: every entry in the stream is delivered again.
    Earliest,
    /// The end: every entry in the stream is skipped.
    Latest,
    /// This long before now (on the Redis clock), like a [`Time`](Self::Time).
    Back(Duration),
}

/// A number of entries, counted exactly up to [`MAX_COUNTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryCount {
    /// Exactly this many.
    Exact(u64),
    /// More than this many (the count stopped there).
    MoreThan(u64),
}

impl std::fmt::Display for EntryCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryCount::Exact(n) => write!(f, "{n}"),
            EntryCount::MoreThan(n) => write!(f, "more than {n}"),
        }
    }
}

/// What a reset does (or did): where the group was and goes, and how many entries of the
/// stream that delivers again or skips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPlan {
    /// The group's last delivered id before the reset.
    pub from: Option<MessageId>,
    /// Its last delivered id after: the next delivery is the first entry after it.
    pub to: MessageId,
    /// Entries in the stream between the two positions that are delivered again (moving
    /// back).
    pub redelivered: EntryCount,
    /// Entries in the stream between the two positions that the group skips (moving
    /// forward).
    pub skipped: EntryCount,
    /// The ENTRIESREAD given with XGROUP SETID, so the group's lag stays right; `None` when
    /// it could not be counted within [`MAX_COUNTED`] (Redis then estimates the lag, or
    /// reports it unknown until the group catches up).
    pub entries_read: Option<u64>,
    /// Whether the reset was applied (false for a dry run).
    pub applied: bool,
}

/// What [`GroupAdmin::delete`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDeleted {
    /// Whether the group existed.
    pub existed: bool,
    /// How many of its bookkeeping keys existed and were deleted.
    pub keys_deleted: u64,
}

/// Why a consumer looks alive, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Milliseconds since it last read or claimed (XINFO CONSUMERS `idle`).
    pub idle_ms: u64,
    /// Milliseconds since its last heartbeat, if it beats (a streamx member does).
    pub heartbeat_age_ms: Option<u64>,
    /// Milliseconds until the deadline it promised to beat again by; negative when past.
    pub deadline_in_ms: Option<i64>,
    /// Entries it holds.
    pub pending: u64,
}

impl Liveness {
    /// True when it read, claimed or beat within `within`, or its promised deadline has not
    /// passed.
    pub fn looks_alive(&self, within: Duration) -> bool {
        let within = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        self.idle_ms < within
            || self.heartbeat_age_ms.is_some_and(|age| age < within)
            || self.deadline_in_ms.is_some_and(|left| left > 0)
    }
}

/// What [`GroupAdmin::remove_consumer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerRemoval {
    /// The group has no such consumer.
    NotFound,
    /// A placeholder of the engine (`streamx:scheduled`, `streamx:suspects`): never removed.
    Placeholder,
    /// The consumer looks alive and the removal was not forced; nothing changed.
    LooksAlive(Liveness),
    /// The consumer was removed after its pending entries were handed over.
    Removed {
        /// Entries moved to the retry schedule, due now.
        handed_over: u64,
        /// Entries deleted from the stream meanwhile, dead-lettered as `trimmed`.
        dead_lettered: u64,
    },
    /// The consumer kept taking entries while they were handed over (it is alive, the
    /// removal was forced): it was not removed; what it held was handed over.
    StillReading {
        /// Entries moved to the retry schedule, due now.
        handed_over: u64,
        /// Entries deleted from the stream meanwhile, dead-lettered as `trimmed`.
        dead_lettered: u64,
    },
}

/// Creates, deletes and resets consumer groups, and removes consumers.
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// use streamx_runtime::admin::{GroupAdmin, GroupStart, ResetTarget};
/// let admin = GroupAdmin::connect("redis://127.0.0.1:6379").await?;
/// admin.create("orders", "audit", GroupStart::Beginning, true).await?;
/// let plan = admin.plan_reset("orders", "audit", ResetTarget::Latest).await?;
/// if let Some(plan) = plan {
///     println!("would skip {} entries", plan.skipped);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GroupAdmin {
    client: Client,
}

/// What XINFO STREAM says about where a stream's entries are.
#[derive(Debug, Default)]
struct StreamFacts {
    length: u64,
    entries_added: Option<u64>,
    last_generated: Option<MessageId>,
    first: Option<MessageId>,
}

impl GroupAdmin {
    /// Connects to `url` (TLS files from the environment, as for the runtime).
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::with_client(tool_client(&RedisUrl::parse(url)?).await?))
    }

    /// Uses an existing client.
    pub fn with_client(client: Client) -> Self {
        GroupAdmin { client }
    }

    /// Creates `group` on `stream` starting at `start`; with `mkstream` an empty stream is
    /// created when there is none (else a missing stream is an error). Returns false when
    /// the group exists already (nothing changed). For [`GroupStart::After`] and
    /// [`GroupStart::Time`] the group's entries-read is given too, when it can be counted,
    /// so its lag is right from the start.
    pub async fn create(&self, stream: &str, group: &str, start: GroupStart, mkstream: bool) -> Result<bool> {
        let (id, entries_read) = match start {
            GroupStart::Beginning => ("0".to_string(), None),
            GroupStart::End => ("$".to_string(), None),
            GroupStart::After(id) => (id.to_string(), self.entries_read_at(stream, id).await?),
            GroupStart::Time(ms) => {
                let id = before_time(ms);
                (id.to_string(), self.entries_read_at(stream, id).await?)
            }
        };
        let mut args: Vec<Value> = vec!["CREATE".into(), stream.into(), group.into(), id.into()];
        if mkstream {
            args.push("MKSTREAM".into());
        }
        if let Some(n) = entries_read {
            args.extend(["ENTRIESREAD".into(), Value::from(n.min(i64::MAX as u64) as i64)]);
        }
        match command(&self.client, "XGROUP", stream, args).await {
            Ok(_) => Ok(true),
            Err(Error::Redis { source, .. }) if is_busy_group(&source) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `group` (XGROUP DESTROY: its position and pending entries list) and its
    /// bookkeeping keys: the retry schedule (scheduled retries are dropped with the group),
    /// heartbeats, take-over marks and member deadlines. The dead-letter stream stays. A
    /// consumer of the group still running creates the group again (at its start position),
    /// so stop them first.
    pub async fn delete(&self, stream: &str, group: &str) -> Result<GroupDeleted> {
        let mut keys = vec![stream.to_string()];
        keys.extend(
            KeyKind::all(group).into_iter().filter(|k| k.group().is_some()).map(|k| keys::derived_key(stream, k)),
        );
        let reply: Value = DELETE_GROUP
            .evalsha_with_reload(&self.client, keys, vec![group.to_string()])
            .await
            .map_err(|e| Error::redis("EVALSHA (group delete)", stream, e))?;
        let mut parts = reply.into_array().into_iter().map(|v| v.as_u64().unwrap_or(0));
        Ok(GroupDeleted { existed: parts.next().unwrap_or(0) > 0, keys_deleted: parts.next().unwrap_or(0) })
    }

    /// What resetting `group` to `to` would do, without doing it; `None` when the stream or
    /// the group does not exist. Costs XINFO STREAM, XINFO GROUPS and at most two counts of
    /// [`MAX_COUNTED`] entries each (none when the target is an end of the stream and the
    /// group's entries-read is known).
    pub async fn plan_reset(&self, stream: &str, group: &str, to: ResetTarget) -> Result<Option<ResetPlan>> {
        let Some(info) = Inspector::with_client(self.client.clone()).group(stream, group).await? else {
            return Ok(None);
        };
        let facts = self.stream_facts(stream).await?;
        let to = match to {
            ResetTarget::Id(id) => id,
            ResetTarget::Time(ms) => before_time(ms),
            ResetTarget::Earliest => MessageId::MIN,
            ResetTarget::Latest => facts.last_generated.unwrap_or(MessageId::MIN),
            ResetTarget::Back(d) => {
                let now = redis_now_ms(&self.client, stream).await?;
                before_time(now.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
            }
        };
        let after_target = self.count_after(stream, &facts, to).await?;
        let entries_read = match (after_target, facts.entries_added) {
            (EntryCount::Exact(after), Some(added)) => Some(added.saturating_sub(after)),
            _ => None,
        };
        let from = info.last_delivered_id;
        let moved = match (info.entries_read, entries_read) {
            (Some(now), Some(then)) => EntryCount::Exact(now.abs_diff(then)),
            _ => {
                let (lo, hi) = match from {
                    Some(from) if from > to => (to, from),
                    Some(from) => (from, to),
                    None => (MessageId::MIN, to),
                };
                self.count_between(stream, lo, hi).await?
            }
        };
        let back = from.is_some_and(|from| to < from);
        let none = EntryCount::Exact(0);
        Ok(Some(ResetPlan {
            from,
            to,
            redelivered: if back { moved } else { none },
            skipped: if back { none } else { moved },
            entries_read,
            applied: false,
        }))
    }

    /// Moves `group` to `to` (XGROUP SETID, with ENTRIESREAD when it could be counted) and
    /// returns what it did (see [`plan_reset`](Self::plan_reset)); `None` when the stream or
    /// the group does not exist. Only the position moves, but moving it back re-reads the
    /// entries after it, pending ones included: Redis gives a pending entry read again with
    /// `>` to its reader, with a delivery count of 1 (a consumer may then run an entry
    /// another one is still running, and a scheduled retry runs at once, its attempts
    /// counted afresh). Reset a group back while its pending list is empty, or its consumers
    /// are stopped.
    pub async fn reset(&self, stream: &str, group: &str, to: ResetTarget) -> Result<Option<ResetPlan>> {
        let Some(mut plan) = self.plan_reset(stream, group, to).await? else { return Ok(None) };
        let mut args: Vec<Value> = vec!["SETID".into(), stream.into(), group.into(), plan.to.to_string().into()];
        if let Some(n) = plan.entries_read {
            args.extend(["ENTRIESREAD".into(), Value::from(n.min(i64::MAX as u64) as i64)]);
        }
        command(&self.client, "XGROUP", stream, args).await?;
        plan.applied = true;
        Ok(Some(plan))
    }

    /// Whether `consumer` of `group` looks alive: its idle time, heartbeat and deadline, as
    /// [`Inspector::members`](crate::Inspector::members) reads them. `None` when the group
    /// has no such consumer.
    pub async fn liveness(&self, stream: &str, group: &str, consumer: &str) -> Result<Option<Liveness>> {
        let members = Inspector::with_client(self.client.clone()).members(stream, group).await?;
        Ok(members.into_iter().find(|m| m.name == consumer).map(|m| Liveness {
            idle_ms: m.idle_ms,
            heartbeat_age_ms: m.heartbeat_age_ms,
            deadline_in_ms: m.deadline_in_ms,
            pending: m.pending,
        }))
    }

    /// Removes `consumer` from `group`: unless `force`, only when it does not look alive
    /// (see [`Liveness::looks_alive`] with `alive_within`). Its pending entries are first
    /// handed to the group through the retry schedule, due now (a page of 1,000 per script,
    /// so a consumer holding any number works), and a running member of the group delivers
    /// them at its next promotion tick; then the consumer is deleted (XGROUP DELCONSUMER)
    /// with its heartbeat and deadline. A forced removal of a consumer that is in fact
    /// alive loses nothing (its entries are redelivered) but may run some twice.
    pub async fn remove_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        force: bool,
        alive_within: Duration,
    ) -> Result<ConsumerRemoval> {
        if consumer == SCHEDULED_CONSUMER || consumer == SUSPECTS_CONSUMER {
            return Ok(ConsumerRemoval::Placeholder);
        }
        let Some(liveness) = self.liveness(stream, group, consumer).await? else {
            return Ok(ConsumerRemoval::NotFound);
        };
        if !force && liveness.looks_alive(alive_within) {
            return Ok(ConsumerRemoval::LooksAlive(liveness));
        }
        let keys = vec![
            stream.to_string(),
            keys::retry_schedule(stream, group),
            keys::heartbeats(stream, group),
            keys::takeover_marks(stream, group),
            keys::member_deadlines(stream, group),
            keys::default_dead_letter_stream(stream),
        ];
        let args =
            vec![group.to_string(), consumer.to_string(), SCHEDULED_CONSUMER.to_string(), HAND_OVER_PAGE.to_string()];
        let (mut handed_over, mut dead_lettered) = (0, 0);
        // What it held at the start, page by page, and one page more: a consumer still
        // reading refills its list, and must not keep this loop going for ever.
        let rounds = liveness.pending / HAND_OVER_PAGE + 2;
        for _ in 0..rounds {
            let reply: Value = HAND_OVER
                .evalsha_with_reload(&self.client, keys.clone(), args.clone())
                .await
                .map_err(|e| Error::redis("EVALSHA (consumer hand-over)", stream, e))?;
            let mut parts = reply.into_array().into_iter().map(|v| v.as_u64().unwrap_or(0));
            handed_over += parts.next().unwrap_or(0);
            dead_lettered += parts.next().unwrap_or(0);
            if parts.next().unwrap_or(0) == 1 {
                return Ok(ConsumerRemoval::Removed { handed_over, dead_lettered });
            }
        }
        Ok(ConsumerRemoval::StillReading { handed_over, dead_lettered })
    }

    /// The entries-read of a group whose last delivered id is `id`: entries ever added up to
    /// it, when the entries after it can be counted.
    async fn entries_read_at(&self, stream: &str, id: MessageId) -> Result<Option<u64>> {
        let facts = self.stream_facts(stream).await?;
        Ok(match (self.count_after(stream, &facts, id).await?, facts.entries_added) {
            (EntryCount::Exact(after), Some(added)) => Some(added.saturating_sub(after)),
            _ => None,
        })
    }

    /// Entries in the stream after `id`: from XINFO STREAM when `id` is before the first
    /// entry or at or after the last, else counted.
    async fn count_after(&self, stream: &str, facts: &StreamFacts, id: MessageId) -> Result<EntryCount> {
        if facts.length == 0 || facts.last_generated.is_some_and(|last| id >= last) {
            return Ok(EntryCount::Exact(0));
        }
        if facts.first.is_some_and(|first| id < first) {
            return Ok(EntryCount::Exact(facts.length));
        }
        self.count_between(stream, id, MessageId::MAX).await
    }

    /// Entries with ids in `(lo, hi]`, counted up to [`MAX_COUNTED`] (XRANGE, 1,000 a page).
    async fn count_between(&self, stream: &str, lo: MessageId, hi: MessageId) -> Result<EntryCount> {
        let mut counted = 0u64;
        let mut after = lo;
        loop {
            let reply: Value = self
                .client
                .xrange(stream, format!("({after}"), hi.to_string(), Some(1000))
                .await
                .map_err(|e| Error::redis("XRANGE", stream, e))?;
            let ids: Vec<MessageId> = reply
                .into_array()
                .into_iter()
                .filter_map(|e| e.into_array().into_iter().next())
                .filter_map(|id| value_bytes(id).and_then(|b| MessageId::parse_bytes(&b)))
                .collect();
            counted += ids.len() as u64;
            match ids.last() {
                Some(last) if ids.len() == 1000 && *last < hi => {
                    if counted >= MAX_COUNTED {
                        return Ok(EntryCount::MoreThan(counted));
                    }
                    after = *last;
                }
                _ => return Ok(EntryCount::Exact(counted)),
            }
        }
    }

    async fn stream_facts(&self, stream: &str) -> Result<StreamFacts> {
        let reply: Value = match self.client.xinfo_stream(stream, false, None).await {
            Ok(reply) => reply,
            // No stream yet (a group created with MKSTREAM): nothing in it.
            Err(e) if e.details().contains("no such key") => return Ok(StreamFacts::default()),
            Err(e) => return Err(Error::redis("XINFO STREAM", stream, e)),
        };
        let mut facts = StreamFacts::default();
        let mut it = reply.into_array().into_iter();
        let id = |v: Value| value_bytes(v).and_then(|b| MessageId::parse_bytes(&b));
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match text(k).as_str() {
                "length" => facts.length = v.as_u64().unwrap_or(0),
                "entries-added" => facts.entries_added = v.as_u64(),
                "last-generated-id" => facts.last_generated = id(v),
                "first-entry" if !v.is_null() => facts.first = v.into_array().into_iter().next().and_then(id),
                _ => {}
            }
        }
        Ok(facts)
    }
}

/// The last id before `ms`: a group positioned there reads entries added at or after `ms`.
fn before_time(ms: u64) -> MessageId {
    match ms {
        0 => MessageId::MIN,
        ms => MessageId::new(ms - 1, u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_starts_just_before_its_first_millisecond() {
        assert_eq!(before_time(0), MessageId::MIN);
        assert_eq!(before_time(1000), MessageId::new(999, u64::MAX));
        assert!(before_time(1000) < MessageId::new(1000, 0));
    }

    #[test]
    fn liveness_needs_all_signs_quiet() {
        let quiet = Liveness { idle_ms: 60_000, heartbeat_age_ms: Some(60_000), deadline_in_ms: Some(-1), pending: 3 };
        let within = Duration::from_secs(30);
        assert!(!quiet.looks_alive(within));
        assert!(Liveness { idle_ms: 10, ..quiet }.looks_alive(within));
        assert!(Liveness { heartbeat_age_ms: Some(10), ..quiet }.looks_alive(within));
        assert!(Liveness { deadline_in_ms: Some(5), ..quiet }.looks_alive(within));
    }
}
