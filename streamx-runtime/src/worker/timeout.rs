//! The handler timeout (`timeout = "30s"`): a handler run that outlives it is cancelled, by
//! dropping its future at the deadline, and the delivery fails with
//! [`FailureKind::Timeout`]. The failure then takes the path of any other: the permit is
//! released, the entry parked for its retry (or dead-lettered after its last delivery) and
//! forgotten, exactly as after an error. Nothing of the heartbeat changes: it proves the
//! consumer alive, not its handlers, so a hung handler never lost its message before and a
//! timed-out one simply fails.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;
use super::stats::ConsumerStats;
use crate::handler::{FailureKind, Outcome};

/// Runs `handler` for at most `limit`; past it, drops it and reports a timeout.
pub(crate) async fn run_with_timeout(
    shared: Arc<Shared>,
    handler: impl Future<Output = Outcome>,
    limit: Duration,
) -> Outcome {
    match tokio::time::timeout(limit, handler).await {
        Ok(outcome) => outcome,
        Err(_) => {
            ConsumerStats::bump(&shared.stats.timed_out, 1);
            shared.metrics.timed_out();
            timed_out(limit)
        }
    }
}

/// The outcome of a handler cancelled after `limit`.
pub(crate) fn timed_out(limit: Duration) -> Outcome {
    Outcome::Failed {
        error: format!("the handler did not finish within its timeout of {limit:?}; it was cancelled"),
        kind: FailureKind::Timeout,
        retry_after: None,
    }
}
