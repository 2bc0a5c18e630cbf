//! Per-consumer policy: where a new group starts, retry backoff, dead letters.

use std::borrow::Cow;
use std::time::Duration;

/// Where a consumer group starts reading when streamx creates it. An existing group keeps
/// its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// From the first entry of the stream (`0`): the default, so nothing published before the
    /// first deployment is missed.
    Beginning,
    /// Only entries added after the group is created (`$`).
    New,
    /// After an explicit entry id (entries with a greater id are delivered).
    Id(&'static str),
}

impl StartFrom {
    /// The id passed to `XGROUP CREATE`.
    pub(crate) fn group_create_id(&self) -> &str {
        match self {
            StartFrom::Beginning => "0",
            StartFrom::New => "$",
            StartFrom::Id(id) => id,
        }
    }
}

/// Exponential backoff between deliveries of a failed message:
/// `initial * multiplier^(retry - 1)`, capped at `max`, plus up to 10% jitter (never less
/// than the computed delay, so a retry never comes early).
///
/// [`Backoff::DEFAULT`] is the one place the defaults are defined. To change some
/// parameters and keep the others at their defaults, start from it and use the `const`
/// setters (this is what `#[stream_consumer(backoff(...))]` expands to):
///
/// ```
/// use std::time::Duration;
/// use streamx_runtime::Backoff;
///
/// const SLOW: Backoff = Backoff::DEFAULT.with_multiplier(3.0).with_max(Duration::from_secs(120));
/// assert_eq!(SLOW.initial, Backoff::DEFAULT.initial);
/// assert!(SLOW.is_valid());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry. Default 1 s.
    pub initial: Duration,
    /// The factor applied per further retry. Default 2.0.
    pub multiplier: f64,
    /// The cap. Default 30 s.
    pub max: Duration,
}

impl Backoff {
    /// The default backoff: 1 s, doubling, at most 30 s.
    pub const DEFAULT: Backoff =
        Backoff { initial: Duration::from_secs(1), multiplier: 2.0, max: Duration::from_secs(30) };

    /// A backoff from its three parameters.
    pub const fn new(initial: Duration, multiplier: f64, max: Duration) -> Self {
        Backoff { initial, multiplier, max }
    }

    /// This backoff with the delay before the first retry set to `initial`.
    pub const fn with_initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// This backoff with the factor per further retry set to `multiplier`.
    pub const fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// This backoff with the cap set to `max`.
    pub const fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Whether the runtime accepts this backoff: the multiplier is finite and at least 1,
    /// and `max` is not less than `initial`. A consumer with an invalid backoff is refused
    /// when the runtime is built.
    pub const fn is_valid(&self) -> bool {
        self.multiplier.is_finite() && self.multiplier >= 1.0 && self.max.as_nanos() >= self.initial.as_nanos()
    }

    /// The delay before retry number `retry` (1-based), without jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// The delay before retry number `retry` with up to +10% jitter, never below the base
    /// delay nor above `max` (unless the base delay is already `max`).
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.base_delay(retry);
        let jittered = base.mul_f64(1.0 + rand::random::<f64>() * 0.1);
        jittered.min(self.max).max(base)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

// The defaults must be a backoff the runtime accepts.
const _: () = assert!(Backoff::DEFAULT.is_valid(), "Backoff::DEFAULT must be valid");

/// Where a message goes after its last failed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterTarget {
    /// The default dead-letter stream of the consumer's stream (see [`crate::keys`]).
    Default,
    /// No dead-letter stream: the message is acknowledged and dropped with a warning.
    Disabled,
    /// A named dead-letter stream.
    Stream(&'static str),
}

/// The default length cap of a dead-letter stream, in letters.
///
/// Why bounded: a dead-letter stream only grows by itself (a poison producer, a downstream
/// outage dead-lettering every message), and an unbounded one ends as a Redis out of memory
/// that stops every stream on the server, not just this one. 100,000 letters keep days of a
/// realistic failure rate for inspection and replay while bounding the memory to about
/// 100,000 × (payload + ~250 bytes of dead-letter fields); each letter beyond it deletes
/// the oldest ones, with a warning and `streamx_dead_letters_trimmed_total`. Set
/// `dlq_max_len = "unbounded"` (or `.dlq_max_len(None)`) to keep everything.
pub const DEFAULT_DLQ_MAX_LEN: u64 = 100_000;

/// The failure policy of a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first delivery: a message is delivered at most `max_retries + 1`
    /// times. Default 3.
    pub max_retries: u32,
    /// Delay between deliveries.
    pub backoff: Backoff,
    /// Where messages go after the last failure.
    pub dead_letter: DeadLetterTarget,
    /// The dead-letter stream's length cap: every dead-letter write trims it to about this
    /// many entries (`XTRIM MAXLEN ~`, oldest first, whole stream nodes only, so it may hold
    /// up to one node, `stream-node-max-entries` = 100 by default, more). `None`:
    /// unbounded. Default `Some(`[`DEFAULT_DLQ_MAX_LEN`]`)`.
    pub dlq_max_len: Option<u64>,
}

impl RetryPolicy {
    /// The default: 3 retries, [`Backoff::DEFAULT`], the default dead-letter stream, capped
    /// at [`DEFAULT_DLQ_MAX_LEN`] letters.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_retries: 3,
        backoff: Backoff::DEFAULT,
        dead_letter: DeadLetterTarget::Default,
        dlq_max_len: Some(DEFAULT_DLQ_MAX_LEN),
    };

    /// The most deliveries a message gets.
    pub fn max_deliveries(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::DEFAULT
    }
}

/// A name that is either static (from the attribute) or built at run time.
pub type Name = Cow<'static, str>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_millis(700));
        assert_eq!(b.base_delay(1), Duration::from_millis(100));
        assert_eq!(b.base_delay(2), Duration::from_millis(200));
        assert_eq!(b.base_delay(3), Duration::from_millis(400));
        assert_eq!(b.base_delay(4), Duration::from_millis(700));
        assert_eq!(b.base_delay(1000), Duration::from_millis(700));
        for retry in 1..6 {
            let d = b.delay(retry);
            assert!(d >= b.base_delay(retry) && d <= b.max, "{d:?}");
        }
    }

    #[test]
    fn setters_change_one_parameter_and_keep_the_rest() {
        const B: Backoff = Backoff::DEFAULT.with_multiplier(3.0);
        assert_eq!(B, Backoff::new(Backoff::DEFAULT.initial, 3.0, Backoff::DEFAULT.max));
        let initial = Duration::from_millis(5);
        assert_eq!(Backoff::DEFAULT.with_initial(initial), Backoff { initial, ..Backoff::DEFAULT });
        let max = Duration::from_secs(90);
        assert_eq!(Backoff::DEFAULT.with_max(max), Backoff { max, ..Backoff::DEFAULT });
    }

    #[test]
    fn validity() {
        assert!(Backoff::DEFAULT.is_valid());
        assert!(Backoff::new(Duration::ZERO, 1.0, Duration::ZERO).is_valid());
        assert!(!Backoff::DEFAULT.with_multiplier(0.5).is_valid());
        assert!(!Backoff::DEFAULT.with_multiplier(f64::INFINITY).is_valid());
        assert!(!Backoff::DEFAULT.with_multiplier(f64::NAN).is_valid());
        let initial = Duration::from_millis(1500);
        assert!(!Backoff::new(initial, 2.0, initial - Duration::from_nanos(1)).is_valid());
        assert!(Backoff::new(initial, 2.0, initial).is_valid());
    }
}
