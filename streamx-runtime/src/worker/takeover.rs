//! Take-overs: entries held by a consumer that stopped (crashed, lost its connection, was
//! killed) are claimed by another consumer of the group.
//!
//! - **Who is stopped**: a consumer whose heartbeat (see [`super::heartbeat`]) is older than
//!   `claim_idle`, or, for consumers that never sent one (not streamx, or from before
//!   heartbeats), whose `XINFO CONSUMERS` idle time exceeds `claim_idle`. The check and the
//!   claim run in one script, so two consumers never claim the same entries, and a consumer
//!   that is alive never loses an entry, however long its handler runs.
//! - **Cost**: per tick, `XINFO CONSUMERS` (O(consumers)) and, only when a consumer is
//!   stopped, a walk of *its* pending entries up to the number of free permits: never a
//!   walk of the group's PEL.
//! - **Counting**: a stopped consumer's entries may or may not have started, so the claim
//!   counts a delivery (`RETRYCOUNT count + 1`, absolute: a re-sent script cannot count twice)
//!   — except that an entry never taken over before is not pushed past `max_retries + 1`
//!   merely for being held at a crash.
//! - **Crash-loop isolation**: every entry taken over is marked (`{stream}:takeovers:<group>`)
//!   until it settles. If its new holder dies too, the mark pins the crash on it: marked
//!   entries are *suspects*, claimed one at a time and run alone, so a message that crashes
//!   its worker reaches `max_retries + 1` deliveries by itself (and is dead-lettered as
//!   `delivery_limit`) without dragging the entries around it along.
//! - **Reconciliation**: entries this consumer owns in Redis but does not hold in memory (a
//!   read whose reply was lost to a dropped connection, a restarted reader, a fixed
//!   consumer name reused after a crash) are taken over from itself once idle `claim_idle`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use fred::interfaces::StreamsInterface;
use fred::types::scripts::Script;
use fred::types::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::dispatch::{self, Claimed};
use super::retries::{ms, SCHEDULED_CONSUMER};
use super::shared::Shared;
use super::stats::ConsumerStats;
use super::ticker::{jittered, Ticker};
use crate::inspect::parse_pending;
use crate::message::MessageId;
use crate::scripts::{assemble, DEAD_LETTER_TRIMMED, NOW_MS};

/// Claims entries of stopped consumers (or the given ids of one consumer). Returns
/// `[id, fields, count, suspect]` per entry claimed.
static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, DEAD_LETTER_TRIMMED],
        r#"
-- KEYS: stream, schedule, heartbeats, marks, [dead letters]
-- ARGV: group, me, scheduled consumer, claim_idle ms, limit, may take a suspect (1/0),
--       max deliveries, victim ('' = every stopped consumer), then explicit ids of the victim
local dlq = KEYS[5] or false
local now = now_ms()
local stale = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local suspect_ok = ARGV[6] == '1'
local max = tonumber(ARGV[7])
local out = {}

local function take(id, owner, count)
  local suspect = redis.call('SISMEMBER', KEYS[4], id) == 1
  if suspect and not suspect_ok then return end
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if not found[1] then
    dead_letter_trimmed(KEYS[1], dlq, ARGV[1], id, owner, count, now)
    redis.call('SREM', KEYS[4], id)
    return
  end
  local next = count + 1
  if not suspect and next > max then next = max end
  if next < 1 then next = 1 end
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID', 'RETRYCOUNT', next)
  redis.call('SADD', KEYS[4], id)
  if suspect then suspect_ok = false end
  table.insert(out, {id, found[1][2], next, suspect and 1 or 0})
end

if ARGV[8] ~= '' then
  for i = 9, #ARGV do
    if #out >= limit then break end
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[8])
    if p[1] then take(p[1][1], ARGV[8], p[1][4]) end
  end
  return out
end

for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  if #out >= limit then break end
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if pending > 0 and name ~= ARGV[2] and name ~= ARGV[3] then
    local beat = redis.call('ZSCORE', KEYS[3], name)
    local stopped
    if beat then stopped = now - tonumber(beat) >= stale else stopped = idle >= stale end
    if stopped then
      local from = '-'
      repeat
        local page = redis.call('XPENDING', KEYS[1], ARGV[1], from, '+', limit + 16, name)
        for _, p in ipairs(page) do
          if #out >= limit then break end
          take(p[1], name, p[4])
          from = '(' .. p[1]
        end
      until #out >= limit or #page < limit + 16
    end
  end
end
return out
"#,
    )
});

/// Takes over what stopped consumers hold, and what this consumer owns but lost track of,
/// until the loop stops. Each tick waits for a permit (in turn with the reader) and claims
/// at most as many entries as it holds permits.
pub(crate) async fn run(shared: Arc<Shared>) {
    let claim_idle = shared.consumer.options.claim_idle;
    let mut ticker = Ticker::new((claim_idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
    let isolating = Arc::new(AtomicBool::new(false));
    let mut next_reconcile = Instant::now() + jittered(claim_idle);
    while ticker.wait(&shared.stopping).await {
        let own = if Instant::now() >= next_reconcile {
            next_reconcile = Instant::now() + jittered(claim_idle);
            match lost_entries(&shared).await {
                Some(ids) if !ids.is_empty() => ids,
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let Some(permits) = dispatch::take_permits(&shared).await else { return };
        let limit = permits.num_permits();
        let suspect_ok = !isolating.load(Ordering::Acquire);
        match take_over(&shared, limit, suspect_ok, &own).await {
            Ok(claimed) => {
                ticker.more(claimed.len() >= limit);
                if claimed.is_empty() {
                    continue;
                }
                tracing::info!(consumer = %shared.name, count = claimed.len(), "took over messages of a consumer that stopped");
                let (suspects, others): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|c| c.suspect);
                let mut permits = permits;
                for suspect in suspects {
                    // The script returns at most one suspect, and only when none runs here.
                    if let Some(permit) = permits.split(1) {
                        isolate(&shared, suspect, permit, &isolating);
                    }
                }
                dispatch::start_claimed(&shared, others, permits, true);
            }
            Err(e) => {
                if !crate::error::is_no_group(&e) {
                    tracing::warn!(consumer = %shared.name, error = %e, "take-over failed; trying again");
                }
                ticker.failed();
            }
        }
    }
}

/// Runs one suspect alone: no other suspect starts here until its handler has finished.
fn isolate(shared: &Arc<Shared>, suspect: Claimed, permit: OwnedSemaphorePermit, isolating: &Arc<AtomicBool>) {
    tracing::warn!(consumer = %shared.name, id = %suspect.entry.id, deliveries = suspect.count,
        "running a message alone: its last holder stopped while running it (crash-loop isolation)");
    isolating.store(true, Ordering::Release);
    ConsumerStats::bump(&shared.stats.delivered, 1);
    ConsumerStats::bump(&shared.stats.claimed, 1);
    shared.track_claimed(suspect.entry.id, suspect.count, true);
    let handler = dispatch::start(shared, suspect.entry, suspect.count, permit);
    let isolating = isolating.clone();
    shared.tasks.spawn(async move {
        let _ = handler.await;
        isolating.store(false, Ordering::Release);
    });
}

async fn take_over(
    shared: &Shared,
    limit: usize,
    suspect_ok: bool,
    own: &[MessageId],
) -> Result<Vec<Claimed>, fred::error::Error> {
    let options = &shared.consumer.options;
    let victim = if own.is_empty() { "" } else { shared.consumer_name() };
    let mut args = vec![
        shared.group().to_string(),
        shared.consumer_name().to_string(),
        SCHEDULED_CONSUMER.to_string(),
        ms(options.claim_idle).to_string(),
        limit.to_string(),
        if suspect_ok { "1" } else { "0" }.to_string(),
        options.retry.max_deliveries().to_string(),
        victim.to_string(),
    ];
    args.extend(own.iter().map(MessageId::to_string));
    let mut keys = shared.script_keys();
    keys.extend(shared.keys.dead_letters.clone());
    let client = shared.command.get();
    let result: Result<Value, _> = TAKE_OVER.evalsha_with_reload(&client, keys, args).await;
    match result {
        Ok(reply) => Ok(Claimed::parse_all(reply)),
        Err(e) => {
            shared.command_failed(&client, &e).await;
            Err(e)
        }
    }
}

/// Entries this consumer owns in Redis, idle at least `claim_idle`, that it does not hold:
/// a walk of its own pending entries only (bounded by what one consumer holds).
async fn lost_entries(shared: &Shared) -> Option<Vec<MessageId>> {
    let idle = ms(shared.consumer.options.claim_idle);
    let client = shared.command.get();
    let reply: Result<Value, _> =
        client.xpending(shared.stream(), shared.group(), (idle, "-", "+", 1000u64, shared.consumer_name())).await;
    let pending = match reply {
        Ok(v) => parse_pending(v),
        Err(e) => {
            if !crate::error::is_no_group(&e) {
                tracing::debug!(consumer = %shared.name, error = %e, "cannot list own pending entries");
            }
            return None;
        }
    };
    let lost: Vec<MessageId> = pending.into_iter().map(|p| p.id).filter(|id| !shared.is_tracked(*id)).collect();
    if !lost.is_empty() {
        tracing::warn!(consumer = %shared.name, count = lost.len(), "found pending messages of this consumer that it lost track of; taking them up again");
    }
    Some(lost)
}
