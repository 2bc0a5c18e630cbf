//! Groups the deliveries of a batch consumer into calls of its batch handler (see
//! [`crate::batch`] for what a batch handler promises).
//!
//! The engine still handles every message on its own (a slot each, then acknowledged, parked
//! for its retry or dead-lettered by itself); this only turns the per-message handler call
//! into a shared one. The first message to arrive opens a batch and *leads* it: it waits
//! until the batch is full (`max_batch`) or `batch_wait` has passed, then for a free call
//! (at most `concurrency` calls run at once; the batch keeps filling meanwhile), closes the
//! batch and calls the handler with every message in it. The messages that joined get their
//! own outcome from that call.
//!
//! The call runs inside the leader's handler future, so it is cancelled with it: at the
//! shutdown timeout, or at the consumer's `timeout` (the members, which joined later, then
//! fail with kind `timeout` too). A leader cancelled before its call closes its batch and
//! fails the members that joined it, so no message waits for a call that will never come.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify, Semaphore};

use super::shared::lock;
use crate::batch::ErasedBatchHandler;
use crate::handler::{Delivery, ErasedHandler, FailureKind, Outcome};

/// The batches of one consumer loop.
pub(crate) struct Batcher {
    call: ErasedBatchHandler,
    max: usize,
    wait: Duration,
    /// Whether the consumer has a `timeout` (what a member whose call was cancelled reports).
    timeout: Option<Duration>,
    /// One permit per call that may run: `concurrency`.
    calls: Semaphore,
    /// The batch new messages join, until it is full or its leader closes it.
    open: Mutex<Option<Arc<Forming>>>,
}

/// A batch being formed: its leader's delivery first, then each member's with the sender of
/// its outcome.
struct Forming {
    members: Mutex<Vec<(Delivery, Option<oneshot::Sender<Outcome>>)>>,
    full: Notify,
}

/// How a message took part in a batch.
enum Joined {
    Leader(Arc<Forming>),
    Member(oneshot::Receiver<Outcome>),
}

impl Batcher {
    /// The per-message handler of a batch consumer: what the engine calls for each delivery.
    pub fn handler(
        call: ErasedBatchHandler,
        concurrency: usize,
        max: usize,
        wait: Duration,
        timeout: Option<Duration>,
    ) -> ErasedHandler {
        let batcher = Arc::new(Batcher {
            call,
            max: max.max(1),
            wait,
            timeout,
            calls: Semaphore::new(concurrency.max(1)),
            open: Mutex::new(None),
        });
        Arc::new(move |delivery| Box::pin(batcher.clone().handle(delivery)))
    }

    async fn handle(self: Arc<Self>, delivery: Delivery) -> Outcome {
        match self.join(delivery) {
            Joined::Leader(batch) => self.lead(batch).await,
            Joined::Member(outcome) => outcome.await.unwrap_or_else(|_| self.call_cancelled()),
        }
    }

    /// Adds `delivery` to the open batch, or opens one led by it.
    fn join(&self, delivery: Delivery) -> Joined {
        let mut open = lock(&self.open);
        if let Some(batch) = open.as_ref() {
            let (tx, rx) = oneshot::channel();
            let mut members = lock(&batch.members);
            members.push((delivery, Some(tx)));
            if members.len() >= self.max {
                batch.full.notify_one();
                drop(members);
                *open = None;
            }
            return Joined::Member(rx);
        }
        let batch = Arc::new(Forming { members: Mutex::new(vec![(delivery, None)]), full: Notify::new() });
        if self.max > 1 {
            *open = Some(batch.clone());
        }
        Joined::Leader(batch)
    }

    /// Waits for the batch to fill (or `batch_wait`), then for a free call; closes the batch,
    /// calls the handler and hands each member its outcome. Returns the leader's own.
    async fn lead(&self, batch: Arc<Forming>) -> Outcome {
        let mut closing = Closing { batcher: self, batch: Some(batch.clone()) };
        if self.max > 1 {
            let _ = tokio::time::timeout(self.wait, batch.full.notified()).await;
        }
        // The semaphore is never closed.
        let Ok(_call) = self.calls.acquire().await else { return self.call_cancelled() };
        let members = closing.close();
        let (deliveries, senders): (Vec<Delivery>, Vec<_>) = members.into_iter().unzip();
        let mut outcomes = (self.call)(deliveries).await.into_iter();
        let own = outcomes.next().unwrap_or_else(|| self.call_cancelled());
        for (sender, outcome) in senders.into_iter().skip(1).zip(outcomes) {
            if let Some(sender) = sender {
                let _ = sender.send(outcome);
            }
        }
        own
    }

    /// The outcome of a member whose call ended without one for it: cancelled at the
    /// consumer's timeout (or at shutdown, when the outcome no longer matters).
    fn call_cancelled(&self) -> Outcome {
        match self.timeout {
            Some(limit) => super::timeout::timed_out(limit),
            None => Outcome::Failed {
                error: "the call of its batch was cancelled before it returned".to_string(),
                kind: FailureKind::Error,
                retry_after: None,
            },
        }
    }
}

/// Closes a leader's batch: when the call starts, or when the leader is cancelled before
/// it (then its members' senders drop with the batch, and they fail).
struct Closing<'a> {
    batcher: &'a Batcher,
    batch: Option<Arc<Forming>>,
}

impl Closing<'_> {
    /// Takes the batch out of the open slot (if still there: no one joins it after this) and
    /// returns its members.
    fn close(&mut self) -> Vec<(Delivery, Option<oneshot::Sender<Outcome>>)> {
        let Some(batch) = self.batch.take() else { return Vec::new() };
        let mut open = lock(&self.batcher.open);
        if open.as_ref().is_some_and(|o| Arc::ptr_eq(o, &batch)) {
            *open = None;
        }
        drop(open);
        let members = std::mem::take(&mut *lock(&batch.members));
        members
    }
}

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        drop(self.close());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Deliveries;
    use crate::message::MessageId;

    fn delivery(seq: u64) -> Delivery {
        Delivery::for_test("s", MessageId::new(1, seq), None)
    }

    /// A batch handler recording the sizes of its calls; fails odd sequence numbers.
    fn recording(sizes: Arc<Mutex<Vec<usize>>>) -> ErasedBatchHandler {
        Arc::new(move |deliveries: Deliveries| {
            sizes.lock().unwrap_or_else(|e| e.into_inner()).push(deliveries.len());
            let outcomes = deliveries
                .iter()
                .map(|d| {
                    if d.id().sequence() % 2 == 1 {
                        Outcome::Failed { error: "odd".into(), kind: FailureKind::Error, retry_after: None }
                    } else {
                        Outcome::Done
                    }
                })
                .collect();
            Box::pin(std::future::ready(outcomes))
        })
    }

    #[tokio::test]
    async fn full_batches_start_at_once_and_each_member_gets_its_outcome() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let handler = Batcher::handler(recording(sizes.clone()), 1, 3, Duration::from_secs(3600), None);
        let runs: Vec<_> = (0..7).map(|seq| tokio::spawn(handler(delivery(seq)))).collect();
        // Two full batches start at once; the seventh waits an hour alone, so it is checked
        // by its absence.
        let mut outcomes = Vec::new();
        for run in runs.into_iter().take(6) {
            outcomes.push(run.await.unwrap_or_else(|e| panic!("{e}")));
        }
        let failed: Vec<bool> = outcomes.iter().map(|o| !matches!(o, Outcome::Done)).collect();
        assert_eq!(failed, [false, true, false, true, false, true]);
        assert_eq!(*sizes.lock().unwrap_or_else(|e| e.into_inner()), [3, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_starts_after_its_wait_and_a_cancelled_leader_fails_its_members() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let handler = Batcher::handler(recording(sizes.clone()), 1, 10, Duration::from_millis(50), None);
        let (a, b) = (tokio::spawn(handler(delivery(0))), tokio::spawn(handler(delivery(2))));
        assert!(matches!(a.await, Ok(Outcome::Done)) && matches!(b.await, Ok(Outcome::Done)));
        assert_eq!(*sizes.lock().unwrap_or_else(|e| e.into_inner()), [2]);

        let leader = tokio::spawn(handler(delivery(4)));
        tokio::task::yield_now().await;
        let member = tokio::spawn(handler(delivery(6)));
        tokio::task::yield_now().await;
        leader.abort();
        assert!(matches!(member.await, Ok(Outcome::Failed { kind: FailureKind::Error, .. })));
        let after = tokio::spawn(handler(delivery(8)));
        assert!(matches!(after.await, Ok(Outcome::Done)), "a new batch opens after the cancelled one");
        assert_eq!(*sizes.lock().unwrap_or_else(|e| e.into_inner()), [2, 1]);
    }
}
