//! The consumers of a group as the engine sees them, for operators: each member's pending
//! entries and idle time (XINFO CONSUMERS), its last heartbeat and its liveness deadline
//! (the group's heartbeat and deadline sorted sets, see [`crate::keys`]), both against the
//! Redis clock; the engine's placeholder consumers told apart from real members.
//!
//! Handlers in flight are not here: the runtime keeps that figure in its own process (the
//! `streamx_handlers_in_flight` gauge) and publishes nothing of it to Redis.

use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::error::{Error, Result};
use crate::inspect::Inspector;
use crate::keys;
use crate::wire::value_bytes;
use crate::worker::{SCHEDULED_CONSUMER, SUSPECTS_CONSUMER};

/// What a consumer of a group is to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberRole {
    /// A consumer that reads and handles entries.
    Member,
    /// The placeholder [`SCHEDULED_CONSUMER`]: its pending entries wait in the retry schedule.
    RetrySchedule,
    /// The placeholder [`SUSPECTS_CONSUMER`]: entries suspected of crashing their worker,
    /// waiting to be run alone.
    Suspects,
}

impl MemberRole {
    /// The role of the consumer named `name`.
    pub fn of(name: &str) -> Self {
        match name {
            SCHEDULED_CONSUMER => MemberRole::RetrySchedule,
            SUSPECTS_CONSUMER => MemberRole::Suspects,
            _ => MemberRole::Member,
        }
    }

    /// `member`, `retry_schedule` or `suspects`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberRole::Member => "member",
            MemberRole::RetrySchedule => "retry_schedule",
            MemberRole::Suspects => "suspects",
        }
    }
}

/// One consumer of a group, with the engine's view of its liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The consumer name.
    pub name: String,
    /// A member, or one of the engine's placeholders.
    pub role: MemberRole,
    /// Entries it holds unacknowledged (XINFO CONSUMERS).
    pub pending: u64,
    /// Milliseconds since it last interacted with the group (XINFO CONSUMERS).
    pub idle_ms: u64,
    /// Milliseconds since its last heartbeat, by the Redis clock; `None` when it has none
    /// (a placeholder, a consumer that is not a streamx worker, or one that left).
    pub heartbeat_age_ms: Option<u64>,
    /// Milliseconds until the deadline it promised to be alive until (negative when the
    /// deadline has passed); `None` when it published none.
    pub deadline_in_ms: Option<i64>,
}

impl Inspector {
    /// The consumers of `group` on `stream`, in XINFO CONSUMERS order, each with its last
    /// heartbeat's age and its liveness deadline. Four commands whatever the group's size:
    /// XINFO CONSUMERS, TIME and one ZMSCORE on each of the heartbeat and deadline sets.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), streamx_runtime::Error> {
    /// use streamx_runtime::{Inspector, MemberRole};
    /// let inspector = Inspector::connect("redis://127.0.0.1:6379").await?;
    /// for m in inspector.members("orders", "billing").await? {
    ///     if m.role == MemberRole::Member {
    ///         println!("{}: {} pending, last beat {:?} ms ago", m.name, m.pending, m.heartbeat_age_ms);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn members(&self, stream: &str, group: &str) -> Result<Vec<MemberInfo>> {
        let consumers = self.consumers_and_placeholders(stream, group).await?;
        if consumers.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<Value> = consumers.iter().map(|c| Value::from(c.name.as_str())).collect();
        let now = crate::clock::redis_now_ms(&self.client, stream).await?;
        let beats = self.scores(&keys::heartbeats(stream, group), names.clone()).await?;
        let deadlines = self.scores(&keys::member_deadlines(stream, group), names).await?;
        Ok(consumers
            .into_iter()
            .enumerate()
            .map(|(i, c)| MemberInfo {
                role: MemberRole::of(&c.name),
                heartbeat_age_ms: beats.get(i).copied().flatten().map(|beat| now.saturating_sub(beat.max(0) as u64)),
                deadline_in_ms: deadlines.get(i).copied().flatten().map(|deadline| deadline - now as i64),
                name: c.name,
                pending: c.pending,
                idle_ms: c.idle_ms,
            })
            .collect())
    }

    /// The scores of `names` in the sorted set `key`, in order (`None` where absent).
    async fn scores(&self, key: &str, names: Vec<Value>) -> Result<Vec<Option<i64>>> {
        let command = CustomCommand::new_static("ZMSCORE", ClusterHash::Custom(keys::slot(key)), false);
        let mut args = Vec::with_capacity(names.len() + 1);
        args.push(Value::from(key));
        args.extend(names);
        let reply: Value = self.client.custom(command, args).await.map_err(|e| Error::redis("ZMSCORE", key, e))?;
        Ok(reply.into_array().into_iter().map(score).collect())
    }
}

/// A sorted-set score as Redis sends it (a bulk string, or a double over RESP3).
fn score(v: Value) -> Option<i64> {
    match v {
        Value::Double(d) => Some(d as i64),
        Value::Integer(i) => Some(i),
        other => value_bytes(other).and_then(|b| std::str::from_utf8(&b).ok()?.parse::<f64>().ok()).map(|d| d as i64),
    }
}
