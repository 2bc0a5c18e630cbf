//! The metric handles of one consumer loop, built once when the loop starts: recording a
//! delivery is an atomic add (a histogram sample with a recorder installed), never a
//! lookup by name.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Histogram};

use super::names::*;
use crate::handler::FailureKind;
use crate::message::MessageId;

/// The handles of one consumer loop (labels: stream, group, registration name).
pub(crate) struct ConsumerMetrics {
    success: Counter,
    deduplicated: Counter,
    retry: Counter,
    dead_letter: Counter,
    rejected: Counter,
    takeovers: Counter,
    timeouts: Counter,
    dead_letters_trimmed: Counter,
    handler_duration: Histogram,
    end_to_end: Histogram,
    /// A recorder was installed when the handles were built: only then are clocks read.
    timed: bool,
}

impl ConsumerMetrics {
    pub fn new(stream: &str, group: &str, consumer: &str) -> Self {
        let labels = |outcome: Option<&'static str>| {
            let mut labels = vec![
                metrics::Label::new(LABEL_STREAM, stream.to_string()),
                metrics::Label::new(LABEL_GROUP, group.to_string()),
                metrics::Label::new(LABEL_CONSUMER, consumer.to_string()),
            ];
            labels.extend(outcome.map(|o| metrics::Label::new(LABEL_OUTCOME, o)));
            labels
        };
        let consumed = |outcome| metrics::counter!(MESSAGES_CONSUMED, labels(Some(outcome)));
        ConsumerMetrics {
            success: consumed(OUTCOME_SUCCESS),
            deduplicated: consumed(OUTCOME_DEDUPLICATED),
            retry: consumed(OUTCOME_RETRY),
            dead_letter: consumed(OUTCOME_DEAD_LETTER),
            rejected: consumed(OUTCOME_REJECTED),
            takeovers: metrics::counter!(TAKEOVERS, labels(None)),
            timeouts: metrics::counter!(HANDLER_TIMEOUTS, labels(None)),
            dead_letters_trimmed: metrics::counter!(DEAD_LETTERS_TRIMMED, labels(None)),
            handler_duration: metrics::histogram!(HANDLER_DURATION, labels(None)),
            end_to_end: metrics::histogram!(END_TO_END_LATENCY, labels(None)),
            timed: super::recorder_installed(),
        }
    }

    /// A handler run of `id` (delivery `attempt`) starts: records the end-to-end latency of
    /// a first delivery; the returned start time goes to [`handler_finished`](Self::handler_finished).
    #[inline]
    pub fn handler_started(&self, id: MessageId, attempt: u32) -> Option<Instant> {
        self.handler_started_in(self.run_clock().as_ref(), id, attempt)
    }

    /// A clock for a run of handlers dispatched one after another by one task (`None` when
    /// no recorder keeps timings).
    pub fn run_clock(&self) -> Option<RunClock> {
        self.timed.then(|| RunClock {
            wall_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            last: Instant::now(),
        })
    }

    /// [`handler_started`](Self::handler_started) within a run: no clock is read.
    #[inline]
    pub fn handler_started_in(&self, clock: Option<&RunClock>, id: MessageId, attempt: u32) -> Option<Instant> {
        let clock = clock?;
        if attempt == 1 {
            self.end_to_end.record(clock.wall_ms.saturating_sub(id.millis()) as f64 / 1000.0);
        }
        Some(clock.last)
    }

    /// [`handler_finished`](Self::handler_finished) within a run: one clock read, which is also
    /// the next handler's start.
    #[inline]
    pub fn handler_finished_in(&self, clock: Option<&mut RunClock>, started: Option<Instant>) {
        if let (Some(clock), Some(started)) = (clock, started) {
            let now = Instant::now();
            self.handler_duration.record(now.saturating_duration_since(started).as_secs_f64());
            clock.last = now;
        }
    }

    /// A handler of the run went on to a task of its own: the next one starts now, not when
    /// that one started.
    #[inline]
    pub fn handler_moved_out(&self, clock: Option<&mut RunClock>) {
        if let Some(clock) = clock {
            clock.last = Instant::now();
        }
    }

    /// The handler started at `started` returned.
    #[inline]
    pub fn handler_finished(&self, started: Option<Instant>) {
        if let Some(started) = started {
            self.handler_duration.record(started.elapsed().as_secs_f64());
        }
    }

    /// `n` handlers succeeded.
    #[inline]
    pub fn succeeded(&self, n: u64) {
        self.success.increment(n);
    }

    /// A message was acknowledged without running (`dedupe`).
    pub fn deduplicated(&self) {
        self.deduplicated.increment(1);
    }

    /// The delivery failed and is scheduled for another.
    pub fn retried(&self) {
        self.retry.increment(1);
    }

    /// The entry goes to the dead letters, for `kind`: poison kinds count as `rejected`.
    pub fn dead_lettered(&self, kind: FailureKind) {
        if kind.is_poison() {
            self.rejected.increment(1);
        } else {
            self.dead_letter.increment(1);
        }
    }

    /// A handler run was cancelled at the consumer's timeout.
    pub fn timed_out(&self) {
        self.timeouts.increment(1);
    }

    /// `n` dead letters were trimmed by the dead-letter stream's length cap.
    pub fn dead_letters_trimmed(&self, n: u64) {
        self.dead_letters_trimmed.increment(n);
    }

    /// `n` entries were taken over from consumers that stopped.
    pub fn taken_over(&self, n: usize) {
        if n > 0 {
            self.takeovers.increment(n as u64);
        }
    }
}

/// Timestamps for a run of handlers dispatched one after another by one task (a read loop
/// running quick handlers inline): the wall clock is read once per run (end-to-end latency
/// counts milliseconds, and a run lasts well under one), and each handler's end is the next
/// one's start, so a handler's duration also counts the dispatch of its entry (well under a
/// microsecond). Clock reads are a large part of the metrics' cost per message.
#[derive(Debug)]
pub(crate) struct RunClock {
    wall_ms: u64,
    last: Instant,
}
