//! Batched acknowledgements: handler tasks queue ids; one task sends them as one XACK per
//! round trip. An id is queued only after its handler succeeded, waits at most for the XACK
//! in flight before it (no timer: the batch is whatever queued meanwhile), and stays held by
//! this consumer until Redis has the XACK (so a shutdown never hands back a handled entry
//! whose acknowledgement is still on its way, nor forgets one whose XACK failed).

use std::sync::Arc;

use super::shared::{AckReceiver, Acks, Shared};
use super::stats::ConsumerStats;
use crate::message::{id_args, MessageId};
use crate::retry_delay::RetryDelay;
use fred::interfaces::{SetsInterface, StreamsInterface};

/// The most ids sent in one XACK.
const MAX_ACK_BATCH: usize = 1000;

/// Attempts of the last XACKs once the loop is stopping (the drain hands back what fails).
const LAST_ATTEMPTS: u32 = 3;

pub(crate) async fn run(shared: Arc<Shared>, mut rx: AckReceiver) {
    let mut batch: Vec<MessageId> = Vec::with_capacity(64);
    loop {
        let first = tokio::select! {
            biased;
            first = rx.recv() => first,
            // No handler runs any more and nothing is queued: every ack has been sent.
            _ = shared.acks_closed().cancelled() => None,
        };
        let Some(first) = first else { break };
        add(&mut batch, first);
        while batch.len() < MAX_ACK_BATCH {
            let Ok(more) = rx.try_recv() else { break };
            add(&mut batch, more);
        }
        for ids in batch.chunks(MAX_ACK_BATCH) {
            send(&shared, ids).await;
        }
        batch.clear();
    }
}

fn add(batch: &mut Vec<MessageId>, acks: Acks) {
    match acks {
        Acks::One(id) => batch.push(id),
        Acks::Many(ids) => batch.extend(ids),
    }
}

/// Sends one XACK for `ids` (and clears the take-over marks of those that had one), retrying
/// failures with backoff; once the loop is stopping, a few more attempts, after which the
/// entries stay pending and are handed back by the drain (redelivered: at-least-once).
async fn send(shared: &Shared, ids: &[MessageId]) {
    let marked: Vec<String> = shared.taken_over_among(ids).iter().map(MessageId::to_string).collect();
    let mut delay = RetryDelay::new();
    let mut last_attempts = 0;
    loop {
        let client = shared.command.get();
        let result: Result<u64, _> = client.xack(shared.stream(), shared.group(), id_args(ids)).await;
        match result {
            Ok(_) => {
                ConsumerStats::bump(&shared.stats.ack_batches, 1);
                if !marked.is_empty() {
                    let cleared: Result<u64, _> = client.srem(&shared.keys.marks, marked.clone()).await;
                    if let Err(e) = cleared {
                        tracing::debug!(consumer = %shared.name, error = %e, "cannot clear take-over marks");
                    }
                }
                shared.untrack(ids.iter().copied());
                return;
            }
            Err(e) if crate::error::is_no_group(&e) => {
                tracing::warn!(consumer = %shared.name, count = ids.len(), "XACK: the group is gone (Redis restarted or flushed?); these entries are gone with it");
                shared.untrack(ids.iter().copied());
                return;
            }
            Err(e) => {
                tracing::warn!(consumer = %shared.name, error = %e, retry_in = ?delay.current(), "XACK failed; retrying");
                shared.command_failed(&client, &e).await;
                if shared.stopping.is_cancelled() {
                    last_attempts += 1;
                    if last_attempts >= LAST_ATTEMPTS {
                        tracing::error!(consumer = %shared.name, count = ids.len(), "XACK kept failing at shutdown; these entries stay pending and will be redelivered");
                        // They ran: the hand-back must count this delivery (handlers that
                        // finished inline are not marked started when they run).
                        shared.started_all(ids.iter().map(|id| (*id, None)));
                        return;
                    }
                }
                // While running, keep trying; at shutdown the wait is short-circuited.
                let never = tokio_util::sync::CancellationToken::new();
                let stop = if shared.stopping.is_cancelled() { &never } else { &shared.stopping };
                delay.wait(stop).await;
            }
        }
    }
}
