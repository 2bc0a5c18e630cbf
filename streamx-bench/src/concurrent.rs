//! The concurrent phase (issue 26): `--publish-tasks` tokio tasks share one streamx
//! `Producer` (clones), each publishing its share of `--messages` with `publish`, one
//! message after the other (each awaited). In the same run, alternating: `publish_batch` of
//! the same messages (the produce phase's streamx side), and the same tasks on one raw fred
//! client, one XADD per call (fred pipelines the commands that are in flight together on a
//! connection). msg/s, per-call latency (hdrhistogram) and the cost per message of each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use fred::clients::Client;
use fred::interfaces::ClientLike;
use hdrhistogram::Histogram;
use serde::Serialize;
use streamx::Producer;
use tokio::task::JoinSet;

use crate::args::Settings;
use crate::cost::{Cost, CostSummary};
use crate::latency::LatencyStats;
use crate::phases::{timed_publish, timed_publish_with};
use crate::progress::note;
use crate::raw;
use crate::report::Throughput;
use crate::streamx_side;
use crate::workload::{events, Event, Keys};

#[derive(Debug, Clone, Serialize)]
pub struct ConcurrentRow {
    pub tasks: usize,
    pub messages: u64,
    /// streamx's concurrent `publish` against the raw fred client with the same tasks.
    pub against_raw: Throughput,
    /// streamx's concurrent `publish` (`streamx`) against its `publish_batch` of the same
    /// messages (`raw`).
    pub against_batch: Throughput,
    /// Per-call latency of the run with the lowest p99, each side.
    pub streamx_latency: LatencyStats,
    pub raw_latency: LatencyStats,
    pub streamx_latency_runs: Vec<LatencyStats>,
    pub raw_latency_runs: Vec<LatencyStats>,
    pub streamx_cost: Option<CostSummary>,
    pub raw_cost: Option<CostSummary>,
    pub batch_cost: Option<CostSummary>,
}

/// What one task publishes with.
#[derive(Clone)]
enum Publisher {
    Streamx(Producer),
    Raw(Client),
}

impl Publisher {
    async fn publish(&self, stream: &str, event: &Event) -> Result<()> {
        match self {
            Publisher::Streamx(producer) => producer.publish(stream, event).await.map(|_| ()).context("publish"),
            Publisher::Raw(client) => raw::publish_one(client, stream, event).await,
        }
    }
}

/// The three measurements of a repeat.
#[derive(Debug, Clone, Copy)]
enum Side {
    Concurrent,
    Batch,
    Raw,
}

impl Side {
    /// The order of repeat `r`: rotated, so that none always goes first.
    fn order(r: u32) -> [Side; 3] {
        let mut sides = [Side::Concurrent, Side::Batch, Side::Raw];
        sides.rotate_left(r as usize % 3);
        sides
    }
}

type Runs = (Vec<f64>, Vec<Cost>);

/// Runs the phase.
pub async fn run(s: &Settings, keys: &Keys, admin: &Client) -> Result<ConcurrentRow> {
    let tasks = s.publish_tasks.min(s.messages as usize).max(1);
    note(&format!(
        "== concurrent: {} messages, {tasks} tasks each awaiting publish of one message at a time (one shared \
         Producer) vs publish_batch vs {tasks} tasks on one raw fred client, best of {}",
        s.messages, s.repeat
    ));
    let batch = Arc::new(events(0, s.messages));
    let (mut sx, mut bt, mut rw): (Runs, Runs, Runs) = Default::default();
    let (mut sx_lat, mut raw_lat) = (Vec::new(), Vec::new());
    for r in 0..s.repeat {
        for side in Side::order(r) {
            let stream = keys.stream("concurrent");
            let done = Arc::new(AtomicU64::new(0));
            let run = format!("run {}/{}", r + 1, s.repeat);
            match side {
                Side::Batch => {
                    let label = format!("concurrent: streamx publish_batch {run}");
                    let publish = streamx_side::produce(&s.url, &stream, &batch);
                    let (rate, cost) = timed_publish(s, admin, &label, &done, publish).await?;
                    bt.0.push(rate);
                    bt.1.push(cost);
                }
                Side::Concurrent | Side::Raw => {
                    let (publisher, name) = match side {
                        Side::Concurrent => (Publisher::Streamx(Producer::connect(&s.url).await?), "streamx publish"),
                        _ => (Publisher::Raw(raw::connect(&s.url).await?), "raw fred xadd"),
                    };
                    let label = format!("concurrent: {tasks} tasks, {name} {run}");
                    let publish = fan_out(publisher.clone(), tasks, &stream, batch.clone(), done.clone());
                    let measured = timed_publish_with(s, admin, &label, &done, publish).await;
                    close(publisher).await;
                    let (rate, cost, hist) = measured?;
                    let (runs, latencies) = match side {
                        Side::Concurrent => (&mut sx, &mut sx_lat),
                        _ => (&mut rw, &mut raw_lat),
                    };
                    let stats = LatencyStats::of(&hist);
                    note(&format!(
                        "   per call: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
                        stats.p50_us, stats.p99_us, stats.max_us
                    ));
                    runs.0.push(rate);
                    runs.1.push(cost);
                    latencies.push(stats);
                }
            }
            raw::delete(admin, vec![stream]).await?;
        }
    }
    let lowest_p99 = |runs: &[LatencyStats]| {
        runs.iter().min_by(|a, b| a.p99_us.total_cmp(&b.p99_us)).cloned().context("no concurrent run")
    };
    Ok(ConcurrentRow {
        tasks,
        messages: s.messages,
        against_raw: Throughput::new(sx.0.clone(), rw.0),
        against_batch: Throughput::new(sx.0, bt.0),
        streamx_latency: lowest_p99(&sx_lat)?,
        raw_latency: lowest_p99(&raw_lat)?,
        streamx_latency_runs: sx_lat,
        raw_latency_runs: raw_lat,
        streamx_cost: CostSummary::of(sx.1),
        raw_cost: CostSummary::of(rw.1),
        batch_cost: CostSummary::of(bt.1),
    })
}

async fn close(publisher: Publisher) {
    match publisher {
        Publisher::Streamx(producer) => producer.close().await,
        Publisher::Raw(client) => {
            let _ = client.quit().await;
        }
    }
}

/// The share of `n` messages of task `i` of `tasks`: a range of indexes.
fn share(n: usize, tasks: usize, i: usize) -> std::ops::Range<usize> {
    let (base, extra) = (n / tasks, n % tasks);
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

/// `tasks` tasks publishing their share of `events` with clones of `publisher`, one
/// message at a time, counting into `done`; the time from the first spawn to the last
/// reply and the latency of every call, ns. Each task keeps its latencies in a plain vector
/// (a histogram per task would be ~240 KiB of buckets each, page-faulted and cache-missed
/// inside the timed section); they go into one histogram after the clock stops.
async fn fan_out(
    publisher: Publisher,
    tasks: usize,
    stream: &str,
    events: Arc<Vec<Event>>,
    done: Arc<AtomicU64>,
) -> Result<(Duration, Histogram<u64>)> {
    let stream: Arc<str> = stream.into();
    let mut set = JoinSet::new();
    let started = Instant::now();
    for i in 0..tasks {
        let (publisher, stream, events, done) = (publisher.clone(), stream.clone(), events.clone(), done.clone());
        set.spawn(async move {
            let mine = &events[share(events.len(), tasks, i)];
            let mut latencies = Vec::with_capacity(mine.len());
            for event in mine {
                let sent = Instant::now();
                publisher.publish(&stream, event).await?;
                latencies.push((sent.elapsed().as_nanos() as u64).max(1));
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(tasks);
    while let Some(joined) = set.join_next().await {
        latencies.push(joined.map_err(|e| anyhow!(e).context("publishing task"))??);
    }
    let elapsed = started.elapsed();
    let mut all = new_histogram()?;
    for ns in latencies.into_iter().flatten() {
        all.saturating_record(ns);
    }
    Ok((elapsed, all))
}

fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000_000, 3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_message_once() {
        for (n, tasks) in [(20_000, 1000), (1003, 1000), (7, 3), (5, 5)] {
            let ranges: Vec<_> = (0..tasks).map(|i| share(n, tasks, i)).collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[tasks - 1].end, n);
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            assert!(ranges.iter().all(|r| r.len() >= n / tasks && r.len() <= n / tasks + 1));
        }
    }
}
