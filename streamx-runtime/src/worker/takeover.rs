//! Take-overs: entries held by a consumer that stopped (crashed, lost its connection, was
//! killed) are claimed by another consumer of the group.
//!
//! - **Who is stopped**: a consumer that has been silent in Redis for `claim_idle` (its
//!   `XINFO CONSUMERS` idle time: no read, no claim) and whose heartbeat (see
//!   [`super::heartbeat`]), if it ever sent one, is older than `claim_idle` too. The check and the
//!   claim run in one script, so two consumers never claim the same entries, and a consumer
//!   that is alive never loses an entry, however long its handler runs.
//! - **Cost**: per tick, `XINFO CONSUMERS` (O(consumers)) and, only when a consumer is
//!   stopped, a walk of *its* pending entries up to one claim (`concurrency + 32`, more while
//!   handlers keep up: see [`super::sizing`]): never a
//!   walk of the group's PEL.
//! - **Counting**: a stopped consumer's entries may or may not have started, so the claim
//!   counts a delivery (`RETRYCOUNT count + 1`, absolute: a re-sent script cannot count
//!   twice). No message therefore runs more than `max_retries + 1` times; one that was on its
//!   last delivery when its consumer stopped is dead-lettered as `delivery_limit`.
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

use super::budget::Charge;
use super::dispatch::{self, Claimed};
use super::retries::{ms, SCHEDULED_CONSUMER};
use super::shared::Shared;
use super::sizing::FetchSize;
use super::stats::ConsumerStats;
use super::ticker::{jittered, Ticker};
use crate::inspect::parse_pending;
use crate::message::MessageId;
use crate::scripts::{assemble, CLAIM_BY_COUNT, CONSUMERS, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, NOW_MS};

/// Claims entries of stopped consumers (or the given ids of one consumer). Returns
/// `[id, fields, count, suspect]` per entry claimed (at most `limit` entries that are not
/// suspects, plus at most one suspect when allowed), and the count of dead letters trimmed
/// (see [`crate::scripts::split_trimmed`]).
pub(super) static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, CONSUMERS, CLAIM_BY_COUNT],
        r#"
-- KEYS: stream, schedule, heartbeats, marks, [dead letters]
-- ARGV: group, me, scheduled consumer, claim_idle ms, limit, may take a suspect (1/0),
--       victim ('' = every stopped consumer), dead-letter cap, then explicit ids of the
--       victim
local dlq = KEYS[5] or false
local cap = tonumber(ARGV[8])
local now = now_ms()
local stale = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local suspect_ok = ARGV[6] == '1'
local out = {}
local taken = 0
local by_count = {}

-- p: XPENDING rows {id, owner, idle, count}
local function take_page(rows)
  if #rows == 0 then return end
  local ids = {}
  for i, p in ipairs(rows) do ids[i] = p[1] end
  local marked = redis.call('SMISMEMBER', KEYS[4], unpack(ids))
  -- The entries' fields, in one XRANGE over the page's span when the ids are dense (they
  -- usually are: one read's worth); ids missing from a complete span were deleted.
  local fields = {}
  local span = redis.call('XRANGE', KEYS[1], ids[1], ids[#ids], 'COUNT', 2 * #ids)
  local complete = #span < 2 * #ids
  for _, e in ipairs(span) do fields[e[1]] = e[2] end
  for i, p in ipairs(rows) do
    local id, owner, count = p[1], p[2], p[4]
    local suspect = marked[i] == 1
    if suspect and not suspect_ok then
      -- left for a consumer that runs no suspect now
    elseif not suspect and taken >= limit then
      -- enough for this call
    else
      local found = fields[id]
      if not found and not complete then
        local e = redis.call('XRANGE', KEYS[1], id, id)
        if e[1] then found = e[1][2] end
      end
      if not found then
        dead_letter_trimmed(KEYS[1], dlq, cap, ARGV[1], id, owner, count, now)
        redis.call('SREM', KEYS[4], id)
      else
        local next = count + 1
        by_count[next] = by_count[next] or {}
        table.insert(by_count[next], id)
        if suspect then suspect_ok = false else taken = taken + 1 end
        table.insert(out, {id, found, next, suspect and 1 or 0})
      end
    end
  end
end

if ARGV[7] ~= '' then
  local rows = {}
  for i = 9, #ARGV do
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[7])
    if p[1] then table.insert(rows, p[1]) end
  end
  take_page(rows)
else
  for _, c in ipairs(consumers(KEYS[1], ARGV[1])) do
    if taken >= limit then break end
    local name = c.name
    if c.pending > 0 and name ~= ARGV[2] and name ~= ARGV[3] then
      -- Stopped: silent in Redis for claim_idle (no read, no claim) and, if it ever sent a
      -- heartbeat, no heartbeat for claim_idle either. A live consumer whose heartbeats are
      -- held up (its command connection reconnecting) still reads; one whose reads wait for
      -- long handlers still beats.
      local beat = redis.call('ZSCORE', KEYS[3], name)
      local stopped = c.idle >= stale and (not beat or now - tonumber(beat) >= stale)
      if stopped then
        local from = '-'
        local page_size = limit - taken + 16
        repeat
          local page = redis.call('XPENDING', KEYS[1], ARGV[1], from, '+', page_size, name)
          take_page(page)
          if #page > 0 then from = '(' .. page[#page][1] end
        until taken >= limit or #page < page_size
      end
    end
  end
end

-- The claims (fields came from XRANGE, so JUSTID), and the take-over marks, written
-- before anything starts.
local all = claim_by_count(KEYS[1], ARGV[1], ARGV[2], by_count)
if #all > 0 then redis.call('SADD', KEYS[4], unpack(all)) end
return {out, dlq_trimmed}
"#,
    )
});

/// Claims sent ahead while a claim is dispatched.
const CLAIMS_AHEAD: usize = 2;

/// A take-over claim takes `concurrency` plus this many entries at first (and less when the
/// byte budget is short), whatever the read batch size; more only while handlers keep up
/// (see [`FetchSize`]).
const CLAIM_BEYOND_PERMITS: usize = 32;

/// A claim in flight: its entries are tracked and charged to the byte budget as soon as its
/// reply arrives.
type PendingClaim = tokio::task::JoinHandle<Result<TakenOver, fred::error::Error>>;

/// What one claim took: the entries, their charge, and how many it asked for.
struct TakenOver {
    claimed: Vec<Claimed>,
    charge: Charge,
    limit: usize,
}

/// Takes over what stopped consumers hold, and what this consumer owns but lost track of,
/// until the loop stops. A claim takes what can start soon (`concurrency + 32` entries; the
/// heartbeat keeps them this consumer's while they wait), growing up to 512 while handlers
/// keep up (they finish as fast as they are dispatched, so suspects left by this consumer's
/// death would run quickly one at a time too) and falling back as soon as a dispatch waits;
/// when a claim was full, the next ones are sent at once and run while this one is
/// dispatched, so round trips overlap handler work. At most `1 + CLAIMS_AHEAD` claims wait.
pub(crate) async fn run(shared: Arc<Shared>) {
    let claim_idle = shared.consumer.options.claim_idle;
    // Small claims, not read batches: every entry claimed is a crash suspect if this consumer
    // dies before it settles, so a taker that dies leaves at most `1 + CLAIMS_AHEAD` claims of
    // suspects (run one at a time by the next taker), however large `batch_size` is; claims
    // grow only while handlers keep up.
    let mut size = FetchSize::for_claims(shared.slots.saturating_add(CLAIM_BEYOND_PERMITS));
    let mut ticker = Ticker::new((claim_idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
    let isolating = Arc::new(Isolation::default());
    let mut next_reconcile = Instant::now() + jittered(claim_idle);
    let mut ahead: std::collections::VecDeque<PendingClaim> = std::collections::VecDeque::new();
    loop {
        let claim = match ahead.pop_front() {
            Some(claim) => claim,
            None => {
                if !ticker.wait_or(&shared.stopping, &isolating.done).await {
                    return;
                }
                if !shared.may_take_over() {
                    // Just after an outage every heartbeat looks stale: wait for peers to beat.
                    continue;
                }
                let own = if Instant::now() >= next_reconcile {
                    next_reconcile = Instant::now() + jittered(claim_idle);
                    lost_entries(&shared).await.unwrap_or_default()
                } else {
                    Vec::new()
                };
                let Some(room) = shared.budget.wait_room_for(size.current(), &shared.stopping).await else { break };
                spawn_claim(&shared, room, !isolating.running.load(Ordering::Acquire), own)
            }
        };
        match claim.await {
            Ok(Ok(TakenOver { claimed, mut charge, limit })) => {
                let taken = claimed.iter().filter(|c| !c.suspect).count();
                let full = taken >= limit;
                ticker.more(full);
                while full && ahead.len() < CLAIMS_AHEAD && !shared.stopping.is_cancelled() {
                    let Some(room) = shared.budget.room_for(size.current()) else { break };
                    ahead.push_back(spawn_claim(&shared, room, false, Vec::new()));
                }
                if claimed.is_empty() {
                    size.after(limit, 0, false);
                    continue;
                }
                tracing::info!(consumer = %shared.name, count = claimed.len(), "took over messages of a consumer that stopped");
                let (suspects, others): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|c| c.suspect);
                for suspect in suspects {
                    let part = charge.split_for(&suspect.entry);
                    isolate(&shared, suspect, part, &isolating);
                }
                let work = others.into_iter().map(|c| (c.entry, c.count));
                match dispatch::start_queued(&shared, work, charge, None).await {
                    dispatch::Dispatched::Stopped => break,
                    dispatch::Dispatched::Started { waited } => size.after(limit, taken, waited),
                }
            }
            Ok(Err(e)) => {
                if !crate::error::is_no_group(&e) {
                    tracing::warn!(consumer = %shared.name, error = %e, "take-over failed; trying again");
                }
                ticker.failed();
            }
            Err(_) => tracing::error!(consumer = %shared.name, "a take-over task panicked; trying again"),
        }
    }
    // Stopping: a claim still in flight is awaited so what it took is tracked (and handed
    // back by the drain).
    for claim in ahead {
        let _ = claim.await;
    }
}

/// Sends one take-over claim of at most `limit` entries (the room reserved for them in the
/// byte budget); its entries are tracked, counted and charged the moment it returns.
fn spawn_claim(
    shared: &Arc<Shared>,
    (limit, reserved): (usize, Charge),
    suspect_ok: bool,
    own: Vec<MessageId>,
) -> PendingClaim {
    let shared = shared.clone();
    tokio::spawn(async move {
        let claimed = take_over(&shared, limit, suspect_ok, &own).await?;
        ConsumerStats::bump(&shared.stats.delivered, claimed.len() as u64);
        ConsumerStats::bump(&shared.stats.claimed, claimed.len() as u64);
        shared.metrics.taken_over(claimed.len());
        shared.track_claimed(claimed.iter().map(|c| c.entry.id), true);
        let charge = shared.budget.charge(claimed.iter().map(|c| &c.entry));
        drop(reserved); // the estimate gives way to what was claimed
        Ok(TakenOver { claimed, charge, limit })
    })
}

/// The suspect this consumer runs alone, if any.
#[derive(Default)]
struct Isolation {
    running: AtomicBool,
    /// Wakes the take-over loop when the suspect finished, so the next one starts at once.
    done: tokio::sync::Notify,
}

/// Runs one suspect alone: no other suspect starts here until its handler has finished.
fn isolate(shared: &Arc<Shared>, suspect: Claimed, charge: Charge, isolation: &Arc<Isolation>) {
    tracing::warn!(consumer = %shared.name, id = %suspect.entry.id, deliveries = suspect.count,
        "running a message alone: its last holder stopped while holding it (crash-loop isolation)");
    isolation.running.store(true, Ordering::Release);
    let (task_shared, isolation) = (shared.clone(), isolation.clone());
    shared.tasks.spawn(async move {
        let shared = task_shared;
        if let Some(permit) = dispatch::take_one_permit(&shared).await {
            let _ = dispatch::start(&shared, suspect.entry, suspect.count, permit, charge).await;
        }
        isolation.running.store(false, Ordering::Release);
        isolation.done.notify_one();
    });
}

async fn take_over(
    shared: &Shared,
    limit: usize,
    suspect_ok: bool,
    own: &[MessageId],
) -> Result<Vec<Claimed>, fred::error::Error> {
    let options = &shared.consumer.options;
    let victim = if own.is_empty() { "" } else { shared.member_name() };
    let mut args = vec![
        shared.group().to_string(),
        shared.member_name().to_string(),
        SCHEDULED_CONSUMER.to_string(),
        ms(options.claim_idle).to_string(),
        limit.to_string(),
        if suspect_ok { "1" } else { "0" }.to_string(),
        victim.to_string(),
        shared.dead_letter_cap_arg(),
    ];
    args.extend(own.iter().map(MessageId::to_string));
    let keys = shared.script_keys();
    let client = shared.command.get();
    let result: Result<Value, _> = TAKE_OVER.evalsha_with_reload(&client, keys, args).await;
    match result {
        Ok(reply) => Ok(Claimed::parse_all(shared.note_trimmed(reply))),
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
        client.xpending(shared.stream(), shared.group(), (idle, "-", "+", 1000u64, shared.member_name())).await;
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
