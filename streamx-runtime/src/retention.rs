//! Safe retention: trimming a stream without deleting an entry that any consumer group still
//! needs, by a trimmer task per stream (one at a time across processes, under a lease), and
//! the safe trim of [`PublishOptions::max_len_acked`](crate::PublishOptions::max_len_acked).
//!
//! An entry is *needed* while some group of the stream has not read it (it lies beyond the
//! group's last-delivered id) or has read it and not acknowledged it (it is pending, parked
//! for a retry included). Needed entries are never trimmed by [`Retention`] (unless
//! [`drop_unread`](Retention::drop_unread)), whatever `max_len` and `max_age` ask. The
//! dead-letter stream is another key and is never touched by the trimmer.
//!
//! One script does the work, reading at most [`TRIM_CHUNK`] entries per call (a call
//! that trimmed from a full chunk is followed at once by another), so its cost is bounded by
//! the chunk and the number of groups and consumers, never by the stream's length:
//! - it computes the *floor*, the oldest id some group needs (`XINFO GROUPS`: the id right
//!   after each group's last-delivered id; and, without `ACKED`, each group's oldest pending
//!   id from the `XPENDING` summary);
//! - it reads the oldest entries below both the floor and the bound `max_len` / `max_age` ask
//!   for (`XRANGE - (<bound> COUNT <chunk>`) and trims up to the last of them
//!   (`XTRIM MINID <last + 1>`).
//!
//! Servers with `XACKDEL` (Redis 8.2+, see [`crate::Capabilities`]) delete the entries read
//! with `XDELEX ... ACKED IDS` (falling back to `XTRIM MINID <last + 1> ACKED` where it is
//! refused): entries still pending in some group are skipped and kept, and acknowledged ones
//! behind them go. The trimmer's next call reads on after the last entry read (a cursor kept
//! until a read reaches the end), so a run of pending entries longer than a chunk does not
//! hide the acknowledged ones behind it. Without it (Redis 7.x, Valkey 8), the floor stops at
//! the oldest pending entry: acknowledged entries behind it wait until it is acknowledged.
//!
//! Why not `XTRIM MAXLEN ~ n ACKED`, the obvious native form: on Redis 8.2.3 (checked) `~`
//! with `ACKED` or `DELREF` never deletes anything, even on a stream without groups
//! (redis/redis#14656, fixed upstream by #14623); the exact form `MAXLEN n ACKED` works but walks
//! every entry it would trim on every call (46 ms on a 1,000,000-entry stream whose only group
//! is behind). Bounding the exact form by a chunk read first keeps both the semantics and a
//! bounded cost.
//!
//! Ids are compared as (ms, seq) decimal strings in Lua,
//! never as numbers (a Lua number loses the low bits of ids above 2^53).

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use fred::types::scripts::Script;
use fred::types::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::capabilities::Capabilities;
use crate::connection::HealingClient;
use crate::consumer::Consumer;
use crate::error::{Error, Result};
use crate::keys;
use crate::lease::TAKE_LEASE;
use crate::scripts::{assemble, IDS, NOW_MS};

/// How often a trimmer runs by default (jittered by ±20%, so the trimmers of several streams
/// and processes do not run in step).
pub const DEFAULT_TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// The most entries one call of the 7.x trim reads and deletes (`XRANGE ... COUNT`), and the
/// `LIMIT` of the native trim.
pub const TRIM_CHUNK: u64 = 1000;

/// How long a trimmer's lease lasts without renewal: another process takes over this long
/// after the holder died (at once after a graceful shutdown, which releases it).
pub const TRIM_LEASE: Duration = Duration::from_secs(5);

/// The most calls one tick makes while each trims a full chunk (catching up a backlog of
/// acknowledged entries without holding Redis for long in any one call).
const MAX_CALLS_PER_TICK: usize = 100;

/// How a consumer's stream is trimmed: keep at most about [`max_len`](Self::max_len) entries
/// and none older than [`max_age`](Self::max_age), except the entries some group still needs
/// (not read, or read and not acknowledged), which are all kept (see the module docs).
///
/// ```
/// use std::time::Duration;
/// use streamx_runtime::{Consumer, Message, Retention};
///
/// async fn audit(_: Message<serde_json::Value>) {}
///
/// let week = Retention::new().max_len(1_000_000).max_age(Duration::from_secs(7 * 24 * 3600));
/// let consumer = Consumer::new("orders", "audit", audit).retention(week);
/// assert_eq!(consumer.options().retention, Some(week));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Retention {
    max_len: Option<u64>,
    max_age: Option<Duration>,
    drop_unread: bool,
}

impl Retention {
    /// No bound: nothing is trimmed until [`max_len`](Self::max_len) or
    /// [`max_age`](Self::max_age) is set.
    pub const fn new() -> Self {
        Retention { max_len: None, max_age: None, drop_unread: false }
    }

    /// Keeps at most about `len` entries (plus every entry a group still needs).
    pub const fn max_len(mut self, len: u64) -> Self {
        self.max_len = Some(len);
        self
    }

    /// Keeps no entry older than `age` (judged by the time in its id, which Redis sets when it
    /// adds the entry), except those a group still needs.
    pub const fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// **Deletes entries no group has read.** `true` trims like `MAXLEN ~` / `MINID ~` on
    /// every publish does: a hard bound on the stream, which silently drops what a slow or
    /// stopped group has not read yet (and entries pending in a group: their handler then gets
    /// nothing, and they become dead letters of kind `trimmed`). Default `false`.
    pub const fn drop_unread(mut self, drop: bool) -> Self {
        self.drop_unread = drop;
        self
    }

    /// The length bound, if any.
    pub const fn len_bound(&self) -> Option<u64> {
        self.max_len
    }

    /// The age bound, if any.
    pub const fn age_bound(&self) -> Option<Duration> {
        self.max_age
    }

    /// Whether entries still needed may be deleted (see [`drop_unread`](Self::drop_unread)).
    pub const fn drops_unread(&self) -> bool {
        self.drop_unread
    }

    /// The tighter of two retentions of one stream: the smaller of each bound.
    fn tightest(self, other: Retention) -> Retention {
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let max_age = match (self.max_age, other.max_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Retention { max_len: min(self.max_len, other.max_len), max_age, drop_unread: self.drop_unread }
    }
}

/// What a runtime's trimmer of one stream does: the tightest retention of the stream's
/// consumers in that runtime (a consumer with `delete_on_ack` counts as `max_len(0)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrimPlan {
    pub stream: String,
    pub retention: Retention,
}

/// The trim plans of `consumers`: one per stream where some consumer has a retention or
/// `delete_on_ack`. Consumers of one stream that disagree on `drop_unread` are refused: one
/// asks for a hard bound, the other for the promise that nothing needed is trimmed.
pub(crate) fn plans(consumers: &[Consumer]) -> Result<Vec<TrimPlan>> {
    let mut by_stream: BTreeMap<&str, (Retention, &Consumer)> = BTreeMap::new();
    for c in consumers {
        let o = &c.options;
        let own = match (o.retention, o.delete_on_ack) {
            (Some(r), false) => r,
            (Some(r), true) => r.max_len(0),
            (None, true) => Retention::new().max_len(0),
            (None, false) => continue,
        };
        match by_stream.get_mut(c.stream()) {
            None => {
                by_stream.insert(c.stream(), (own, c));
            }
            Some((merged, first)) => {
                if merged.drop_unread != own.drop_unread {
                    return Err(Error::InvalidConsumer {
                        consumer: c.name().to_string(),
                        reason: format!(
                            "its retention of stream `{}` has drop_unread({}) but consumer `{}` (at {}) has \
                             drop_unread({}): the consumers of one stream must agree on whether unread entries may \
                             be trimmed",
                            c.stream(),
                            own.drop_unread,
                            first.name(),
                            first.location(),
                            merged.drop_unread
                        ),
                    });
                }
                *merged = merged.tightest(own);
            }
        }
    }
    Ok(by_stream
        .into_iter()
        .map(|(stream, (retention, _))| TrimPlan { stream: stream.to_string(), retention })
        .collect())
}

/// `safe_trim(stream, max_len, max_age, chunk, now, acked, from)`:
/// the safe trim (see the module docs), returning `{deleted, full, cursor}` (`full`: a chunk
/// was trimmed, more may wait; `cursor`: where the next call's reads start, see [`TRIM`]).
const SAFE_TRIM: &str = r#"
-- The oldest id some group needs: the id after the group's last-delivered id, or with
-- `pending` its oldest pending id if older; the minimum over the groups. False when no group
-- needs anything (no groups).
local function floor_of(stream, pending)
  local floor = false
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local row = {}
    for i = 1, #g, 2 do row[g[i]] = g[i + 1] end
    local need = next_id(row['last-delivered-id'])
    if pending and tonumber(row['pending']) > 0 then
      local oldest = redis.call('XPENDING', stream, row['name'])[2]
      if oldest and id_less(oldest, need) then need = oldest end
    end
    if not floor or id_less(need, floor) then floor = need end
  end
  return floor
end
-- Trims what is below `upper` (exclusive; false: no bound), among the `count` oldest entries
-- after `from` (exclusive; '-': from the start): reads them, then, with `acked` (XACKDEL
-- servers), deletes those no group needs among them (`XDELEX ... ACKED IDS`: pending and
-- unread ones are kept), else XTRIM MINID right after the last. Returns {deleted, read,
-- last id read}. Without `acked`, `from` is always '-': the floor already stops at the
-- oldest pending entry, and everything below it may go.
local function trim_below(stream, from, upper, count, acked)
  if count <= 0 or upper == '0-0' then return {0, 0, false} end
  local start = '-'
  if from ~= '-' then start = '(' .. from end
  local rows
  if upper then
    rows = redis.call('XRANGE', stream, start, '(' .. upper, 'COUNT', count)
  else
    rows = redis.call('XRANGE', stream, start, '+', 'COUNT', count)
  end
  if #rows == 0 then return {0, 0, false} end
  local last = rows[#rows][1]
  if acked then
    -- XDELEX is named by concatenation, as XACKDEL in the dedupe ack script: the start-up
    -- permission check must not demand it on servers without it. Refused (an ACL without
    -- +xdelex, a server without it): the trim of the whole range, skipping pending entries.
    local ids = {}
    for i, row in ipairs(rows) do ids[i] = row[1] end
    local codes = redis.pcall('XDEL' .. 'EX', stream, 'ACKED', 'IDS', #ids, unpack(ids))
    if type(codes) == 'table' and not codes.err then
      local deleted = 0
      for _, c in ipairs(codes) do if c == 1 then deleted = deleted + 1 end end
      return {deleted, #rows, last}
    end
    return {redis.call('XTRIM', stream, 'MINID', next_id(last), 'ACKED'), #rows, last}
  end
  return {redis.call('XTRIM', stream, 'MINID', next_id(last)), #rows, last}
end
-- Keeps at most about `max_len` entries (-1: no bound) and none older than `max_age` ms
-- (-1: none), except what a group needs; at most `chunk` entries read per bound. With
-- `acked` (XACKDEL servers) the floor leaves out pending entries and XDELEX ... ACKED skips
-- them instead; the reads start after `from` (a cursor: '-', or the last id a previous
-- call read), so a run of pending entries longer than a chunk at the head of the stream
-- does not hide the acknowledged entries behind it. Without `acked`, the floor stops at the
-- oldest pending entry (`from` must be '-').
-- Returns {deleted, full, cursor}: `full`, a whole chunk was read and some deleted (more may
-- wait); `cursor`, with `acked`, the id to start the next call after when a read was full
-- (the entries up to it were looked at), else '-' (start again from the head).
local function safe_trim(stream, max_len, max_age, chunk, now, acked, from)
  local floor = floor_of(stream, not acked)
  if not acked then from = '-' end
  local deleted, full = 0, 0
  local cursor = false
  local function account(r, count)
    deleted = deleted + r[1]
    if r[2] >= chunk and r[1] > 0 then full = 1 end
    if acked and count > 0 and r[2] >= count and (not cursor or id_less(r[3], cursor)) then cursor = r[3] end
  end
  if max_age >= 0 and now - max_age > 0 then
    local upper = string.format('%d', now - max_age) .. '-0'
    if floor and id_less(floor, upper) then upper = floor end
    account(trim_below(stream, from, upper, chunk, acked), chunk)
  end
  if max_len >= 0 then
    local count = math.min(redis.call('XLEN', stream) - max_len, chunk)
    account(trim_below(stream, from, floor, count, acked), count)
  end
  return {deleted, full, cursor or '-'}
end
"#;

/// One call of a stream's trimmer, under its lease.
///
/// - Lease: `GET` the lease; another holder's → nothing is trimmed (`{0, 0, 0, '-'}`). Else the
///   lease is set (or renewed) to this holder for ARGV[2] ms, in the same script as the trim,
///   so two processes never trim one stream at the same moment (a trim itself is safe either
///   way: each computes what is needed from the state it runs on).
/// - Mode `acked` (XACKDEL servers) and `floor`: `safe_trim` (see the module docs). Mode
///   `unsafe` (`drop_unread`): `XTRIM ... ~ ... LIMIT chunk`, whole nodes, needed or not.
///
/// Crash safety: a process that dies before the script changed nothing; during, Redis runs it
/// whole (it may be killed only before its first write); after, the lease expires
/// [`TRIM_LEASE`] later and another process takes over. Re-sent by the client after a
/// reconnect: the same holder renews its own lease and trims again from the state it finds,
/// which deletes nothing a group needs (it recomputes the floor; `XDELEX ... ACKED` keeps
/// what is pending), so running twice is safe. The cursor (ARGV[7]) only says where to read:
/// a stale or lost one makes a call look at entries again or skip some until the next pass
/// from the head, never delete a needed one.
static TRIM: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, IDS, TAKE_LEASE, SAFE_TRIM],
        r#"
-- KEYS: stream, lease
-- ARGV: holder, lease ms, mode ('acked' | 'floor' | 'unsafe'), max_len (-1: none),
--       max_age ms (-1: none), chunk, cursor ('-' or the id the last call's reads ended at)
-- Returns {1 if this holder has the lease, entries deleted, 1 if another call should follow
-- at once, the cursor for the next call}
if not take_lease(KEYS[2], ARGV[1], ARGV[2]) then return {0, 0, 0, '-'} end
local stream, mode = KEYS[1], ARGV[3]
local max_len, max_age, chunk = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if redis.call('XLEN', stream) == 0 then return {1, 0, 0, '-'} end
local now = now_ms()
if mode ~= 'unsafe' then
  local r = safe_trim(stream, max_len, max_age, chunk, now, mode == 'acked', ARGV[7])
  local more = 0
  if r[2] == 1 or r[3] ~= '-' then more = 1 end
  return {1, r[1], more, r[3]}
end
-- drop_unread: today's MAXLEN ~ / MINID ~, whole nodes, at most `chunk` entries.
local deleted = 0
if max_len >= 0 then deleted = deleted + redis.call('XTRIM', stream, 'MAXLEN', '~', max_len, 'LIMIT', chunk) end
if max_age >= 0 and now - max_age > 0 then
  deleted = deleted + redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', now - max_age) .. '-0', 'LIMIT', chunk)
end
return {1, deleted, deleted > 0 and 1 or 0, '-'}
"#,
    )
});

/// The trim of [`PublishOptions::max_len_acked`](crate::PublishOptions::max_len_acked) on a
/// server without `ACKED`: `XADD` (unless ARGV[3] is empty: then only the trim), then
/// `safe_trim` to ARGV[1] entries, at most ARGV[2] of them. Returns `{id or false, deleted,
/// full}`; `{false, 0, 0}` when NOMKSTREAM (ARGV[4] `1`) found no stream.
///
/// Crash safety: the XADD comes first; a script killed before it wrote nothing (the publish
/// fails, as an XADD would); the trim after it deletes only entries no group needs. Re-sent
/// after a reconnect it would add the entry twice, as a re-sent XADD does: the producer's
/// connection does not re-send publishes (see [`crate::Producer`]). Cluster: one key.
pub(crate) static PUBLISH_ACKED: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, IDS, SAFE_TRIM],
        r#"
-- KEYS: stream
-- ARGV: max_len, chunk, id ('*', an id, or '' to trim only), nomkstream (1 | 0),
--       acked (1 | 0: the server has XTRIM ... ACKED), fields...
local id = false
if ARGV[3] ~= '' then
  if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return {false, 0, 0} end
  id = redis.call('XADD', KEYS[1], ARGV[3], unpack(ARGV, 6))
end
if redis.call('XLEN', KEYS[1]) == 0 then return {id, 0, 0} end
local r = safe_trim(KEYS[1], tonumber(ARGV[1]), -1, tonumber(ARGV[2]), now_ms(), ARGV[5] == '1', '-')
return {id, r[1], r[2]}
"#,
    )
});

/// The chunk of a publish's own trim: small, since it runs on every publish.
pub(crate) const PUBLISH_TRIM_CHUNK: u64 = 100;

/// The scripts of the trimmer, for the start-up permission check.
pub(crate) fn engine_scripts() -> Vec<crate::permissions::EngineScript> {
    use crate::permissions::{EngineScript, Serves};
    vec![
        EngineScript { serves: Serves::Retention, name: "retention trim", ident: "TRIM", script: &TRIM },
        EngineScript {
            serves: Serves::Retention,
            name: "lease release",
            ident: "RELEASE_LEASE",
            script: &crate::lease::RELEASE_LEASE,
        },
    ]
}

/// The mode argument of [`TRIM`].
fn mode(retention: &Retention, capabilities: Capabilities) -> &'static str {
    if retention.drop_unread {
        "unsafe"
    } else if capabilities.xackdel {
        "acked"
    } else {
        "floor"
    }
}

fn bound_arg(bound: Option<u64>) -> String {
    bound.map_or_else(|| "-1".to_string(), |b| b.to_string())
}

/// Starts one trimmer per plan, each ticking every [`DEFAULT_TRIM_INTERVAL`] (jittered) on
/// its own timer until `stop`, then releasing its lease.
pub(crate) fn spawn(
    plans: Vec<TrimPlan>,
    command: HealingClient,
    capabilities: Capabilities,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    if plans.is_empty() {
        return Vec::new();
    }
    let holder = crate::lease::holder_name("trimmer");
    plans
        .into_iter()
        .map(|plan| tokio::spawn(run(plan, command.clone(), capabilities, holder.clone(), stop.clone())))
        .collect()
}

async fn run(
    plan: TrimPlan,
    command: HealingClient,
    capabilities: Capabilities,
    holder: String,
    stop: CancellationToken,
) {
    let lease = keys::trim_lease(&plan.stream);
    let r = plan.retention;
    let args = vec![
        holder.clone(),
        TRIM_LEASE.as_millis().to_string(),
        mode(&r, capabilities).to_string(),
        bound_arg(r.max_len),
        bound_arg(r.max_age.map(|a| a.as_millis() as u64)),
        TRIM_CHUNK.to_string(),
    ];
    let keys = vec![plan.stream.clone(), lease.clone()];
    tracing::info!(stream = %plan.stream, retention = ?r, mode = mode(&r, capabilities), %holder, "starting the retention trimmer");
    let mut holding = false;
    // Where the next call's reads start (XTRIM ... ACKED servers): past the entries the last
    // calls looked at, so pending entries at the head do not hide those behind them. Kept
    // across ticks until a call reads to the end of what may go (the script then answers `-`).
    let mut cursor = "-".to_string();
    loop {
        for _ in 0..MAX_CALLS_PER_TICK {
            let client = command.get();
            let mut args = args.clone();
            args.push(cursor.clone());
            let reply: std::result::Result<Value, _> = TRIM.evalsha_with_reload(&client, keys.clone(), args).await;
            match reply {
                Ok(reply) => {
                    let mut reply = reply.into_array();
                    cursor = reply
                        .get_mut(3)
                        .map(|v| std::mem::replace(v, Value::Null))
                        .and_then(crate::wire::value_bytes)
                        .map_or_else(|| "-".to_string(), |b| String::from_utf8_lossy(&b).into_owned());
                    let reply: Vec<i64> = reply.into_iter().map(|v| v.as_i64().unwrap_or(0)).collect();
                    let (mine, deleted, full) =
                        (reply.first() == Some(&1), reply.get(1).copied().unwrap_or(0), reply.get(2) == Some(&1));
                    if mine != holding {
                        holding = mine;
                        tracing::debug!(stream = %plan.stream, %holder, holding, "retention trimmer lease");
                    }
                    if deleted > 0 {
                        tracing::trace!(stream = %plan.stream, deleted, "retention trimmed");
                    }
                    if !full || stop.is_cancelled() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    if crate::error::is_no_group(&e) || e.details().contains("no such key") {
                        break;
                    }
                    tracing::warn!(stream = %plan.stream, error = %e, "retention trim failed; trying again at the next tick");
                    command.heal(&client, &e).await;
                    break;
                }
            }
        }
        let jitter = crate::retry_delay::jittered(DEFAULT_TRIM_INTERVAL);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(jitter) => {}
        }
    }
    if holding {
        crate::lease::release(&command.get(), lease, &holder).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn h(_: crate::Message<serde_json::Value>) {}

    #[test]
    fn consumers_of_one_stream_share_the_tightest_plan() {
        let a = Consumer::new("s", "a", h).retention(Retention::new().max_len(1000));
        let b = Consumer::new("s", "b", h).retention(Retention::new().max_len(10).max_age(Duration::from_secs(60)));
        let c = Consumer::new("t", "c", h).delete_on_ack(true);
        let d = Consumer::new("u", "d", h);
        let plans = plans(&[a, b, c, d]).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].retention, Retention::new().max_len(10).max_age(Duration::from_secs(60)));
        assert_eq!(plans[1].retention, Retention::new().max_len(0));
    }

    #[test]
    fn drop_unread_and_safe_retention_on_one_stream_are_refused() {
        let a = Consumer::new("s", "a", h).retention(Retention::new().max_len(1000).drop_unread(true));
        let b = Consumer::new("s", "b", h).delete_on_ack(true);
        let err = plans(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("must agree on whether unread entries may be trimmed"), "{err}");
    }
}
