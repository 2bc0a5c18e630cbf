//! The entries a consumer holds (pending under its member name in Redis): what it read or
//! claimed and has not settled yet, and for each whether its handler started.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use tokio::task::AbortHandle;

use crate::message::MessageId;

/// An entry this consumer holds (it is in the PEL under this consumer's name).
#[derive(Debug)]
pub(crate) struct Held {
    /// Its handler was started (a run that started counts, whatever became of it).
    pub started: bool,
    /// Taken over from a consumer that stopped: its take-over mark must be cleared when it
    /// settles.
    pub taken_over: bool,
    /// Cancels its handler at the shutdown timeout.
    pub abort: Option<AbortHandle>,
}

/// The entries this consumer holds, and how many of them were taken over (so the acker's
/// look-up of take-over marks to clear costs nothing in the usual case: none).
#[derive(Default)]
pub(crate) struct HeldSet {
    pub map: HashMap<MessageId, Held, BuildHasherDefault<IdHasher>>,
    pub taken_over: usize,
}

impl HeldSet {
    pub fn insert(&mut self, id: MessageId, held: Held) {
        let taken_over = held.taken_over;
        if let Some(old) = self.map.insert(id, held) {
            self.taken_over -= usize::from(old.taken_over);
        }
        self.taken_over += usize::from(taken_over);
    }

    pub fn remove(&mut self, id: MessageId) {
        if let Some(old) = self.map.remove(&id) {
            self.taken_over -= usize::from(old.taken_over);
        }
    }
}

/// Odd, so multiplying by it permutes the `u64`s; its bits are well spread (2^64 / phi).
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The bits of a hash that pick its bucket; the 7 above them are what the map compares a
/// group of slots against before it compares keys.
const BUCKET_BITS: u64 = (1 << 57) - 1;

/// The held map's hash of a [`MessageId`]: ids of one millisecond (`ms-0`, `ms-1`, ...)
/// get consecutive buckets, so a read's entries, tracked in order, and the acknowledgement
/// of a run of them touch neighbouring slots instead of a cache line each (thousands of
/// entries are held on a backlog: more than a core's cache); another millisecond starts
/// elsewhere (`ms` is multiplied by [`MIX`]). The top 7 bits are mixed from the whole id,
/// so the slots of a group still tell their keys apart before a key is compared.
///
/// Like the FxHash it replaced, this hash does not resist ids crafted to collide (a producer
/// may give explicit ids): such ids would cost the consumer CPU (longer probes, within the
/// bound on held entries), not correctness.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    /// A [`MessageId`] hashes as its two `u64`s ([`write_u64`](Self::write_u64)); this is
    /// any other key's way in, mixed a byte at a time.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.wrapping_mul(MIX).wrapping_add(n);
    }

    fn finish(&self) -> u64 {
        (self.0 & BUCKET_BITS) | (self.0.wrapping_mul(MIX) & !BUCKET_BITS)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    fn hash(id: MessageId) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(id)
    }

    #[test]
    fn ids_of_one_millisecond_hash_to_neighbouring_buckets_with_mixed_tags() {
        let ms = 1_700_000_000_123;
        let first = hash(MessageId::new(ms, 0));
        let tags: std::collections::HashSet<u64> = (0..64)
            .map(|seq| {
                let h = hash(MessageId::new(ms, seq));
                assert_eq!(h & BUCKET_BITS, (first + seq) & BUCKET_BITS, "seq {seq}");
                h >> 57
            })
            .collect();
        assert!(tags.len() > 32, "the top 7 bits take few values: {tags:?}");
        // The next millisecond starts far away, not right after this one's sequence.
        let next = hash(MessageId::new(ms + 1, 0)) & BUCKET_BITS;
        assert!(next.abs_diff(first & BUCKET_BITS) > 1 << 20);
    }

    #[test]
    fn the_set_tracks_ids_and_taken_over_counts() {
        let mut set = HeldSet::default();
        let ids: Vec<MessageId> = (0..3).flat_map(|ms| (0..1000).map(move |seq| MessageId::new(ms, seq))).collect();
        for (n, id) in ids.iter().enumerate() {
            set.insert(*id, Held { started: false, taken_over: n % 10 == 0, abort: None });
        }
        assert_eq!(set.map.len(), 3000);
        assert_eq!(set.taken_over, 300);
        // Inserting again replaces, and the count follows.
        set.insert(ids[0], Held { started: true, taken_over: false, abort: None });
        assert_eq!(set.taken_over, 299);
        assert!(set.map.get(&ids[0]).is_some_and(|h| h.started));
        for id in &ids[..1500] {
            set.remove(*id);
        }
        assert_eq!(set.map.len(), 1500);
        assert_eq!(set.taken_over, 150);
        assert!(ids[1500..].iter().all(|id| set.map.contains_key(id)));
        assert!(ids[..1500].iter().all(|id| !set.map.contains_key(id)));
    }
}
