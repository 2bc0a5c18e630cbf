//! State shared by the tasks of one consumer loop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fred::interfaces::StreamsInterface;
use tokio::sync::{mpsc, Semaphore};

use super::acker::{AckReceiver, AckSender};
use super::LoopSettings;
use crate::connection::HealingClient;
use crate::consumer::Consumer;
use crate::message::MessageId;

/// Counters of one consumer loop (since the process started).
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Entries received (new reads, take-overs and due retries).
    pub delivered: AtomicU64,
    /// Handler runs that succeeded (and were acknowledged).
    pub succeeded: AtomicU64,
    /// Handler runs that failed and were scheduled for a retry.
    pub retried: AtomicU64,
    /// Entries moved to the dead-letter stream (or dropped when it is disabled).
    pub dead_lettered: AtomicU64,
    /// Entries taken over from consumers that stopped (crashed or lost their connection).
    pub claimed: AtomicU64,
    /// XACK round trips.
    pub ack_batches: AtomicU64,
    /// Attempts to write a dead letter that failed (the entry stayed pending and the write
    /// is tried again with backoff).
    pub dead_letter_failures: AtomicU64,
}

/// The counters of [`ConsumerStats`] at one moment, as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStatsSnapshot {
    /// See [`ConsumerStats::delivered`].
    pub delivered: u64,
    /// See [`ConsumerStats::succeeded`].
    pub succeeded: u64,
    /// See [`ConsumerStats::retried`].
    pub retried: u64,
    /// See [`ConsumerStats::dead_lettered`].
    pub dead_lettered: u64,
    /// See [`ConsumerStats::claimed`].
    pub claimed: u64,
    /// See [`ConsumerStats::ack_batches`].
    pub ack_batches: u64,
    /// See [`ConsumerStats::dead_letter_failures`].
    pub dead_letter_failures: u64,
}

impl ConsumerStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Every counter, read now.
    pub fn snapshot(&self) -> ConsumerStatsSnapshot {
        ConsumerStatsSnapshot {
            delivered: Self::get(&self.delivered),
            succeeded: Self::get(&self.succeeded),
            retried: Self::get(&self.retried),
            dead_lettered: Self::get(&self.dead_lettered),
            claimed: Self::get(&self.claimed),
            ack_batches: Self::get(&self.ack_batches),
            dead_letter_failures: Self::get(&self.dead_letter_failures),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) struct Shared {
    pub name: String,
    pub stream_arc: Arc<str>,
    pub consumer: Consumer,
    pub settings: LoopSettings,
    pub command: HealingClient,
    /// One permit per handler that may run: the concurrency bound.
    pub permits: Arc<Semaphore>,
    /// Entries this consumer holds and must keep leased: fetched, waiting or running.
    pub in_flight: Mutex<HashSet<MessageId>>,
    /// Failed entries waiting for a retry longer than `claim_idle`, with their due time;
    /// leased until they can be handed back to the group.
    pub held: Mutex<HashMap<MessageId, Instant>>,
    pub stats: Arc<ConsumerStats>,
    acks: Mutex<Option<AckSender>>,
}

impl Shared {
    pub fn new(consumer: Consumer, settings: LoopSettings, command: HealingClient) -> (Arc<Self>, AckReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            name: consumer.name.to_string(),
            stream_arc: Arc::from(&*consumer.stream),
            permits: Arc::new(Semaphore::new(consumer.options.concurrency)),
            consumer,
            settings,
            command,
            in_flight: Mutex::new(HashSet::new()),
            held: Mutex::new(HashMap::new()),
            stats: Arc::new(ConsumerStats::default()),
            acks: Mutex::new(Some(tx)),
        };
        (Arc::new(shared), rx)
    }

    /// After a failed command on `used`: replaces the shared client if it is wedged.
    pub async fn command_failed(&self, used: &fred::clients::Client, err: &fred::error::Error) {
        self.command.heal(used, err).await;
    }

    /// `XCLAIM`s `ids` for this consumer. `min_idle` skips entries renewed more recently
    /// (someone else holds them); `idle` sets their idle time (default zero: a fresh
    /// lease); `just_id` leaves the delivery count alone and returns only ids.
    pub async fn claim(
        &self,
        ids: &[MessageId],
        min_idle: Duration,
        idle: Option<Duration>,
        just_id: bool,
    ) -> Result<fred::types::Value, fred::error::Error> {
        let ids: Vec<String> = ids.iter().map(MessageId::to_string).collect();
        let client = self.command.get();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let result = client
            .xclaim(
                self.stream(),
                self.group(),
                self.consumer_name(),
                ms(min_idle),
                ids,
                idle.map(ms),
                None,
                None,
                false,
                just_id,
            )
            .await;
        if let Err(e) = &result {
            self.command_failed(&client, e).await;
        }
        result
    }

    pub fn stream(&self) -> &str {
        &self.consumer.stream
    }

    pub fn group(&self) -> &str {
        &self.consumer.group
    }

    pub fn consumer_name(&self) -> &str {
        &self.settings.consumer_name
    }

    pub fn track(&self, ids: impl IntoIterator<Item = MessageId>) {
        lock(&self.in_flight).extend(ids);
    }

    pub fn untrack(&self, id: MessageId) {
        lock(&self.in_flight).remove(&id);
    }

    pub fn in_flight_ids(&self) -> Vec<MessageId> {
        lock(&self.in_flight).iter().copied().collect()
    }

    /// Queues an acknowledgement; the acker sends it within one round trip.
    pub fn ack(&self, id: MessageId) {
        if let Some(tx) = lock(&self.acks).as_ref() {
            let _ = tx.send(id);
        }
    }

    pub fn close_acks(&self) {
        lock(&self.acks).take();
    }

    /// After the reader stopped: waits up to `shutdown_timeout` for running handlers, then
    /// hands every entry still held back to the group at once (so another consumer takes it
    /// over without waiting for `claim_idle`).
    pub async fn drain(&self) {
        let all = self.consumer.options.concurrency as u32;
        let timeout = self.settings.shutdown_timeout;
        match tokio::time::timeout(timeout, self.permits.acquire_many(all)).await {
            Ok(Ok(permits)) => permits.forget(),
            _ => tracing::warn!(
                consumer = %self.name,
                timeout = ?timeout,
                "handlers still running at the shutdown timeout; their messages stay pending for the group"
            ),
        }
        let mut left = self.in_flight_ids();
        left.extend(lock(&self.held).drain().map(|(id, _)| id));
        if !left.is_empty() {
            super::claimer::release(self, &left).await;
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every critical
/// section here leaves the data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
