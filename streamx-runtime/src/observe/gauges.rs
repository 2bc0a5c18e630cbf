//! The gauges of one consumer loop: the group's lag, pending count, oldest pending age and
//! dead-letter length (sampled from Redis by the loop's sampler), and the handlers in flight
//! here.

use metrics::Gauge;

use super::names::*;

/// One sample of a group's state in Redis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GroupSample {
    /// Entries not read by the group yet.
    pub lag: u64,
    /// Whether Redis could not tell the lag exactly (see the sampler).
    pub lag_estimated: bool,
    /// Entries in the group's PEL.
    pub pending: u64,
    /// Age of the oldest pending entry (0 when none is pending), in milliseconds.
    pub oldest_pending_age_ms: u64,
    /// Length of the dead-letter stream, when dead letters are on.
    pub dead_letters: Option<u64>,
}

/// The gauge handles of one consumer loop.
pub(crate) struct LoopGauges {
    lag: Gauge,
    pending: Gauge,
    oldest_pending_age: Gauge,
    dead_letters: Gauge,
    in_flight: Gauge,
}

impl LoopGauges {
    pub fn new(stream: &str, group: &str, consumer: &str) -> Self {
        let group_labels = [(LABEL_STREAM, stream.to_string()), (LABEL_GROUP, group.to_string())];
        let consumer_labels = [
            (LABEL_STREAM, stream.to_string()),
            (LABEL_GROUP, group.to_string()),
            (LABEL_CONSUMER, consumer.to_string()),
        ];
        LoopGauges {
            lag: metrics::gauge!(GROUP_LAG, &group_labels),
            pending: metrics::gauge!(GROUP_PENDING, &group_labels),
            oldest_pending_age: metrics::gauge!(OLDEST_PENDING_AGE, &group_labels),
            dead_letters: metrics::gauge!(DEAD_LETTER_LENGTH, &group_labels),
            in_flight: metrics::gauge!(IN_FLIGHT, &consumer_labels),
        }
    }

    pub fn set_group(&self, sample: &GroupSample) {
        self.lag.set(sample.lag as f64);
        self.pending.set(sample.pending as f64);
        self.oldest_pending_age.set(sample.oldest_pending_age_ms as f64 / 1000.0);
        if let Some(len) = sample.dead_letters {
            self.dead_letters.set(len as f64);
        }
    }

    pub fn set_in_flight(&self, handlers: usize) {
        self.in_flight.set(handlers as f64);
    }
}
