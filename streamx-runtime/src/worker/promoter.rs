//! Promotes due retries out of the schedule kept by [`super::retries`]: every tick
//! (jittered), any consumer of the group with free permits and room in its byte budget
//! takes the due ids
//! (`ZRANGEBYSCORE ... LIMIT`: O(log n + due), never a walk of the PEL), claims them with
//! `RETRYCOUNT count + 1` (absolute, so a re-sent script cannot count twice; one XCLAIM per
//! count, see [`crate::scripts::CLAIM_BY_COUNT`]) and starts each at
//! once on a permit taken before the claim. Entries deleted from the stream meanwhile become
//! `trimmed` dead letters.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fred::types::scripts::Script;
use fred::types::Value;

use super::dispatch::{self, Claimed};
use super::retries::SCHEDULED_CONSUMER;
use super::shared::Shared;
use super::ticker::Ticker;
use crate::scripts::{assemble, CLAIM_BY_COUNT, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, NOW_MS, PAGED};

/// Claims up to `limit` due retries for this consumer, within a byte cap; returns
/// `{[id, fields, count, 0] per entry, more}` (`more`: due entries were left for the next
/// call) and the count of dead letters trimmed (see [`crate::scripts::split_trimmed`]).
pub(super) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[crate::topic::fence::FENCE, NOW_MS, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, CLAIM_BY_COUNT, PAGED],
        r#"
-- KEYS: stream, schedule, heartbeats, marks, deadlines, [dead letters]
-- ARGV: group, me, scheduled consumer, limit, dead-letter cap, byte cap
local dlq = KEYS[6] or false
local cap = tonumber(ARGV[5])
local bytes_left = tonumber(ARGV[6])
local now = now_ms()
local out = {}
local by_count = {}
local settled = {}
local more = false
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(due) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] and p[1][2] == ARGV[3] then
    local count = p[1][4]
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if found[1] then
      local size = 0
      for _, f in ipairs(found[1][2]) do size = size + #f end
      -- Within the room the caller has (at least one entry): the rest stay due.
      if #out > 0 and size > bytes_left then
        more = true
        break
      end
      bytes_left = bytes_left - size
      local next = count + 1
      by_count[next] = by_count[next] or {}
      table.insert(by_count[next], id)
      table.insert(out, {id, found[1][2], next, 0})
    else
      dead_letter_trimmed(KEYS[1], dlq, cap, ARGV[1], id, ARGV[3], count, now)
    end
  end
  table.insert(settled, id)
end
-- The claims first, then the schedule entries go: a script that failed between the two
-- leaves an entry scheduled (promoted again), never with the placeholder unscheduled.
claim_by_count(KEYS[1], ARGV[1], ARGV[2], by_count)
paged('ZREM', KEYS[2], settled)
if #due >= tonumber(ARGV[4]) then more = true end
return {{out, more and 1 or 0}, dlq_trimmed}
"#,
    )
});

/// The most due retries one promote script claims.
const MAX_PROMOTED: usize = 512;

/// Promotes due retries while the loop runs: each tick takes a permit (waiting its turn with
/// the reader), then as many more as are free, and room in the byte budget for as many
/// entries, and claims at most that many due entries, of at most the bytes reserved (the
/// script stops at the byte cap, so a few large retries never run beyond the budget
/// because many small entries set the average).
pub(crate) async fn run(shared: Arc<Shared>) {
    let initial = shared.consumer.options.retry.backoff.initial;
    let mut ticker = Ticker::new((initial / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)));
    while ticker.wait(&shared.stopping).await {
        let Some(permits) = dispatch::take_permits(&shared).await else { return };
        // At most one claim's worth per script (a batch consumer may have tens of thousands
        // of permits): Redis serves nobody else while a script runs. A full claim brings
        // the next tick forward.
        let wanted = permits.num_permits().min(MAX_PROMOTED);
        let (permits, (room, reserved)) = match shared.budget.room_for(wanted) {
            Some(room) => (permits, room),
            None => {
                // No room: give the permits back (handlers finishing free both), wait in
                // turn for room (waiters are served before new reads), then for permits.
                drop(permits);
                let Some(room) = shared.budget.wait_room_for(wanted, &shared.stopping).await else { return };
                let Some(permits) = dispatch::take_permits(&shared).await else { return };
                (permits, room)
            }
        };
        let limit = room.min(permits.num_permits()).min(MAX_PROMOTED);
        // Rate-limited (see `crate::rate_limit`): a grant first, with the permits in hand (so
        // what is granted starts at once), then a claim of no more than granted; what the
        // claim did not use goes back. (A tick with nothing due costs the grant and its
        // refund: two round trips more per tick, for rate-limited consumers only.)
        let grant = match shared.limiter.as_ref() {
            Some(limiter) => match super::rate::grant(&shared, limiter, limit, &shared.stopping).await {
                Some(g) => Some(g),
                None => return,
            },
            None => None,
        };
        let limit = grant.as_ref().map_or(limit, |g| g.count.min(limit));
        let args = vec![
            shared.group().to_string(),
            shared.member_name().to_string(),
            SCHEDULED_CONSUMER.to_string(),
            limit.to_string(),
            shared.dead_letter_cap_arg(),
            shared.budget.claim_bytes(&reserved).to_string(),
        ];
        let client = shared.command.get();
        let (keys, args) = shared.fenced_call(args);
        let result: Result<Value, _> = PROMOTE.evalsha_with_reload(&client, keys, args).await;
        match result {
            Ok(reply) => {
                let (claimed, more) = Claimed::parse_with_more(shared.note_trimmed(reply));
                ticker.more(more);
                let charge = shared.budget.charge(claimed.iter().map(|c| &c.entry));
                drop(reserved); // the estimate gives way to what was claimed
                super::dedupe::screen(&shared, claimed.iter().map(|c| &c.entry)).await;
                if let (Some(limiter), Some(g)) = (shared.limiter.as_ref(), grant) {
                    super::rate::refund(&shared, limiter, &g, claimed.len()).await;
                }
                dispatch::start_claimed(&shared, claimed, permits, charge);
            }
            Err(e) => {
                if !crate::error::is_no_group(&e) {
                    tracing::warn!(consumer = %shared.name, error = %e, "cannot take due retries; trying again");
                }
                shared.command_failed(&client, &e).await;
                ticker.failed();
            }
        }
    }
}
