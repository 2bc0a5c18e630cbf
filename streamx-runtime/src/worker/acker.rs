//! Batched acknowledgements: handler tasks queue ids; one task sends them as one XACK per
//! round trip. An id is queued only after its handler succeeded, and waits at most for the
//! XACK in flight before it (no timer: the batch is whatever queued meanwhile).

use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::StreamsInterface;
use tokio::sync::mpsc;

use super::state::{ConsumerStats, Shared};
use crate::message::MessageId;

pub(crate) type AckSender = mpsc::UnboundedSender<MessageId>;
pub(crate) type AckReceiver = mpsc::UnboundedReceiver<MessageId>;

/// The most ids sent in one XACK.
const MAX_ACK_BATCH: usize = 1000;

pub(crate) async fn run(shared: Arc<Shared>, mut rx: AckReceiver) {
    let mut batch: Vec<MessageId> = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, MAX_ACK_BATCH).await > 0 {
        send(&shared, &batch).await;
        batch.clear();
    }
}

/// Sends one XACK for `ids`, retrying transient failures a few times. An id whose ack is
/// lost stays pending and is redelivered after `claim_idle` (at-least-once).
async fn send(shared: &Shared, ids: &[MessageId]) {
    let strs: Vec<String> = ids.iter().map(MessageId::to_string).collect();
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=5 {
        let client = shared.command.get();
        let result: Result<u64, _> = client.xack(shared.stream(), shared.group(), strs.clone()).await;
        match result {
            Ok(_) => {
                ConsumerStats::bump(&shared.stats.ack_batches, 1);
                return;
            }
            Err(e) if crate::error::is_no_group(&e) => {
                tracing::warn!(consumer = %shared.name, count = ids.len(), "XACK: the group is gone (Redis restarted or flushed?); these entries are lost with it");
                return;
            }
            Err(e) => {
                tracing::warn!(consumer = %shared.name, attempt, error = %e, "XACK failed; retrying");
                shared.command_failed(&client, &e).await;
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    tracing::error!(consumer = %shared.name, count = ids.len(), "XACK kept failing; these entries stay pending and will be redelivered");
}
