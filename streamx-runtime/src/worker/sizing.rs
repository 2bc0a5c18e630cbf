//! How many entries a read loop or the take-over asks Redis for at a time.

use crate::consumer::ConsumerOptions;

/// The most entries one read or one take-over claim asks for when its size is the
/// runtime's to choose and handlers keep up.
const MOST: usize = 512;

/// How many entries a read loop (`XREADGROUP COUNT`) or the take-over (a claim) asks for
/// next. It starts at a base: for a read loop an explicit `batch_size` (the COUNT of each of
/// its reads, whatever the number of loops), else its share of the default batch; for the
/// take-over what can start soon (`concurrency + 32`). When the size is the
/// runtime's to choose, it doubles, up to [`MOST`], after each full fetch whose entries all
/// started without waiting for a permit: handlers that keep up (they finish as fast as they
/// are dispatched) are fed in large fetches, so the round trips, Redis's per-call work and
/// the acks shrink per message. It falls back to the base at once when a dispatch had to
/// wait for permits (handlers that take time: a large fetch would hold entries other
/// consumers of the group could be running, and for the take-over, entries that become
/// crash suspects if this consumer dies) or a fetch came back short (nothing more is
/// waiting). The byte budget still sizes every fetch.
#[derive(Debug)]
pub(crate) struct FetchSize {
    base: usize,
    most: usize,
    current: usize,
}

impl FetchSize {
    /// For one of `readers` read loops: an explicit `batch_size` is every read's COUNT (each
    /// loop's, never shared and never exceeded); by default the loop starts at its share of
    /// the default batch and grows.
    pub fn for_reads(options: &ConsumerOptions, readers: usize) -> Self {
        match options.batch_size {
            Some(count) => {
                let count = count.max(1);
                FetchSize { base: count, most: count, current: count }
            }
            None => {
                let base = options.effective_batch_size().div_ceil(readers.max(1));
                FetchSize { base, most: base.max(MOST), current: base }
            }
        }
    }

    /// For the take-over claims, starting at `base` entries.
    pub fn for_claims(base: usize) -> Self {
        FetchSize { base, most: base.max(MOST), current: base }
    }

    /// The most it asks for.
    pub fn most(&self) -> usize {
        self.most
    }

    /// The entries to ask for next.
    pub fn current(&self) -> usize {
        self.current
    }

    /// After a fetch that asked for `asked` entries and got `got`, whose dispatch `waited`
    /// for permits.
    pub fn after(&mut self, asked: usize, got: usize, waited: bool) {
        self.current = if waited || got < asked { self.base } else { self.current.saturating_mul(2).min(self.most) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(concurrency: usize, batch_size: Option<usize>) -> ConsumerOptions {
        ConsumerOptions { concurrency, batch_size, ..ConsumerOptions::DEFAULT }
    }

    #[test]
    fn reads_grow_while_handlers_keep_up_and_fall_back_when_they_do_not() {
        // Concurrency 8: a default batch of 128 shared by 4 loops, 32 each.
        let mut size = FetchSize::for_reads(&options(8, None), 4);
        assert_eq!(size.current(), 32);
        size.after(32, 32, false);
        assert_eq!(size.current(), 64, "a full fetch that started without waiting doubles the next");
        for _ in 0..10 {
            let asked = size.current();
            size.after(asked, asked, false);
        }
        assert_eq!(size.current(), MOST, "never past the most one fetch asks for");
        size.after(MOST, MOST, true);
        assert_eq!(size.current(), 32, "a dispatch that waited for permits falls back to the base");
        size.after(32, 32, false);
        size.after(64, 10, false);
        assert_eq!(size.current(), 32, "a short fetch (nothing more waiting) falls back to the base");
    }

    #[test]
    fn an_explicit_batch_size_is_each_reads_count_for_every_loop() {
        // Not shared: 8 loops of batch_size 100 each read 100 at a time (issue 26: sharing it
        // made them read ~12 per XREADGROUP, at 0.43x the raw loop of COUNT 100).
        for readers in [1, 4, 8] {
            let mut size = FetchSize::for_reads(&options(8, Some(100)), readers);
            assert_eq!(size.current(), 100);
            size.after(100, 100, false);
            assert_eq!(size.current(), 100, "never exceeded");
            size.after(100, 3, true);
            assert_eq!(size.current(), 100, "and never below it");
        }
        let mut large = FetchSize::for_reads(&options(64, Some(4096)), 8);
        assert_eq!(large.current(), 4096);
        large.after(4096, 4096, false);
        assert_eq!(large.current(), 4096);
    }

    #[test]
    fn claims_grow_from_what_can_start_soon() {
        let mut size = FetchSize::for_claims(40);
        assert_eq!(size.current(), 40);
        size.after(40, 40, false);
        assert_eq!(size.current(), 80);
        size.after(80, 80, true);
        assert_eq!(size.current(), 40);
    }
}
