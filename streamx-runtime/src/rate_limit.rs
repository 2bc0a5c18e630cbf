//! Distributed rate limits: at most [`RateLimit::max`] handler starts per
//! [`RateLimit::per`] for a whole consumer group, across every process (attribute
//! `rate_limit = "500/s"`, builder [`crate::Consumer::rate_limit`]).
//!
//! # The guarantee: a sliding window over grants
//!
//! Before a consumer reads (or starts a claimed retry or taken-over entry) it asks Redis for a
//! *grant* of some starts, one round trip for a whole batch. The grants of the group are
//! logged in one sorted set in the stream's hash slot ([`crate::keys::rate_limit`]): one
//! member per grant (`<count>:<unique>`), scored by the grant's time on the Redis clock (µs,
//! `TIME`: process clocks do not matter). [`GRANT`] drops what left the window, sums the
//! counts left (kept as a running sum: O(1) per grant amortised, not O(messages)) and grants what is left of the
//! limit. A token bucket was not used: a full bucket of N plus its refill lets 2N starts into
//! one window, and the promise is "never more than N in *any* window".
//!
//! * **Skew margin.** A handler starts a read's round trip after its grant, and that latency
//!   varies, so starts bunch slightly more than grants do. The log therefore counts a grant
//!   for `per + min(per / 20, 50 ms)` (the *window*): starts whose delays after their grants
//!   differ by less than that margin never exceed `max` in any `per`.
//! * **Pacing and fairness.** A grant is also refused while the grants of the last tenth of
//!   the window reach a tenth of the limit (rounded up; for limits under 10, the window is cut
//!   in `max` parts). So a backlog drains evenly (a limit of 100/s starts about 10 every
//!   105 ms, not 100 at once and then nothing) and one process cannot take the whole window
//!   while another idles: every grant is at most a tenth of the limit, and whoever asks next
//!   gets the next one.
//! * **Unused grants go back.** A read that returns fewer entries than granted (the stream ran
//!   dry) returns the difference ([`REFUND`]): an idle consumer does not burn the window.
//! * **Refused callers wait** the time [`GRANT`] says until the oldest counted grant leaves
//!   (plus a little jitter), interruptibly, never spinning.
//! * **Messages wait in Redis.** The grant comes before the `XREADGROUP`, which reads
//!   `COUNT = granted`: nothing is read and then held waiting for the limit. Due retries and
//!   taken-over entries are claimed at most a grant's worth at a time and start once granted.
//! * **Mixed settings.** Each process passes its own limit over the same log (a rolling
//!   deploy changing the limit): a stricter process is refused while the log holds more than
//!   its own limit, a looser one never exceeds its own.
//!
//! Failures: a process that dies after a grant spends it unused (fewer starts, never more);
//! the log expires a window after its last grant, so an abandoned limiter leaves nothing
//! behind.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use fred::types::scripts::Script;

/// The longest period a rate limit may have: one day.
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest period a rate limit may have: one millisecond.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);

/// At most [`max`](Self::max) handler starts per [`per`](Self::per) for a whole consumer
/// group, across every process: see [`crate::Consumer::rate_limit`] and the README's "Rate
/// limits".
///
/// ```
/// use std::time::Duration;
/// use streamx_runtime::RateLimit;
///
/// let limit: RateLimit = "500/s".parse().unwrap();
/// assert_eq!(limit, RateLimit::per_second(500));
/// assert_eq!("30/min".parse::<RateLimit>().unwrap(), RateLimit::per_minute(30));
/// assert_eq!("1000/h".parse::<RateLimit>().unwrap(), RateLimit::per_hour(1000));
/// assert_eq!("10/500ms".parse::<RateLimit>().unwrap(), RateLimit::new(10, Duration::from_millis(500)));
/// assert!("0/s".parse::<RateLimit>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    max: u32,
    per: Duration,
}

impl RateLimit {
    /// At most `max` starts per `per` (checked when the runtime starts: `max` at least 1,
    /// `per` between 1 ms and 24 h, in whole milliseconds).
    pub const fn new(max: u32, per: Duration) -> Self {
        RateLimit { max, per }
    }

    /// At most `max` starts per second.
    pub const fn per_second(max: u32) -> Self {
        RateLimit::new(max, Duration::from_secs(1))
    }

    /// At most `max` starts per minute.
    pub const fn per_minute(max: u32) -> Self {
        RateLimit::new(max, Duration::from_secs(60))
    }

    /// At most `max` starts per hour.
    pub const fn per_hour(max: u32) -> Self {
        RateLimit::new(max, Duration::from_secs(3600))
    }

    /// The most starts per period.
    pub const fn max(&self) -> u32 {
        self.max
    }

    /// The period.
    pub const fn per(&self) -> Duration {
        self.per
    }

    /// Why this limit cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), ParseRateLimitError> {
        if self.max == 0 {
            return Err(ParseRateLimitError::Zero);
        }
        if self.per < MIN_PERIOD || self.per > MAX_PERIOD || self.per.subsec_nanos() % 1_000_000 != 0 {
            return Err(ParseRateLimitError::Period(format!("{:?}", self.per)));
        }
        Ok(())
    }

    /// How long the log counts a grant: the period plus the skew margin (see the module docs).
    pub(crate) fn window(&self) -> Duration {
        self.per + (self.per / 20).min(Duration::from_millis(50))
    }

    /// The pacing: `(parts, most per part)`, the window cut in `parts` (10, or `max` if less)
    /// and at most `ceil(max / parts)` granted per part.
    pub(crate) fn pacing(&self) -> (u32, u32) {
        let parts = self.max.clamp(1, 10);
        (parts, self.max.div_ceil(parts))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per.as_millis() {
            1000 => write!(f, "{}/s", self.max),
            60_000 => write!(f, "{}/min", self.max),
            3_600_000 => write!(f, "{}/h", self.max),
            ms => write!(f, "{}/{ms}ms", self.max),
        }
    }
}

/// Why a rate limit's text (or value) is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseRateLimitError {
    /// Not `<count>/<period>`.
    #[error("expected `<count>/<period>`, e.g. \"500/s\", \"30/min\", \"1000/h\" or \"10/500ms\"")]
    Shape,
    /// The count is not a whole number of at most 4294967295.
    #[error("the count `{0}` is not a whole number (at most 4294967295)")]
    Count(String),
    /// The count is zero.
    #[error("the count must be at least 1 (leave the rate limit unset for none)")]
    Zero,
    /// The period is not known, or out of range.
    #[error("the period `{0}` is not one of s, min (or m), h (or hour), optionally with a count (\"500ms\", \"2s\"), between 1ms and 24h in whole milliseconds")]
    Period(String),
}

/// Parses the period of a rate limit: a unit (`ms`, `s`/`sec`/`second`, `m`/`min`/`minute`,
/// `h`/`hour`, plurals too) optionally after a whole number (`500ms`, `2s`).
fn parse_period(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = if number.is_empty() { 1 } else { number.parse().ok()? };
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(unit_ms).map(Duration::from_millis)
}

impl FromStr for RateLimit {
    type Err = ParseRateLimitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, period) = text.split_once('/').ok_or(ParseRateLimitError::Shape)?;
        let count = count.trim();
        let max: u32 = count.parse().map_err(|_| ParseRateLimitError::Count(count.to_string()))?;
        let per = parse_period(period).ok_or_else(|| ParseRateLimitError::Period(period.trim().to_string()))?;
        let limit = RateLimit::new(max, per);
        limit.check().map(|()| limit).map_err(|e| match e {
            ParseRateLimitError::Period(_) => ParseRateLimitError::Period(period.trim().to_string()),
            other => other,
        })
    }
}

/// Grants starts. `KEYS[1]`: the log; `ARGV`: the limit, the window (µs), the pacing's part
/// (µs) and its most, the starts wanted, the grant's unique name. Returns `{granted, wait}`:
/// `granted` > 0 and `wait` 0, or 0 and the milliseconds until a counted grant leaves the
/// window (or the part) that refused.
///
/// The log keeps the sum of its counts as the (negated) score of the member `#sum`, so a
/// grant reads only the grants leaving the window (each once: O(1) per grant amortised),
/// not the whole log; the grants of the last part are summed only when the pacing could bind
/// (the window's sum plus the request reaches a part's most), and the oldest grant is read
/// only on a refusal. Grants score their time (> 0), `#sum` scores ≤ 0.
///
/// Process dies before it runs: nothing happened. During: a script is atomic. After (the
/// reply lost): the grant is spent unused, fewer starts, never more. Re-sent (fred re-sends
/// after a reconnect): a grant of the same count finds its member and adds nothing (`ZADD
/// NX`); of another count, it is a second grant, counted and leaving the window on its own:
/// fewer starts, never more. Times are formatted as integers (`%.0f`): Lua would print a µs timestamp with 14
/// significant digits.
pub(crate) static GRANT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local key = KEYS[1]
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local part, per_part = tonumber(ARGV[3]), tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cutoff = string.format('%.0f', now - window)
local gone = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, '(0', cutoff)) do
  gone = gone + (tonumber(string.match(m, '^(%d+):')) or 0)
end
if gone > 0 then
  redis.call('ZREMRANGEBYSCORE', key, '(0', cutoff)
  redis.call('ZINCRBY', key, gone, '#sum')
end
local sum = -(tonumber(redis.call('ZSCORE', key, '#sum')) or 0)
if sum < 0 then sum = 0 end
local recent = 0
if sum + want > per_part then
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, string.format('(%.0f', now - part), '+inf')) do
    recent = recent + (tonumber(string.match(m, '^(%d+):')) or 0)
  end
end
local granted = math.min(want, limit - sum, per_part - recent)
if granted > 0 then
  if redis.call('ZADD', key, 'NX', string.format('%.0f', now), granted .. ':' .. ARGV[6]) == 1 then
    redis.call('ZINCRBY', key, -granted, '#sum')
  end
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
  return {granted, 0}
end
local wait = 0
if sum >= limit then
  local oldest = redis.call('ZRANGEBYSCORE', key, '(0', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if oldest[2] then wait = tonumber(oldest[2]) + window - now end
end
if recent >= per_part then
  local first = redis.call('ZRANGEBYSCORE', key, string.format('(%.0f', now - part), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if first[2] then wait = math.max(wait, tonumber(first[2]) + part - now) end
end
return {0, math.max(1, math.ceil(wait / 1000))}
"#,
    )
});

/// Returns unused starts of a grant. `KEYS[1]`: the log; `ARGV`: the grant's member, the
/// count to return. Returns how many were returned.
///
/// Process dies before it runs: the starts stay spent (fewer starts). After, or re-sent: the
/// grant's member was replaced by one named after its new count, so a re-sent refund finds
/// nothing and returns 0: never returned twice. A grant that left the window meanwhile is
/// gone too: nothing to return.
pub(crate) static REFUND: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not at then return 0 end
local n, name = string.match(ARGV[1], '^(%d+):(.*)$')
n = tonumber(n)
local back = math.min(tonumber(ARGV[2]), n)
redis.call('ZREM', KEYS[1], ARGV[1])
if n > back then redis.call('ZADD', KEYS[1], at, (n - back) .. ':' .. name) end
redis.call('ZINCRBY', KEYS[1], back, '#sum')
return back
"#,
    )
});

/// One group's limiter in one consumer: its log, its limit's script arguments, and the
/// counter that names its grants.
#[derive(Debug)]
pub(crate) struct Limiter {
    /// The log ([`crate::keys::rate_limit`]).
    pub key: String,
    pub limit: RateLimit,
    /// `[limit, window µs, part µs, per part]`.
    args: [String; 4],
    /// The most one grant gives.
    pub most: usize,
    /// What names this consumer's grants: `<member>:`.
    prefix: String,
    next: AtomicU64,
    /// Starts granted ([`crate::observe::names::RATE_LIMIT_GRANTED`]).
    pub granted: metrics::Counter,
    /// Refusals ([`crate::observe::names::RATE_LIMIT_WAITS`]).
    pub waits: metrics::Counter,
    /// How long each refused request waited for its grant
    /// ([`crate::observe::names::RATE_LIMIT_WAIT_SECONDS`]).
    pub waited: metrics::Histogram,
}

/// Starts granted by [`GRANT`].
#[derive(Debug)]
pub(crate) struct Grant {
    pub count: usize,
    /// The member logging it, for [`REFUND`].
    pub member: String,
}

impl Limiter {
    pub fn new(stream: &str, group: &str, member_name: &str, limit: RateLimit) -> Self {
        let window = limit.window();
        let (parts, per_part) = limit.pacing();
        let part = window / parts;
        let (granted, waits, waited) = crate::observe::rate_limit_metrics(stream, group);
        Limiter {
            key: crate::keys::rate_limit(stream, group),
            limit,
            args: [
                limit.max.to_string(),
                window.as_micros().to_string(),
                part.as_micros().to_string(),
                per_part.to_string(),
            ],
            most: per_part as usize,
            prefix: format!("{member_name}:"),
            next: AtomicU64::new(0),
            granted,
            waits,
            waited,
        }
    }

    /// The arguments of a [`GRANT`] of `want` starts, and the unique name of the grant.
    pub fn grant_args(&self, want: usize) -> (Vec<String>, String) {
        let unique = format!("{}{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed));
        let mut args = self.args.to_vec();
        args.push(want.min(self.most).max(1).to_string());
        args.push(unique.clone());
        (args, unique)
    }
}

/// The scripts of a rate-limited consumer, for the permission check.
pub(crate) fn engine_scripts() -> Vec<crate::permissions::EngineScript> {
    use crate::permissions::{EngineScript, Serves};
    vec![
        EngineScript { serves: Serves::RateLimit, name: "rate-limit grant", ident: "GRANT", script: &GRANT },
        EngineScript { serves: Serves::RateLimit, name: "rate-limit refund", ident: "REFUND", script: &REFUND },
    ]
}

#[cfg(test)]
mod tests;
