//! The two timers of the loop's background tasks: a jittered tick (consumers of a group do
//! not all hit Redis at the same instant) and the delay between attempts of a failing Redis
//! call (100 ms doubling to 5 s).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A jittered interval (each wait is 80–120% of the period). After a tick that found a full
/// page of work the next one comes at once; after a failure it backs off.
pub(crate) struct Ticker {
    every: Duration,
    now: bool,
    backoff: RetryDelay,
    failing: bool,
}

impl Ticker {
    /// The first tick comes at once (a consumer that starts takes up due work without
    /// waiting a period).
    pub fn new(every: Duration) -> Self {
        Ticker { every, now: true, backoff: RetryDelay::new(), failing: false }
    }

    /// Waits for the next tick, or for `wake`; false once `stop` is cancelled.
    pub async fn wait_or(&mut self, stop: &CancellationToken, wake: &tokio::sync::Notify) -> bool {
        if self.now || self.failing {
            return self.wait(stop).await;
        }
        tokio::select! {
            _ = wake.notified() => !stop.is_cancelled(),
            more = self.wait(stop) => more,
        }
    }

    /// Waits for the next tick; false once `stop` is cancelled.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        if stop.is_cancelled() {
            return false;
        }
        if std::mem::take(&mut self.now) {
            tokio::task::yield_now().await;
            return !stop.is_cancelled();
        }
        if std::mem::take(&mut self.failing) {
            return self.backoff.wait(stop).await;
        }
        let wait = jittered(self.every);
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    /// Whether more work is probably waiting (the last tick filled its page).
    pub fn more(&mut self, more: bool) {
        self.now = more;
        self.backoff.reset();
    }

    /// The last tick failed: wait the growing retry delay before the next.
    pub fn failed(&mut self) {
        self.failing = true;
    }
}

/// `d` scaled by a random factor in 0.8..1.2.
pub(crate) fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

/// Delay between retries of a failing Redis call: 100 ms doubling to 5 s.
pub(crate) struct RetryDelay(Duration);

impl RetryDelay {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        RetryDelay(Self::FIRST)
    }

    pub fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    pub fn current(&self) -> Duration {
        self.0
    }

    /// Sleeps for the current delay and doubles it; false if `stop` was cancelled first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
