//! Runs the selected phases, alternating streamx and raw runs so that noise on a shared
//! machine hits both sides alike, and keeps the best of the repeats.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fred::clients::Client;

use crate::args::{Phase, Settings, Side};
use crate::latency::{self, LatencyStats};
use crate::memory;
use crate::progress::{note, Progress};
use crate::raw::{self, RawConsumer};
use crate::report::{best, ConsumeRow, IoRow, LatencyRow, MemoryRow, Results, Throughput};
use crate::scale;
use crate::streamx_side::{self, Drain, Tally, Work};
use crate::workload::{events, typical_payload_bytes, Keys};

/// The longest a single drain may take before the run gives up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// The order of the two sides in repeat `r`: alternates, so neither always goes first.
fn order(r: u32) -> [Side; 2] {
    if r % 2 == 0 {
        [Side::Streamx, Side::Raw]
    } else {
        [Side::Raw, Side::Streamx]
    }
}

pub async fn run(s: &Settings, keys: &Keys, admin: &Client) -> Result<Results> {
    let mut results = Results {
        settings: s.clone(),
        redis_url: streamx::redact(&s.url),
        payload_bytes: typical_payload_bytes(),
        load_before: loadavg(),
        load_after: String::new(),
        produce: None,
        consume: Vec::new(),
        latency: Vec::new(),
        io_bound: None,
        memory: None,
        scale: None,
        targets: Vec::new(),
    };
    if s.runs(Phase::Produce) {
        results.produce = Some(produce(s, keys, admin).await?);
    }
    if s.runs(Phase::Consume) || s.runs(Phase::Io) {
        let backlog = keys.stream("backlog");
        memory::publish_backlog(admin, &backlog, s.messages, "backlog for consume/io").await?;
        if s.runs(Phase::Consume) {
            results.consume = consume(s, keys, &backlog).await?;
        }
        if s.runs(Phase::Io) {
            results.io_bound = Some(io_bound(s, keys, &backlog).await?);
        }
        raw::delete(admin, vec![backlog]).await?;
    }
    if s.runs(Phase::Latency) {
        for &rate in &s.rates {
            results.latency.push(latency(s, keys, rate).await?);
        }
    }
    if s.runs(Phase::Memory) {
        results.memory = Some(memory(s, keys, admin).await?);
    }
    if s.runs(Phase::Scale) {
        results.scale = Some(scale::run(s, keys, admin).await?);
    }
    results.load_after = loadavg();
    results.check_targets();
    Ok(results)
}

async fn produce(s: &Settings, keys: &Keys, admin: &Client) -> Result<Throughput> {
    note(&format!("== produce: {} messages, best of {}", s.messages, s.repeat));
    let batch = events(0, s.messages);
    let (mut sx_runs, mut raw_runs) = (Vec::new(), Vec::new());
    for r in 0..s.repeat {
        for side in order(r) {
            let stream = keys.stream("produce");
            let done = Arc::new(AtomicU64::new(0));
            let label = format!("produce {} run {}/{}", side.name(), r + 1, s.repeat);
            let progress = Progress::start(&label, s.messages, done.clone());
            let elapsed = match side {
                Side::Streamx => streamx_side::produce(&s.url, &stream, &batch).await?,
                Side::Raw => {
                    let client = raw::connect(&s.url).await?;
                    let started = Instant::now();
                    raw::publish(&client, &stream, &batch, &done).await?;
                    let elapsed = started.elapsed();
                    let _ = fred::interfaces::ClientLike::quit(&client).await;
                    elapsed
                }
            };
            done.store(s.messages, Ordering::Relaxed);
            let rate = s.messages as f64 / elapsed.as_secs_f64();
            progress.finish(&format!("{rate:.0} msg/s")).await;
            match side {
                Side::Streamx => sx_runs.push(rate),
                Side::Raw => raw_runs.push(rate),
            }
            raw::delete(admin, vec![stream]).await?;
        }
    }
    Ok(Throughput::new(sx_runs, raw_runs))
}

async fn consume(s: &Settings, keys: &Keys, backlog: &str) -> Result<Vec<ConsumeRow>> {
    note(&format!(
        "== consume: drain {} messages, streamx at concurrency {:?} vs raw, best of {}",
        s.messages, s.concurrency, s.repeat
    ));
    let mut sx_runs: Vec<Vec<f64>> = vec![Vec::new(); s.concurrency.len()];
    let mut raw_runs = Vec::new();
    for r in 0..s.repeat {
        for side in order(r) {
            match side {
                Side::Streamx => {
                    for (i, &c) in s.concurrency.iter().enumerate() {
                        let label = format!("consume streamx c={c} run {}/{}", r + 1, s.repeat);
                        let rate = drain_streamx(s, keys, backlog, &label, c, Work::None, s.messages).await?;
                        sx_runs[i].push(rate);
                    }
                }
                Side::Raw => {
                    let label = format!("consume raw run {}/{}", r + 1, s.repeat);
                    raw_runs.push(drain_raw(s, keys, backlog, &label).await?);
                }
            }
        }
    }
    Ok(s.concurrency
        .iter()
        .zip(sx_runs)
        .map(|(&concurrency, runs)| ConsumeRow { concurrency, throughput: Throughput::new(runs, raw_runs.clone()) })
        .collect())
}

/// Drains `target` messages of `backlog` with the streamx runtime in a fresh group; msg/s.
async fn drain_streamx(
    s: &Settings,
    keys: &Keys,
    backlog: &str,
    label: &str,
    concurrency: usize,
    work: Work,
    target: u64,
) -> Result<f64> {
    let group = keys.group("sx");
    let tally = Arc::new(Tally::default());
    let progress = Progress::start(label, target, tally.handled.clone());
    let drain =
        Drain { url: &s.url, stream: backlog, group: &group, target, concurrency, work, timeout: DRAIN_TIMEOUT };
    let elapsed = streamx_side::consume(&drain, tally).await?;
    let rate = target as f64 / elapsed.as_secs_f64();
    progress.finish(&format!("{rate:.0} msg/s")).await;
    Ok(rate)
}

/// Drains all of `backlog` with the raw consumer in a fresh group; msg/s.
async fn drain_raw(s: &Settings, keys: &Keys, backlog: &str, label: &str) -> Result<f64> {
    let group = keys.group("raw");
    let handled = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, s.messages, handled.clone());
    let started = Instant::now();
    let consumer = RawConsumer::connect(&s.url, backlog, &group).await?;
    let last = consumer
        .run(s.messages, DRAIN_TIMEOUT, |_| {
            handled.fetch_add(1, Ordering::Relaxed);
        })
        .await?;
    consumer.close().await;
    let rate = s.messages as f64 / (last - started).as_secs_f64();
    progress.finish(&format!("{rate:.0} msg/s")).await;
    Ok(rate)
}

async fn io_bound(s: &Settings, keys: &Keys, backlog: &str) -> Result<IoRow> {
    let (c, ms) = (s.io_concurrency, s.io_sleep_ms);
    let ideal = c as f64 * 1000.0 / ms as f64;
    note(&format!(
        "== I/O-bound: {} messages, handler awaits {ms} ms, concurrency {c}, ideal {ideal:.0} msg/s",
        s.io_messages
    ));
    let mut runs = Vec::new();
    for r in 0..s.repeat {
        let label = format!("io streamx c={c} run {}/{}", r + 1, s.repeat);
        let work = Work::Sleep(Duration::from_millis(ms));
        runs.push(drain_streamx(s, keys, backlog, &label, c, work, s.io_messages).await?);
    }
    let streamx = best(&runs);
    Ok(IoRow { concurrency: c, sleep_ms: ms, messages: s.io_messages, streamx, ideal, ratio: streamx / ideal, runs })
}

async fn latency(s: &Settings, keys: &Keys, rate: u64) -> Result<LatencyRow> {
    note(&format!(
        "== latency: {rate} msg/s for {:.1} s, publish -> handler start, streamx concurrency {}, best p99 of {}",
        s.latency_secs,
        latency::CONCURRENCY,
        s.repeat
    ));
    let (mut sx, mut raw): (Vec<LatencyStats>, Vec<LatencyStats>) = (Vec::new(), Vec::new());
    for r in 0..s.repeat {
        for side in order(r) {
            let stats = latency::measure(&s.url, keys, side, rate, s.latency_duration()).await?;
            match side {
                Side::Streamx => sx.push(stats),
                Side::Raw => raw.push(stats),
            }
        }
    }
    let lowest_p99 = |runs: &[LatencyStats]| {
        runs.iter().min_by(|a, b| a.p99_us.total_cmp(&b.p99_us)).cloned().context("no latency run")
    };
    let (streamx, raw_best) = (lowest_p99(&sx)?, lowest_p99(&raw)?);
    Ok(LatencyRow {
        rate,
        p99_ratio: streamx.p99_us / raw_best.p99_us,
        streamx_p99_runs_us: sx.iter().map(|x| x.p99_us).collect(),
        raw_p99_runs_us: raw.iter().map(|x| x.p99_us).collect(),
        streamx,
        raw: raw_best,
    })
}

async fn memory(s: &Settings, keys: &Keys, admin: &Client) -> Result<MemoryRow> {
    note(&format!(
        "== memory: peak RSS of a consume-only child draining {} messages at concurrency {}",
        s.backlog, s.memory_concurrency
    ));
    let stream = keys.stream("memory");
    memory::publish_backlog(admin, &stream, s.backlog, "backlog for memory").await?;
    let c = s.memory_concurrency;
    let streamx = memory::run_child(&s.url, &stream, &keys.group("mem-sx"), s.backlog, c, Side::Streamx).await?;
    let raw = memory::run_child(&s.url, &stream, &keys.group("mem-raw"), s.backlog, c, Side::Raw).await?;
    raw::delete(admin, vec![stream]).await?;
    Ok(MemoryRow {
        backlog: s.backlog,
        concurrency: c,
        ratio: streamx.vm_hwm_kib as f64 / raw.vm_hwm_kib.max(1) as f64,
        streamx,
        raw,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
