//! State shared by the tasks of one consumer loop: the entries this consumer holds, the
//! permits that bound its handlers, its keys, clients and counters.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batcher::Batcher;
use super::budget::ByteBudget;
use super::held::{Held, HeldSet};
use super::stats::ConsumerStats;
use super::LoopSettings;
use crate::connection::HealingClient;
use crate::consumer::{Consumer, HandlerKind};
use crate::handler::ErasedHandler;
use crate::keys;
use crate::message::MessageId;
use crate::observe::{ConsumerMetrics, Readiness};
use crate::permissions::PermissionWatch;

/// Where handlers queue the ids to acknowledge (drained by the acker task).
pub(crate) type AckSender = mpsc::UnboundedSender<Acks>;
/// The acker task's end of [`AckSender`].
pub(crate) type AckReceiver = mpsc::UnboundedReceiver<Acks>;

/// Ids to acknowledge: one, from a handler that ran on a task of its own, or those of the
/// handlers a dispatch ran to completion inline (one message, one wake-up of the acker, per
/// run instead of per entry).
#[derive(Debug)]
pub(crate) enum Acks {
    One(MessageId),
    Many(Vec<MessageId>),
}

/// The Redis keys of one consumer group's bookkeeping (see [`crate::keys`]).
#[derive(Debug, Clone)]
pub(crate) struct GroupKeys {
    pub schedule: String,
    pub heartbeats: String,
    pub marks: String,
    /// The members' liveness deadlines (see [`super::heartbeat`]).
    pub deadlines: String,
    pub dead_letters: Option<String>,
}

pub(crate) struct Shared {
    /// The registration name (logs).
    pub name: String,
    pub stream_arc: Arc<str>,
    pub consumer: Consumer,
    /// What runs for each delivery: the consumer's handler, or for a batch consumer its
    /// [`Batcher`]'s per-message side.
    pub handler: ErasedHandler,
    /// How many permits there are: messages in flight at once (see `Consumer::slots`).
    pub slots: usize,
    pub settings: LoopSettings,
    pub keys: GroupKeys,
    pub command: HealingClient,
    /// One permit per handler that may run: the concurrency bound.
    pub permits: Arc<Semaphore>,
    /// The bytes of fetched, unfinished entries: the memory bound.
    pub budget: Arc<ByteBudget>,
    /// Every task of the loop that may touch Redis or run a handler: awaited at shutdown,
    /// so nothing of the runtime runs after `shutdown()` returns.
    pub tasks: TaskTracker,
    /// Cancelled when the loop stops taking new work (reads, take-overs, due retries).
    pub stopping: CancellationToken,
    pub stats: Arc<ConsumerStats>,
    /// The loop's metric handles (see [`crate::observe`]).
    pub metrics: ConsumerMetrics,
    /// Whether the reader is connected and reading (`/readyz`).
    pub readiness: Arc<Readiness>,
    /// Tells permission errors among failed commands (see [`crate::permissions`]).
    pub permissions: PermissionWatch,
    /// The dedupe state, for a consumer with `dedupe` (see [`super::dedupe`]).
    pub dedupe: Option<Arc<super::dedupe::Dedupe>>,
    /// The key gate, for a consumer with `ordered` (see [`super::ordering`]).
    pub gate: Option<super::ordering::KeyGate>,
    /// The group's rate limit (see [`crate::rate_limit`]), if it has one.
    pub limiter: Option<crate::rate_limit::Limiter>,
    /// When the heartbeat last got through again after failing (Redis unreachable or
    /// restarted): every consumer's heartbeat looks stale for a while after an outage.
    recovered_at: Mutex<Option<Instant>>,
    held: Mutex<HeldSet>,
    /// Notified when held entries are forgotten (see [`wait_held_room`](Self::wait_held_room)).
    held_freed: Notify,
    /// Where handlers queue acknowledgements; no lock on this path, which every message
    /// takes. The acker stops at [`close_acks`](Self::close_acks).
    acks: AckSender,
    acks_closed: CancellationToken,
    /// The ACL refused `XACKDEL` once: acknowledge with `XACK` from then on (see the acker).
    pub xackdel_refused: std::sync::atomic::AtomicBool,
    /// Cancelled once new entries may be read: at once for a stream; for a topic shard, once
    /// the take-over has claimed every entry the shard's earlier owners held, so those run
    /// before any later entry (per-key order across owners).
    pub caught_up: CancellationToken,
}

impl Shared {
    pub fn new(
        consumer: Consumer,
        settings: LoopSettings,
        command: HealingClient,
        stopping: CancellationToken,
    ) -> (Arc<Self>, AckReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let keys = GroupKeys {
            schedule: keys::retry_schedule(&consumer.stream, &consumer.group),
            heartbeats: keys::heartbeats(&consumer.stream, &consumer.group),
            marks: keys::takeover_marks(&consumer.stream, &consumer.group),
            deadlines: keys::member_deadlines(&consumer.stream, &consumer.group),
            dead_letters: settings.dead_letter_stream.clone(),
        };
        let options = &consumer.options;
        let handler = match &consumer.handler {
            HandlerKind::One(handler) => handler.clone(),
            HandlerKind::Batch(call) => Batcher::handler(
                call.clone(),
                options.concurrency,
                options.max_batch,
                options.batch_wait,
                options.timeout,
            ),
        };
        // Behind the consumer's middleware, if any (see `crate::middleware`).
        let handler = crate::middleware::wrap(&consumer.layers, &consumer.group, handler);
        let slots = consumer.slots();
        let readiness = Arc::new(Readiness::default());
        let tasks = TaskTracker::new();
        let permissions = PermissionWatch::new(
            &consumer,
            &settings.url,
            settings.dead_letter_stream.clone(),
            command.clone(),
            readiness.clone(),
            stopping.clone(),
            tasks.clone(),
        );
        let dedupe = options
            .dedupe
            .map(|window| Arc::new(super::dedupe::Dedupe::new(&consumer.stream, &consumer.group, window)));
        let stats = settings.stats.clone().unwrap_or_default();
        let gate = options.effective_ordered().then(|| super::ordering::KeyGate::new(settings.max_buffered_bytes));
        let limiter = options.rate_limit.map(|limit| {
            crate::rate_limit::Limiter::new(&consumer.stream, &consumer.group, &settings.member_name, limit)
        });
        let shared = Shared {
            dedupe,
            gate,
            limiter,
            name: consumer.name.to_string(),
            handler,
            slots,
            stream_arc: Arc::from(&*consumer.stream),
            metrics: ConsumerMetrics::new(&consumer.stream, &consumer.group, &consumer.name),
            permits: Arc::new(Semaphore::new(slots)),
            budget: ByteBudget::with_stats(settings.max_buffered_bytes, Some(stats.clone())),
            consumer,
            settings,
            keys,
            command,
            tasks,
            stopping,
            stats,
            readiness,
            permissions,
            recovered_at: Mutex::new(None),
            held: Mutex::new(HeldSet::default()),
            held_freed: Notify::new(),
            acks: tx,
            acks_closed: CancellationToken::new(),
            xackdel_refused: std::sync::atomic::AtomicBool::new(false),
            caught_up: CancellationToken::new(),
        };
        if shared.fence().is_none() {
            shared.caught_up.cancel();
        }
        (Arc::new(shared), rx)
    }

    /// After a failed command on `used`: notes a permission error, replaces the shared client
    /// if it is wedged.
    pub async fn command_failed(&self, used: &fred::clients::Client, err: &fred::error::Error) {
        if crate::topic::fence::is_fenced(err) {
            self.fenced();
            return;
        }
        self.permissions.failed(err);
        self.command.heal(used, err).await;
    }

    /// The fence of a topic shard's loop (see [`crate::topic::fence`]).
    pub fn fence(&self) -> Option<&crate::topic::fence::Fence> {
        self.settings.fence.as_deref()
    }

    /// A script refused this loop: its shard's lease moved to another process. The loop
    /// stops taking work; what it holds stays pending for the new owner.
    pub fn fenced(&self) {
        if !self.stopping.is_cancelled() {
            tracing::warn!(consumer = %self.name, stream = self.stream(), "the shard's lease moved to another process: this loop stops");
            ConsumerStats::bump(&self.stats.fenced, 1);
            self.stopping.cancel();
        }
    }

    /// Waits until a read may be sent: the loop has caught up (see
    /// [`caught_up`](Self::caught_up)), the group is known not to be paused (see
    /// [`crate::pause`]) and,
    /// for a topic shard, its lease is known to hold for longer than `block` and a margin.
    /// `false` once the loop stops.
    pub async fn wait_read_allowed(&self, block: std::time::Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return false,
            _ = self.caught_up.cancelled() => {}
        }
        if !self.pause().wait_readable(shutdown).await {
            return false;
        }
        match self.fence() {
            None => true,
            Some(fence) => fence.wait_holds(block + crate::topic::fence::READ_MARGIN, shutdown).await,
        }
    }

    pub fn stream(&self) -> &str {
        &self.consumer.stream
    }

    /// Whether the group is paused (see [`crate::pause`]): while it is, no handler starts.
    pub fn pause(&self) -> &crate::pause::PauseFlag {
        &self.settings.pause
    }

    pub fn group(&self) -> &str {
        &self.consumer.group
    }

    /// This consumer's name inside the group.
    pub fn member_name(&self) -> &str {
        &self.settings.member_name
    }

    /// The heartbeat got through again after failing.
    pub fn recovered(&self) {
        *lock(&self.recovered_at) = Some(Instant::now());
    }

    /// Whether heartbeats may be trusted to tell stopped consumers: not until `claim_idle`
    /// after an outage this consumer saw, so its peers have beaten again meanwhile (after a
    /// Redis restart every heartbeat is as old as the outage, live consumers' too).
    pub fn may_take_over(&self) -> bool {
        let claim_idle = self.consumer.options.claim_idle;
        lock(&self.recovered_at).is_none_or(|at| at.elapsed() >= claim_idle)
    }

    /// Entries a read just delivered, not started yet.
    pub fn track_read(&self, ids: impl IntoIterator<Item = MessageId>) {
        self.track_claimed(ids, false);
    }

    /// Entries claimed (due retries or take-overs), not started yet.
    pub fn track_claimed(&self, ids: impl IntoIterator<Item = MessageId>, taken_over: bool) {
        let mut held = lock(&self.held);
        let ids = ids.into_iter();
        held.map.reserve(ids.size_hint().0);
        for id in ids {
            held.insert(id, Held { started: false, taken_over, abort: None });
        }
    }

    /// Marks entries started; each handle, if the handler runs on a task of its own, cancels
    /// it. (An entry that already settled and was forgotten stays forgotten.)
    pub fn started_all(&self, started: impl IntoIterator<Item = (MessageId, Option<AbortHandle>)>) {
        let mut held = lock(&self.held);
        for (id, abort) in started {
            if let Some(h) = held.map.get_mut(&id) {
                h.started = true;
                h.abort = abort;
            }
        }
    }

    /// The handler of `id` returned: its cancel handle is dropped here, on the handler's own
    /// thread (the last handle of a finished task frees its memory where it drops).
    pub fn finished(&self, id: MessageId) {
        let abort = lock(&self.held).map.get_mut(&id).and_then(|h| h.abort.take());
        drop(abort);
    }

    /// Those of `ids` that were taken over (see [`Held::taken_over`]).
    pub fn taken_over_among(&self, ids: &[MessageId]) -> Vec<MessageId> {
        let held = lock(&self.held);
        if held.taken_over == 0 {
            return Vec::new();
        }
        ids.iter().filter(|id| held.map.get(id).is_some_and(|h| h.taken_over)).copied().collect()
    }

    /// Forgets entries that settled (acknowledged, scheduled for a retry, dead-lettered, or
    /// no longer this consumer's).
    pub fn untrack(&self, ids: impl IntoIterator<Item = MessageId>) {
        {
            let mut held = lock(&self.held);
            for id in ids {
                held.remove(id);
            }
        }
        self.held_freed.notify_waiters();
    }

    /// Waits until `count` more entries can be held within `limit` (the entries read, claimed,
    /// running or waiting for their XACK); false if `stop` came first. A read of at most
    /// `limit` entries always gets room once this consumer holds nothing.
    pub async fn wait_held_room(&self, count: usize, limit: usize, stop: &CancellationToken) -> bool {
        let room = || self.has_held_room(count, limit).then_some(());
        super::notified::wait_for(&self.held_freed, stop, room).await.is_some()
    }

    /// Whether `count` more entries can be held within `limit` now.
    pub fn has_held_room(&self, count: usize, limit: usize) -> bool {
        lock(&self.held).map.len().saturating_add(count) <= limit
    }

    /// Forgets entries read but never started: after a reader restart nothing will start
    /// them, so the reconciliation of this consumer's own PEL takes them up again. (Entries
    /// taken over wait for the take-over task, which goes on.)
    pub fn untrack_unstarted(&self) -> usize {
        let mut held = lock(&self.held);
        let before = held.map.len();
        held.map.retain(|_, h| h.started || h.taken_over);
        let forgotten = before - held.map.len();
        drop(held);
        self.held_freed.notify_waiters();
        forgotten
    }

    pub fn is_tracked(&self, id: MessageId) -> bool {
        lock(&self.held).map.contains_key(&id)
    }

    /// Cancels every running handler (at the shutdown timeout).
    pub fn abort_handlers(&self) -> usize {
        let held = lock(&self.held);
        let mut aborted = 0;
        for h in held.map.values() {
            if let Some(abort) = &h.abort {
                abort.abort();
                aborted += 1;
            }
        }
        aborted
    }

    /// The entries this member holds (read or claimed by this process and not settled), each
    /// with whether its handler started: what the hand-back at shutdown may give back.
    pub fn held_entries(&self) -> Vec<(MessageId, bool)> {
        lock(&self.held).map.iter().map(|(id, h)| (*id, h.started)).collect()
    }

    /// Queues the acknowledgement of a handled entry; the acker sends it within one round
    /// trip and forgets the entry once Redis has it.
    pub fn ack(&self, id: MessageId) {
        let _ = self.acks.send(Acks::One(id));
    }

    /// [`ack`](Self::ack) for several entries at once (nothing sent when empty).
    pub fn ack_all(&self, ids: Vec<MessageId>) {
        if !ids.is_empty() {
            let _ = self.acks.send(Acks::Many(ids));
        }
    }

    /// Tells the acker that no handler runs any more: once it has sent what is queued, it
    /// ends.
    pub fn close_acks(&self) {
        self.acks_closed.cancel();
    }

    /// Cancelled by [`close_acks`](Self::close_acks).
    pub fn acks_closed(&self) -> &CancellationToken {
        &self.acks_closed
    }

    /// The dead-letter stream's length cap, as the engine's scripts take it.
    pub fn dead_letter_cap_arg(&self) -> String {
        crate::scripts::cap_arg(self.consumer.options.retry.dlq_max_len)
    }

    /// Reads a script's `{result, dlq_trimmed}` reply: reports the dead letters its cap
    /// trimmed and returns the result.
    pub fn note_trimmed(&self, reply: fred::types::Value) -> fred::types::Value {
        let (result, trimmed) = crate::scripts::split_trimmed(reply);
        self.dead_letters_trimmed(trimmed);
        result
    }

    /// `n` of the oldest dead letters were trimmed by the dead-letter stream's length cap
    /// (`dlq_max_len`): counted, and a warning, since they are gone for good.
    pub fn dead_letters_trimmed(&self, n: u64) {
        if n == 0 {
            return;
        }
        ConsumerStats::bump(&self.stats.dead_letters_trimmed, n);
        self.metrics.dead_letters_trimmed(n);
        tracing::warn!(consumer = %self.name, dead_letter_stream = self.keys.dead_letters.as_deref().unwrap_or_default(),
            cap = self.consumer.options.retry.dlq_max_len, trimmed = n,
            "the dead-letter stream reached its length cap (dlq_max_len): its oldest letters were deleted");
    }

    /// The KEYS of the engine's scripts: stream, retry schedule, heartbeats, take-over marks,
    /// member deadlines, and the dead-letter stream when dead letters are on.
    /// [`script_keys`](Self::script_keys) and `args`, with the loop's fence appended if it
    /// has one (see [`crate::topic::fence`]).
    pub fn fenced_call(&self, mut args: Vec<String>) -> (Vec<String>, Vec<String>) {
        let mut keys = self.script_keys();
        crate::topic::fence::append_opt(self.fence(), &mut keys, &mut args);
        (keys, args)
    }

    pub fn script_keys(&self) -> Vec<String> {
        let mut keys = vec![
            self.stream().to_string(),
            self.keys.schedule.clone(),
            self.keys.heartbeats.clone(),
            self.keys.marks.clone(),
            self.keys.deadlines.clone(),
        ];
        keys.extend(self.keys.dead_letters.clone());
        keys
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every critical
/// section here leaves the data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
