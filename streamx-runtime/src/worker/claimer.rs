//! Leases, retries and take-overs, all from the group's pending entries list (PEL):
//!
//! - **Lease**: every `claim_idle / 3`, entries this consumer holds (fetched, waiting or
//!   running, or failed and waiting out a long backoff) get their idle time reset with
//!   `XCLAIM ... JUSTID`, so no other consumer takes them however long a handler runs.
//! - **Scan**: every few hundred ms, `XPENDING ... IDLE claim_idle` walks the whole PEL
//!   (following the range to its end). An entry idle that long belongs to no live handler:
//!   its consumer died, lost it, or it failed and its retry delay has passed (failed entries
//!   are pre-aged, see [`super::dispatch::schedule_retry`]). It is claimed with `XCLAIM`
//!   (which counts the delivery) and handled here, or, if it has used all its deliveries,
//!   dead-lettered with kind `delivery_limit`.
//! - **Cleanup**: consumers that own nothing and were idle longer than the cleanup
//!   threshold are deleted from the group.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::interfaces::StreamsInterface;
use fred::types::Value;
use tokio_util::sync::CancellationToken;

use super::dispatch::{age, dead_letter};
use super::reader::dispatch_tracked;
use super::state::{lock, ConsumerStats, Shared};
use crate::handler::FailureKind;
use crate::inspect::{parse_consumers, parse_pending, PendingEntry};
use crate::message::MessageId;
use crate::wire::parse_entries;

/// Pending entries examined per XPENDING page.
const SCAN_PAGE: u64 = 100;
/// Ids per lease XCLAIM.
const LEASE_CHUNK: usize = 500;

/// Runs until `stop`; scans only until `shutdown` (leases go on while handlers drain).
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken, stop: CancellationToken) {
    let options = &shared.consumer.options;
    let claim_idle = options.claim_idle;
    let lease_every = (claim_idle / 3).max(Duration::from_millis(10));
    let scan_every =
        (claim_idle.min(options.retry.backoff.initial) / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let cleanup_every = shared.settings.cleanup_idle.clamp(Duration::from_secs(1), Duration::from_secs(60));
    let tick = lease_every.min(scan_every);
    let (mut last_lease, mut last_scan, mut last_cleanup) = (Instant::now(), Instant::now(), Instant::now());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        if last_lease.elapsed() >= lease_every {
            last_lease = Instant::now();
            lease(&shared).await;
        }
        if !shutdown.is_cancelled() && last_scan.elapsed() >= scan_every {
            last_scan = Instant::now();
            scan(&shared, &shutdown).await;
        }
        if !shutdown.is_cancelled() && last_cleanup.elapsed() >= cleanup_every {
            last_cleanup = Instant::now();
            cleanup(&shared).await;
        }
    }
}

/// Renews the lease of every entry this consumer holds, and hands long-delayed retries
/// back to the group once their remaining delay fits within `claim_idle`.
async fn lease(shared: &Shared) {
    let claim_idle = shared.consumer.options.claim_idle;
    let now = Instant::now();
    let mut due = Vec::new();
    let mut ids = shared.in_flight_ids();
    {
        let mut held = lock(&shared.held);
        held.retain(|id, at| {
            let remaining = at.saturating_duration_since(now);
            if remaining < claim_idle {
                due.push((*id, claim_idle - remaining));
                false
            } else {
                ids.push(*id);
                true
            }
        });
    }
    for chunk in ids.chunks(LEASE_CHUNK) {
        age(shared, chunk, Duration::ZERO).await;
    }
    for (id, idle) in due {
        age(shared, &[id], idle).await;
    }
}

/// Hands entries back to the group at once: idle = `claim_idle`, so the next scan of any
/// consumer takes them.
pub(crate) async fn release(shared: &Shared, ids: &[MessageId]) {
    for chunk in ids.chunks(LEASE_CHUNK) {
        age(shared, chunk, shared.consumer.options.claim_idle).await;
    }
    tracing::info!(consumer = %shared.name, count = ids.len(), "handed unfinished messages back to the group");
}

/// Walks the PEL for entries idle at least `claim_idle` and takes them over.
async fn scan(shared: &Arc<Shared>, shutdown: &CancellationToken) {
    let claim_idle_ms = shared.consumer.options.claim_idle.as_millis() as u64;
    let max_deliveries = shared.consumer.options.retry.max_deliveries();
    let mut start = "-".to_string();
    loop {
        let client = shared.command.get();
        let reply: Result<Value, _> =
            client.xpending(shared.stream(), shared.group(), (claim_idle_ms, start.as_str(), "+", SCAN_PAGE)).await;
        let page = match reply {
            Ok(v) => parse_pending(v),
            Err(e) => {
                if !crate::error::is_no_group(&e) {
                    tracing::warn!(consumer = %shared.name, error = %e, "XPENDING failed");
                    shared.command_failed(&client, &e).await;
                }
                return;
            }
        };
        let Some(last) = page.last().map(|p| p.id) else { return };
        let full = page.len() as u64 >= SCAN_PAGE;
        let (exhausted, retry): (Vec<_>, Vec<_>) =
            page.into_iter().partition(|p| p.deliveries >= u64::from(max_deliveries));
        for p in exhausted {
            if claim_just_id(shared, p.id, shared.consumer.options.claim_idle).await {
                let error = format!(
                    "delivered {} times without completing (its consumer died or lost it each time)",
                    p.deliveries
                );
                let deliveries = u32::try_from(p.deliveries).unwrap_or(u32::MAX);
                dead_letter(shared, p.id, deliveries, FailureKind::DeliveryLimit, &error).await;
            }
        }
        if !retry.is_empty() && !claim_and_dispatch(shared, retry, shared.consumer.options.claim_idle, shutdown).await {
            return;
        }
        if !full || shutdown.is_cancelled() {
            return;
        }
        start = format!("({last}");
    }
}

/// Claims `id` without counting a delivery; true if this consumer got it.
async fn claim_just_id(shared: &Shared, id: MessageId, min_idle: Duration) -> bool {
    match shared.claim(&[id], min_idle, None, true).await {
        Ok(v) if !v.is_null() => !v.into_array().is_empty(),
        _ => false,
    }
}

/// Claims the given entries (counting a delivery each) and runs their handlers.
async fn claim_and_dispatch(
    shared: &Arc<Shared>,
    pending: Vec<PendingEntry>,
    min_idle: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let deliveries: HashMap<MessageId, u64> = pending.iter().map(|p| (p.id, p.deliveries)).collect();
    let ids: Vec<MessageId> = pending.iter().map(|p| p.id).collect();
    let reply = shared.claim(&ids, min_idle, None, false).await;
    let entries = match reply {
        Ok(v) => parse_entries(v),
        Err(e) => {
            tracing::warn!(consumer = %shared.name, error = %e, "XCLAIM failed");
            return true;
        }
    };
    if entries.is_empty() {
        return true;
    }
    ConsumerStats::bump(&shared.stats.claimed, entries.len() as u64);
    ConsumerStats::bump(&shared.stats.delivered, entries.len() as u64);
    shared.track(entries.iter().map(|e| e.id));
    let work: Vec<_> = entries
        .into_iter()
        .map(|e| {
            let delivered = deliveries.get(&e.id).copied().unwrap_or(1);
            let attempt = u32::try_from(delivered).unwrap_or(u32::MAX).saturating_add(1);
            (e, attempt)
        })
        .collect();
    dispatch_tracked(shared, work, shutdown).await
}

/// Deletes consumers of the group that own no pending entries and have been idle longer
/// than the cleanup threshold.
async fn cleanup(shared: &Shared) {
    let threshold = shared.settings.cleanup_idle.as_millis() as u64;
    let reply: Result<Value, _> = shared.command.get().xinfo_consumers(shared.stream(), shared.group()).await;
    let Ok(reply) = reply else { return };
    for consumer in parse_consumers(reply) {
        if consumer.pending == 0 && consumer.idle_ms > threshold && consumer.name != shared.consumer_name() {
            let result: Result<Value, _> =
                shared.command.get().xgroup_delconsumer(shared.stream(), shared.group(), consumer.name.as_str()).await;
            if result.is_ok() {
                tracing::info!(consumer = %shared.name, removed = %consumer.name, idle_ms = consumer.idle_ms, "removed an idle consumer that owned nothing");
            }
        }
    }
}
