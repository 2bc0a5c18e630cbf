//! Promotion of due delayed messages: every running runtime runs one task per distinct stream
//! its consumers read (not per consumer or group), started with the loops and stopped at
//! shutdown before they drain.
//!
//! A tick is one script ([`PROMOTE_SCHEDULED`]): `ZRANGEBYSCORE ... -inf now LIMIT 0 n` (the
//! due ids, O(log n + due)), and for each one its payload (`HGET`), the `XADD` to the stream
//! with the header [`SCHEDULED_AT_HEADER`](super::SCHEDULED_AT_HEADER), `HDEL` and `ZREM`. It
//! also answers when the next message is due, so the task sleeps until then when that is
//! sooner than its tick (about every 75 ms, jittered): a message is added no earlier than it
//! is due, and usually within a few milliseconds after.
//!
//! One runtime at a time polls a stream's schedule: the script takes or renews a lease
//! ([`keys::promoter_lease`](crate::keys::promoter_lease), [`LEASE`] long, see
//! [`crate::lease`]) before it promotes, and a runtime without it only asks for it again
//! every [`STANDBY_POLL`] (jittered). So a fleet of 100 runtimes costs Redis what one does,
//! not 100 scripts per tick; when the holder stops, it releases the lease and another takes
//! over within [`STANDBY_POLL`]; when it dies, within [`LEASE`] and one poll (messages due
//! meanwhile arrive that much later, none is lost). Exactly-once never rests on the lease:
//! two runtimes running the script at once still promote each message once.
//!
//! The task takes no handler permit and waits on nothing but Redis: busy handlers never hold
//! promotion up. When Redis fails it logs once, backs off (100 ms doubling to 5 s) and says
//! when it promotes again.

use std::sync::LazyLock;
use std::time::Duration;

use fred::types::scripts::Script;
use fred::types::Value;
use metrics::{Counter, Gauge};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{schedule_keys, DECODE, SCHEDULED_AT_HEADER};
use crate::connection::HealingClient;
use crate::lease::TAKE_LEASE;
use crate::observe::names::{LABEL_STREAM, SCHEDULED_DROPPED, SCHEDULED_PENDING, SCHEDULED_PROMOTED};
use crate::retry_delay::RetryDelay;
use crate::scripts::{assemble, NOW_MS};
use crate::wire::{value_bytes, HEADER_PREFIX};

/// Promotes up to ARGV[1] due messages of the stream KEYS[1].
///
/// - Every due id is handled whole before the next: its entry is added (`XADD`), then it
///   leaves the schedule (`ZREM`, `HDEL`). Redis runs the script whole or not at all (with
///   AOF its writes are logged as one transaction), so a process that dies before, during or
///   after it promotes each message once or not yet, never twice; runtimes promoting the same
///   stream at once run one script after the other, and the second finds nothing left.
/// - Re-sent by the client after a reconnect: the first run removed what it promoted, so the
///   second promotes only what has come due meanwhile.
/// - An id whose payload is missing or unreadable (written by hand) is dropped from the
///   schedule and returned, to be counted and logged.
/// - An `XADD` that fails (the key holds another type, Redis is out of memory) stops the
///   script there: that message and the rest stay scheduled, and the error is returned.
///
/// - A runtime that does not hold the stream's lease (another one does) promotes nothing and
///   returns at once with `held` 0; the holder renews the lease in the same script.
///
/// KEYS: stream, schedule, payloads, lease. ARGV: limit, the header field of the due time,
/// holder, lease ms. Returns `{promoted, dropped ids, failure or nil, next due (ms, or -1),
/// now (ms), left, held}`.
pub(crate) static PROMOTE_SCHEDULED: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, DECODE, TAKE_LEASE],
        r#"
local now = now_ms()
if not take_lease(KEYS[4], ARGV[3], ARGV[4]) then return {0, {}, false, -1, now, -1, 0} end
local limit = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local promoted = 0
local dropped = {}
local failure = false
for i = 1, #due, 2 do
  local id = due[i]
  local encoded = redis.call('HGET', KEYS[3], id)
  local fields = nil
  if encoded then fields = decode(encoded) end
  if fields then
    table.insert(fields, ARGV[2])
    table.insert(fields, due[i + 1])
    local added = redis.pcall('XADD', KEYS[1], '*', unpack(fields))
    if type(added) == 'table' and added.err then
      failure = id .. ': ' .. added.err
      break
    end
    promoted = promoted + 1
  else
    table.insert(dropped, id)
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
local first = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local next_due = -1
if first[2] then next_due = tonumber(first[2]) end
return {promoted, dropped, failure, next_due, now, redis.call('ZCARD', KEYS[2]), 1}
"#,
    )
});

/// How long a promoter's lease lasts without renewal (the holder renews it every tick).
pub(crate) const LEASE: Duration = Duration::from_secs(2);

/// How long a promoter refused by the ACL waits before it asks again.
const NOPERM_RETRY: Duration = Duration::from_secs(60);

/// How often a runtime without the lease asks for it (jittered 80–120%).
pub(crate) const STANDBY_POLL: Duration = Duration::from_millis(500);

/// The most messages one script promotes (Redis serves nobody else while it runs; a full
/// page brings the next call forward at once).
const PAGE: usize = 500;

/// How often a promoter looks for due messages when it knows of none sooner (jittered
/// 80–120%): the bound on how late a message is added after it is due, beyond the script's
/// own time.
pub(crate) const TICK: Duration = Duration::from_millis(75);

/// What one promotion script did.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Tick {
    pub promoted: u64,
    pub dropped: Vec<String>,
    pub failure: Option<String>,
    /// When the earliest message left is due, on the Redis clock (Unix ms).
    pub next_due: Option<u64>,
    /// The Redis clock when the script ran (Unix ms).
    pub now: u64,
    /// Messages still scheduled.
    pub left: u64,
    /// The page was full: more may be due now.
    pub full: bool,
    /// This runtime holds the stream's lease (it promoted; else another runtime does).
    pub held: bool,
}

impl Tick {
    fn parse(reply: Value) -> Tick {
        let mut parts = reply.into_array().into_iter();
        let mut next = || parts.next().unwrap_or(Value::Null);
        let int = |v: Value| v.as_i64().unwrap_or(-1);
        let promoted = int(next()).max(0) as u64;
        let dropped = next()
            .into_array()
            .into_iter()
            .filter_map(|v| value_bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned()))
            .collect::<Vec<_>>();
        let failure = value_bytes(next()).map(|b| String::from_utf8_lossy(&b).into_owned());
        let next_due = u64::try_from(int(next())).ok();
        let now = int(next()).max(0) as u64;
        let left = int(next()).max(0) as u64;
        let full = promoted as usize + dropped.len() >= PAGE;
        let held = int(next()) != 0;
        Tick { promoted, dropped, failure, next_due, now, left, full, held }
    }

    /// How long to wait before the next tick: none after a full page, else until the next
    /// message is due when that is sooner than a (jittered) tick.
    fn wait(&self) -> Duration {
        if !self.held {
            return crate::retry_delay::jittered(STANDBY_POLL);
        }
        if self.full {
            return Duration::ZERO;
        }
        let tick = crate::retry_delay::jittered(TICK);
        match self.next_due {
            Some(due) => tick.min(Duration::from_millis(due.saturating_sub(self.now))),
            None => tick,
        }
    }
}

/// Starts one promoter per distinct stream in `streams`; each runs until `stop`.
pub(crate) fn spawn_all<'a>(
    streams: impl IntoIterator<Item = &'a str>,
    client: &HealingClient,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut seen = std::collections::BTreeSet::new();
    streams
        .into_iter()
        .filter(|s| seen.insert(s.to_string()))
        .map(|stream| tokio::spawn(run(stream.to_string(), client.clone(), stop.clone())))
        .collect()
}

/// Promotes `stream`'s due messages until `stop`.
async fn run(stream: String, client: HealingClient, stop: CancellationToken) {
    let labels = [(LABEL_STREAM, stream.clone())];
    let promoted: Counter = metrics::counter!(SCHEDULED_PROMOTED, &labels);
    let dropped: Counter = metrics::counter!(SCHEDULED_DROPPED, &labels);
    let pending: Gauge = metrics::gauge!(SCHEDULED_PENDING, &labels);
    let lease = crate::keys::promoter_lease(&stream);
    let keys = {
        let mut keys = vec![stream.clone()];
        keys.extend(schedule_keys(&stream));
        keys.push(lease.clone());
        keys
    };
    let holder = crate::lease::holder_name("promoter");
    let lease_ms = LEASE.as_millis().to_string();
    let args = vec![PAGE.to_string(), format!("{HEADER_PREFIX}{SCHEDULED_AT_HEADER}"), holder.clone(), lease_ms];
    let mut held = false;
    let mut backoff = RetryDelay::new();
    let mut failing = false;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        let used = client.get();
        let result: Result<Value, _> = PROMOTE_SCHEDULED.evalsha_with_reload(&used, keys.clone(), args.clone()).await;
        let failure = match result {
            Ok(reply) => {
                let tick = Tick::parse(reply);
                if tick.held != held {
                    held = tick.held;
                    tracing::debug!(stream, %holder, held, "delayed-message promoter lease");
                }
                promoted.increment(tick.promoted);
                if tick.held {
                    pending.set(tick.left as f64);
                }
                if !tick.dropped.is_empty() {
                    dropped.increment(tick.dropped.len() as u64);
                    tracing::warn!(
                        stream, ids = ?tick.dropped,
                        "scheduled messages without a readable payload were dropped from the schedule"
                    );
                }
                match tick.failure.clone() {
                    Some(failure) => Some(failure),
                    None => {
                        wait = tick.wait();
                        None
                    }
                }
            }
            Err(e) => {
                client.heal(&used, &e).await;
                Some(e.to_string())
            }
        };
        match failure {
            None => {
                if std::mem::take(&mut failing) {
                    tracing::info!(stream, "promoting scheduled messages again");
                }
                backoff.reset();
            }
            Some(error) => {
                if !std::mem::replace(&mut failing, true) {
                    if error.contains("NOPERM") {
                        tracing::warn!(stream, error, "the Redis user may not promote this stream's delayed messages: they wait for a runtime that may (grant +evalsha +get +set +del +hget +hdel +zcard +zrangebyscore +zrem +xadd +time and the stream's keys `{{<stream>}}:*`, as in the README's rule); retrying with backoff");
                    } else {
                        tracing::warn!(stream, error, "cannot promote scheduled messages; retrying with backoff");
                    }
                } else {
                    tracing::debug!(stream, error, "still cannot promote scheduled messages");
                }
                // A refusal lasts until an operator changes the rule: ask again a minute later
                // (each refusal is an `ACL LOG` entry).
                wait = if error.contains("NOPERM") { NOPERM_RETRY } else { backoff.advance() };
            }
        }
    }
    if held {
        crate::lease::release(&client.get(), lease, &holder).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(promoted: i64, dropped: &[&str], failure: Option<&str>, next: i64, now: i64, left: i64) -> Value {
        Value::Array(vec![
            Value::from(promoted),
            Value::Array(dropped.iter().map(|d| Value::from(*d)).collect()),
            failure.map_or(Value::Null, Value::from),
            Value::from(next),
            Value::from(now),
            Value::from(left),
            Value::from(1),
        ])
    }

    #[test]
    fn a_tick_sleeps_until_the_next_due_message_when_it_is_sooner() {
        let soon = Tick::parse(reply(1, &[], None, 1_010, 1_000, 3));
        assert_eq!(soon.wait(), Duration::from_millis(10));
        let later = Tick::parse(reply(0, &[], None, 60_000, 1_000, 3));
        assert!(later.wait() >= TICK.mul_f64(0.8) && later.wait() <= TICK.mul_f64(1.2), "{:?}", later.wait());
        let none = Tick::parse(reply(0, &[], None, -1, 1_000, 0));
        assert_eq!(none.next_due, None);
        assert!(none.wait() <= TICK.mul_f64(1.2));
        let full = Tick::parse(reply(PAGE as i64 - 1, &["x"], None, 1_000, 1_000, 10));
        assert!(full.full);
        assert_eq!(full.wait(), Duration::ZERO);
        assert_eq!(full.dropped, ["x"]);
    }

    #[test]
    fn a_runtime_without_the_lease_only_asks_for_it_now_and_then() {
        let standby = Tick::parse(Value::Array(vec![
            Value::from(0),
            Value::Array(vec![]),
            Value::Null,
            Value::from(-1),
            Value::from(1_000),
            Value::from(-1),
            Value::from(0),
        ]));
        assert!(!standby.held);
        assert!(standby.wait() >= STANDBY_POLL.mul_f64(0.8), "{:?}", standby.wait());
    }

    #[test]
    fn a_failed_xadd_is_reported() {
        let t = Tick::parse(reply(2, &[], Some("abc: WRONGTYPE"), 5, 1, 7));
        assert_eq!(t.failure.as_deref(), Some("abc: WRONGTYPE"));
        assert_eq!((t.promoted, t.left), (2, 7));
    }
}
