//! The one delay between attempts of a failing Redis call, used by every retry loop of the
//! crate (connecting, reading, acknowledging, the heartbeat, the supervised loop tasks):
//! 100 ms doubling up to a cap (5 s unless a caller needs a shorter one); and the jitter of
//! every periodic task ([`jittered`]), so processes do not hit Redis in step.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// `d` scaled by a random factor in 0.8..1.2: the period of every periodic task (the loop's
/// ticks, the retention trimmer, the promoter of delayed messages).
pub(crate) fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

/// Delay between retries of a failing Redis call: 100 ms doubling to a cap.
#[derive(Debug, Clone)]
pub(crate) struct RetryDelay {
    next: Duration,
    max: Duration,
}

impl RetryDelay {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// 100 ms doubling to 5 s.
    pub fn new() -> Self {
        Self::up_to(Self::MAX)
    }

    /// 100 ms doubling to `max`.
    pub fn up_to(max: Duration) -> Self {
        RetryDelay { next: Self::FIRST.min(max), max }
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }

    /// The delay the next wait will take.
    pub fn current(&self) -> Duration {
        self.next
    }

    /// Returns the current delay and doubles the next one (up to the cap).
    pub fn advance(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Sleeps for the current delay and doubles it; false if `stop` was cancelled first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.advance();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jitter_stays_within_a_fifth_of_the_period() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(1));
            assert!(j >= Duration::from_millis(800) && j <= Duration::from_millis(1200), "{j:?}");
        }
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut d = RetryDelay::up_to(Duration::from_millis(500));
        let waits: Vec<u128> = (0..5).map(|_| d.advance().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        d.reset();
        assert_eq!(d.current(), Duration::from_millis(100));
        let mut d = RetryDelay::new();
        let last = (0..7).map(|_| d.advance()).last();
        assert_eq!(last, Some(Duration::from_secs(5)));
    }
}
