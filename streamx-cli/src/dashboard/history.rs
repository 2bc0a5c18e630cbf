//! The samples behind the charts: every stream's figures every `--sample-every`, for the
//! last ten minutes, turned into per-stream series (rates, lag, pending, dead letters).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Shared;
use crate::discovery::Discovery;
use crate::overview::{self, StreamOverview};
use crate::rates::{Rates, Sample};

/// How far back the charts go.
const SPAN: Duration = Duration::from_secs(600);

/// One sample and its wall-clock time.
pub struct Point {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// What was seen.
    pub sample: Sample,
}

/// The last minutes of samples.
pub struct History {
    points: VecDeque<Point>,
    keep: usize,
    /// Why the last sample failed, if it did (shown on the page).
    pub last_error: Option<String>,
    /// Since when samples fail (Unix ms); `None` while they work.
    pub unreachable_since_ms: Option<u64>,
}

/// Per-stream series over the kept samples, index-aligned with `t`.
#[derive(Debug, Default, Serialize)]
pub struct Series {
    /// Sample times, Unix milliseconds.
    pub t: Vec<u64>,
    /// By stream.
    pub streams: BTreeMap<String, StreamSeries>,
}

/// One stream's series; `None` where the stream was absent or the figure unknown.
#[derive(Debug, Default, Serialize)]
pub struct StreamSeries {
    /// Entries added per second.
    pub published: Vec<Option<f64>>,
    /// Entries read per second, all groups together.
    pub consumed: Vec<Option<f64>>,
    /// Entries acknowledged (or dead-lettered) per second, all groups together.
    pub acknowledged: Vec<Option<f64>>,
    /// Lag, all groups together.
    pub lag: Vec<Option<u64>>,
    /// Pending entries, all groups together.
    pub pending: Vec<Option<u64>>,
    /// Dead letters.
    pub dead_letters: Vec<Option<u64>>,
}

impl History {
    /// Keeps ten minutes of samples taken `every` (at most 600).
    pub fn new(every: Duration) -> Self {
        let keep = (SPAN.as_secs_f64() / every.as_secs_f64().max(0.001)).clamp(2.0, 600.0) as usize;
        History { points: VecDeque::with_capacity(keep), keep, last_error: None, unreachable_since_ms: None }
    }

    /// Adds a sample, dropping the oldest beyond the span.
    pub fn push(&mut self, time_ms: u64, sample: Sample) {
        if self.points.len() == self.keep {
            self.points.pop_front();
        }
        self.points.push_back(Point { time_ms, sample });
        self.last_error = None;
        self.unreachable_since_ms = None;
    }

    /// Records a failed sample taken at `time_ms`: the figures stay those of the last good one.
    pub fn fail(&mut self, time_ms: u64, error: String) {
        self.last_error = Some(error);
        self.unreachable_since_ms.get_or_insert(time_ms);
    }

    /// The newest sample and the rates into it.
    pub fn latest(&self) -> Option<(&Point, Rates)> {
        let last = self.points.back()?;
        let before = self.points.len().checked_sub(2).and_then(|i| self.points.get(i));
        Some((last, Rates::between(before.map(|p| &p.sample), &last.sample)))
    }

    /// Every stream's series.
    pub fn series(&self) -> Series {
        let names: BTreeSet<&str> =
            self.points.iter().flat_map(|p| p.sample.streams.iter().map(|s| s.stream.as_str())).collect();
        let mut series = Series::default();
        let mut before: Option<&Sample> = None;
        for point in &self.points {
            let rates = Rates::between(before, &point.sample);
            series.t.push(point.time_ms);
            for name in &names {
                let found = point.sample.streams.iter().find(|s| s.stream == *name);
                let entry = series.streams.entry((*name).to_string()).or_default();
                push_stream(entry, found, &rates);
            }
            before = Some(&point.sample);
        }
        series
    }
}

fn push_stream(series: &mut StreamSeries, stream: Option<&StreamOverview>, rates: &Rates) {
    let Some(s) = stream else {
        series.published.push(None);
        series.consumed.push(None);
        series.acknowledged.push(None);
        series.lag.push(None);
        series.pending.push(None);
        series.dead_letters.push(None);
        return;
    };
    let consumed: Vec<f64> = s.groups.iter().filter_map(|g| rates.consumed(&s.stream, &g.name)).collect();
    series.published.push(rates.published(&s.stream));
    series.consumed.push((!consumed.is_empty()).then(|| consumed.iter().sum()));
    let acknowledged: Vec<f64> = s.groups.iter().filter_map(|g| rates.acknowledged(&s.stream, &g.name)).collect();
    series.acknowledged.push((!acknowledged.is_empty()).then(|| acknowledged.iter().sum()));
    series.lag.push((!s.groups.is_empty()).then(|| s.groups.iter().filter_map(|g| g.lag).sum()));
    series.pending.push((!s.groups.is_empty()).then(|| s.groups.iter().map(|g| g.pending).sum()));
    series.dead_letters.push(Some(s.dead_letters));
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Samples every `every` until the task is aborted; a failed sample (an error, or no answer
/// within [`overview::REFRESH_TIMEOUT`]) is kept as the page's error, with since when samples
/// fail, and the next one tried on time. Each sample runs as a task of its own, so that even
/// a panic in one is a failed sample, not the end of sampling (the page would show frozen
/// figures). Streams are found by [`Discovery`]: a bounded number of commands per sample,
/// whatever the keyspace's size.
pub async fn sample_forever(shared: Arc<Shared>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut discovery = Discovery::new();
    loop {
        ticks.tick().await;
        let time_ms = now_ms();
        let at = Instant::now();
        let conn = shared.conn.clone();
        // Lent to the task and handed back; a new one (a new scan) after a panic.
        let mut lent = std::mem::take(&mut discovery);
        let sample = tokio::spawn(async move {
            let result = overview::refresh(&conn, &mut lent).await;
            (lent, result)
        });
        let result = match sample.await {
            Ok((back, result)) => {
                discovery = back;
                result.map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("sampling failed: {e}")),
        };
        let mut history = shared.history.lock().await;
        match result {
            Ok(streams) => history.push(time_ms, Sample { at, streams }),
            Err(e) => history.fail(time_ms, e),
        }
    }
}
