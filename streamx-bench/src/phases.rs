//! Runs the selected phases, alternating streamx and raw runs so that noise on a shared
//! machine hits both sides alike, and keeps the best of the repeats.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fred::clients::Client;

use crate::args::{PayloadKind, Phase, Settings, Side};
use crate::cost::{Cost, CostSummary, Meter};
use crate::latency::{self, LatencyStats};
use crate::memory::{self, ChildJob};
use crate::progress::{note, Progress};
use crate::raw::{self, RawConsumer, ReadPlan};
use crate::raw_producer;
use crate::references::{CeilingRuns, SeaStreamerRuns};
use crate::report::{
    best, ConsumeRow, DesignRate, IoRow, LargeMemoryRow, LatencyRow, MemoryRow, MetricsRow, ProduceResult, Results,
    Throughput,
};
use crate::scale;
use crate::streamx_side::{self, Drain, ReadTuning, Tally, Work};
use crate::takeover;
use crate::workload::{events, typical_payload_bytes, Event, Keys};

/// The longest a single drain may take before the run gives up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// The order of the two sides in repeat `r`: alternates, so neither always goes first.
pub(crate) fn order(r: u32) -> [Side; 2] {
    if r % 2 == 0 {
        [Side::Streamx, Side::Raw]
    } else {
        [Side::Raw, Side::Streamx]
    }
}

/// The results of a run before any phase: the settings, the load average.
pub fn new_results(s: &Settings) -> Results {
    Results {
        settings: s.clone(),
        redis_url: streamx::redact(&s.url),
        payload_bytes: typical_payload_bytes(),
        load_before: loadavg(),
        load_after: String::new(),
        produce: None,
        concurrent: None,
        consume: Vec::new(),
        batch_sizes: Vec::new(),
        latency: Vec::new(),
        io_bound: None,
        memory: None,
        memory_large: None,
        scale: None,
        takeover: None,
        metrics: None,
        features: None,
        codecs: None,
        middleware: None,
        rate_limit: None,
        ordered: Vec::new(),
        topic: None,
        targets: Vec::new(),
    }
}

/// Runs the selected phases that use the Redis at `--url` (every phase but `topic`, which
/// starts a cluster of its own) into `results`.
pub async fn run(s: &Settings, keys: &Keys, admin: &Client, results: &mut Results) -> Result<()> {
    if s.runs(Phase::Produce) {
        results.produce = Some(produce(s, keys, admin).await?);
    }
    if s.runs(Phase::Concurrent) {
        results.concurrent = Some(crate::concurrent::run(s, keys, admin).await?);
    }
    if s.runs(Phase::Consume) || s.runs(Phase::BatchSizes) || s.runs(Phase::Io) {
        let backlog = keys.stream("backlog");
        memory::publish_backlog(admin, &backlog, s.messages, "backlog for consume/batch-sizes/io").await?;
        if s.runs(Phase::Consume) {
            results.consume = consume(s, keys, admin, &backlog).await?;
        }
        if s.runs(Phase::BatchSizes) {
            results.batch_sizes = crate::batch_sizes::run(s, keys, admin, &backlog).await?;
        }
        if s.runs(Phase::Io) {
            results.io_bound = Some(io_bound(s, keys, admin, &backlog).await?);
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
    if s.runs(Phase::MemoryLarge) {
        results.memory_large = Some(memory_large(s, keys, admin).await?);
    }
    if s.runs(Phase::Scale) {
        results.scale = Some(scale::run(s, keys, admin).await?);
    }
    if s.runs(Phase::Takeover) {
        results.takeover = Some(takeover::run(s, keys, admin).await?);
    }
    if s.runs(Phase::Metrics) {
        results.metrics = Some(metrics_cost(s, keys, admin).await?);
    }
    if s.runs(Phase::Features) {
        results.features = Some(crate::features::run(s, keys, admin).await?);
    }
    if s.runs(Phase::Codecs) {
        results.codecs = Some(crate::codecs::run(s, keys, admin).await?);
    }
    if s.runs(Phase::Middleware) {
        results.middleware = Some(crate::middleware::run(s, keys, admin).await?);
    }
    if s.runs(Phase::RateLimit) {
        results.rate_limit = Some(crate::rate_limit::run(s, keys, admin).await?);
    }
    if s.runs(Phase::Ordered) {
        results.ordered = crate::ordered::run(s, keys, admin).await?;
    }
    Ok(())
}

async fn produce(s: &Settings, keys: &Keys, admin: &Client) -> Result<ProduceResult> {
    let designs = &s.raw_producers;
    let names: Vec<String> = designs.iter().map(ToString::to_string).collect();
    note(&format!(
        "== produce: {} messages, streamx publish_batch vs raw producers [{}], SeaStreamer and redis-benchmark, \
         best of {}",
        s.messages,
        names.join(", "),
        s.repeat
    ));
    let batch = Arc::new(events(0, s.messages));
    let mut seastreamer = SeaStreamerRuns::default();
    let mut ceiling = CeilingRuns::new();
    let (mut sx_runs, mut sx_costs) = (Vec::new(), Vec::new());
    let mut raw_runs: Vec<Vec<f64>> = vec![Vec::new(); designs.len()];
    let mut raw_costs: Vec<Vec<Cost>> = vec![Vec::new(); designs.len()];
    for r in 0..s.repeat {
        for side in order(r) {
            match side {
                Side::Streamx => {
                    let stream = keys.stream("produce");
                    let label = format!("produce streamx run {}/{}", r + 1, s.repeat);
                    let done = Arc::new(AtomicU64::new(0));
                    let publish = streamx_side::produce(&s.url, &stream, &batch);
                    let (rate, cost) = timed_publish(s, admin, &label, &done, publish).await?;
                    sx_runs.push(rate);
                    sx_costs.push(cost);
                    raw::delete(admin, vec![stream]).await?;
                }
                Side::Raw => {
                    for (i, &design) in designs.iter().enumerate() {
                        let stream = keys.stream("produce");
                        let label = format!("produce raw {design} run {}/{}", r + 1, s.repeat);
                        let done = Arc::new(AtomicU64::new(0));
                        let publish = raw_producer::publish(design, &s.url, &stream, &batch, &done);
                        let (rate, cost) = timed_publish(s, admin, &label, &done, publish).await?;
                        raw_runs[i].push(rate);
                        raw_costs[i].push(cost);
                        raw::delete(admin, vec![stream]).await?;
                    }
                    seastreamer.measure(s, keys, admin, &batch, &format!("run {}/{}", r + 1, s.repeat)).await?;
                }
            }
        }
        ceiling.measure(s, keys, admin, &format!("run {}/{}", r + 1, s.repeat)).await?;
    }
    let rates: Vec<DesignRate> = names
        .into_iter()
        .zip(&raw_runs)
        .map(|(design, runs)| DesignRate { design, best: best(runs), runs: runs.clone() })
        .collect();
    let fastest =
        (0..rates.len()).max_by(|&a, &b| rates[a].best.total_cmp(&rates[b].best)).context("no raw producer")?;
    Ok(ProduceResult {
        seastreamer: seastreamer.finish(&sx_runs),
        ceiling: ceiling.finish(best(&sx_runs)),
        throughput: Throughput::new(sx_runs, raw_runs[fastest].clone()),
        raw_design: rates[fastest].design.clone(),
        designs: rates,
        streamx_cost: CostSummary::of(sx_costs),
        raw_cost: CostSummary::of(std::mem::take(&mut raw_costs[fastest])),
    })
}

/// Runs `publish` (which counts into `done` and returns its own clock) with a progress
/// line and a [`Meter`]; msg/s and the cost.
pub(crate) async fn timed_publish(
    s: &Settings,
    admin: &Client,
    label: &str,
    done: &Arc<AtomicU64>,
    publish: impl Future<Output = Result<Duration>>,
) -> Result<(f64, Cost)> {
    let (rate, cost, ()) = timed_publish_with(s, admin, label, done, async { Ok((publish.await?, ())) }).await?;
    Ok((rate, cost))
}

/// [`timed_publish`] of a `publish` that also returns something of its own (kept).
pub(crate) async fn timed_publish_with<T>(
    s: &Settings,
    admin: &Client,
    label: &str,
    done: &Arc<AtomicU64>,
    publish: impl Future<Output = Result<(Duration, T)>>,
) -> Result<(f64, Cost, T)> {
    let progress = Progress::start(label, s.messages, done.clone());
    let meter = Meter::start(admin).await?;
    let (elapsed, extra) = publish.await?;
    let cost = meter.finish(admin, s.messages).await?;
    done.store(s.messages, Ordering::Relaxed);
    let rate = s.messages as f64 / elapsed.as_secs_f64();
    progress.finish(&format!("{rate:.0} msg/s; {}", cost_summary(&cost))).await;
    Ok((rate, cost, extra))
}

fn cost_summary(cost: &Cost) -> String {
    format!("client {:.2} us/msg, Redis {:.2} us/msg", cost.client_cpu_us, cost.redis_cpu_us)
}

async fn consume(s: &Settings, keys: &Keys, admin: &Client, backlog: &str) -> Result<Vec<ConsumeRow>> {
    let plans: Vec<ReadPlan> = s.concurrency.iter().map(|&c| s.raw_plan(c)).collect();
    let mut distinct: Vec<ReadPlan> = Vec::new();
    for plan in &plans {
        if !distinct.contains(plan) {
            distinct.push(*plan);
        }
    }
    let readers: Vec<usize> = distinct.iter().map(|p| p.readers).collect();
    note(&format!(
        "== consume: drain {} messages, streamx at concurrency {:?} vs raw with {readers:?} readers, best of {}",
        s.messages, s.concurrency, s.repeat
    ));
    let mut sx_runs: Vec<Vec<(f64, Cost)>> = vec![Vec::new(); s.concurrency.len()];
    let mut raw_runs: Vec<Vec<(f64, Cost)>> = vec![Vec::new(); distinct.len()];
    for r in 0..s.repeat {
        for side in order(r) {
            match side {
                Side::Streamx => {
                    for (i, &c) in s.concurrency.iter().enumerate() {
                        let label = format!("consume streamx c={c} run {}/{}", r + 1, s.repeat);
                        sx_runs[i].push(
                            drain_streamx(
                                s,
                                keys,
                                admin,
                                backlog,
                                &label,
                                ConsumerShape::new(c, Work::None),
                                s.messages,
                            )
                            .await?,
                        );
                    }
                }
                Side::Raw => {
                    for (j, plan) in distinct.iter().enumerate() {
                        let label = format!("consume raw {} readers run {}/{}", plan.readers, r + 1, s.repeat);
                        raw_runs[j].push(drain_raw(s, keys, admin, backlog, &label, *plan).await?);
                    }
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (i, &concurrency) in s.concurrency.iter().enumerate() {
        let j = distinct.iter().position(|p| *p == plans[i]).context("raw plan")?;
        let (sx_rates, streamx_cost) = split(&sx_runs[i]);
        let (raw_rates, raw_cost) = split(&raw_runs[j]);
        rows.push(ConsumeRow {
            concurrency,
            raw_readers: plans[i].readers,
            throughput: Throughput::new(sx_rates, raw_rates),
            streamx_cost,
            raw_cost,
        });
    }
    Ok(rows)
}

/// The msg/s of drain runs and the summary of their costs.
pub(crate) fn split(runs: &[(f64, Cost)]) -> (Vec<f64>, Option<CostSummary>) {
    (runs.iter().map(|(rate, _)| *rate).collect(), CostSummary::of(runs.iter().map(|(_, c)| c.clone()).collect()))
}

/// How a streamx drain's consumer runs: its handler concurrency and work, and how it reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsumerShape {
    pub concurrency: usize,
    pub read: ReadTuning,
    pub work: Work,
}

impl ConsumerShape {
    /// `concurrency` and `work`, reading with the consumer's defaults.
    pub fn new(concurrency: usize, work: Work) -> Self {
        ConsumerShape { concurrency, read: ReadTuning::DEFAULT, work }
    }
}

/// Drains `target` messages of `backlog` with the streamx runtime in a fresh group; msg/s
/// and the cost.
pub(crate) async fn drain_streamx(
    s: &Settings,
    keys: &Keys,
    admin: &Client,
    backlog: &str,
    label: &str,
    shape: ConsumerShape,
    target: u64,
) -> Result<(f64, Cost)> {
    let group = keys.group("sx");
    let tally = Arc::new(Tally::default());
    let progress = Progress::start(label, target, tally.handled.clone());
    let drain = Drain {
        url: &s.url,
        stream: backlog,
        group: &group,
        target,
        concurrency: shape.concurrency,
        read: shape.read,
        work: shape.work,
        timeout: DRAIN_TIMEOUT,
        http: false,
    };
    let meter = Meter::start(admin).await?;
    let elapsed = streamx_side::consume(&drain, tally).await?;
    let cost = meter.finish(admin, target).await?;
    let rate = target as f64 / elapsed.as_secs_f64();
    progress.finish(&format!("{rate:.0} msg/s; {}", cost_summary(&cost))).await;
    Ok((rate, cost))
}

/// Drains all of `backlog` with the raw consumer in a fresh group; msg/s and the cost.
pub(crate) async fn drain_raw(
    s: &Settings,
    keys: &Keys,
    admin: &Client,
    backlog: &str,
    label: &str,
    plan: ReadPlan,
) -> Result<(f64, Cost)> {
    let group = keys.group("raw");
    let handled = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, s.messages, handled.clone());
    let meter = Meter::start(admin).await?;
    let started = Instant::now();
    let consumer = RawConsumer::connect(&s.url, backlog, &group, plan).await?;
    let counter = handled.clone();
    let last = consumer
        .run(s.messages, DRAIN_TIMEOUT, move |_: &Event| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .await?;
    consumer.close().await;
    let cost = meter.finish(admin, s.messages).await?;
    let rate = s.messages as f64 / (last - started).as_secs_f64();
    progress.finish(&format!("{rate:.0} msg/s; {}", cost_summary(&cost))).await;
    Ok((rate, cost))
}

async fn io_bound(s: &Settings, keys: &Keys, admin: &Client, backlog: &str) -> Result<IoRow> {
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
        runs.push(drain_streamx(s, keys, admin, backlog, &label, ConsumerShape::new(c, work), s.io_messages).await?.0);
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
            let plan = s.raw_plan(latency::CONCURRENCY);
            let stats = latency::measure(&s.url, keys, side, plan, rate, s.latency_duration()).await?;
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
    let c = s.memory_concurrency;
    let plan = s.raw_plan(c);
    note(&format!(
        "== memory: peak RSS of a consume-only child draining {} messages, streamx at concurrency {c}, \
         raw with {} readers",
        s.backlog, plan.readers
    ));
    let stream = keys.stream("memory");
    memory::publish_backlog(admin, &stream, s.backlog, "backlog for memory").await?;
    let job = |side, group| ChildJob {
        url: &s.url,
        stream: &stream,
        group,
        count: s.backlog,
        side,
        payload: PayloadKind::Event,
        concurrency: c,
        plan,
        metrics: false,
    };
    let (sx_group, raw_group) = (keys.group("mem-sx"), keys.group("mem-raw"));
    let streamx = memory::run_child(&job(Side::Streamx, &sx_group)).await?;
    let raw = memory::run_child(&job(Side::Raw, &raw_group)).await?;
    raw::delete(admin, vec![stream]).await?;
    Ok(MemoryRow {
        backlog: s.backlog,
        concurrency: c,
        raw_readers: plan.readers,
        ratio: streamx.vm_hwm_kib as f64 / raw.vm_hwm_kib.max(1) as f64,
        streamx,
        raw,
    })
}

/// The memory-large phase: entries of about 1 MiB, a streamx consumer with the default
/// batch size; its peak RSS against `2 × concurrency × payload + 32 MiB`.
async fn memory_large(s: &Settings, keys: &Keys, admin: &Client) -> Result<LargeMemoryRow> {
    let (n, bytes, c) = (s.large_entries, s.large_payload_bytes, s.large_concurrency);
    let plan = ReadPlan {
        readers: raw::MAX_READERS,
        count: (memory::RAW_READ_BYTES / bytes).clamp(1, raw::READ_COUNT as usize) as u64,
    };
    let kib = bytes as f64 / 1024.0;
    note(&format!(
        "== memory-large: peak RSS of a consume-only child draining {n} entries of {kib:.0} KiB, streamx at \
         concurrency {c} (default batch size), raw with {} readers of COUNT {}",
        plan.readers, plan.count
    ));
    memory::ensure_room(admin, n.saturating_mul(bytes as u64)).await?;
    let stream = keys.stream("memory-large");
    let job = |side, group, concurrency| ChildJob {
        url: &s.url,
        stream: &stream,
        group,
        count: n,
        side,
        payload: PayloadKind::Blob,
        concurrency,
        plan,
        metrics: false,
    };
    let (sx_group, raw_group) = (keys.group("large-sx"), keys.group("large-raw"));
    let measured = async {
        memory::publish_blobs(admin, &stream, n, bytes, "backlog for memory-large").await?;
        let streamx = memory::run_child(&job(Side::Streamx, &sx_group, c)).await?;
        let raw = memory::run_child(&job(Side::Raw, &raw_group, plan.readers)).await?;
        Ok::<_, anyhow::Error>((streamx, raw))
    }
    .await;
    // Free the server's memory whatever happened.
    raw::delete(admin, vec![stream]).await?;
    let (streamx, raw) = measured?;
    let bound_kib = (2 * c as u64 * bytes as u64 + (32 << 20)) / 1024;
    Ok(LargeMemoryRow {
        entries: n,
        payload_bytes: bytes,
        concurrency: c,
        raw_readers: plan.readers,
        raw_read_count: plan.count,
        bound_kib,
        streamx,
        raw,
    })
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The metrics phase: consume-only children drain the same backlog at concurrency 8, with
/// and without a Prometheus recorder, alternating; the best of each.
async fn metrics_cost(s: &Settings, keys: &Keys, admin: &Client) -> Result<MetricsRow> {
    const CONCURRENCY: usize = 8;
    note(&format!(
        "== metrics: consume-only children drain {} messages at concurrency {CONCURRENCY}, metrics off vs on \
         (Prometheus recorder), best of {}",
        s.messages, s.repeat
    ));
    let stream = keys.stream("metrics");
    memory::publish_backlog(admin, &stream, s.messages, "backlog for metrics").await?;
    let measured = async {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        let (mut off_cpu, mut on_cpu): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        for r in 0..s.repeat {
            for metrics in if r % 2 == 0 { [false, true] } else { [true, false] } {
                let group = keys.group(if metrics { "metrics-on" } else { "metrics-off" });
                let job = ChildJob {
                    url: &s.url,
                    stream: &stream,
                    group: &group,
                    count: s.messages,
                    side: Side::Streamx,
                    payload: PayloadKind::Event,
                    concurrency: CONCURRENCY,
                    plan: s.raw_plan(CONCURRENCY),
                    metrics,
                };
                let report = memory::run_child(&job).await?;
                let (rates, cpus) = if metrics { (&mut on, &mut on_cpu) } else { (&mut off, &mut off_cpu) };
                rates.push(report.rate());
                cpus.push(report.cpu_us_per_msg());
            }
        }
        Ok::<_, anyhow::Error>((off, on, off_cpu, on_cpu))
    }
    .await;
    raw::delete(admin, vec![stream]).await?;
    let (off, on, off_cpu, on_cpu) = measured?;
    let least = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (best_off, best_on) = (best(&off), best(&on));
    Ok(MetricsRow {
        concurrency: CONCURRENCY,
        off: best_off,
        on: best_on,
        ratio: best_on / best_off,
        off_cpu_us: least(&off_cpu),
        on_cpu_us: least(&on_cpu),
        off_runs: off,
        on_runs: on,
    })
}
