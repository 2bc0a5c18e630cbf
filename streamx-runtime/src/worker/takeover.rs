//! Take-overs: entries held by a member that stopped (crashed, lost its connection, was
//! killed) are claimed by another member of the group.
//!
//! - **Who is stopped**: a member whose own published deadline has passed (see
//!   [`super::heartbeat`]: each member promises to beat again within *its* `claim_idle`, so
//!   members with different settings judge each other right) and that has been silent in
//!   Redis for the taker's `claim_idle` too (its `XINFO CONSUMERS` idle time: no read, no
//!   claim). A member of an older version, with a last-beat time and no deadline, is
//!   judged by that time and the taker's `claim_idle`. The check and the claim run in one
//!   script, so two members never claim the same entries, and a member that is alive never
//!   loses an entry, however long its handler runs.
//! - **Cost**: per tick, `XINFO CONSUMERS` (O(members)) and, only when a member is stopped,
//!   a walk of *its* pending entries up to one claim (`concurrency + 32`, more while
//!   handlers keep up: see [`super::sizing`]) and at most [`MOST_EXAMINED`] entries per
//!   script, within the byte budget's room: never a walk of the group's PEL. Every list a
//!   script builds is paged (Lua's `unpack` limit), so a member of any size is taken over.
//! - **Counting runs, not deliveries**: the limit of `max_retries + 1` counts handler runs
//!   that are known to have started. A stopped member's entries may or may not have
//!   started, so the take-over keeps their count (the next run has the same attempt
//!   number) and *marks* them (`{stream}:takeovers:<group>`) until they settle. Only
//!   redeliveries pay for marks; a first delivery that settles normally costs nothing more.
//! - **Crash-loop isolation**: if a member dies holding marked entries, the mark pins the
//!   crash on them: they are *suspects*, moved (in one pass, paged) to the placeholder
//!   member [`SUSPECTS_CONSUMER`], whose pending list indexes them, and claimed from there
//!   one at a time (O(log n) each), each run alone on a permit taken before its claim and
//!   marked `i:<id>`. If its holder stops while holding it, the message crashed its worker
//!   running alone: it is marked `c:<id>`, that run is counted, and the next taker
//!   dead-letters it as `delivery_limit` without running it again. A message that merely
//!   sat beside a crasher (fetched in the same batch) runs alone once, succeeds, and is
//!   never charged for the crashes: a crash loop costs its neighbours nothing, at any
//!   `max_retries`, and a poison message crashes at most three workers (its first holder,
//!   its taker, and its run alone).
//! - **Reconciliation**: entries this member owns in Redis but does not hold in memory (a
//!   read whose reply was lost to a dropped connection, a restarted reader, a fixed
//!   member name reused after a crash) are taken over from itself once idle `claim_idle`,
//!   as a stopped member's would be.

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
use crate::handler::FailureKind;
use crate::inspect::parse_pending;
use crate::message::MessageId;
use crate::scripts::{
    assemble, CLAIM_BY_COUNT, CONSUMERS, DEAD_LETTER_ADD, DEAD_LETTER_TRIMMED, NOW_MS, PAGED, REDIS_PAUSED,
};
use crate::wire::RawEntry;
use tokio::sync::OwnedSemaphorePermit;

/// The consumer name under which crash suspects wait in the PEL (see the module docs). It
/// never reads; no take-over judges it.
pub const SUSPECTS_CONSUMER: &str = "streamx:suspects";

/// The most pending entries of stopped members one take-over script looks at (claimed,
/// moved to the suspects, or dead-lettered as trimmed): Redis serves nobody else while a
/// script runs, and Lua's `unpack` takes at most ~8,000 values. A script that stopped at it
/// says so, and the next one follows at once.
const MOST_EXAMINED: usize = 1000;

/// Takes over what stopped members hold (or the given ids of one member). Returns
/// `{[id, fields, count, suspect] per entry claimed, more}` (at most `limit` entries that
/// are not suspects and their byte cap, plus at most one suspect when asked; `more`: the
/// script stopped at a cap with work left) and the count of dead letters trimmed (see
/// [`crate::scripts::split_trimmed`]).
///
/// If the process dies before the script, nothing changed; Redis runs it whole or not at
/// all (but for an error part-way, which leaves every step done so far consistent: claims
/// and marks first, then moves, then the suspect). A re-sent script finds the entries
/// already moved and sets the same counts again.
pub(super) static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[
            crate::topic::fence::FENCE,
            NOW_MS,
            DEAD_LETTER_ADD,
            DEAD_LETTER_TRIMMED,
            CONSUMERS,
            CLAIM_BY_COUNT,
            PAGED,
            REDIS_PAUSED,
        ],
        r#"
-- KEYS: stream, schedule, heartbeats, marks, deadlines, [dead letters]
-- ARGV: group, me, scheduled consumer, claim_idle ms, limit, take a suspect (1/0),
--       victim ('' = every stopped member), dead-letter cap, suspects consumer, byte cap,
--       most rows examined, then explicit ids of the victim
local dlq = KEYS[6] or false
local cap = tonumber(ARGV[8])
local now = now_ms()
local stale = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local suspects = ARGV[9]
local bytes_left = tonumber(ARGV[10])
local most = tonumber(ARGV[11])
local out = {}
local taken = 0
local examined = 0
local more = false
local to_me = {}        -- count -> ids claimed for this member
local to_suspects = {}  -- count -> ids moved to the suspects
local marks_new = {}    -- marks to add: ids taken over, 'c:' ids that crashed alone
local marks_gone = {}   -- marks to remove

local function fields_of(id)
  local e = redis.call('XRANGE', KEYS[1], id, id)
  return e[1] and e[1][2]
end

local function add(t, n, id)
  t[n] = t[n] or {}
  table.insert(t[n], id)
end

-- The fields of the entries `ids` (in id order) that exist: one XRANGE over their span when
-- they are dense (they usually are: one read's worth), COUNT-bounded to twice their number
-- (so what the span brings beyond them is at most as much again); an id missing from a
-- span that came back short was deleted, one missing from a span cut at COUNT is looked up.
local function fields_of_all(ids)
  local fields = {}
  if #ids == 0 then return fields end
  local span = redis.call('XRANGE', KEYS[1], ids[1], ids[#ids], 'COUNT', 2 * #ids)
  local complete = #span < 2 * #ids
  for _, e in ipairs(span) do fields[e[1]] = e[2] end
  if not complete then
    for _, id in ipairs(ids) do
      if not fields[id] then fields[id] = fields_of(id) end
    end
  end
  return fields
end

-- Rows {id, owner, idle, count} of one stopped holder, in id order. Unmarked entries are
-- claimed for this member, their count kept (the holder may not have started them: that
-- delivery is not counted); marked ones are moved to the suspects, with one more run
-- counted if their holder ran them alone. Returns false once this call must stop.
local function take_rows(rows)
  if #rows == 0 then return true end
  local n = #rows
  local asked = {}
  for i, p in ipairs(rows) do asked[i] = p[1]; asked[n + i] = 'i:' .. p[1] end
  local marks = redis.call('SMISMEMBER', KEYS[4], unpack(asked))
  -- The unmarked entries this call may claim, and their fields.
  local wanted, looked = {}, {}
  for i, p in ipairs(rows) do
    if marks[i] == 0 and marks[n + i] == 0 and #wanted < limit - taken then
      table.insert(wanted, p[1])
      looked[p[1]] = true
    end
  end
  local fields = fields_of_all(wanted)
  for i, p in ipairs(rows) do
    local id, owner, count = p[1], p[2], p[4]
    local marked, alone = marks[i] == 1, marks[n + i] == 1
    if marked or alone then
      -- (Among this member's own lost entries, a run alone is not pinned: the reply of the
      -- script that claimed it may have been lost to a dropped connection, its run never
      -- started. A crashed predecessor under the same name gets one more run alone.)
      if alone and ARGV[7] == '' then
        -- It ran alone and its holder stopped meanwhile: it crashed its worker.
        add(to_suspects, count + 1, id)
        table.insert(marks_gone, asked[n + i])
        table.insert(marks_new, 'c:' .. id)
      else
        add(to_suspects, count, id)
        if alone then table.insert(marks_gone, asked[n + i]) end
      end
    else
      if taken >= limit then
        more = true
        return false
      end
      -- (An entry beyond those looked up: deleted ones among them left room for it.)
      local found = fields[id]
      if not found and not looked[id] then found = fields_of(id) end
      if not found then
        dead_letter_trimmed(KEYS[1], dlq, cap, ARGV[1], id, owner, count, now)
      else
        local size = 0
        for _, f in ipairs(found) do size = size + #f end
        -- Within the room the caller has (at least one entry): the rest wait.
        if taken > 0 and size > bytes_left then
          more = true
          return false
        end
        bytes_left = bytes_left - size
        add(to_me, count, id)
        table.insert(marks_new, id)
        taken = taken + 1
        table.insert(out, {id, found, count, 0})
      end
    end
    examined = examined + 1
    if examined >= most then
      more = true
      return false
    end
  end
  return true
end

-- Stopped: its own deadline passed (a member publishes it with each heartbeat: see the
-- heartbeat module), or for a member of an older version without one, no heartbeat for
-- claim_idle, or for a member that never beat, nothing at all; and silent in Redis for
-- claim_idle (no read, no claim): a live member whose heartbeats are held up (its command
-- connection reconnecting) still reads.
-- Nobody is, just after Redis itself stood still (see `redis_paused`).
local paused = redis_paused(KEYS[5], now, stale)
local function stopped(c)
  -- The owner of a topic shard (see the fence) holds its entries alone: every other member
  -- of the shard's group is an earlier owner, stopped or fenced out.
  if fenced_owner then return true end
  if paused or c.idle < stale then return false end
  local deadline = redis.call('ZSCORE', KEYS[5], c.name)
  if deadline then return now >= tonumber(deadline) end
  local beat = redis.call('ZSCORE', KEYS[3], c.name)
  return not beat or now - tonumber(beat) >= stale
end

if ARGV[7] ~= '' then
  local rows = {}
  for i = 12, #ARGV do
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[7])
    if p[1] then table.insert(rows, p[1]) end
  end
  take_rows(rows)
else
  for _, c in ipairs(consumers(KEYS[1], ARGV[1])) do
    if more then break end
    local name = c.name
    if c.pending > 0 and name ~= ARGV[2] and name ~= ARGV[3] and name ~= suspects and stopped(c) then
      local from = '-'
      repeat
        -- (A page the size of what may still be claimed, and a few more: marked entries
        -- among them move to the suspects; a holder of many suspects takes more pages.)
        local want = math.min(1000, most - examined, limit - taken + 16)
        local page = redis.call('XPENDING', KEYS[1], ARGV[1], from, '+', want, name)
        local go_on = take_rows(page)
        if #page > 0 then from = '(' .. page[#page][1] end
      until not go_on or #page < want
    end
  end
end

-- The claims and their marks, written before anything starts.
claim_by_count(KEYS[1], ARGV[1], ARGV[2], to_me)
-- The suspects' moves. XCLAIM drops an id whose entry was deleted from the stream (and
-- does not return it): such an entry becomes a `trimmed` dead letter right after (its
-- payload is gone; a failure in between loses only that record).
for n, ids in pairs(to_suspects) do
  local moved = {}
  for _, id in ipairs(claim_by_count(KEYS[1], ARGV[1], suspects, {[n] = ids})) do moved[id] = true end
  for _, id in ipairs(ids) do
    if not moved[id] then
      dead_letter_trimmed(KEYS[1], dlq, cap, ARGV[1], id, suspects, n, now)
      table.insert(marks_gone, id)
      table.insert(marks_gone, 'i:' .. id)
      table.insert(marks_gone, 'c:' .. id)
    end
  end
end
paged('SADD', KEYS[4], marks_new)
paged('SREM', KEYS[4], marks_gone)

-- One suspect to run alone (the oldest), marked 'i:' so that its run is pinned on it if
-- this member stops meanwhile; one that already crashed its worker alone ('c:') is taken
-- to be dead-lettered (flag 2), not run.
if ARGV[6] == '1' then
  for _ = 1, 16 do
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, suspects)[1]
    if not p then break end
    local found = fields_of(p[1])
    if found then
      claim_by_count(KEYS[1], ARGV[1], ARGV[2], {[p[4]] = {p[1]}})
      local crashed = redis.call('SMISMEMBER', KEYS[4], 'c:' .. p[1])[1] == 1
      if not crashed then redis.call('SADD', KEYS[4], 'i:' .. p[1]) end
      table.insert(out, {p[1], found, p[4], crashed and 2 or 1})
      break
    end
    dead_letter_trimmed(KEYS[1], dlq, cap, ARGV[1], p[1], suspects, p[4], now)
    redis.call('SREM', KEYS[4], p[1], 'i:' .. p[1], 'c:' .. p[1])
  end
end
return {{out, more and 1 or 0}, dlq_trimmed}
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

/// What one claim took: the entries, their charge, how many it asked for, whether the
/// script left work for another call at once, and the permit held for a suspect (given
/// back if none came).
struct TakenOver {
    claimed: Vec<Claimed>,
    charge: Charge,
    limit: usize,
    more: bool,
    suspect_permit: Option<OwnedSemaphorePermit>,
    /// A claim of this member's own entries (see [`lost_entries`]).
    own: bool,
}

/// Takes over what stopped members hold, and what this member owns but lost track of, until
/// the loop stops. A claim takes what can start soon (`concurrency + 32` entries, at most
/// [`MOST_EXAMINED`]; the heartbeat keeps them this member's while they wait), growing up
/// to 512 while handlers keep up (they finish as fast as they are dispatched, so suspects
/// left by this member's death would run quickly one at a time too) and falling back as
/// soon as a dispatch waits; when a claim was full, the next ones are sent at once and run
/// while this one is dispatched, so round trips overlap handler work. At most
/// `1 + CLAIMS_AHEAD` claims wait.
pub(crate) async fn run(shared: Arc<Shared>) {
    let claim_idle = shared.consumer.options.claim_idle;
    // Small claims, not read batches: every entry claimed is a crash suspect if this member
    // dies before it settles, so a taker that dies leaves at most `1 + CLAIMS_AHEAD` claims
    // of suspects (run one at a time by the next taker), however large `batch_size` is;
    // claims grow only while handlers keep up.
    let base = shared.slots.saturating_add(CLAIM_BEYOND_PERMITS).min(MOST_EXAMINED);
    let mut size = FetchSize::for_claims(base);
    let mut ticker = Ticker::new((claim_idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
    let isolating = Arc::new(Isolation::default());
    let mut next_reconcile = Instant::now() + jittered(claim_idle);
    let mut ahead: std::collections::VecDeque<PendingClaim> = std::collections::VecDeque::new();
    // A topic shard's owner takes over what earlier owners held at once, then lets the
    // reader start (see `Shared::caught_up`).
    let mut catching_up = !shared.caught_up.is_cancelled();
    // Catching up, but a crash suspect of an earlier owner still has to run alone first: the
    // loop waits for its end (or a tick) before claiming again.
    let mut awaiting_suspects = false;
    // While catching up, what the claims take waits here, to start in id order once every
    // earlier owner's entries are claimed (several earlier owners may each hold some of a
    // key's entries) and their crash suspects, older than anything else they held, have
    // run alone.
    let mut deferred: Vec<(RawEntry, u32)> = Vec::new();
    let mut deferred_charge: Option<Charge> = None;
    let mut claim_failed = false;
    if catching_up {
        // A topic shard this process owned before: what is still pending under its name
        // (read by its earlier loop on the shard, before any later owner) is taken up first,
        // all of it, in id order.
        super::ordering::take_up_own_pending(&shared).await;
    }
    loop {
        let claim = match ahead.pop_front() {
            Some(claim) => claim,
            None => {
                let wait = !catching_up || awaiting_suspects || std::mem::take(&mut claim_failed);
                if wait && !ticker.wait_or(&shared.stopping, &isolating.done).await {
                    return;
                }
                if shared.stopping.is_cancelled() {
                    return;
                }
                // Paused (see `crate::pause`): nothing is claimed, so nothing starts; a claim
                // already sent is dispatched through the dispatch's own pause gate.
                if !shared.pause().wait_resumed(&shared.stopping).await {
                    return;
                }
                if !catching_up && !shared.may_take_over() {
                    // Just after an outage every heartbeat looks stale: wait for peers to beat.
                    continue;
                }
                let own = if Instant::now() >= next_reconcile {
                    next_reconcile = Instant::now() + jittered(claim_idle);
                    lost_entries(&shared, claim_idle).await.unwrap_or_default()
                } else {
                    Vec::new()
                };
                // Rate-limited: at most one grant's worth per claim (granted before they start,
                // below), so what one claim takes starts together, close to its grant.
                let claim = shared.limiter.as_ref().map_or(size.current(), |l| size.current().min(l.most));
                let Some(room) = shared.budget.wait_room_for(claim, &shared.stopping).await else { break };
                // A suspect is claimed only with a permit in hand, so it starts the moment it
                // arrives: its run is counted if this member stops holding it.
                let suspect_permit = if isolating.running.load(Ordering::Acquire) {
                    None
                } else {
                    shared.permits.clone().try_acquire_owned().ok()
                };
                spawn_claim(&shared, room, suspect_permit, own)
            }
        };
        match claim.await {
            Ok(Ok(TakenOver { claimed, mut charge, limit, more, mut suspect_permit, own })) => {
                let taken = claimed.iter().filter(|c| !c.suspect).count();
                let full = taken >= limit || more;
                ticker.more(full);
                // Everything earlier owners held is claimed once a claim comes back short: the
                // reader starts after this claim's entries are dispatched (below).
                // (A claim of this member's own entries looks at no other member's.)
                let short = catching_up && !full && ahead.is_empty() && !own;
                while full && shared.limiter.is_none() && ahead.len() < CLAIMS_AHEAD && !shared.stopping.is_cancelled()
                {
                    let Some(room) = shared.budget.room_for(size.current()) else { break };
                    ahead.push_back(spawn_claim(&shared, room, None, Vec::new()));
                }
                if claimed.is_empty() && !catching_up {
                    size.after(limit, 0, false);
                    continue;
                }
                if !claimed.is_empty() {
                    tracing::info!(consumer = %shared.name, count = claimed.len(), "took over messages of a member that stopped");
                }
                super::dedupe::screen(&shared, claimed.iter().map(|c| &c.entry)).await;
                let (suspects, others): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|c| c.suspect);
                // Rate-limited: a suspect (its permit in hand) starts once granted; the others
                // are granted as they start (`rate::start_granted`), held meanwhile, pending
                // under this member, whose heartbeat goes on (a shutdown's drain hands them back).
                if !super::rate::grant_all(&shared, suspects.len()).await {
                    break;
                }
                for suspect in suspects {
                    let part = charge.split_for(&suspect.entry);
                    match suspect_permit.take() {
                        Some(permit) => isolate(&shared, suspect, permit, part, &isolating),
                        // Never: a suspect is asked for only with a permit. Left to the
                        // reconciliation, which takes it up again.
                        None => {
                            tracing::error!(consumer = %shared.name, id = %suspect.entry.id, "a suspect came without a permit")
                        }
                    }
                }
                // The permit held for a suspect that did not come goes back before the others
                // wait for permits.
                drop(suspect_permit);
                let mut work: Vec<(RawEntry, u32)> = others.into_iter().map(|c| (c.entry, c.count)).collect();
                let mut charge = charge;
                let mut caught_up = false;
                if catching_up {
                    deferred.append(&mut work);
                    match deferred_charge.as_mut() {
                        Some(all) => all.absorb(charge),
                        None => deferred_charge = Some(charge),
                    }
                    let suspects_waiting = isolating.running.load(Ordering::Acquire) || has_suspects(&shared).await;
                    // (Never so many wait that the budget has no room left for a claim: at most
                    // half of it.)
                    let room = shared.budget.used() < shared.settings.max_buffered_bytes / 2;
                    if (!short || suspects_waiting) && room {
                        awaiting_suspects = short && suspects_waiting;
                        size.after(limit, taken, false);
                        continue;
                    }
                    awaiting_suspects = false;
                    caught_up = short && !suspects_waiting;
                    deferred.sort_unstable_by_key(|(entry, _)| entry.id);
                    work = std::mem::take(&mut deferred);
                    let Some(all) = deferred_charge.take() else { continue };
                    charge = all;
                }
                let dispatched = super::rate::start_granted(&shared, work, charge).await;
                if caught_up {
                    catching_up = false;
                    shared.caught_up.cancel();
                }
                match dispatched {
                    dispatch::Dispatched::Stopped => break,
                    dispatch::Dispatched::Started { waited } => size.after(limit, taken, waited),
                }
            }
            Ok(Err(e)) => {
                if crate::error::is_no_group(&e) {
                    // The group is gone (Redis lost its data, or it was destroyed). A stream's
                    // reader recreates it; a topic shard's reader waits for this catch-up.
                    if shared.fence().is_some() {
                        let created =
                            super::ensure_group(&shared.command.get(), shared.stream(), shared.group(), "0").await;
                        if let Err(e) = created {
                            tracing::warn!(consumer = %shared.name, error = %e, "cannot recreate the group yet");
                        }
                    }
                } else {
                    tracing::warn!(consumer = %shared.name, error = %e, "take-over failed; trying again");
                }
                ticker.failed();
                // (Even while catching up, the next claim waits its tick.)
                claim_failed = true;
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

/// Clears the take-over marks of entries a topic shard's loop still holds when it gives the
/// shard up gracefully (rebalancing): it did not crash on them, so the next owner claims them
/// in order instead of running them alone as crash suspects. Fenced: a loop that lost the
/// shard clears nothing (the new owner's marks are its own). Crash safety: an SREM; re-sent,
/// it removes nothing more.
pub(super) static CLEAR_MARKS: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[crate::topic::fence::FENCE],
        r#"
-- KEYS: marks; ARGV: the marks to remove (at most 3,000: Lua's unpack limit is ~8,000)
if #ARGV == 0 then return 0 end
return redis.call('SREM', KEYS[1], unpack(ARGV))
"#,
    )
});

/// Clears the marks of `ids` (see [`CLEAR_MARKS`]), in pages; failures are logged (the next
/// owner then runs those entries alone, as suspects).
pub(super) async fn clear_marks(shared: &Shared, ids: &[MessageId]) {
    for page in ids.chunks(1000) {
        let mut keys = vec![shared.keys.marks.clone()];
        let mut args: Vec<String> = page.iter().flat_map(|id| marks_of(*id)).collect();
        crate::topic::fence::append_opt(shared.fence(), &mut keys, &mut args);
        let cleared: Result<Value, _> = CLEAR_MARKS.evalsha_with_reload(&shared.command.get(), keys, args).await;
        if let Err(e) = cleared {
            tracing::debug!(consumer = %shared.name, error = %e, "cannot clear the take-over marks of what this loop held");
            return;
        }
    }
}

/// Whether crash suspects wait in the group (pending under [`SUSPECTS_CONSUMER`]); on an
/// error, `true` (the caller asks again at its next tick).
async fn has_suspects(shared: &Shared) -> bool {
    let reply: Result<Value, _> =
        shared.command.get().xpending(shared.stream(), shared.group(), ("-", "+", 1u64, SUSPECTS_CONSUMER)).await;
    reply.map(|v| !parse_pending(v).is_empty()).unwrap_or(true)
}

/// Sends one take-over claim of at most `limit` entries (the room reserved for them in the
/// byte budget), and of one suspect if `suspect_permit` is given; its entries are tracked,
/// counted and charged the moment it returns.
fn spawn_claim(
    shared: &Arc<Shared>,
    (limit, reserved): (usize, Charge),
    suspect_permit: Option<OwnedSemaphorePermit>,
    own: Vec<MessageId>,
) -> PendingClaim {
    let shared = shared.clone();
    tokio::spawn(async move {
        let byte_cap = shared.budget.claim_bytes(&reserved);
        let (claimed, more) = take_over(&shared, limit, byte_cap, suspect_permit.is_some(), &own).await?;
        ConsumerStats::bump(&shared.stats.delivered, claimed.len() as u64);
        ConsumerStats::bump(&shared.stats.claimed, claimed.len() as u64);
        shared.metrics.taken_over(claimed.len());
        shared.track_claimed(claimed.iter().map(|c| c.entry.id), true);
        let charge = shared.budget.charge(claimed.iter().map(|c| &c.entry));
        drop(reserved); // the estimate gives way to what was claimed
        Ok(TakenOver { claimed, charge, limit, more, suspect_permit, own: !own.is_empty() })
    })
}

/// The suspect this member runs alone, if any.
#[derive(Default)]
struct Isolation {
    running: AtomicBool,
    /// Wakes the take-over loop when the suspect finished, so the next one starts at once.
    done: tokio::sync::Notify,
}

/// Runs one suspect alone, on the permit taken before its claim: no other suspect starts
/// here until its handler has finished.
fn isolate(
    shared: &Arc<Shared>,
    suspect: Claimed,
    permit: OwnedSemaphorePermit,
    charge: Charge,
    isolation: &Arc<Isolation>,
) {
    isolation.running.store(true, Ordering::Release);
    let task = if suspect.crashed {
        // Its count was raised when its holder was found stopped: the runs known to have
        // started are one fewer (its run alone among them).
        let (id, count) = (suspect.entry.id, suspect.count.saturating_sub(1).max(1));
        tracing::error!(consumer = %shared.name, %id, "a message crashed its worker when it ran alone; dead-lettering it");
        drop((suspect, charge));
        let shared = shared.clone();
        shared.clone().tasks.spawn(async move {
            shared.metrics.dead_lettered(FailureKind::DeliveryLimit);
            let reason = "its worker stopped while running it alone, after an earlier worker had stopped while \
                          running it (crash-loop isolation): it crashes its worker";
            dispatch::dead_letter(&shared, id, count, FailureKind::DeliveryLimit, reason, permit).await;
        })
    } else {
        tracing::warn!(consumer = %shared.name, id = %suspect.entry.id, attempt = suspect.count,
            "running a message alone: a member that held it stopped while it was taken over (crash-loop isolation)");
        // Ordered: its key counts it as running, so no later entry of the key starts beside
        // it (it is released when it settles).
        if let (Some(gate), Some(key)) = (&shared.gate, super::ordering::gated_key(shared, &suspect.entry)) {
            gate.force(&key);
        }
        dispatch::start(shared, suspect.entry, suspect.count, permit, charge)
    };
    let isolation = isolation.clone();
    shared.tasks.spawn(async move {
        let _ = task.await;
        isolation.running.store(false, Ordering::Release);
        isolation.done.notify_one();
    });
}

async fn take_over(
    shared: &Shared,
    limit: usize,
    byte_cap: usize,
    suspect: bool,
    own: &[MessageId],
) -> Result<(Vec<Claimed>, bool), fred::error::Error> {
    let options = &shared.consumer.options;
    let victim = if own.is_empty() { "" } else { shared.member_name() };
    let mut args: Vec<String> = vec![
        shared.group().to_string(),
        shared.member_name().to_string(),
        SCHEDULED_CONSUMER.to_string(),
        ms(options.claim_idle).to_string(),
        limit.min(MOST_EXAMINED).to_string(),
        if suspect { "1" } else { "0" }.to_string(),
        victim.to_string(),
        shared.dead_letter_cap_arg(),
        SUSPECTS_CONSUMER.to_string(),
        byte_cap.to_string(),
        MOST_EXAMINED.to_string(),
    ];
    args.extend(own.iter().take(MOST_EXAMINED).map(MessageId::to_string));
    let (keys, args) = shared.fenced_call(args);
    let client = shared.command.get();
    let result: Result<Value, _> = TAKE_OVER.evalsha_with_reload(&client, keys, args).await;
    match result {
        Ok(reply) => Ok(Claimed::parse_with_more(shared.note_trimmed(reply))),
        Err(e) => {
            shared.command_failed(&client, &e).await;
            Err(e)
        }
    }
}

/// Takes up `own`, entries pending under this member's name that it does not hold, at once
/// (whatever their idle time), and starts them through [`dispatch::start_queued`] (the key
/// gate of an ordered consumer): see [`super::ordering::take_up_own_pending`]. Those marked
/// as taken over go to the suspects, as in any take-over. False once the loop stops.
pub(crate) async fn take_up(shared: &Arc<Shared>, own: Vec<MessageId>) -> bool {
    let mut left = own;
    while !left.is_empty() {
        let wanted = left.len().min(MOST_EXAMINED);
        let Some((limit, reserved)) = shared.budget.wait_room_for(wanted, &shared.stopping).await else { return false };
        let byte_cap = shared.budget.claim_bytes(&reserved);
        let (claimed, more) = match take_over(shared, limit, byte_cap, false, &left[..wanted]).await {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(consumer = %shared.name, error = %e, "cannot take up own pending messages; the reconciliation takes them up later");
                return true;
            }
        };
        // Examined in id order: what a capped call left starts after its last claim.
        left = match (more, claimed.last()) {
            (true, Some(last)) => {
                let last = last.entry.id;
                left.into_iter().filter(|id| *id > last).collect()
            }
            (true, None) => left.split_off(wanted),
            (false, _) => left.split_off(wanted),
        };
        ConsumerStats::bump(&shared.stats.delivered, claimed.len() as u64);
        shared.track_claimed(claimed.iter().map(|c| c.entry.id), true);
        let charge = shared.budget.charge(claimed.iter().map(|c| &c.entry));
        drop(reserved);
        super::dedupe::screen(shared, claimed.iter().map(|c| &c.entry)).await;
        let work = claimed.into_iter().map(|c| (c.entry, c.count));
        if let dispatch::Dispatched::Stopped = dispatch::start_queued(shared, work, charge, None, None).await {
            return false;
        }
    }
    true
}

/// The marks an entry may carry in `{stream}:takeovers:<group>` (see the module docs): taken
/// over (its id), run alone (`i:<id>`), crashed its worker alone (`c:<id>`). All go when
/// it settles.
pub(crate) fn marks_of(id: MessageId) -> [String; 3] {
    [id.to_string(), format!("i:{id}"), format!("c:{id}")]
}

/// Entries this consumer owns in Redis, idle at least `claim_idle`, that it does not hold:
/// a walk of its own pending entries only (bounded by what one consumer holds).
async fn lost_entries(shared: &Shared, idle: Duration) -> Option<Vec<MessageId>> {
    let idle = ms(idle);
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
