//! Rates from two looks at the streams: entries published per second (XINFO STREAM
//! `entries-added`), read per second by each group (XINFO GROUPS `entries-read`), and
//! acknowledged per second by each group: what it read minus what its pending list grew by
//! (an entry leaves the pending list when it is acknowledged, dead-lettered included).

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
    acknowledged: HashMap<(String, String), f64>,
}

impl Rates {
    /// The rates from `before` to `now`; empty (every rate unknown) without `before`.
    pub fn between(before: Option<&Sample>, now: &Sample) -> Self {
        let mut rates = Rates { published: HashMap::new(), consumed: HashMap::new(), acknowledged: HashMap::new() };
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
                let Some(old_group) = old.groups.iter().find(|g| g.name == group.name) else { continue };
                let key = (stream.stream.clone(), group.name.clone());
                if let Some(rate) = per_second(old_group.entries_read, group.entries_read) {
                    rates.consumed.insert(key.clone(), rate);
                }
                if let (Some(old_read), Some(new_read)) = (old_group.entries_read, group.entries_read) {
                    // Entries that left the pending list: read since, minus its growth.
                    let left =
                        new_read.saturating_sub(old_read) as i128 - group.pending as i128 + old_group.pending as i128;
                    rates.acknowledged.insert(key, left.max(0) as f64 / secs);
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

    /// Entries of `group` of `stream` acknowledged (or dead-lettered) per second: read minus
    /// the pending list's growth.
    pub fn acknowledged(&self, stream: &str, group: &str) -> Option<f64> {
        self.acknowledged.get(&(stream.to_string(), group.to_string())).copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::overview::GroupOverview;

    fn sample(at: Instant, read: u64, pending: u64) -> Sample {
        let group = GroupOverview {
            name: "g".into(),
            consumers: 1,
            pending,
            lag: Some(0),
            lag_estimated: false,
            entries_read: Some(read),
            last_delivered_id: None,
            paused: false,
        };
        Sample {
            at,
            streams: vec![StreamOverview {
                stream: "s".into(),
                length: 0,
                entries_added: Some(read),
                last_generated_id: None,
                first_entry: None,
                last_entry: None,
                dead_letter_stream: "{s}:dlq".into(),
                dead_letters: 0,
                scheduled: 0,
                groups: vec![group],
                no_permission: false,
            }],
        }
    }

    #[test]
    fn acknowledged_is_read_minus_the_pending_growth() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        // 100 read in 2 s, the pending list grew by 40: 60 left it, 30/s.
        let rates = Rates::between(Some(&sample(t0, 1000, 10)), &sample(t1, 1100, 50));
        assert_eq!(rates.consumed("s", "g"), Some(50.0));
        assert_eq!(rates.acknowledged("s", "g"), Some(30.0));
        // Nothing read, 20 acknowledged from the backlog: 10/s.
        let rates = Rates::between(Some(&sample(t0, 1000, 50)), &sample(t1, 1000, 30));
        assert_eq!(rates.consumed("s", "g"), Some(0.0));
        assert_eq!(rates.acknowledged("s", "g"), Some(10.0));
    }
}
