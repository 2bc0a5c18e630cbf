//! The durable retry schedule of a group: a sorted set of entry ids scored by the time their
//! next attempt is due (`{stream}:retries:<group>`), plus the entries themselves, kept in the
//! PEL under the placeholder consumer [`SCHEDULED_CONSUMER`] so no take-over touches them.
//!
//! - **Park**: a failed entry (or one handed back at shutdown) leaves this consumer for the
//!   schedule in one script: only if it is still this consumer's, ZADD its due time, then
//!   XCLAIM it to the placeholder (JUSTID, count set explicitly). A crash before the script
//!   leaves it with this consumer (taken over later); after it, the schedule has it.
//! - **Promote**: see [`super::promoter`], which takes due entries out of the schedule.

use std::time::Duration;

use fred::types::scripts::Script;
use fred::types::Value;
use std::sync::LazyLock;

use super::shared::Shared;
use crate::message::MessageId;
use crate::scripts::{assemble, CLAIM_BY_COUNT, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, NOW_MS, PAGED};

/// The consumer name under which scheduled retries wait in the PEL. It never reads; the
/// engine's take-overs skip it.
pub const SCHEDULED_CONSUMER: &str = "streamx:scheduled";

/// Parks entries in the schedule. Returns the ids it parked (the others were no longer
/// this consumer's) and the count of dead letters trimmed (see
/// [`crate::scripts::split_trimmed`]).
pub(super) static PARK: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[crate::topic::fence::FENCE, NOW_MS, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, CLAIM_BY_COUNT, PAGED],
        r#"
-- KEYS: stream, schedule, heartbeats, marks, deadlines, [dead letters]
-- ARGV: group, me, scheduled consumer, dead-letter cap, then per entry: id, delay ms,
--       'keep' or 'less' (the count, or one less: a delivery that never started)
local dlq = KEYS[6] or false
local cap = tonumber(ARGV[4])
local now = now_ms()
local parked = {}
local unmarked = {}
local due = {}
local by_count = {}
for i = 5, #ARGV, 3 do
  local id = ARGV[i]
  local mine = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if mine[1] then
    local count = mine[1][4]
    if ARGV[i + 2] == 'less' and count > 0 then count = count - 1 end
    if redis.call('XRANGE', KEYS[1], id, id)[1] then
      table.insert(due, now + tonumber(ARGV[i + 1]))
      table.insert(due, id)
      by_count[count] = by_count[count] or {}
      table.insert(by_count[count], id)
    else
      dead_letter_trimmed(KEYS[1], dlq, cap, ARGV[1], id, ARGV[2], count, now)
    end
    table.insert(parked, id)
    table.insert(unmarked, id)
    table.insert(unmarked, 'i:' .. id)
    table.insert(unmarked, 'c:' .. id)
  end
end
-- The schedule first, then the moves to the placeholder; the entries settled here, their
-- take-over and isolation marks go.
paged('ZADD', KEYS[2], due)
claim_by_count(KEYS[1], ARGV[1], ARGV[3], by_count)
paged('SREM', KEYS[4], unmarked)
return {parked, dlq_trimmed}
"#,
    )
});

/// One entry to park: its id, when its next attempt is due, and whether its delivery is
/// taken back from its count.
pub(crate) struct Parking {
    pub id: MessageId,
    pub delay: Duration,
    /// The delivery never started (handed back at shutdown): one less is counted, so its
    /// next attempt has the number this one had.
    pub unstarted: bool,
}

/// Parks `entries` in the schedule (see the module docs). Returns the ids parked; the others
/// were no longer this consumer's (taken over meanwhile). The script unpacks its lists into
/// single commands, so callers pass a bounded number of entries: one failed delivery, or a
/// page of the hand-back.
pub(crate) async fn park(shared: &Shared, entries: &[Parking]) -> Result<Vec<MessageId>, fred::error::Error> {
    let mut args = vec![
        shared.group().to_string(),
        shared.member_name().to_string(),
        SCHEDULED_CONSUMER.to_string(),
        shared.dead_letter_cap_arg(),
    ];
    for p in entries {
        args.push(p.id.to_string());
        args.push(ms(p.delay).to_string());
        args.push(if p.unstarted { "less" } else { "keep" }.to_string());
    }
    let client = shared.command.get();
    let (keys, args) = shared.fenced_call(args);
    let result: Result<Value, _> = PARK.evalsha_with_reload(&client, keys, args).await;
    match result {
        Ok(reply) => Ok(ids(shared.note_trimmed(reply))),
        Err(e) => {
            shared.command_failed(&client, &e).await;
            Err(e)
        }
    }
}

fn ids(reply: Value) -> Vec<MessageId> {
    if reply.is_null() {
        return Vec::new();
    }
    reply
        .into_array()
        .into_iter()
        .filter_map(|v| crate::wire::value_bytes(v).and_then(|b| MessageId::parse_bytes(&b)))
        .collect()
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
