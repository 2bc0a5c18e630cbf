//! The consumer's side of a rate limit (see [`crate::rate_limit`]): asking for grants before
//! reads and before starting claimed entries, waiting when refused, returning what a short
//! read did not use.

use std::time::{Duration, Instant};

use fred::types::Value;
use tokio_util::sync::CancellationToken;

use super::budget::Charge;
use super::dispatch::{self, Dispatched};
use super::shared::Shared;
use crate::rate_limit::{Grant, Limiter, GRANT, REFUND};
use crate::retry_delay::RetryDelay;
use crate::wire::RawEntry;

/// Waits for a grant of between 1 and `want` starts (at most what one grant gives, see
/// [`Limiter`]): one round trip when the limit does not bind; refused, waits the time the
/// script says (plus up to 2 ms of jitter, so refused processes do not ask in step). Redis
/// errors are retried with backoff. `None` once `stop` is cancelled.
pub(crate) async fn grant(shared: &Shared, limiter: &Limiter, want: usize, stop: &CancellationToken) -> Option<Grant> {
    let mut backoff = RetryDelay::new();
    let mut waited_since: Option<Instant> = None;
    loop {
        if stop.is_cancelled() {
            return None;
        }
        let (args, member) = limiter.grant_args(want);
        let client = shared.command.get();
        let reply: Result<Value, _> = GRANT.evalsha_with_reload(&client, vec![limiter.key.clone()], args).await;
        let wait = match reply {
            Ok(reply) => {
                let mut parts = reply.into_array().into_iter();
                let granted = parts.next().and_then(|v| v.as_u64()).unwrap_or(0);
                let wait_ms = parts.next().and_then(|v| v.as_u64()).unwrap_or(1);
                if granted > 0 {
                    if let Some(since) = waited_since {
                        limiter.waited.record(since.elapsed().as_secs_f64());
                    }
                    limiter.granted.increment(granted);
                    let count = usize::try_from(granted).unwrap_or(usize::MAX);
                    let member = format!("{granted}:{member}");
                    return Some(Grant { count, member });
                }
                limiter.waits.increment(1);
                waited_since.get_or_insert_with(Instant::now);
                let wait = Duration::from_millis(wait_ms);
                tracing::debug!(consumer = %shared.name, limit = %limiter.limit, ?wait, "rate limit reached; waiting");
                // A little jitter (at most 2 ms), so refused processes do not ask in step
                // without slowing a binding limit's pace (10 % here made a 100/s drain 5 % slower).
                wait + Duration::from_micros(rand::random::<u64>() % 2_000)
            }
            Err(e) => {
                tracing::warn!(consumer = %shared.name, error = %e, retry_in = ?backoff.current(), "cannot take a rate-limit grant; retrying");
                shared.command_failed(&client, &e).await;
                backoff.advance()
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Waits until `n` starts are granted, in as many grants as it takes. False once the loop
/// stops.
pub(crate) async fn grant_all(shared: &Shared, n: usize) -> bool {
    let Some(limiter) = shared.limiter.as_ref() else { return true };
    let mut left = n;
    while left > 0 {
        match grant(shared, limiter, left, &shared.stopping).await {
            Some(g) => left = left.saturating_sub(g.count),
            None => return false,
        }
    }
    true
}

/// Starts `work` (already tracked entries, with their `charge`) as [`dispatch::start_queued`]
/// does, a grant at a time when rate-limited: permits first (as many as free, at least one,
/// at most a grant's worth), then a grant of no more, then the start of that many, so no
/// granted entry waits for a permit (a start trailing its grant by more than the window's
/// margin could bunch past the limit: entries taken over while every permit was busy did).
pub(crate) async fn start_granted(
    shared: &std::sync::Arc<Shared>,
    work: Vec<(RawEntry, u32)>,
    mut charge: Charge,
) -> Dispatched {
    let Some(limiter) = shared.limiter.as_ref() else {
        return dispatch::start_queued(shared, work, charge, None, None).await;
    };
    let mut work = work.into_iter().peekable();
    let mut waited = false;
    while work.peek().is_some() {
        let Some(mut permits) = dispatch::take_one_permit(shared).await else { return Dispatched::Stopped };
        let more = shared.permits.available_permits().min(limiter.most.saturating_sub(1));
        if let Ok(more) = shared.permits.clone().try_acquire_many_owned(u32::try_from(more).unwrap_or(0)) {
            permits.merge(more);
        }
        let want = permits.num_permits();
        let Some(grant) = grant(shared, limiter, want, &shared.stopping).await else { return Dispatched::Stopped };
        let chunk: Vec<(RawEntry, u32)> = work.by_ref().take(grant.count.min(want)).collect();
        if chunk.len() < grant.count {
            refund(shared, limiter, &grant, chunk.len()).await;
        }
        let mut part = charge.split(0);
        for (entry, _) in &chunk {
            part.absorb(charge.split_for(entry));
        }
        let held = permits.split(chunk.len());
        match dispatch::start_queued(shared, chunk, part, None, held).await {
            Dispatched::Stopped => return Dispatched::Stopped,
            Dispatched::Started { waited: w } => waited |= w,
        }
    }
    Dispatched::Started { waited }
}

/// Returns the starts of `grant` beyond `used` (a read came back short). Best effort: if it
/// fails, the starts stay spent until the grant leaves the window (fewer starts, never more).
pub(crate) async fn refund(shared: &Shared, limiter: &Limiter, grant: &Grant, used: usize) {
    let unused = grant.count.saturating_sub(used);
    if unused == 0 {
        return;
    }
    let client = shared.command.get();
    let args = vec![grant.member.clone(), unused.to_string()];
    let reply: Result<u64, _> = REFUND.evalsha_with_reload(&client, vec![limiter.key.clone()], args).await;
    match reply {
        Ok(back) => tracing::trace!(consumer = %shared.name, back, "returned unused rate-limit grants"),
        Err(e) => {
            tracing::debug!(consumer = %shared.name, error = %e, "cannot return unused rate-limit grants");
            shared.command_failed(&client, &e).await;
        }
    }
}
