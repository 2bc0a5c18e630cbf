//! The byte budget of one consumer loop: the bytes of fetched entries whose handlers have not
//! finished (read, taken over or promoted, waiting for a permit or running). Every fetch is
//! sized from it, so memory stays bounded in bytes as well as in entries, whatever the
//! entries weigh.
//!
//! An entry is *charged* when its reply arrives and *released* when its handler has finished
//! (or when it is dropped unstarted): a [`Charge`] is a guard, like a semaphore permit, so no
//! path can leak budget. A fetch asks for `room / average entry size` entries (at most a
//! batch, at least one), after waiting until there is room for one average entry or nothing
//! is charged at all, so one entry larger than the whole budget still goes through, alone.
//! Before the first entry is seen the average is unknown and a fetch takes at most
//! [`FIRST_FETCH`] entries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::stats::ConsumerStats;
use crate::wire::RawEntry;

/// The most entries a fetch takes before their size is known.
pub(crate) const FIRST_FETCH: usize = 16;

/// Bytes counted per entry on top of its payload and headers (id, parsing, bookkeeping).
const ENTRY_OVERHEAD: usize = 128;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
    /// Average charged size per entry (a moving average); 0 until the first entry.
    average: AtomicUsize,
    freed: Notify,
    /// Notified when the first entries are charged (the average entry size becomes known).
    learned: Notify,
    /// Fetches waiting for room: releases notify only while one waits (a notification takes
    /// a lock, and a release happens for every message).
    waiting: AtomicUsize,
    /// The consumer's counters, whose gauges of fetched bytes (entries charged, without the
    /// reservations of fetches in flight) this keeps.
    stats: Option<Arc<ConsumerStats>>,
}

impl ByteBudget {
    #[cfg(test)]
    pub fn new(limit: usize) -> Arc<Self> {
        Self::with_stats(limit, None)
    }

    /// A budget that keeps the gauges [`ConsumerStats::buffered_bytes`] and
    /// [`ConsumerStats::buffered_bytes_peak`] of `stats`.
    pub fn with_stats(limit: usize, stats: Option<Arc<ConsumerStats>>) -> Arc<Self> {
        Arc::new(ByteBudget {
            stats,
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            average: AtomicUsize::new(0),
            freed: Notify::new(),
            learned: Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// The average charged size of the entries fetched so far (a moving average); 0 before
    /// the first.
    pub fn average_entry(&self) -> usize {
        self.average.load(Ordering::Relaxed)
    }

    /// Returns once the average entry size is known (some entries were charged).
    pub async fn size_known(&self) {
        loop {
            let learned = self.learned.notified();
            tokio::pin!(learned);
            learned.as_mut().enable();
            if self.average_entry() != 0 {
                return;
            }
            learned.await;
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// How many entries (1..=`batch`) the next fetch may take, without waiting, with their
    /// estimated bytes (count × the average entry) reserved until the fetch's reply is
    /// charged: fetches sent at the same time (several readers, claims) never count the same
    /// room twice. `None` if there is no room for one average entry now, or if a fetch is
    /// waiting for room ([`wait_room_for`](Self::wait_room_for)): waiters are served first,
    /// so a read loop that reserves again the moment its (empty, blocking) read returns
    /// cannot keep due retries and take-overs from the room for good.
    pub fn room_for(self: &Arc<Self>, batch: usize) -> Option<(usize, Charge)> {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.take_room(batch)
    }

    /// [`room_for`](Self::room_for) whether others wait or not (for a waiter).
    fn take_room(self: &Arc<Self>, batch: usize) -> Option<(usize, Charge)> {
        let used = self.used();
        let average = self.average.load(Ordering::Relaxed);
        let batch = batch.max(1);
        let count = if average == 0 {
            (used < self.limit).then_some(batch.min(FIRST_FETCH))
        } else {
            let room = self.limit.saturating_sub(used);
            (used == 0 || room >= average).then(|| (room / average).clamp(1, batch))
        }?;
        let reserved = count.saturating_mul(average);
        self.used.fetch_add(reserved, Ordering::AcqRel);
        Some((count, Charge { budget: self.clone(), bytes: reserved, entries: false }))
    }

    /// [`room_for`](Self::room_for), waiting for handlers to release bytes while there is no
    /// room; `None` once `stop` is cancelled.
    pub async fn wait_room_for(self: &Arc<Self>, batch: usize, stop: &CancellationToken) -> Option<(usize, Charge)> {
        if let Some(room) = self.room_for(batch) {
            return Some(room);
        }
        // Counted as waiting before each check of the room, and a release counts the bytes
        // before it looks for waiters (both sequentially consistent): either the check sees
        // the bytes released, or the release sees this waiter and wakes it.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        super::notified::wait_for(&self.freed, stop, || self.take_room(batch)).await
    }

    /// The most entry bytes a claim script may bring back for the room `reserved` for it (see
    /// [`room_for`](Self::room_for)): what was reserved once the average entry size is
    /// known, before that the room left. The scripts count the entries' field bytes against
    /// it and always take at least one entry, so one larger than the whole budget still goes
    /// through, alone, as a read's would.
    pub fn claim_bytes(&self, reserved: &Charge) -> usize {
        if reserved.bytes > 0 {
            reserved.bytes
        } else {
            self.limit.saturating_sub(self.used())
        }
    }

    /// Charges fetched entries; the returned guard releases what is left in it when dropped.
    pub fn charge<'a>(self: &Arc<Self>, entries: impl IntoIterator<Item = &'a RawEntry>) -> Charge {
        let (count, bytes) = entries.into_iter().fold((0, 0), |(n, b), e| (n + 1, b + charged_size(e)));
        if count == 0 {
            return Charge { budget: self.clone(), bytes: 0, entries: true };
        }
        self.used.fetch_add(bytes, Ordering::AcqRel);
        if let Some(stats) = &self.stats {
            let now = stats.buffered_bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
            stats.buffered_bytes_peak.fetch_max(now, Ordering::Relaxed);
        }
        let sample = bytes / count;
        let old = self.average.load(Ordering::Relaxed);
        let average = if old == 0 { sample } else { (old * 3 + sample) / 4 };
        self.average.store(average.max(1), Ordering::Relaxed);
        if old == 0 {
            self.learned.notify_waiters();
        }
        Charge { budget: self.clone(), bytes, entries: true }
    }

    fn release(&self, bytes: usize, entries: bool) {
        if bytes > 0 {
            if let (true, Some(stats)) = (entries, &self.stats) {
                stats.buffered_bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
            }
            self.used.fetch_sub(bytes, Ordering::SeqCst);
            if self.waiting.load(Ordering::SeqCst) > 0 {
                self.freed.notify_waiters();
            }
        }
    }
}

/// One fetch waiting for room, counted while it waits (also when its wait is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The bytes an entry is charged for.
pub(crate) fn charged_size(entry: &RawEntry) -> usize {
    let data = entry.data.as_ref().map_or(0, |d| d.len());
    let headers: usize = entry.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    data + headers + ENTRY_OVERHEAD
}

/// Charged bytes, released when dropped (see [`ByteBudget::charge`]).
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<ByteBudget>,
    bytes: usize,
    /// Fetched entries (false: a reservation for a fetch in flight).
    entries: bool,
}

impl Charge {
    /// Moves the charge of `entry` out of this one (for the handler task that takes it).
    pub fn split_for(&mut self, entry: &RawEntry) -> Charge {
        self.split(charged_size(entry))
    }

    /// Moves `bytes` (an entry's [`charged_size`]) out of this charge into one of its own.
    pub fn split(&mut self, bytes: usize) -> Charge {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Charge { budget: self.budget.clone(), bytes, entries: self.entries }
    }

    /// Releases `bytes` of this charge now (entries that finished while the rest wait).
    pub fn release_part(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.budget.release(bytes, self.entries);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(std::mem::take(&mut self.bytes), self.entries);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::message::{Headers, MessageId};

    fn entry(bytes: usize) -> RawEntry {
        RawEntry {
            id: MessageId::new(1, 0),
            data: Some(Bytes::from(vec![b'x'; bytes])),
            headers: Headers::new(),
            deleted: false,
            replay_group: None,
        }
    }

    /// The entry count of a reservation, releasing it at once.
    fn count(room: Option<(usize, Charge)>) -> Option<usize> {
        room.map(|(n, _)| n)
    }

    #[test]
    fn fetches_sent_together_never_count_the_same_room_twice() {
        let budget = ByteBudget::new(10_000);
        drop(budget.charge(&[entry(1_872)])); // learn the size: 2,000 bytes an entry
        let (first, reserved) = budget.room_for(512).expect("room");
        assert_eq!(first, 5, "10,000 bytes of room");
        assert_eq!(budget.used(), 10_000, "the fetch's estimate is reserved until its reply");
        assert_eq!(count(budget.room_for(512)), None, "a second fetch finds no room meanwhile");
        let arrived = budget.charge(&[entry(1_872), entry(1_872)]); // the reply: 2 entries
        drop(reserved);
        assert_eq!(budget.used(), 4_000, "the reservation gives way to what was fetched");
        assert_eq!(count(budget.room_for(512)), Some(3));
        drop(arrived);
    }

    #[test]
    fn fetches_are_sized_from_the_room_left() {
        let budget = ByteBudget::new(10_000);
        assert_eq!(count(budget.room_for(512)), Some(FIRST_FETCH), "unknown size: a small first fetch");
        let mut charge = budget.charge(&[entry(1_872), entry(1_872)]); // 2,000 bytes each
        assert_eq!(budget.used(), 4_000);
        assert_eq!(count(budget.room_for(512)), Some(3), "6,000 bytes of room for 2,000-byte entries");
        let one = charge.split_for(&entry(1_872));
        drop(charge);
        assert_eq!(budget.used(), 2_000);
        let _more = budget.charge(&[entry(3_872), entry(3_872), entry(3_872), entry(3_872)]);
        assert_eq!(count(budget.room_for(512)), None, "over the limit: no room");
        drop(one);
        assert_eq!(count(budget.room_for(512)), None);
    }

    #[test]
    fn an_entry_larger_than_the_budget_goes_alone() {
        let budget = ByteBudget::new(1_000);
        let big = budget.charge(&[entry(5_000)]);
        assert_eq!(count(budget.room_for(512)), None);
        drop(big);
        assert_eq!(budget.used(), 0);
        assert_eq!(count(budget.room_for(512)), Some(1), "nothing charged: one entry, however large");
    }

    #[tokio::test]
    async fn waiting_for_the_entry_size_ends_when_entries_are_charged() {
        let budget = ByteBudget::new(10_000);
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.size_known().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing fetched yet: the size is unknown");
        let _held = budget.charge(&[entry(100)]);
        assert!(waiter.await.is_ok());
        assert_eq!(budget.average_entry(), 228, "100 bytes of payload + the per-entry overhead");
    }

    #[tokio::test]
    async fn waiting_for_room_ends_when_bytes_are_released() {
        let budget = ByteBudget::new(1_000);
        let held = budget.charge(&[entry(900)]);
        let stop = CancellationToken::new();
        let waiter = {
            let (budget, stop) = (budget.clone(), stop.clone());
            tokio::spawn(async move { budget.wait_room_for(512, &stop).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.ok().flatten().map(|(n, _)| n), Some(1));
    }

    /// A read loop whose (empty, blocking) read returns reserves again at once; a due retry
    /// waiting for room must get it first, or a busy loop keeps it from the room for good.
    #[tokio::test]
    async fn a_waiter_is_served_before_a_new_fetch() {
        let budget = ByteBudget::new(1_000);
        let _learned = budget.charge(&[entry(72)]);
        drop(_learned);
        let (_, reader) = budget.room_for(512).expect("room for the first read");
        assert_eq!(count(budget.room_for(512)), None, "the read holds the room");
        let stop = CancellationToken::new();
        let waiter = {
            let (budget, stop) = (budget.clone(), stop.clone());
            tokio::spawn(async move { budget.wait_room_for(512, &stop).await.map(|(n, _)| n) })
        };
        while budget.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        drop(reader);
        assert_eq!(count(budget.room_for(512)), None, "a new fetch waits behind the waiter");
        assert_eq!(waiter.await.ok().flatten(), Some(5), "the waiter got the room");
        assert_eq!(count(budget.room_for(512)), Some(5), "then the next fetch");
    }
}
