//! Promotes due retries out of the schedule kept by [`super::retries`]: every tick
//! (jittered), any consumer of the group with free permits takes the due ids
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
use crate::scripts::{assemble, CLAIM_BY_COUNT, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, NOW_MS};

/// Claims up to `limit` due retries for this consumer; returns `[id, fields, count, 0]` per
/// entry, and the count of dead letters trimmed (see [`crate::scripts::split_trimmed`]).
pub(super) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, CLAIM_BY_COUNT],
        r#"
-- KEYS: stream, schedule, heartbeats, marks, [dead letters]
-- ARGV: group, me, scheduled consumer, limit, dead-letter cap
local dlq = KEYS[5] or false
local cap = tonumber(ARGV[5])
local now = now_ms()
local out = {}
local by_count = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(due) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] and p[1][2] == ARGV[3] then
    local count = p[1][4]
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if found[1] then
      local next = count + 1
      by_count[next] = by_count[next] or {}
      table.insert(by_count[next], id)
      table.insert(out, {id, found[1][2], next, 0})
    else
      dead_letter_trimmed(KEYS[1], dlq, cap, ARGV[1], id, ARGV[3], count, now)
    end
  end
end
-- The claims first, then the schedule entries go: a script that failed between the two
-- leaves an entry scheduled (promoted again), never with the placeholder unscheduled.
claim_by_count(KEYS[1], ARGV[1], ARGV[2], by_count)
if #due > 0 then redis.call('ZREM', KEYS[2], unpack(due)) end
return {out, dlq_trimmed}
"#,
    )
});

/// The most due retries one promote script claims.
const MAX_PROMOTED: usize = 512;

/// Promotes due retries while the loop runs: each tick takes a permit (waiting its turn with
/// the reader), then as many more as are free, and claims at most that many due entries.
pub(crate) async fn run(shared: Arc<Shared>) {
    let initial = shared.consumer.options.retry.backoff.initial;
    let mut ticker = Ticker::new((initial / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)));
    while ticker.wait(&shared.stopping).await {
        let Some(permits) = dispatch::take_permits(&shared).await else { return };
        // At most one claim's worth per script (a batch consumer may have tens of thousands
        // of permits): Redis serves nobody else while a script runs. A full claim brings
        // the next tick forward.
        let limit = permits.num_permits().min(MAX_PROMOTED);
        let args = vec![
            shared.group().to_string(),
            shared.member_name().to_string(),
            SCHEDULED_CONSUMER.to_string(),
            limit.to_string(),
            shared.dead_letter_cap_arg(),
        ];
        let client = shared.command.get();
        let result: Result<Value, _> = PROMOTE.evalsha_with_reload(&client, shared.script_keys(), args).await;
        match result {
            Ok(reply) => {
                let claimed = Claimed::parse_all(shared.note_trimmed(reply));
                ticker.more(claimed.len() >= limit);
                let charge = shared.budget.charge(claimed.iter().map(|c| &c.entry));
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
