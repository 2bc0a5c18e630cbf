//! One delivery: a permit, the handler, then what its outcome asks for (acknowledge, park
//! for a retry, or dead-letter), retried with backoff while Redis fails so nothing is ever
//! acknowledged without its dead letter nor forgotten.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fred::types::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::AbortHandle;
use tracing::Instrument;

use fred::clients::Client;

use super::acker;
use super::budget::{charged_size, Charge};
use super::retries::{self, Parking};
use super::shared::Shared;
use super::stats::ConsumerStats;
use crate::dead_letters::{move_to_dead_letters, Failure};
use crate::handler::{BoxFuture, Delivery, FailureKind, Outcome};
use crate::message::MessageId;
use crate::observe::RunClock;
use crate::retry_delay::RetryDelay;
use crate::wire::{parse_entry, RawEntry};

/// An entry a script claimed for this consumer: the entry, the delivery count the claim
/// set (this delivery included), and whether it is a crash suspect (see
/// [`super::takeover`]).
pub(crate) struct Claimed {
    pub entry: RawEntry,
    pub count: u32,
    pub suspect: bool,
    /// A suspect that already crashed its worker when run alone: dead-lettered, not run.
    pub crashed: bool,
}

impl Claimed {
    /// Parses a script's `{[[id, fields, count, suspect], ...], more}`: the entries, and
    /// whether the script left work for another call at once (it stopped at a cap).
    pub fn parse_with_more(reply: Value) -> (Vec<Claimed>, bool) {
        let mut parts = reply.into_array().into_iter();
        let claimed = parts.next().map(Claimed::parse_all).unwrap_or_default();
        let more = parts.next().and_then(|v| v.as_u64()).unwrap_or(0) == 1;
        (claimed, more)
    }

    /// Parses a script's `[[id, fields, count, flag], ...]` (flag: 0, 1 a suspect, 2 a
    /// suspect that crashed its worker alone).
    pub fn parse_all(reply: Value) -> Vec<Claimed> {
        if reply.is_null() {
            return Vec::new();
        }
        reply
            .into_array()
            .into_iter()
            .filter_map(|item| {
                let mut parts = item.into_array().into_iter();
                let (id, fields) = (parts.next()?, parts.next()?);
                let count = parts.next().and_then(|v| v.as_u64()).unwrap_or(1);
                let flag = parts.next().and_then(|v| v.as_u64()).unwrap_or(0);
                let (suspect, crashed) = (flag >= 1, flag == 2);
                let entry = parse_entry(Value::Array(vec![id, fields]))?;
                Some(Claimed { entry, count: u32::try_from(count).unwrap_or(u32::MAX), suspect, crashed })
            })
            .collect()
    }
}

/// Waits for one permit (in turn with the reader), then takes every other free one without
/// waiting: what a claim of due retries may take. `None` once the loop stops.
pub(crate) async fn take_permits(shared: &Shared) -> Option<OwnedSemaphorePermit> {
    let mut permits = take_one_permit(shared).await?;
    let free = shared.permits.available_permits();
    if free > 0 {
        if let Ok(more) = shared.permits.clone().try_acquire_many_owned(free as u32) {
            permits.merge(more);
        }
    }
    Some(permits)
}

/// Waits for one permit, and while the group is paused for its resume (every claim of due
/// retries, and every start that had to wait, takes its permit here: none while paused);
/// `None` once the loop stops.
pub(crate) async fn take_one_permit(shared: &Shared) -> Option<OwnedSemaphorePermit> {
    loop {
        if !shared.pause().wait_resumed(&shared.stopping).await {
            return None;
        }
        let permit = tokio::select! {
            biased;
            _ = shared.stopping.cancelled() => None,
            permit = shared.permits.clone().acquire_owned() => permit.ok(),
        }?;
        // Paused while it waited: the permit goes back until the resume.
        if !shared.pause().is_paused() {
            return Some(permit);
        }
    }
}

/// Starts the handlers of claimed entries, one permit each out of `permits` (taken before
/// the claim, so a claim of due retries never takes more than can start at once), each
/// taking its part of `charge`.
pub(crate) fn start_claimed(
    shared: &Arc<Shared>,
    claimed: Vec<Claimed>,
    mut permits: OwnedSemaphorePermit,
    mut charge: Charge,
) {
    if claimed.is_empty() {
        return;
    }
    ConsumerStats::bump(&shared.stats.delivered, claimed.len() as u64);
    for c in claimed {
        let Some(permit) = permits.split(1) else {
            // The scripts claim at most as many entries as there are permits; if one ever
            // exceeded that, it stays pending here and the reconciliation takes it up.
            tracing::error!(consumer = %shared.name, id = %c.entry.id, "claimed more entries than permits");
            continue;
        };
        shared.track_claimed([c.entry.id], false);
        let entry = match (&shared.gate, super::ordering::gated_key(shared, &c.entry)) {
            (Some(gate), Some(key)) => match gate.admit(&key, c.entry, c.count, |e| charge.split_for(e)) {
                Some(entry) => entry,
                None => continue, // its key is busy: it waits, without a permit
            },
            _ => c.entry,
        };
        let part = charge.split_for(&entry);
        start(shared, entry, c.count, permit, part);
    }
}

/// How often [`start_queued`] looks whether the loop is stopping: every this many entries,
/// and whenever it waits for a permit.
const STOP_CHECK_EVERY: usize = 16;

/// What [`start_queued`] did.
pub(crate) enum Dispatched {
    /// The loop stopped first: the entries not started stay tracked, handed back by the drain.
    Stopped,
    /// Every entry started; `waited` if some had to wait for a permit.
    Started { waited: bool },
}

/// Starts a handler for each already-tracked `(entry, attempt)` as permits free up, in
/// order. The handlers that finish inline are acknowledged together: on `ack_via` (a read
/// loop's own connection, queued before its next read) or through the acker.
///
/// Which entries started on a task of their own is recorded under one lock per run of free
/// permits, not per entry (the hot path of every read), before any wait: nothing that reads
/// it (the drain, a restarted reader) can look in between, as both run only once this task
/// has ended.
///
/// `held`: permits the caller took for these entries (a rate-limited read takes them before
/// its grant, so what was granted never waits for a permit), used before any other.
pub(crate) async fn start_queued(
    shared: &Arc<Shared>,
    entries: impl IntoIterator<Item = (RawEntry, u32)>,
    charge: Charge,
    ack_via: Option<&Client>,
    mut held: Option<OwnedSemaphorePermit>,
) -> Dispatched {
    let mut charge = RunCharge { charge, done: 0 };
    // Inline successes are counted with their run, as their acks are sent: one bump of the
    // shared counters per run instead of one per message.
    let ack = |acks: Vec<MessageId>| {
        succeeded(shared, acks.len() as u64);
        match ack_via {
            Some(client) => acker::send_now(shared, client, acks),
            None => shared.ack_all(acks),
        }
    };
    let mut started: Vec<(MessageId, Option<AbortHandle>)> = Vec::new();
    let mut acks: Vec<MessageId> = Vec::new();
    let mut waited = false;
    // The permit of the last handler that finished inline, reused by the next entry: a run
    // of quick handlers takes and gives back one permit, not one per entry (each of those
    // is an atomic on the semaphore shared by every loop, and a lock to give it back).
    let mut spare: Option<OwnedSemaphorePermit> = None;
    let mut clock = shared.metrics.run_clock();
    for (n, (entry, attempt)) in entries.into_iter().enumerate() {
        // Checked every few entries (it takes a lock): a stop lets at most that many more
        // start, which finished at once or wait for permits (where the stop is seen).
        if n % STOP_CHECK_EVERY == 0 && shared.stopping.is_cancelled() {
            shared.started_all(started);
            ack(acks);
            return Dispatched::Stopped;
        }
        // Paused (see `crate::pause`; one atomic load per entry): what is started so far is
        // recorded and acknowledged, and the rest waits here, held and unstarted (pending
        // under this member, whose heartbeat goes on), until the resume; at a shutdown
        // meanwhile the drain hands it back.
        if shared.pause().is_paused() {
            shared.started_all(started.drain(..));
            ack(std::mem::take(&mut acks));
            charge.release_done();
            drop(spare.take());
            drop(held.take());
            if !shared.pause().wait_resumed(&shared.stopping).await {
                return Dispatched::Stopped;
            }
            waited = true;
            clock = shared.metrics.run_clock();
        }
        // An ordered consumer's keyed entry whose key is busy waits in the gate, without a
        // permit, keeping its part of the charge.
        let entry = match (&shared.gate, super::ordering::gated_key(shared, &entry)) {
            (Some(gate), Some(key)) => match gate.admit(&key, entry, attempt, |e| charge.charge.split_for(e)) {
                Some(entry) => entry,
                None => continue,
            },
            _ => entry,
        };
        let permit = spare.take().or_else(|| held.as_mut().and_then(|h| h.split(1)));
        let permit = match permit.map_or_else(|| shared.permits.clone().try_acquire_owned(), Ok) {
            Ok(permit) => permit,
            Err(_) => {
                waited = true;
                shared.started_all(started.drain(..));
                ack(std::mem::take(&mut acks));
                charge.release_done();
                let permit = match take_one_permit(shared).await {
                    Some(permit) => permit,
                    None => return Dispatched::Stopped,
                };
                clock = shared.metrics.run_clock();
                permit
            }
        };
        let id = entry.id;
        let (abort, back) = run_or_spawn(shared, entry, attempt, permit, &mut charge, &mut acks, clock.as_mut());
        // Only handlers on a task of their own are marked started (with their cancel
        // handle): one that finished inline has settled, and if it succeeded its id is
        // queued for the acker, which marks it started only if the XACK fails at shutdown.
        if abort.is_some() {
            started.push((id, abort));
        }
        spare = back;
    }
    shared.started_all(started);
    ack(acks);
    Dispatched::Started { waited }
}

/// The byte-budget charge of the entries a run dispatches. An entry whose handler moves to a
/// task takes its part along (see [`Charge::split`]); the part of one that finished inline
/// stays here, `done`, and is released with the others of the run (at its end, or before
/// the run waits for a permit): one atomic operation on the budget every loop shares, not
/// one per entry (and no reference count to take and drop).
struct RunCharge {
    charge: Charge,
    done: usize,
}

impl RunCharge {
    /// Releases the parts of the entries that finished inline so far.
    fn release_done(&mut self) {
        self.charge.release_part(std::mem::take(&mut self.done));
    }
}

/// Starts the handling of `entry`: polls the handler once right here, and only if it does
/// not finish at once (the handler awaits I/O, a timer, ...) moves the rest of the handling
/// to a task of its own, whose cancel handle is returned. A handler that completes without
/// waiting (CPU-only work, a cache hit) then costs no task, no cross-thread wake-up and no
/// future besides the handler's own: on a deep backlog of quick handlers that is most of the
/// engine's own CPU per message.
///
/// Polling first with a no-op waker is sound: a spawned task polls its future again at once,
/// which registers the task's own waker (the most recent poll's waker is the one a future
/// must wake). Panics are caught inside the handler's future (see `handler::invoke`).
///
/// A handler that finished inline and succeeded adds its id to `acks`, which the caller
/// acknowledges with the others of its run (one XACK per run: see [`start_queued`]), and
/// hands its permit back for the next entry. A failure is settled on a task (parking it or writing its dead letter
/// waits for Redis).
fn run_or_spawn(
    shared: &Arc<Shared>,
    entry: RawEntry,
    attempt: u32,
    permit: OwnedSemaphorePermit,
    charge: &mut RunCharge,
    acks: &mut Vec<MessageId>,
    clock: Option<&mut RunClock>,
) -> (Option<AbortHandle>, Option<OwnedSemaphorePermit>) {
    let started = shared.metrics.handler_started_in(clock.as_deref(), entry.id, attempt);
    let bytes = charged_size(&entry);
    let mut handling = Handling::begin(shared, entry, attempt, permit, started);
    let polled = {
        let _in_span = handling.span.enter();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        handling.run.as_mut().poll(&mut cx)
    };
    let outcome = match polled {
        std::task::Poll::Ready(outcome) => outcome,
        std::task::Poll::Pending => {
            shared.metrics.handler_moved_out(clock);
            let part = charge.charge.split(bytes);
            let task = shared.tasks.spawn(finish_on_task(shared.clone(), handling.finish(shared.clone(), part)));
            return (Some(task.abort_handle()), None);
        }
    };
    let Handling { id, attempt, started, permit, span, key, .. } = handling;
    shared.metrics.handler_finished_in(clock, started);
    // The entry and its decoded payload are gone with the handler.
    charge.done += bytes;
    match outcome {
        Outcome::Done => {
            acks.push(id);
            // The next entry of its key, if one waits, takes the permit.
            let permit = match &key {
                Some(key) => super::ordering::released(shared, key, Some(permit)),
                None => Some(permit),
            };
            (None, permit)
        }
        other => {
            let settling = {
                let shared = shared.clone();
                async move {
                    let settled = settle(&shared, id, attempt, other, permit, key.is_some()).await;
                    (settled, key)
                }
                .instrument(span)
            };
            (Some(shared.tasks.spawn(finish_on_task(shared.clone(), settling)).abort_handle()), None)
        }
    }
}

/// The rest of a handling that waits, on a task of its own: once it settled, the task's
/// cancel handle is dropped here, on the handler's own thread (the last handle of a finished
/// task frees its memory where it drops), and a success is queued for the acker before its
/// permit is given back (to the next entry of its key, if one waits: see
/// [`super::ordering`]).
async fn finish_on_task(shared: Arc<Shared>, handling: impl Future<Output = (Settled, Option<Arc<str>>)>) {
    let (settled, key) = handling.await;
    match (settled, key) {
        (Settled::Succeeded(id, permit), key) => {
            shared.finished(id);
            shared.ack(id);
            if let Some(key) = key {
                drop(super::ordering::released(&shared, &key, Some(permit)));
            }
        }
        (Settled::Failed, Some(key)) => drop(super::ordering::released(&shared, &key, None)),
        (Settled::Failed | Settled::KeyHandedOn, _) => {}
    }
}

/// How a handling settled.
enum Settled {
    /// A success: its id (to acknowledge) and its permit, which the caller gives back once
    /// the acknowledgement is queued.
    Succeeded(MessageId, OwnedSemaphorePermit),
    /// A failure settled (parked for a retry or dead-lettered; its permit given back): its
    /// key, if ordered, is released.
    Failed,
    /// A failure retried in place (see [`super::ordering::retry_in_place`]): its key stays
    /// busy with the next attempt.
    KeyHandedOn,
}

/// Runs the handler of `entry` (delivery `attempt`) on its own task, holding `permit` and
/// the entry's `charge` of the byte budget.
pub(crate) fn start(
    shared: &Arc<Shared>,
    entry: RawEntry,
    attempt: u32,
    permit: OwnedSemaphorePermit,
    charge: Charge,
) -> tokio::task::JoinHandle<()> {
    let id = entry.id;
    let started = shared.metrics.handler_started(entry.id, attempt);
    let handling = Handling::begin(shared, entry, attempt, permit, started);
    let task = shared.tasks.spawn(finish_on_task(shared.clone(), handling.finish(shared.clone(), charge)));
    shared.started_all([(id, Some(task.abort_handle()))]);
    task
}

/// One delivery under way: the handler's future, polled or not yet, and what settling its
/// outcome takes (the permit, its span; the consumer and the entry's charge of the byte
/// budget are given to [`finish`](Self::finish), only when it finishes on a task).
struct Handling {
    id: MessageId,
    attempt: u32,
    /// The key an ordered consumer holds for this entry (see [`super::ordering`]): released
    /// when it settles.
    key: Option<Arc<str>>,
    run: BoxFuture<'static, Outcome>,
    started: Option<std::time::Instant>,
    permit: OwnedSemaphorePermit,
    span: tracing::Span,
}

impl Handling {
    /// Calls the handler of `entry` (in its span), which the metrics count as `started`; its
    /// future is not polled yet.
    fn begin(
        shared: &Arc<Shared>,
        entry: RawEntry,
        attempt: u32,
        permit: OwnedSemaphorePermit,
        started: Option<std::time::Instant>,
    ) -> Self {
        let id = entry.id;
        let key = super::ordering::gated_key(shared, &entry);
        let span =
            tracing::info_span!("streamx.handle", consumer = %shared.name, stream = shared.stream(), id = %id, attempt);
        #[cfg(feature = "opentelemetry")]
        crate::observe::trace_context::set_parent(&span, &entry.headers);
        let run = {
            let _in_span = span.enter();
            call_handler(shared, entry, attempt)
        };
        Handling { id, attempt, key, run, started, permit, span }
    }

    /// Runs the handler to its end, holding the entry's `charge`, then settles its outcome
    /// (see [`Settled`]); returns it with the entry's ordered key.
    async fn finish(self, shared: Arc<Shared>, charge: Charge) -> (Settled, Option<Arc<str>>) {
        let Handling { id, attempt, key, run, started, permit, span } = self;
        async move {
            let outcome = run.await;
            shared.metrics.handler_finished(started);
            // The entry and its decoded payload are gone with the handler.
            drop(charge);
            (settle(&shared, id, attempt, outcome, permit, key.is_some()).await, key)
        }
        .instrument(span)
        .await
    }
}

/// The handler's future for `entry`, or the rejection of an entry that must not run.
fn call_handler(shared: &Arc<Shared>, entry: RawEntry, attempt: u32) -> BoxFuture<'static, Outcome> {
    let max = shared.consumer.options.retry.max_deliveries();
    let rejected = |reason: String, kind: FailureKind| -> BoxFuture<'static, Outcome> {
        Box::pin(std::future::ready(Outcome::Rejected { reason, kind }))
    };
    if entry.replay_group.as_deref().is_some_and(|group| group != shared.group()) {
        // A dead letter of another group, published again for that group alone: settled
        // here without running (acknowledged, counted as handled).
        return Box::pin(std::future::ready(Outcome::Done));
    }
    if attempt > max {
        // Its earlier deliveries may all have started (its consumers stopped each time, or
        // its dead letter could not be written): never run it more than max_retries + 1 times.
        return rejected(
            format!("delivered {} times without completing (its consumer stopped or lost it each time)", attempt - 1),
            FailureKind::DeliveryLimit,
        );
    }
    if entry.deleted {
        return rejected(
            "the entry was deleted from the stream (trimmed or XDEL) while it was pending".to_string(),
            FailureKind::Trimmed,
        );
    }
    let limit = shared.settings.max_payload_bytes;
    if let Some(len) = entry.data.as_ref().map(|d| d.len()).filter(|len| *len > limit) {
        return rejected(
            format!("payload is {len} bytes, over the limit of {limit} bytes"),
            FailureKind::PayloadTooLarge,
        );
    }
    match &shared.dedupe {
        None => run_handler(shared, entry, attempt),
        Some(dedupe) => {
            let for_run = shared.clone();
            super::dedupe::handle(shared, dedupe, entry, move |entry| run_handler(&for_run, entry, attempt))
        }
    }
}

/// The handler's future for `entry`, with the consumer's timeout.
fn run_handler(shared: &Arc<Shared>, entry: RawEntry, attempt: u32) -> BoxFuture<'static, Outcome> {
    let delivery = Delivery::new(shared.stream_arc.clone(), entry, attempt, shared.settings.state.clone());
    let run = (shared.handler)(delivery.with_codec(shared.consumer.options.codec));
    match shared.consumer.options.timeout {
        None => run,
        Some(limit) => Box::pin(super::timeout::run_with_timeout(shared.clone(), run, limit)),
    }
}

/// Counts `n` successes.
fn succeeded(shared: &Shared, n: u64) {
    if n > 0 {
        ConsumerStats::bump(&shared.stats.succeeded, n);
        shared.metrics.succeeded(n);
    }
}

/// Settles an outcome: a success is returned, to be acknowledged by the caller; a failure
/// is parked for a retry or dead-lettered here, or, for an entry holding its `ordered`
/// key, retried in place (see [`super::ordering`]).
async fn settle(
    shared: &Arc<Shared>,
    id: MessageId,
    attempt: u32,
    outcome: Outcome,
    permit: OwnedSemaphorePermit,
    ordered: bool,
) -> Settled {
    match outcome {
        Outcome::Done => {
            succeeded(shared, 1);
            return Settled::Succeeded(id, permit);
        }
        // Counted when it was decided (see `super::dedupe`); acknowledged like a success.
        Outcome::Deduplicated => return Settled::Succeeded(id, permit),
        Outcome::Failed { error, kind, retry_after } => {
            let policy = &shared.consumer.options.retry;
            if attempt >= policy.max_deliveries() {
                tracing::warn!(%error, %kind, deliveries = attempt, "handler failed on its last delivery");
                shared.metrics.dead_lettered(kind);
                // Boxed: the rare paths must not bloat every handler task's future.
                Box::pin(dead_letter(shared, id, attempt, kind, &error, permit)).await;
            } else {
                let delay = retry_after.unwrap_or_else(|| policy.backoff.delay(attempt));
                tracing::info!(%error, %kind, retry_in = ?delay, "handler failed; will retry");
                ConsumerStats::bump(&shared.stats.retried, 1);
                shared.metrics.retried();
                if ordered {
                    if Box::pin(super::ordering::retry_in_place(shared, id, attempt, delay, permit)).await {
                        return Settled::KeyHandedOn;
                    }
                    return Settled::Failed;
                }
                Box::pin(schedule_retry(shared, id, delay, permit)).await;
            }
        }
        Outcome::Rejected { reason, kind } => {
            tracing::warn!(%reason, %kind, "message rejected");
            shared.metrics.dead_lettered(kind);
            let deliveries = attempt.min(shared.consumer.options.retry.max_deliveries());
            Box::pin(dead_letter(shared, id, deliveries, kind, &reason, permit)).await;
        }
    }
    Settled::Failed
}

/// Parks `id` in the retry schedule, due `delay` from now, its count unchanged. While Redis
/// fails, tries again with backoff (after giving up the permit); the entry stays this
/// consumer's meanwhile, and is handed back at shutdown.
async fn schedule_retry(shared: &Shared, id: MessageId, delay: Duration, permit: OwnedSemaphorePermit) {
    let parking = [Parking { id, delay, unstarted: false }];
    let mut permit = Some(permit);
    let mut backoff = RetryDelay::new();
    loop {
        match retries::park(shared, &parking).await {
            Ok(parked) => {
                if parked.is_empty() {
                    tracing::info!("the message was taken over by another consumer meanwhile; leaving it to it");
                }
                shared.untrack([id]);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff.current(), "cannot schedule the retry yet; it stays pending here");
                drop(permit.take());
                if !backoff.wait(&shared.stopping).await {
                    return; // shutdown: the drain hands it back
                }
            }
        }
    }
}

/// Moves `id` to the dead-letter stream (or acknowledges and drops it when dead letters are
/// off). Nothing is acknowledged unless the dead letter is written; while that fails, the
/// entry stays pending here and the move is tried again with backoff (each failure counted).
pub(crate) async fn dead_letter(
    shared: &Shared,
    id: MessageId,
    deliveries: u32,
    kind: FailureKind,
    error: &str,
    permit: OwnedSemaphorePermit,
) {
    let Some(dlq) = shared.keys.dead_letters.as_deref() else {
        tracing::warn!(%kind, %error, "dead letters are disabled for this consumer; dropping the message");
        shared.ack(id);
        ConsumerStats::bump(&shared.stats.dead_lettered, 1);
        return;
    };
    let failure = Failure {
        stream: shared.stream(),
        group: shared.group(),
        consumer: shared.member_name(),
        id,
        deliveries,
        kind,
        error,
    };
    let mut permit = Some(permit);
    let mut backoff = RetryDelay::new();
    loop {
        let client = shared.command.get();
        let cap = shared.consumer.options.retry.dlq_max_len;
        match move_to_dead_letters(&client, dlq, cap, &shared.keys.marks, &failure, shared.fence()).await {
            Ok(Some(moved)) => {
                tracing::warn!(dead_letter_stream = dlq, dead_letter_id = %moved.id, %kind, "message moved to the dead-letter stream");
                ConsumerStats::bump(&shared.stats.dead_lettered, 1);
                shared.dead_letters_trimmed(moved.trimmed);
                break;
            }
            Ok(None) => {
                tracing::info!("message was no longer this consumer's; not dead-lettered here");
                break;
            }
            Err(e) => {
                ConsumerStats::bump(&shared.stats.dead_letter_failures, 1);
                tracing::error!(error = %e, retry_in = ?backoff.current(), "cannot write the dead letter; the message stays pending and the move is tried again");
                if let crate::error::Error::Redis { source, .. } = &e {
                    shared.command_failed(&client, source).await;
                }
                drop(permit.take());
                if !backoff.wait(&shared.stopping).await {
                    return; // shutdown: the drain hands it back
                }
            }
        }
    }
    shared.untrack([id]);
}
