//! Histograms kept as counts per bucket, recorded per thread: what the `/metrics` endpoint
//! serves for streamx's own `_seconds` histograms.
//!
//! The Prometheus exporter keeps every sample (with a timestamp it reads) in a lock-free
//! list until it folds them into buckets at a scrape or an upkeep: at hundreds of
//! thousands of messages a second, two samples each, that is a clock read, an epoch pin and
//! 16 bytes per sample, and tens of MiB held between upkeeps. Here a sample adds to two
//! counters its thread owns (plain loads and stores: no other thread writes them, nor
//! their cache lines), and the memory is the same at any rate. A scrape adds up the
//! threads' counters.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{HistogramFn, Key};
use metrics_exporter_prometheus::formatting::{sanitize_label_key, sanitize_label_value};

/// Threads record into this many sets of counters: the first `SHARDS - 1` threads that
/// record get one each, which only they write; later threads share the last.
const SHARDS: usize = 8;

/// The most bounds a histogram has (streamx's have 15): a shard's counters are inline.
pub(crate) const MAX_BOUNDS: usize = 23;

/// A histogram with fixed upper bounds (`le`), counted per bucket.
#[derive(Debug)]
pub(crate) struct BucketHistogram {
    bounds: &'static [f64],
    shards: Box<[Shard]>,
}

/// One thread's counters: one per bound and one above the last (the first `bounds + 1` are
/// used), and the sum of the values (an `f64`'s bits). Inline and aligned, so that two
/// shards never share a cache line.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    counts: [AtomicU64; MAX_BOUNDS + 1],
    sum_bits: AtomicU64,
}

/// What a histogram holds at one moment: counts per bucket (cumulative, as Prometheus
/// wants them; the last is `+Inf`, the total), and the sum.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub cumulative: Vec<u64>,
    pub sum: f64,
}

impl Snapshot {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

impl BucketHistogram {
    /// A histogram with these bounds, in increasing order (the first [`MAX_BOUNDS`] of them).
    pub fn new(bounds: &'static [f64]) -> Self {
        let bounds = &bounds[..bounds.len().min(MAX_BOUNDS)];
        let shards = (0..SHARDS)
            .map(|_| Shard {
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
                sum_bits: AtomicU64::new(0f64.to_bits()),
            })
            .collect();
        BucketHistogram { bounds, shards }
    }

    /// Counts `value` (a NaN or a negative value counts as 0).
    #[inline]
    pub fn observe(&self, value: f64) {
        let value = if value > 0.0 { value } else { 0.0 };
        let index = this_thread_shard();
        let shard = &self.shards[index];
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        let add = |sum: u64| (f64::from_bits(sum) + value).to_bits();
        if index < SHARDS - 1 {
            // This thread is the shard's only writer: a plain load and store each (no locked
            // instruction); a scrape reading meanwhile sees the old value or the new one.
            let count = &shard.counts[bucket];
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            shard.sum_bits.store(add(shard.sum_bits.load(Ordering::Relaxed)), Ordering::Relaxed);
        } else {
            shard.counts[bucket].fetch_add(1, Ordering::Relaxed);
            let _ = shard.sum_bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| Some(add(sum)));
        }
    }

    /// The counts and the sum so far, over every thread.
    pub fn snapshot(&self) -> Snapshot {
        let mut per_bucket = vec![0u64; self.bounds.len() + 1];
        let mut sum = 0.0;
        for shard in self.shards.iter() {
            for (total, count) in per_bucket.iter_mut().zip(shard.counts.iter()) {
                *total += count.load(Ordering::Relaxed);
            }
            sum += f64::from_bits(shard.sum_bits.load(Ordering::Relaxed));
        }
        let cumulative = per_bucket
            .iter()
            .scan(0u64, |running, n| {
                *running += n;
                Some(*running)
            })
            .collect();
        Snapshot { cumulative, sum }
    }
}

impl HistogramFn for BucketHistogram {
    fn record(&self, value: f64) {
        self.observe(value);
    }
}

/// The shard of the calling thread, the same in every histogram: the first `SHARDS - 1`
/// threads that record take one each, in turn, for themselves; every later thread gets the
/// last, shared one.
#[inline]
fn this_thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SHARD.with(|shard| match shard.get() {
        Some(index) => index,
        None => {
            let index = NEXT.fetch_add(1, Ordering::Relaxed).min(SHARDS - 1);
            shard.set(Some(index));
            index
        }
    })
}

/// The bucketed histograms registered so far, by key (one histogram per key).
#[derive(Debug, Default)]
pub(crate) struct BucketHistograms {
    by_key: Mutex<HashMap<Key, Arc<BucketHistogram>>>,
}

impl BucketHistograms {
    /// The histogram of `key` (made with `bounds` the first time).
    pub fn get_or_create(&self, key: &Key, bounds: &'static [f64]) -> Arc<BucketHistogram> {
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        by_key.entry(key.clone()).or_insert_with(|| Arc::new(BucketHistogram::new(bounds))).clone()
    }

    /// Appends every histogram in the Prometheus text format: per name a `# TYPE` line, then
    /// per label set its `_bucket` lines (`le` the bounds, then `+Inf`), `_sum` and `_count`.
    pub fn render_into(&self, out: &mut String) {
        // By name, then by labels: one `# TYPE` line per name, the same order every scrape.
        let mut rows: Vec<(String, String, Arc<BucketHistogram>)> = self
            .by_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, histogram)| (key.name().to_string(), label_text(key), histogram.clone()))
            .collect();
        rows.sort_by(|(name_a, labels_a, _), (name_b, labels_b, _)| (name_a, labels_a).cmp(&(name_b, labels_b)));
        let mut last_name: Option<&str> = None;
        for (name, labels, histogram) in &rows {
            if last_name != Some(name.as_str()) {
                if !out.is_empty() && !out.ends_with("\n\n") {
                    out.push('\n');
                }
                let _ = writeln!(out, "# TYPE {name} histogram");
                last_name = Some(name.as_str());
            }
            let sep = if labels.is_empty() { "" } else { "," };
            let snapshot = histogram.snapshot();
            let bounds = histogram.bounds.iter().map(f64::to_string).chain(["+Inf".to_string()]);
            for (le, count) in bounds.zip(&snapshot.cumulative) {
                let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}");
            }
            let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
            let _ = writeln!(out, "{name}_sum{braces} {}", snapshot.sum);
            let _ = writeln!(out, "{name}_count{braces} {}", snapshot.count());
        }
    }
}

/// `k1="v1",k2="v2"`, escaped by the exporter's own functions, so a label reads the same
/// here as in the families the exporter renders (the counters of the same consumer).
fn label_text(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}=\"{}\"", sanitize_label_key(label.key()), sanitize_label_value(label.value())))
        .collect();
    labels.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];

    #[test]
    fn values_count_in_the_first_bucket_whose_bound_is_not_below_them() {
        let histogram = BucketHistogram::new(BOUNDS);
        for value in [0.0005, 0.001, 0.002, 0.05, 0.1, 7.0, -1.0, f64::NAN] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        // le=0.001: 0.0005, 0.001, -1 and NaN (as 0); le=0.01: + 0.002; le=0.1: + 0.05, 0.1; +Inf: + 7.
        assert_eq!(snapshot.cumulative, vec![4, 5, 7, 8]);
        assert_eq!(snapshot.count(), 8);
        assert!((snapshot.sum - (0.0005 + 0.001 + 0.002 + 0.05 + 0.1 + 7.0)).abs() < 1e-12, "{}", snapshot.sum);
    }

    #[test]
    fn threads_recording_at_once_lose_no_value() {
        let histogram = Arc::new(BucketHistogram::new(BOUNDS));
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|t| {
                let histogram = histogram.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        histogram.observe(if (i + t) % 2 == 0 { 0.005 } else { 0.5 });
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a recording thread panicked");
        }
        let snapshot = histogram.snapshot();
        let n = (SHARDS as u64 + 3) * 10_000;
        assert_eq!(snapshot.count(), n);
        assert_eq!(snapshot.cumulative[0], 0);
        assert_eq!(snapshot.cumulative[1], n / 2);
        assert_eq!(snapshot.cumulative[2], n / 2);
        let expected = n as f64 / 2.0 * (0.005 + 0.5);
        assert!((snapshot.sum - expected).abs() < 1e-6 * expected, "{} vs {expected}", snapshot.sum);
    }

    #[test]
    fn one_key_one_histogram_rendered_in_the_text_format() {
        let histograms = BucketHistograms::default();
        let key = Key::from_parts("x_seconds", vec![metrics::Label::new("stream", "a\"b\\c\nd")]);
        histograms.get_or_create(&key, BOUNDS).observe(0.005);
        histograms.get_or_create(&key, BOUNDS).observe(0.05);
        histograms.get_or_create(&Key::from_name("w_seconds"), BOUNDS).observe(1.0);
        let mut text = String::new();
        histograms.render_into(&mut text);
        let expected = "# TYPE w_seconds histogram\n\
            w_seconds_bucket{le=\"0.001\"} 0\n\
            w_seconds_bucket{le=\"0.01\"} 0\n\
            w_seconds_bucket{le=\"0.1\"} 0\n\
            w_seconds_bucket{le=\"+Inf\"} 1\n\
            w_seconds_sum 1\n\
            w_seconds_count 1\n\
            \n\
            # TYPE x_seconds histogram\n\
            x_seconds_bucket{stream=\"a\\\"b\\\\c\\nd\",le=\"0.001\"} 0\n\
            x_seconds_bucket{stream=\"a\\\"b\\\\c\\nd\",le=\"0.01\"} 1\n\
            x_seconds_bucket{stream=\"a\\\"b\\\\c\\nd\",le=\"0.1\"} 2\n\
            x_seconds_bucket{stream=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} 2\n\
            x_seconds_sum{stream=\"a\\\"b\\\\c\\nd\"} 0.055\n\
            x_seconds_count{stream=\"a\\\"b\\\\c\\nd\"} 2\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn label_sets_of_one_name_share_its_type_line_in_a_stable_order() {
        let histograms = BucketHistograms::default();
        for stream in ["b", "a", "c"] {
            let key = Key::from_parts("y_seconds", vec![metrics::Label::new("stream", stream)]);
            histograms.get_or_create(&key, BOUNDS).observe(0.5);
        }
        let mut text = String::new();
        histograms.render_into(&mut text);
        assert_eq!(text.matches("# TYPE y_seconds histogram").count(), 1, "{text}");
        let counts: Vec<&str> = text.lines().filter(|line| line.starts_with("y_seconds_count")).collect();
        assert_eq!(
            counts,
            ["y_seconds_count{stream=\"a\"} 1", "y_seconds_count{stream=\"b\"} 1", "y_seconds_count{stream=\"c\"} 1"]
        );
    }

    #[test]
    fn bounds_past_the_most_a_shard_holds_are_left_out() {
        static MANY: [f64; 30] = {
            let mut bounds = [0.0; 30];
            let mut i = 0;
            while i < 30 {
                bounds[i] = (i + 1) as f64;
                i += 1;
            }
            bounds
        };
        let histogram = BucketHistogram::new(&MANY);
        histogram.observe(MAX_BOUNDS as f64);
        histogram.observe(29.0);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative.len(), MAX_BOUNDS + 1);
        assert_eq!(snapshot.cumulative[MAX_BOUNDS - 1], 1, "{MAX_BOUNDS} is counted at its own bound");
        assert_eq!(snapshot.count(), 2, "29 is counted above the last bound kept");
    }
}
