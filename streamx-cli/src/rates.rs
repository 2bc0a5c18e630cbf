//! Rates from two looks at the streams: entries published per second (XINFO STREAM
//! `entries-added`) and read per second by each group (XINFO GROUPS `entries-read`).

use std::collections::HashMap;
use std::time::Instant;

use crate::overview::StreamOverview;

/// The streams at one moment.
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// What was seen.
    pub streams: Vec<StreamOverview>,
}

/// Per-second rates between two samples.
pub struct Rates {
    published: HashMap<String, f64>,
    consumed: HashMap<(String, String), f64>,
}

impl Rates {
    /// The rates from `before` to `now`; empty (every rate unknown) without `before`.
    pub fn between(before: Option<&Sample>, now: &Sample) -> Self {
        let mut rates = Rates { published: HashMap::new(), consumed: HashMap::new() };
        let Some(before) = before else { return rates };
        let secs = now.at.duration_since(before.at).as_secs_f64();
        if secs <= 0.0 {
            return rates;
        }
        let per_second = |old: Option<u64>, new: Option<u64>| Some(new?.saturating_sub(old?) as f64 / secs);
        for stream in &now.streams {
            let Some(old) = before.streams.iter().find(|s| s.stream == stream.stream) else { continue };
            if let Some(rate) = per_second(old.entries_added, stream.entries_added) {
                rates.published.insert(stream.stream.clone(), rate);
            }
            for group in &stream.groups {
                let old_read = old.groups.iter().find(|g| g.name == group.name).and_then(|g| g.entries_read);
                if let Some(rate) = per_second(old_read, group.entries_read) {
                    rates.consumed.insert((stream.stream.clone(), group.name.clone()), rate);
                }
            }
        }
        rates
    }

    /// Entries added to `stream` per second.
    pub fn published(&self, stream: &str) -> Option<f64> {
        self.published.get(stream).copied()
    }

    /// Entries read by `group` of `stream` per second.
    pub fn consumed(&self, stream: &str, group: &str) -> Option<f64> {
        self.consumed.get(&(stream.to_string(), group.to_string())).copied()
    }
}
