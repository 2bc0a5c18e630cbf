//! The results of a run: the summary table, the targets with PASS/MISS, and `--json`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::args::Settings;
use crate::batch_sizes::BatchSizeRow;
use crate::concurrent::ConcurrentRow;
use crate::cost::{CommandCost, Cost, CostSummary};
use crate::latency::LatencyStats;
use crate::memory::ChildReport;
use crate::references::{CeilingRow, Reference, SeaStreamerRow};
use crate::scale::{calls_summary, ScaleRow};
use crate::takeover::{commands_summary, least, longest, DrainCost, TakeoverRow, SUSPECT_TARGET_SECS};

/// A throughput measured on both sides, best of the repeats.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// msg/s, best run.
    pub streamx: f64,
    /// msg/s, best run.
    pub raw: f64,
    /// streamx / raw.
    pub ratio: f64,
    /// msg/s of every run, in order.
    pub streamx_runs: Vec<f64>,
    pub raw_runs: Vec<f64>,
    /// The median of the ratios of runs made one after the other (streamx's run `i` against
    /// raw's run `i`), which the machine's load moves less than the ratio of the bests: both
    /// runs of a pair see about the same load. `None` unless both sides ran as often.
    pub paired_median: Option<f64>,
}

impl Throughput {
    pub fn new(streamx_runs: Vec<f64>, raw_runs: Vec<f64>) -> Self {
        let (streamx, raw) = (best(&streamx_runs), best(&raw_runs));
        let paired_median = paired_median(&streamx_runs, &raw_runs);
        Throughput { streamx, raw, ratio: streamx / raw, streamx_runs, raw_runs, paired_median }
    }
}

/// The median of `a[i] / b[i]` (see [`Throughput::paired_median`]).
fn paired_median(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let mut ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    Some(if ratios.len() % 2 == 1 { ratios[mid] } else { (ratios[mid - 1] + ratios[mid]) / 2.0 })
}

pub fn best(runs: &[f64]) -> f64 {
    runs.iter().copied().fold(0.0, f64::max)
}

/// The produce phase: streamx's `publish_batch` against the fastest raw producer.
#[derive(Debug, Clone, Serialize)]
pub struct ProduceResult {
    /// streamx against the fastest raw design.
    #[serde(flatten)]
    pub throughput: Throughput,
    /// The fastest raw design.
    pub raw_design: String,
    /// Every raw design measured.
    pub designs: Vec<DesignRate>,
    pub streamx_cost: Option<CostSummary>,
    /// The cost of the fastest raw design.
    pub raw_cost: Option<CostSummary>,
    /// SeaStreamer's Redis producer.
    pub seastreamer: Reference<SeaStreamerRow>,
    /// redis-benchmark, per shape.
    pub ceiling: Reference<Vec<CeilingRow>>,
}

/// One raw producer design's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DesignRate {
    pub design: String,
    /// msg/s, best run.
    pub best: f64,
    pub runs: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumeRow {
    pub concurrency: usize,
    /// Reader tasks of the raw consumer compared with this row.
    pub raw_readers: usize,
    #[serde(flatten)]
    pub throughput: Throughput,
    pub streamx_cost: Option<CostSummary>,
    pub raw_cost: Option<CostSummary>,
}

impl ConsumeRow {
    /// streamx / raw client CPU per message.
    pub fn client_cpu_ratio(&self) -> Option<f64> {
        let (x, r) = (self.streamx_cost.as_ref()?, self.raw_cost.as_ref()?);
        Some(x.client_cpu_us / r.client_cpu_us)
    }

    /// streamx / raw Redis CPU per message.
    pub fn redis_cpu_ratio(&self) -> Option<f64> {
        let (x, r) = (self.streamx_cost.as_ref()?, self.raw_cost.as_ref()?);
        Some(x.redis_cpu_us / r.redis_cpu_us)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// msg/s.
    pub rate: u64,
    /// The run with the lowest p99 of each side.
    pub streamx: LatencyStats,
    pub raw: LatencyStats,
    /// streamx p99 / raw p99.
    pub p99_ratio: f64,
    /// p99 of every run, µs.
    pub streamx_p99_runs_us: Vec<f64>,
    pub raw_p99_runs_us: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IoRow {
    pub concurrency: usize,
    pub sleep_ms: u64,
    pub messages: u64,
    /// msg/s, best run.
    pub streamx: f64,
    /// concurrency × 1000 / sleep_ms.
    pub ideal: f64,
    /// streamx / ideal.
    pub ratio: f64,
    pub runs: Vec<f64>,
}

/// Consume throughput with metrics recorded (a Prometheus recorder) against without.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsRow {
    pub concurrency: usize,
    /// msg/s, best run, no recorder.
    pub off: f64,
    /// msg/s, best run, Prometheus recorder installed.
    pub on: f64,
    /// on / off.
    pub ratio: f64,
    /// Client CPU per message, µs, least of the runs.
    pub off_cpu_us: f64,
    pub on_cpu_us: f64,
    pub off_runs: Vec<f64>,
    pub on_runs: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryRow {
    pub backlog: u64,
    pub concurrency: usize,
    pub raw_readers: usize,
    pub streamx: ChildReport,
    pub raw: ChildReport,
    /// streamx VmHWM / raw VmHWM.
    pub ratio: f64,
}

/// The memory-large phase.
#[derive(Debug, Clone, Serialize)]
pub struct LargeMemoryRow {
    pub entries: u64,
    pub payload_bytes: usize,
    /// Handler concurrency of the streamx consumer.
    pub concurrency: usize,
    pub raw_readers: usize,
    /// COUNT of the raw consumer's XREADGROUP (sized to the payload).
    pub raw_read_count: u64,
    /// The target: 2 × concurrency × payload + 32 MiB, KiB.
    pub bound_kib: u64,
    pub streamx: ChildReport,
    pub raw: ChildReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub value: String,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub settings: Settings,
    pub redis_url: String,
    pub payload_bytes: usize,
    /// /proc/loadavg at the start and the end of the run.
    pub load_before: String,
    pub load_after: String,
    pub produce: Option<ProduceResult>,
    pub concurrent: Option<ConcurrentRow>,
    pub consume: Vec<ConsumeRow>,
    pub batch_sizes: Vec<BatchSizeRow>,
    pub latency: Vec<LatencyRow>,
    pub io_bound: Option<IoRow>,
    pub memory: Option<MemoryRow>,
    pub memory_large: Option<LargeMemoryRow>,
    pub scale: Option<ScaleRow>,
    pub takeover: Option<TakeoverRow>,
    pub metrics: Option<MetricsRow>,
    pub features: Option<crate::features::FeaturesRow>,
    pub codecs: Option<crate::codecs::CodecRow>,
    pub middleware: Option<crate::middleware::MiddlewareRow>,
    pub rate_limit: Option<crate::rate_limit::RateLimitRow>,
    pub ordered: Vec<crate::ordered::OrderedRow>,
    pub topic: Option<crate::topic::TopicRow>,
    pub targets: Vec<TargetCheck>,
}

impl Results {
    /// Fills in [`Results::targets`] from the figures present.
    pub fn check_targets(&mut self) {
        let mut t = Vec::new();
        let mut check = |target: &str, value: String, pass: bool| {
            t.push(TargetCheck { target: target.to_string(), value, pass });
        };
        if let Some(p) = &self.produce {
            let r = p.throughput.ratio;
            check("publish_batch >= 0.95 x best raw producer", format!("{r:.2} x"), r >= 0.95);
            let raw = p.throughput.raw;
            check(
                &format!("best raw producer >= {} msg/s (ref.)", count(REFERENCE_PRODUCER)),
                count(raw),
                raw >= REFERENCE_PRODUCER,
            );
            if let Some(sea) = p.seastreamer.measured() {
                let r = sea.throughput.ratio;
                check("publish_batch >= 1.0 x SeaStreamer", format!("{r:.2} x"), r >= 1.0);
            }
            if let Some(c) = p.ceiling.measured().and_then(|rows| rows.iter().find(|c| c.shape.pipeline == 128)) {
                let r = c.ratio;
                check(
                    &format!("publish_batch >= 0.5 x redis-benchmark {}", c.shape.label()),
                    format!("{r:.2} x"),
                    r >= 0.5,
                );
            }
        }
        if let Some(c) = &self.concurrent {
            let r = c.against_batch.ratio;
            check(&format!("{} tasks' publish >= 0.8 x publish_batch", c.tasks), format!("{r:.2} x"), r >= 0.8);
        }
        for row in self.consume.iter().filter(|r| r.concurrency == 8 || r.concurrency == 64) {
            let c = row.concurrency;
            let r = row.throughput.ratio;
            check(&format!("consume c={c} >= 0.9 x raw"), format!("{r:.2} x"), r >= 0.9);
            if let Some(r) = row.client_cpu_ratio() {
                check(&format!("consume c={c} client CPU/msg <= 1.3 x raw"), format!("{r:.2} x"), r <= 1.3);
            }
            if let Some(r) = row.redis_cpu_ratio() {
                check(&format!("consume c={c} Redis CPU/msg <= 1.15 x raw"), format!("{r:.2} x"), r <= 1.15);
            }
        }
        for row in &self.batch_sizes {
            let r = row.throughput.ratio;
            check(&format!("consume c={} {} >= 0.9 x raw", row.concurrency, row.name()), format!("{r:.2} x"), r >= 0.9);
        }
        if let Some(row) = self.latency.iter().find(|r| r.rate == 1000) {
            let p99 = row.streamx.p99_us / 1000.0;
            check("latency 1000/s p99 <= 0.5 ms", format!("{p99:.3} ms"), p99 <= 0.5);
            check("latency 1000/s p99 <= 1.1 x raw p99", format!("{:.2} x", row.p99_ratio), row.p99_ratio <= 1.1);
        }
        if let Some(row) = self.latency.iter().find(|r| r.rate == 5000) {
            let p99 = row.streamx.p99_us / 1000.0;
            check("latency 5000/s p99 <= 1 ms", format!("{p99:.3} ms"), p99 <= 1.0);
        }
        if let Some(io) = &self.io_bound {
            let ideal = format!("{:.0}", io.ideal);
            check(&format!("I/O-bound >= 0.8 x {ideal}/s"), format!("{:.2} x", io.ratio), io.ratio >= 0.8);
        }
        if let Some(m) = &self.memory {
            let mib = m.streamx.vm_hwm_kib as f64 / 1024.0;
            check(
                &format!("{} backlog consumer peak RSS <= 32 MiB", count(m.backlog as f64)),
                format!("{mib:.1} MiB"),
                mib <= 32.0,
            );
        }
        if let Some(m) = &self.memory_large {
            let (mib, bound) = (m.streamx.vm_hwm_kib as f64 / 1024.0, m.bound_kib as f64 / 1024.0);
            check(
                &format!(
                    "{} x {} KiB consumer peak RSS <= {bound:.0} MiB",
                    count(m.entries as f64),
                    m.payload_bytes / 1024
                ),
                format!("{mib:.1} MiB"),
                mib <= bound,
            );
        }
        if let Some(sc) = &self.scale {
            let (idle, pct) = (&sc.idle, sc.idle.streamx.command_cpu_pct);
            check(
                &format!("idle, {} PEL, {} consumers: Redis <= 2% core", count(idle.pel as f64), idle.consumers),
                format!("{pct:.2} %"),
                pct <= 2.0,
            );
            let r = sc.takeover.raw_ratio;
            check("take-over >= 0.5 x raw XAUTOCLAIM loop", format!("{r:.2} x"), r >= 0.5);
        }
        if let Some(q) = self.takeover.as_ref().and_then(|t| t.suspects.quietest()) {
            let secs = q.cost.process_secs;
            check(
                &format!("suspect drain {}: Redis CPU < {SUSPECT_TARGET_SECS} s", count(q.cost.handled as f64)),
                format!("{secs:.3} s"),
                secs < SUSPECT_TARGET_SECS,
            );
        }
        if let Some(m) = &self.metrics {
            check("consume with metrics >= 0.95 x without", format!("{:.2} x", m.ratio), m.ratio >= 0.95);
        }
        self.targets = t;
    }

    /// The human-readable summary.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "streamx-bench: {} messages of ~{} B JSON, best of {}, {}{}",
            count(s.messages as f64),
            self.payload_bytes,
            s.repeat,
            self.redis_url,
            if s.quick { " (--quick)" } else { "" }
        );
        let _ = writeln!(out, "load average before: {}   after: {}", self.load_before, self.load_after);
        let _ = writeln!(out);
        // The topic phase prints a table of its own (topic against stream).
        if s.phases.iter().any(|p| *p != crate::args::Phase::Topic) {
            let _ = writeln!(out, "{:<44} {:>14} {:>14} {:>12}", "figure", "streamx", "raw", "streamx/raw");
            let _ = writeln!(out, "{}", "-".repeat(87));
        }
        if let Some(p) = &self.produce {
            let t = &p.throughput;
            let name = format!("produce (msg/s; raw {})", p.raw_design);
            table_row(&mut out, name, count(t.streamx), count(t.raw), format!("{:.2}", t.ratio));
            paired_row(&mut out, "  produce", t);
            cost_rows(&mut out, "  produce", &p.streamx_cost, &p.raw_cost);
            reference_rows(&mut out, p);
        }
        if let Some(c) = &self.concurrent {
            concurrent_rows(&mut out, c);
        }
        for c in &self.consume {
            let t = &c.throughput;
            let readers =
                if c.raw_readers == 1 { "1 reader".to_string() } else { format!("{} readers", c.raw_readers) };
            let name = format!("consume c={} (msg/s; raw {readers})", c.concurrency);
            table_row(&mut out, name, count(t.streamx), count(t.raw), format!("{:.2}", t.ratio));
            paired_row(&mut out, &format!("  c={}", c.concurrency), t);
            cost_rows(&mut out, &format!("  c={}", c.concurrency), &c.streamx_cost, &c.raw_cost);
        }
        for b in &self.batch_sizes {
            let t = &b.throughput;
            // The raw loop runs as many readers (8 by default), reading COUNT batch_size.
            let name = format!("consume c={} {} (msg/s)", b.concurrency, b.name());
            table_row(&mut out, name, count(t.streamx), count(t.raw), format!("{:.2}", t.ratio));
            paired_row(&mut out, &format!("  {}", b.short_name()), t);
            cost_rows(&mut out, &format!("  {}", b.short_name()), &b.streamx_cost, &b.raw_cost);
        }
        let mut row = |name: String, sx: String, raw: String, ratio: String| table_row(&mut out, name, sx, raw, ratio);
        for l in &self.latency {
            let ms = |us: f64| format!("{:.3}", us / 1000.0);
            let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
            let (x, r) = (&l.streamx, &l.raw);
            row(format!("latency {}/s p50 (ms)", l.rate), ms(x.p50_us), ms(r.p50_us), ratio(x.p50_us, r.p50_us));
            row(format!("latency {}/s p99 (ms)", l.rate), ms(x.p99_us), ms(r.p99_us), ratio(x.p99_us, r.p99_us));
            row(format!("latency {}/s max (ms)", l.rate), ms(x.max_us), ms(r.max_us), ratio(x.max_us, r.max_us));
        }
        if let Some(m) = &self.metrics {
            row(
                format!("consume c={} child, metrics on (msg/s)", m.concurrency),
                count(m.on),
                format!("{} off", count(m.off)),
                format!("{:.2}", m.ratio),
            );
            row(
                "  metrics on, client CPU (us/msg)".to_string(),
                format!("{:.2}", m.on_cpu_us),
                format!("{:.2} off", m.off_cpu_us),
                format!("{:.2}", m.on_cpu_us / m.off_cpu_us),
            );
        }
        for o in &self.ordered {
            row(
                format!("consume c={} ordered, {} keys (msg/s)", o.concurrency, count(o.keys as f64)),
                count(o.ordered),
                format!("{} unordered", count(o.unordered)),
                format!("{:.2}", o.ratio()),
            );
            row(
                format!("  against unordered with readers = 1 ({} keys)", count(o.keys as f64)),
                count(o.ordered),
                format!("{} 1 reader", count(o.unordered_one_reader)),
                format!("{:.2}", o.ordered / o.unordered_one_reader),
            );
        }
        if let Some(r) = &self.rate_limit {
            row(
                format!(
                    "consume c={} with a rate limit that never binds (msg/s; {} events)",
                    r.concurrency,
                    count(r.messages as f64)
                ),
                count(r.limited),
                format!("{} without", count(r.unlimited)),
                format!("{:.2}", r.limited / r.unlimited),
            );
        }
        if let Some(c) = &self.codecs {
            row(
                format!("publish_batch MessagePack (msg/s; {} events)", count(c.messages as f64)),
                count(c.msgpack_publish),
                format!("{} json", count(c.json_publish)),
                format!("{:.2}", c.msgpack_publish / c.json_publish),
            );
            row(
                "  client CPU per published message (µs)".to_string(),
                format!("{:.2}", c.msgpack_publish_cpu_us),
                format!("{:.2} json", c.json_publish_cpu_us),
                format!("{:.2}", c.msgpack_publish_cpu_us / c.json_publish_cpu_us),
            );
            row(
                format!("consume c={} MessagePack (msg/s)", c.concurrency),
                count(c.msgpack_consume),
                format!("{} json", count(c.json_consume)),
                format!("{:.2}", c.msgpack_consume / c.json_consume),
            );
            row(
                "  client CPU per consumed message (µs)".to_string(),
                format!("{:.2}", c.msgpack_consume_cpu_us),
                format!("{:.2} json", c.json_consume_cpu_us),
                format!("{:.2}", c.msgpack_consume_cpu_us / c.json_consume_cpu_us),
            );
            row(
                "  bytes per payload".to_string(),
                c.msgpack_bytes.to_string(),
                format!("{} json", c.json_bytes),
                format!("{:.2}", c.msgpack_bytes as f64 / c.json_bytes as f64),
            );
        }
        if let Some(m) = &self.middleware {
            row(
                format!("consume c={} with 1 pass-through layer (msg/s)", m.concurrency),
                count(m.one_layer),
                format!("{} no layer", count(m.none)),
                format!("{:.3}", m.one_layer / m.none),
            );
            row(
                "  client CPU per consumed message (µs)".to_string(),
                format!("{:.2}", m.one_layer_cpu_us),
                format!("{:.2} no layer", m.none_cpu_us),
                format!("{:.3}", m.one_layer_cpu_us / m.none_cpu_us),
            );
        }
        if let Some(f) = &self.features {
            let c = f.concurrency;
            row(
                format!("consume c={c} dedupe (msg/s; {})", f.server),
                count(f.dedupe),
                format!("{} off", count(f.plain)),
                format!("{:.2}", f.dedupe / f.plain),
            );
            row(
                format!("consume c={c} delete_on_ack (msg/s; {})", f.server),
                count(f.delete_on_ack),
                format!("{} off", count(f.plain)),
                format!("{:.2}", f.delete_on_ack / f.plain),
            );
            row(
                format!("  delete_on_ack: XLEN left of {}", count(f.messages as f64)),
                f.delete_on_ack_left.to_string(),
                String::new(),
                String::new(),
            );
            row("delayed: scheduled (msg/s)".to_string(), count(f.scheduled_per_sec), String::new(), String::new());
            row(
                "delayed: promoted and handled (msg/s)".to_string(),
                count(f.promoted_per_sec),
                String::new(),
                String::new(),
            );
            row(
                "trim 1M -> 1k entries (s / Redis CPU s)".to_string(),
                format!("{:.2}", f.trim_secs),
                format!("{:.2} cpu", f.trim_redis_cpu_secs),
                String::new(),
            );
            row(
                "trimmer idle on 1M entries (Redis CPU ms/s)".to_string(),
                format!("{:.2}", f.idle_trimmer_cpu_ms_per_s),
                format!("{:.2} off", f.idle_baseline_cpu_ms_per_s),
                String::new(),
            );
        }
        if let Some(io) = &self.io_bound {
            row(
                format!("I/O-bound c={} {} ms (msg/s)", io.concurrency, io.sleep_ms),
                count(io.streamx),
                format!("{} ideal", count(io.ideal)),
                format!("{:.2}", io.ratio),
            );
        }
        if let Some(m) = &self.memory {
            let mib = |r: &ChildReport| format!("{:.1}", r.vm_hwm_kib as f64 / 1024.0);
            let b = count(m.backlog as f64);
            row(
                format!("peak RSS, {b} backlog c={} (MiB)", m.concurrency),
                mib(&m.streamx),
                mib(&m.raw),
                format!("{:.2}", m.ratio),
            );
            row(
                format!("drain {b} backlog, child (msg/s)"),
                count(m.streamx.rate()),
                count(m.raw.rate()),
                format!("{:.2}", m.streamx.rate() / m.raw.rate()),
            );
        }
        if let Some(m) = &self.memory_large {
            let mib = |r: &ChildReport| format!("{:.1}", r.vm_hwm_kib as f64 / 1024.0);
            let what = format!("{} x {} KiB", count(m.entries as f64), m.payload_bytes / 1024);
            row(
                format!("peak RSS, {what} c={} (MiB)", m.concurrency),
                mib(&m.streamx),
                mib(&m.raw),
                format!("{:.2}", m.streamx.vm_hwm_kib as f64 / m.raw.vm_hwm_kib.max(1) as f64),
            );
            row(
                format!("drain {what}, child (msg/s)"),
                count(m.streamx.rate()),
                count(m.raw.rate()),
                format!("{:.2}", m.streamx.rate() / m.raw.rate()),
            );
        }
        if let Some(sc) = &self.scale {
            let (i, t) = (&sc.idle, &sc.takeover);
            let pct = |v: f64| format!("{v:.3}");
            row(
                format!("idle Redis CPU, {} PEL (% core)", count(i.pel as f64)),
                pct(i.streamx.command_cpu_pct),
                pct(i.raw.command_cpu_pct),
                "-".into(),
            );
            row(
                format!("take-over {} c={} (msg/s)", count(t.messages as f64), t.concurrency),
                count(t.takeover),
                format!("{} XAUTOCLAIM", count(t.raw)),
                format!("{:.2}", t.raw_ratio),
            );
            row(
                "  take-over vs a fresh drain (msg/s)".to_string(),
                count(t.takeover),
                format!("{} fresh", count(t.fresh)),
                format!("{:.2}", t.ratio),
            );
        }
        if let Some(tk) = &self.takeover {
            let (b, d) = (&tk.batch, &tk.suspects);
            let (x, r) = (&b.streamx_runs, &b.raw_runs);
            let secs = |v: f64| format!("{v:.3}");
            let mut figure = |name: String, f: &dyn Fn(&DrainCost) -> f64| {
                let (a, z) = (least(x, f), least(r, f));
                row(name, secs(a), secs(z), format!("{:.2}", a / z));
            };
            let what = format!("take-over {} batch {}x{}", count(b.messages as f64), b.concurrency, b.max_batch);
            figure(format!("{what} (s)"), &|c| c.secs);
            figure("  take-over Redis CPU (s)".to_string(), &|c| c.process_secs);
            figure("  take-over Redis commands (s)".to_string(), &|c| c.command_secs);
            let longest_us = x.iter().filter_map(|c| c.longest_script_us).max();
            let ms = longest_us
                .map_or(format!("< {:.2}", tk.slow_us as f64 / 1000.0), |us| format!("{:.2}", us as f64 / 1000.0));
            row("  take-over longest script (ms)".to_string(), ms, "-".into(), "-".into());
            let runs: Vec<DrainCost> = d.runs.iter().map(|run| run.cost.clone()).collect();
            let mut one = |name: String, v: String| table_row(&mut out, name, v, "-".into(), "-".into());
            one(
                format!("suspect drain {} c={} (s)", count(d.suspects as f64), d.concurrency),
                secs(least(&runs, |c| c.secs)),
            );
            if let Some(q) = d.quietest() {
                one("  suspect drain Redis CPU (s)".to_string(), secs(q.cost.process_secs));
                one("  suspect drain Redis commands (s)".to_string(), secs(q.cost.command_secs));
                one("  suspect drain scripts (calls)".to_string(), count(q.cost.scripts as f64));
            }
        }
        if let Some(p) = &self.produce {
            let _ = writeln!(out);
            let _ = writeln!(out, "raw producers (msg/s, best of {}; the fastest is the baseline):", s.repeat);
            for d in &p.designs {
                let mark = if d.design == p.raw_design { "  <- baseline" } else { "" };
                let _ = writeln!(out, "  {:<28} {:>12}{mark}", d.design, count(d.best));
            }
            commands_table(&mut out, "produce", &p.streamx_cost, &p.raw_cost);
            reference_notes(&mut out, p);
        }
        if let Some(b) = self.batch_sizes.first() {
            let _ = writeln!(
                out,
                "\nbatch-sizes: streamx c={} with .batch_size(b) (default readers: {}; one row .readers(2)), raw: as \
                 many readers, each reading COUNT b",
                b.concurrency, b.raw_readers
            );
        }
        if let Some(c) = &self.concurrent {
            let _ = writeln!(
                out,
                "\nconcurrent: {} tasks share one Producer, each awaiting publish of one message after the other \
                 ({} messages); raw: the same tasks, one XADD per call on one fred client; latency of the run with \
                 the lowest p99",
                c.tasks,
                count(c.messages as f64)
            );
        }
        for c in &self.consume {
            commands_table(&mut out, &format!("consume c={}", c.concurrency), &c.streamx_cost, &c.raw_cost);
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "memory: the raw child runs {} readers of COUNT {}",
                m.raw_readers,
                crate::raw::READ_COUNT
            );
        }
        if let Some(m) = &self.memory_large {
            let _ = writeln!(
                out,
                "memory-large: streamx c={} with the default batch size, bound 2 x c x payload + 32 MiB = {:.0} MiB; \
                 raw: {} readers of COUNT {}",
                m.concurrency,
                m.bound_kib as f64 / 1024.0,
                m.raw_readers,
                m.raw_read_count
            );
        }
        if let Some(sc) = &self.scale {
            let i = &sc.idle;
            let _ = writeln!(out);
            let claim = i.claim_idle_ms.map_or("default".to_string(), |ms| format!("{ms} ms"));
            let _ = writeln!(
                out,
                "scale: Redis load over {:.1} s, {} entries pending (none due; {} after), {} consumers, \
                 claim_idle {claim}, {:.0} s settle",
                i.streamx.secs,
                count(i.pel as f64),
                count(i.pel_after as f64),
                i.consumers,
                i.settle_secs
            );
            let _ = writeln!(out, "  {:<44} {:>16} {:>16}", "", "% core, commands", "% core, process");
            let mut load = |name: &str, l: &crate::scale::RedisLoad| {
                let _ = writeln!(out, "  {name:<44} {:>16.3} {:>16.2}", l.command_cpu_pct, l.process_cpu_pct);
                let _ = writeln!(out, "    calls/s: {}", calls_summary(l, 8));
            };
            load("no client (floor)", &i.floor);
            load(&format!("raw: {} XREADGROUP BLOCK 2000 loops", i.consumers), &i.raw);
            load(&format!("streamx: {} idle consumers", i.consumers), &i.streamx);
            let _ = writeln!(
                out,
                "  streamx handler runs: {} while settling, {} in the window (none was due)",
                i.handled_settling, i.handled_in_window
            );
            let t = &sc.takeover;
            let _ = writeln!(
                out,
                "scale: take-over of {} entries pending for `dead` (idle > {} ms after {:.1} s): {} msg/s, {} handler runs; \
                 raw XAUTOCLAIM loop: {} msg/s; fresh: {} msg/s, {} handler runs",
                count(t.messages as f64),
                t.claim_idle_ms,
                t.waited_for_idle_secs,
                count(t.takeover),
                t.takeover_handled,
                count(t.raw),
                count(t.fresh),
                t.fresh_handled
            );
        }
        if let Some(tk) = &self.takeover {
            takeover_details(&mut out, tk);
        }
        if let Some(t) = &self.topic {
            let _ = writeln!(out);
            crate::topic::table(t, &mut out);
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "{:<48} {:>14} {:>7}", "target", "value", "result");
            let _ = writeln!(out, "{}", "-".repeat(71));
            for t in &self.targets {
                let _ = writeln!(out, "{:<48} {:>14} {:>7}", t.target, t.value, if t.pass { "PASS" } else { "MISS" });
            }
        }
        out
    }
}

/// The takeover phase's runs, one line each, and the commands of the quietest.
fn takeover_details(out: &mut String, tk: &TakeoverRow) {
    let (b, d) = (&tk.batch, &tk.suspects);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "takeover: {} entries pending for `dead` (idle > {} ms), taken over by Consumer::batch (concurrency {}, \
         max_batch {}) and by the raw XAUTOCLAIM loop; scripts of {} µs or more from the slow log",
        count(b.messages as f64),
        b.claim_idle_ms,
        b.concurrency,
        b.max_batch,
        tk.slow_us
    );
    run_header(out);
    let total = b.streamx_runs.len();
    for (i, c) in b.streamx_runs.iter().enumerate() {
        run_line(out, &format!("streamx {}/{total}", i + 1), c);
    }
    let total = b.raw_runs.len();
    for (i, c) in b.raw_runs.iter().enumerate() {
        run_line(out, &format!("raw {}/{total}", i + 1), c);
    }
    let quietest = |runs: &[DrainCost]| runs.iter().min_by(|a, b| a.process_secs.total_cmp(&b.process_secs)).cloned();
    if let Some(c) = quietest(&b.streamx_runs) {
        let _ = writeln!(out, "  streamx commands (least Redis CPU): {}", commands_summary(&c.commands, 8));
    }
    if let Some(c) = quietest(&b.raw_runs) {
        let _ = writeln!(out, "  raw commands (least Redis CPU): {}", commands_summary(&c.commands, 8));
    }
    let _ = writeln!(
        out,
        "takeover: drain of {} crash suspects (every entry of `dead` marked), consumer c={}, claim_idle {} ms",
        count(d.suspects as f64),
        d.concurrency,
        d.claim_idle_ms
    );
    run_header(out);
    let total = d.runs.len();
    for (i, run) in d.runs.iter().enumerate() {
        run_line(out, &format!("suspects {}/{total}", i + 1), &run.cost);
        if run.charged > 0 || run.marks_left > 0 {
            let _ = writeln!(out, "    {} runs at an attempt other than 1, {} marks left", run.charged, run.marks_left);
        }
    }
    if let Some(q) = d.quietest() {
        let _ = writeln!(out, "  commands (least Redis CPU): {}", commands_summary(&q.cost.commands, 8));
    }
}

fn run_header(out: &mut String) {
    let _ = writeln!(
        out,
        "  {:<14} {:>9} {:>9} {:>12} {:>12} {:>9} {:>11} {:>10} {:>10}",
        "run", "handled", "time (s)", "Redis CPU", "commands", "scripts", "scripts (s)", "longest", "slow"
    );
}

fn run_line(out: &mut String, name: &str, c: &DrainCost) {
    let _ = writeln!(
        out,
        "  {name:<14} {:>9} {:>9.3} {:>12.3} {:>12.3} {:>9} {:>11.3} {:>10} {:>10}",
        c.handled,
        c.secs,
        c.process_secs,
        c.command_secs,
        c.scripts,
        c.script_secs,
        longest(c.longest_script_us),
        c.slow_scripts
    );
}

/// The issue-13 reference: SeaStreamer's producer published 210k–221k msg/s on the
/// project's 2-core machine.
const REFERENCE_PRODUCER: f64 = 210_000.0;

/// The produce phase's rows against SeaStreamer and redis-benchmark.
fn reference_rows(out: &mut String, p: &ProduceResult) {
    let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
    match &p.seastreamer {
        Reference::Measured(sea) => {
            let t = &sea.throughput;
            table_row(
                out,
                "produce vs SeaStreamer (msg/s)".into(),
                count(t.streamx),
                count(t.raw),
                ratio(t.streamx, t.raw),
            );
            paired_row(out, "  vs SeaStreamer", t);
            if let (Some(x), Some(r), Some(sea)) = (&p.streamx_cost, &p.raw_cost, &sea.cost) {
                let us = |v: f64| format!("{v:.2}");
                table_row(
                    out,
                    "  client CPU vs SeaStreamer (us/msg)".into(),
                    us(x.client_cpu_us),
                    us(sea.client_cpu_us),
                    ratio(x.client_cpu_us, sea.client_cpu_us),
                );
                table_row(
                    out,
                    "  client CPU, best raw vs SeaStreamer".into(),
                    us(r.client_cpu_us),
                    us(sea.client_cpu_us),
                    ratio(r.client_cpu_us, sea.client_cpu_us),
                );
                table_row(
                    out,
                    "  Redis CPU vs SeaStreamer (us/msg)".into(),
                    us(x.redis_cpu_us),
                    us(sea.redis_cpu_us),
                    ratio(x.redis_cpu_us, sea.redis_cpu_us),
                );
            }
        }
        Reference::Skipped(_) => {
            table_row(out, "produce vs SeaStreamer (msg/s)".into(), String::new(), "skipped".into(), "-".into());
        }
    }
    match &p.ceiling {
        Reference::Measured(rows) => {
            for c in rows {
                table_row(
                    out,
                    format!("produce vs redis-benchmark {} (msg/s)", c.shape.label()),
                    count(p.throughput.streamx),
                    count(c.best),
                    format!("{:.2}", c.ratio),
                );
            }
        }
        Reference::Skipped(_) => {
            table_row(out, "produce vs redis-benchmark (msg/s)".into(), String::new(), "skipped".into(), "-".into());
        }
    }
}

/// What the produce phase's references were, or why they were skipped.
fn reference_notes(out: &mut String, p: &ProduceResult) {
    let _ = writeln!(out);
    match &p.seastreamer {
        Reference::Measured(sea) => {
            let _ = writeln!(
                out,
                "SeaStreamer (sea-streamer-redis 0.5): send() of every message, every receipt awaited, flush(); \
                 payload in field `{}` (streamx and raw: `data`); best {} msg/s",
                sea.message_field,
                count(sea.throughput.raw)
            );
        }
        Reference::Skipped(reason) => {
            let _ = writeln!(out, "SeaStreamer: skipped: {reason}");
        }
    }
    match &p.ceiling {
        Reference::Measured(rows) => {
            for c in rows {
                let _ = writeln!(
                    out,
                    "redis-benchmark -P {} -c {} XADD (field `data`, same JSON): best {} req/s, Redis {:.2} us/msg",
                    c.shape.pipeline,
                    c.shape.clients,
                    count(c.best),
                    c.redis_cpu_us
                );
            }
        }
        Reference::Skipped(reason) => {
            let _ = writeln!(out, "redis-benchmark: skipped: {reason}");
        }
    }
}

/// The concurrent phase's rows.
fn concurrent_rows(out: &mut String, c: &ConcurrentRow) {
    let (r, b) = (&c.against_raw, &c.against_batch);
    let n = c.tasks;
    table_row(
        out,
        format!("publish, {n} tasks (msg/s; raw fred xadd)"),
        count(r.streamx),
        count(r.raw),
        format!("{:.2}", r.ratio),
    );
    paired_row(out, "  vs raw", r);
    table_row(
        out,
        format!("  publish {n} tasks vs publish_batch"),
        count(b.streamx),
        count(b.raw),
        format!("{:.2}", b.ratio),
    );
    paired_row(out, "  vs publish_batch", b);
    let ms = |us: f64| format!("{:.3}", us / 1000.0);
    let (x, w) = (&c.streamx_latency, &c.raw_latency);
    let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
    table_row(out, "  per call p50 (ms)".into(), ms(x.p50_us), ms(w.p50_us), ratio(x.p50_us, w.p50_us));
    table_row(out, "  per call p99 (ms)".into(), ms(x.p99_us), ms(w.p99_us), ratio(x.p99_us, w.p99_us));
    table_row(out, "  per call max (ms)".into(), ms(x.max_us), ms(w.max_us), ratio(x.max_us, w.max_us));
    cost_rows(out, &format!("  {n} tasks"), &c.streamx_cost, &c.raw_cost);
    if let (Some(x), Some(bc)) = (&c.streamx_cost, &c.batch_cost) {
        table_row(
            out,
            "  client CPU vs publish_batch (us/msg)".into(),
            format!("{:.2}", x.client_cpu_us),
            format!("{:.2}", bc.client_cpu_us),
            ratio(x.client_cpu_us, bc.client_cpu_us),
        );
    }
}

/// One row of the summary table.
fn table_row(out: &mut String, name: String, sx: String, raw: String, ratio: String) {
    let _ = writeln!(out, "{name:<44} {sx:>14} {raw:>14} {ratio:>12}");
}

/// The row of a throughput's paired median, when there is one.
fn paired_row(out: &mut String, name: &str, t: &Throughput) {
    if let Some(median) = t.paired_median {
        let runs = format!("{} pairs", t.streamx_runs.len());
        table_row(out, format!("{name} median of paired runs"), runs, String::new(), format!("{median:.2}"));
    }
}

/// The client and Redis CPU rows of one measurement.
fn cost_rows(out: &mut String, name: &str, x: &Option<CostSummary>, r: &Option<CostSummary>) {
    let (Some(x), Some(r)) = (x, r) else { return };
    let mut figure = |what: &str, a: f64, b: f64| {
        table_row(
            out,
            format!("{name} {what} (us/msg)"),
            format!("{a:.2}"),
            format!("{b:.2}"),
            format!("{:.2}", a / b),
        );
    };
    figure("client CPU", x.client_cpu_us, r.client_cpu_us);
    figure("Redis CPU", x.redis_cpu_us, r.redis_cpu_us);
    figure("Redis commands", x.redis_commands_us, r.redis_commands_us);
}

/// The Redis commands of one measurement, per message, streamx beside raw; commands below
/// [`MINOR_CALLS`] calls and [`MINOR_US`] µs per message on both sides are summed as
/// "other".
fn commands_table(out: &mut String, what: &str, x: &Option<CostSummary>, r: &Option<CostSummary>) {
    let (Some(x), Some(r)) = (x, r) else { return };
    let (x, r) = (&x.quietest, &r.quietest);
    let find = |s: &Cost, name: &str| s.commands.iter().find(|c| c.command == name).cloned();
    let mut names: Vec<&str> = x.commands.iter().chain(&r.commands).map(|c| c.command.as_str()).collect();
    let most = |name: &str| {
        let us = |s: &Cost| find(s, name).map_or(0.0, |c| c.us_per_msg);
        us(x).max(us(r))
    };
    names.sort_by(|a, b| most(b).total_cmp(&most(a)).then(a.cmp(b)));
    names.dedup();
    let minor =
        |c: &Option<CommandCost>| c.as_ref().is_none_or(|c| c.calls_per_msg < MINOR_CALLS && c.us_per_msg < MINOR_US);
    let (major, other): (Vec<&str>, Vec<&str>) =
        names.into_iter().partition(|name| !(minor(&find(x, name)) && minor(&find(r, name))));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Redis commands per message, {what} (run with the lowest Redis CPU; a script's time includes the \
         commands it calls):"
    );
    let _ =
        writeln!(out, "  {:<24} {:>14} {:>10}   {:>14} {:>10}", "command", "streamx calls", "us", "raw calls", "us");
    let mut line = |name: &str, xc: String, xu: String, rc: String, ru: String| {
        let _ = writeln!(out, "  {name:<24} {xc:>14} {xu:>10}   {rc:>14} {ru:>10}");
    };
    let cell = |c: Option<CommandCost>| match c {
        Some(c) => (format!("{:.5}", c.calls_per_msg), format!("{:.3}", c.us_per_msg)),
        None => ("-".to_string(), "-".to_string()),
    };
    for name in major {
        let ((xc, xu), (rc, ru)) = (cell(find(x, name)), cell(find(r, name)));
        line(name, xc, xu, rc, ru);
    }
    if !other.is_empty() {
        let sum = |s: &Cost| {
            let of = |name: &&str| find(s, name);
            let calls = other.iter().filter_map(of).fold(0.0, |sum, c| sum + c.calls_per_msg);
            let us = other.iter().filter_map(of).fold(0.0, |sum, c| sum + c.us_per_msg);
            (format!("{calls:.5}"), format!("{us:.3}"))
        };
        let ((xc, xu), (rc, ru)) = (sum(x), sum(r));
        line(&format!("other ({} commands)", other.len()), xc, xu, rc, ru);
    }
    line(
        "all commands",
        String::new(),
        format!("{:.3}", x.redis_commands_us),
        String::new(),
        format!("{:.3}", r.redis_commands_us),
    );
    line(
        "Redis process CPU",
        String::new(),
        format!("{:.3}", x.redis_cpu_us),
        String::new(),
        format!("{:.3}", r.redis_cpu_us),
    );
}

/// Below this many calls per message (and [`MINOR_US`]), a command is summed as "other".
const MINOR_CALLS: f64 = 0.0001;
/// Below this many µs per message (and [`MINOR_CALLS`]), a command is summed as "other".
const MINOR_US: f64 = 0.001;

/// `1234567.8` as `1,234,568`.
pub fn count(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_median_pairs_runs_by_their_order() {
        // Pairs 0.5, 2.0, 0.9: the median is 0.9, not best/best (400 / 200 = 2.0).
        assert_eq!(paired_median(&[100.0, 400.0, 90.0], &[200.0, 200.0, 100.0]), Some(0.9));
        assert_eq!(paired_median(&[1.0, 3.0], &[2.0, 2.0]), Some(1.0), "even: the mean of the middle two");
        assert_eq!(paired_median(&[1.0], &[1.0, 2.0]), None, "sides that ran unequally are not paired");
        assert_eq!(paired_median(&[], &[]), None);
    }
}
