//! The tick of the loop's background tasks: jittered, so consumers of a group do not all hit
//! Redis at the same instant; after a failure it waits the crate's [`RetryDelay`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub(crate) use crate::retry_delay::jittered;
use crate::retry_delay::RetryDelay;

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
