//! Publish-to-handler latency at a steady rate: the publisher stamps [`now_ns`] into each
//! payload just before sending it; the handler records `now - stamp` as soon as it starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use streamx::{Consumer, Message, Producer};

use crate::args::Side;
use crate::progress::Progress;
use crate::raw::{self, RawConsumer, ReadPlan};
use crate::streamx_side::{self, Tally};
use crate::workload::{now_ns, Event, Keys};

/// Handler concurrency of the streamx consumer in this phase (the raw consumer reads as
/// the consume phase's does at this concurrency).
pub const CONCURRENCY: usize = 8;

/// Latency percentiles of one measurement, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStats {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LatencyStats {
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencyStats {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

type Shared = Arc<Mutex<Histogram<u64>>>;

/// Records the latency of `event` unless it is part of the warm-up.
fn record(hist: &Mutex<Histogram<u64>>, event: &Event, warmup: u64) {
    let now = now_ns();
    if event.seq >= warmup {
        hist.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(now.saturating_sub(event.sent_ns).max(1));
    }
}

/// Measures `side` at `rate` msg/s for `duration` on a fresh stream (the raw side reads
/// with `plan`).
pub async fn measure(
    url: &str,
    keys: &Keys,
    side: Side,
    plan: ReadPlan,
    rate: u64,
    duration: Duration,
) -> Result<LatencyStats> {
    let stream = keys.stream(&format!("latency-{rate}-{}", side.name()));
    let group = keys.group("latency");
    let warmup = (rate / 4).max(50);
    let total = warmup + (rate as f64 * duration.as_secs_f64()).round() as u64;
    let hist: Shared = Arc::new(Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000_000, 3)?));
    let timeout = duration + Duration::from_secs(30);
    let label = format!("latency {rate}/s {}", side.name());

    let stats = match side {
        Side::Streamx => {
            let tally = Arc::new(Tally::default());
            let (h, t) = (hist.clone(), tally.clone());
            let consumer = Consumer::new(stream.clone(), group, move |msg: Message<Event>| {
                record(&h, msg.payload(), warmup);
                let t = t.clone();
                async move {
                    t.handled.fetch_add(1, Ordering::Relaxed);
                }
            })
            .concurrency(CONCURRENCY);
            let running = streamx_side::start(url, consumer).await?;
            let producer = Producer::connect(url).await?;
            let progress = Progress::start(&label, total, tally.handled.clone());
            let published = pace(rate, total, |e| {
                let (p, s) = (&producer, stream.as_str());
                async move { p.publish(s, &e).await.map(|_| ()).context("publish") }
            })
            .await;
            let done = wait_until(&tally.handled, total, Instant::now() + timeout).await;
            producer.close().await;
            running.shutdown().await?;
            published?;
            let stats = LatencyStats::of(&hist.lock().unwrap_or_else(PoisonError::into_inner));
            progress.finish(&summary(&stats)).await;
            if !done {
                bail!("{label}: only {} of {total} messages handled", tally.handled.load(Ordering::Relaxed));
            }
            stats
        }
        Side::Raw => {
            let consumer = RawConsumer::connect(url, &stream, &group, plan).await?;
            let publisher = raw::connect(url).await?;
            let handled = Arc::new(AtomicU64::new(0));
            let progress = Progress::start(&label, total, handled.clone());
            let (h, c) = (hist.clone(), handled.clone());
            let task = tokio::spawn(async move {
                let result = consumer
                    .run(total, timeout, move |e: &Event| {
                        record(&h, e, warmup);
                        c.fetch_add(1, Ordering::Relaxed);
                    })
                    .await;
                consumer.close().await;
                result
            });
            let published = pace(rate, total, |e| {
                let (p, s) = (&publisher, stream.as_str());
                async move { raw::publish_one(p, s, &e).await }
            })
            .await;
            let _ = fred::interfaces::ClientLike::quit(&publisher).await;
            published?;
            task.await.context("raw consumer task")??;
            let stats = LatencyStats::of(&hist.lock().unwrap_or_else(PoisonError::into_inner));
            progress.finish(&summary(&stats)).await;
            stats
        }
    };
    Ok(stats)
}

fn summary(s: &LatencyStats) -> String {
    format!("p50 {:.0} us, p99 {:.0} us, max {:.0} us ({} samples)", s.p50_us, s.p99_us, s.max_us, s.count)
}

/// Publishes `total` events at `rate` msg/s, one at a time, each stamped right before its
/// send. Sends are scheduled on a fixed grid (no drift): after a late send, the sends that
/// fell due meanwhile go out back to back.
async fn pace<F, Fut>(rate: u64, total: u64, mut publish: F) -> Result<()>
where
    F: FnMut(Event) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let period_ns = 1e9 / rate as f64;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    for seq in 0..total {
        let due = start + Duration::from_nanos((seq as f64 * period_ns) as u64);
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let mut event = Event::new(seq);
        event.sent_ns = now_ns();
        publish(event).await?;
    }
    Ok(())
}

async fn wait_until(counter: &AtomicU64, target: u64, deadline: Instant) -> bool {
    while counter.load(Ordering::Relaxed) < target {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}
