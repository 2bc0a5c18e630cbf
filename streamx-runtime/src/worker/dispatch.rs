//! One delivery: run the handler under its concurrency permit, then act on the outcome
//! (acknowledge, schedule a retry, or dead-letter).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::state::{lock, ConsumerStats, Shared};
use crate::dead_letters::{move_to_dead_letters, Failure};
use crate::handler::{Delivery, FailureKind, Outcome};
use crate::message::MessageId;
use crate::wire::RawEntry;

pub(crate) async fn handle(shared: Arc<Shared>, entry: RawEntry, attempt: u32, permit: OwnedSemaphorePermit) {
    let id = entry.id;
    let span =
        tracing::info_span!("streamx.handle", consumer = %shared.name, stream = shared.stream(), id = %id, attempt);
    async {
        let outcome = run_handler(&shared, entry, attempt).await;
        settle(&shared, id, attempt, outcome).await;
    }
    .instrument(span)
    .await;
    drop(permit);
}

async fn run_handler(shared: &Shared, entry: RawEntry, attempt: u32) -> Outcome {
    let limit = shared.settings.max_payload_bytes;
    if let Some(len) = entry.data.as_ref().map(|d| d.len()).filter(|len| *len > limit) {
        return Outcome::Rejected {
            reason: format!("payload is {len} bytes, over the limit of {limit} bytes"),
            kind: FailureKind::PayloadTooLarge,
        };
    }
    if entry.deleted {
        return Outcome::Rejected {
            reason: "the entry was deleted from the stream (trimmed?) before it was handled".to_string(),
            kind: FailureKind::MissingPayload,
        };
    }
    (shared.consumer.handler)(Delivery::new(shared.stream_arc.clone(), entry, attempt, shared.settings.state.clone()))
        .await
}

async fn settle(shared: &Shared, id: MessageId, attempt: u32, outcome: Outcome) {
    shared.untrack(id);
    match outcome {
        Outcome::Done => {
            shared.ack(id);
            ConsumerStats::bump(&shared.stats.succeeded, 1);
        }
        Outcome::Failed { error, kind, retry_after } => {
            let policy = &shared.consumer.options.retry;
            if attempt >= policy.max_deliveries() {
                tracing::warn!(%error, %kind, deliveries = attempt, "handler failed on its last delivery");
                // Boxed: the rare paths must not bloat every handler task's future.
                Box::pin(dead_letter(shared, id, attempt, kind, &error)).await;
            } else {
                let delay = retry_after.unwrap_or_else(|| policy.backoff.delay(attempt));
                tracing::info!(%error, %kind, retry_in = ?delay, "handler failed; will retry");
                ConsumerStats::bump(&shared.stats.retried, 1);
                Box::pin(schedule_retry(shared, id, delay)).await;
            }
        }
        Outcome::Rejected { reason, kind } => {
            tracing::warn!(%reason, %kind, "message rejected");
            Box::pin(dead_letter(shared, id, attempt, kind, &reason)).await;
        }
    }
}

/// Makes `id` claimable by any consumer of the group `delay` from now, keeping the retry
/// state in Redis: the entry's idle time is set to `claim_idle - delay`, so the claimers'
/// scan (pending entries idle for `claim_idle`) picks it up when the delay has passed,
/// here or in another process if this one dies. Delays longer than `claim_idle` are held
/// (and leased) locally until the remainder fits.
pub(crate) async fn schedule_retry(shared: &Shared, id: MessageId, delay: Duration) {
    let claim_idle = shared.consumer.options.claim_idle;
    if delay >= claim_idle {
        lock(&shared.held).insert(id, Instant::now() + delay);
        return;
    }
    age(shared, &[id], claim_idle - delay).await;
}

/// Sets the idle time of entries this consumer owns (`XCLAIM ... IDLE ms JUSTID`), without
/// counting a delivery.
pub(crate) async fn age(shared: &Shared, ids: &[MessageId], idle: Duration) {
    if let Err(e) = shared.claim(ids, Duration::ZERO, Some(idle), true).await {
        tracing::warn!(consumer = %shared.name, error = %e, "cannot set the idle time of pending entries; they will be retried after claim_idle");
    }
}

/// Moves `id` to the dead-letter stream (or acknowledges and drops it when dead letters
/// are off). On a Redis error the entry stays pending and is dead-lettered by a later
/// claim once its deliveries are used up.
pub(crate) async fn dead_letter(shared: &Shared, id: MessageId, deliveries: u32, kind: FailureKind, error: &str) {
    let Some(dlq) = shared.settings.dead_letter_stream.as_deref() else {
        tracing::warn!(%kind, %error, "dead letters are disabled for this consumer; dropping the message");
        shared.ack(id);
        ConsumerStats::bump(&shared.stats.dead_lettered, 1);
        return;
    };
    let failure = Failure {
        stream: shared.stream(),
        group: shared.group(),
        consumer: shared.consumer_name(),
        id,
        deliveries,
        kind,
        error,
    };
    match move_to_dead_letters(&shared.command.get(), dlq, &failure).await {
        Ok(Some(dlq_id)) => {
            tracing::warn!(dead_letter_stream = dlq, dead_letter_id = %dlq_id, %kind, "message moved to the dead-letter stream");
            ConsumerStats::bump(&shared.stats.dead_lettered, 1);
        }
        Ok(None) => tracing::info!("message was no longer pending; not dead-lettered"),
        Err(e) => {
            ConsumerStats::bump(&shared.stats.dead_letter_failures, 1);
            tracing::error!(error = %e, "cannot move the message to the dead-letter stream; it stays pending")
        }
    }
}
