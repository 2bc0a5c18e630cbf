//! Waiting on a condition with a deadline, instead of sleeping in tests: [`wait_until`] for
//! tests, and the polling loop the [`TestRuntime`](crate::TestRuntime) waits share.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::TestingError;

/// Pause between two checks of a [`wait_until`] condition.
const WAIT_UNTIL_INTERVAL: Duration = Duration::from_millis(20);

/// Checks `check` every 20 ms until it returns true, for at most `limit`.
///
/// For conditions a test cannot be told about, e.g. a count read back from Redis or a flag
/// a handler sets. The check runs once more after `limit` has passed only if the previous
/// check started before it; it is never interrupted.
///
/// ```no_run
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
///
/// # async fn demo() -> Result<(), streamx_testing::TestingError> {
/// let done = AtomicBool::new(false);
/// // ... something sets `done` in the background ...
/// streamx_testing::wait_until(Duration::from_secs(10), "the job to finish", || async {
///     done.load(Ordering::SeqCst)
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`TestingError::Timeout`], naming `what`, when `check` has not returned true within
/// `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<(), TestingError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll(limit, WAIT_UNTIL_INTERVAL, what, || {
        let done = check();
        async move { Ok((done.await, "not yet".to_owned())) }
    })
    .await
}

/// Polls `check` (done?, the state to report on timeout) every `interval` until it is done
/// or `limit` has passed; the first error of `check` ends the wait.
pub(crate) async fn poll<F, Fut>(
    limit: Duration,
    interval: Duration,
    what: &str,
    mut check: F,
) -> Result<(), TestingError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(bool, String), TestingError>>,
{
    let started = Instant::now();
    loop {
        let (done, last) = check().await?;
        if done {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(TestingError::Timeout { what: what.to_owned(), waited: started.elapsed(), last });
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn waits_until_the_condition_holds() {
        let checks = AtomicU32::new(0);
        let result = wait_until(Duration::from_secs(10), "the third check", || async {
            checks.fetch_add(1, Ordering::SeqCst) + 1 >= 3
        })
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(checks.load(Ordering::SeqCst), 3, "no check after the condition held");
    }

    #[tokio::test]
    async fn a_condition_that_never_holds_times_out_naming_it() {
        let limit = Duration::from_millis(100);
        let started = Instant::now();
        match wait_until(limit, "the impossible", || async { false }).await {
            Err(TestingError::Timeout { what, waited, .. }) => {
                assert_eq!(what, "the impossible");
                assert!(waited > limit, "{waited:?}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "gave up soon after the limit");
    }
}
