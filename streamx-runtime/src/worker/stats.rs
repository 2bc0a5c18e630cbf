//! The counters of one consumer loop.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Handler runs cancelled at the consumer's `timeout` (each also counted as retried or
    /// dead-lettered).
    pub timed_out: AtomicU64,
    /// Dead letters deleted from the dead-letter stream by its length cap (`dlq_max_len`)
    /// when this consumer wrote new ones.
    pub dead_letters_trimmed: AtomicU64,
    /// Messages acknowledged without running because the group had handled their key already
    /// (consumers with [`dedupe`](crate::ConsumerOptions::dedupe) only).
    pub deduplicated: AtomicU64,
    /// Topic consumers only: shard loops stopped because a script found the shard's lease
    /// taken by another process (see the README's "Topics and ordering").
    pub fenced: AtomicU64,
    /// Topic consumers only: shard leases taken by this process.
    pub shards_acquired: AtomicU64,
    /// Topic consumers only: shard leases given up by this process (rebalancing, shutdown)
    /// or lost.
    pub shards_released: AtomicU64,
    /// Gauge: the bytes of fetched entries whose handlers have not finished (read, taken
    /// over or claimed, waiting for a permit, queued behind their key, or running), as the
    /// byte budget (`max_buffered_bytes`) counts them.
    pub buffered_bytes: AtomicU64,
    /// Gauge: the most [`buffered_bytes`](Self::buffered_bytes) seen so far.
    pub buffered_bytes_peak: AtomicU64,
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
    /// See [`ConsumerStats::timed_out`].
    pub timed_out: u64,
    /// See [`ConsumerStats::dead_letters_trimmed`].
    pub dead_letters_trimmed: u64,
    /// See [`ConsumerStats::deduplicated`].
    pub deduplicated: u64,
    /// See [`ConsumerStats::fenced`].
    pub fenced: u64,
    /// See [`ConsumerStats::shards_acquired`].
    pub shards_acquired: u64,
    /// See [`ConsumerStats::shards_released`].
    pub shards_released: u64,
    /// See [`ConsumerStats::buffered_bytes`].
    pub buffered_bytes: u64,
    /// See [`ConsumerStats::buffered_bytes_peak`].
    pub buffered_bytes_peak: u64,
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
            timed_out: Self::get(&self.timed_out),
            dead_letters_trimmed: Self::get(&self.dead_letters_trimmed),
            deduplicated: Self::get(&self.deduplicated),
            fenced: Self::get(&self.fenced),
            shards_acquired: Self::get(&self.shards_acquired),
            shards_released: Self::get(&self.shards_released),
            buffered_bytes: Self::get(&self.buffered_bytes),
            buffered_bytes_peak: Self::get(&self.buffered_bytes_peak),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
