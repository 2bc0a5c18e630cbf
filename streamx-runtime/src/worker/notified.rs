//! Waiting for a condition that other tasks change and announce on a [`Notify`].

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Waits until `ready` gives a value, looking again each time `changed` is notified; `None`
/// once `stop` is cancelled. The notification is armed before each look, so a change made
/// between the look and the wait is never missed (whoever changes the condition notifies
/// with `notify_waiters` after changing it).
pub(crate) async fn wait_for<T>(
    changed: &Notify,
    stop: &CancellationToken,
    mut ready: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(value) = ready() {
            return Some(value);
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = notified => {}
        }
    }
}
