//! The results of a run: the summary table, the targets with PASS/MISS, and `--json`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::args::Settings;
use crate::latency::LatencyStats;
use crate::memory::ChildReport;
use crate::scale::{calls_summary, ScaleRow};

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
}

impl Throughput {
    pub fn new(streamx_runs: Vec<f64>, raw_runs: Vec<f64>) -> Self {
        let (streamx, raw) = (best(&streamx_runs), best(&raw_runs));
        Throughput { streamx, raw, ratio: streamx / raw, streamx_runs, raw_runs }
    }
}

pub fn best(runs: &[f64]) -> f64 {
    runs.iter().copied().fold(0.0, f64::max)
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumeRow {
    pub concurrency: usize,
    #[serde(flatten)]
    pub throughput: Throughput,
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

#[derive(Debug, Clone, Serialize)]
pub struct MemoryRow {
    pub backlog: u64,
    pub concurrency: usize,
    pub streamx: ChildReport,
    pub raw: ChildReport,
    /// streamx VmHWM / raw VmHWM.
    pub ratio: f64,
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
    pub produce: Option<Throughput>,
    pub consume: Vec<ConsumeRow>,
    pub latency: Vec<LatencyRow>,
    pub io_bound: Option<IoRow>,
    pub memory: Option<MemoryRow>,
    pub scale: Option<ScaleRow>,
    pub targets: Vec<TargetCheck>,
}

impl Results {
    /// Fills in [`Results::targets`] from the figures present.
    pub fn check_targets(&mut self) {
        let mut t = Vec::new();
        let mut check = |target: &str, value: String, pass: bool| {
            t.push(TargetCheck { target: target.to_string(), value, pass });
        };
        if let Some(row) = self.consume.iter().find(|r| r.concurrency == 64) {
            let r = row.throughput.ratio;
            check("consume c=64 >= 0.9 x raw", format!("{r:.2} x"), r >= 0.9);
        }
        if let Some(p) = &self.produce {
            check("produce >= 0.9 x raw", format!("{:.2} x", p.ratio), p.ratio >= 0.9);
        }
        if let Some(row) = self.latency.iter().find(|r| r.rate == 1000) {
            let p99 = row.streamx.p99_us / 1000.0;
            check("latency 1000/s p99 <= 0.5 ms", format!("{p99:.3} ms"), p99 <= 0.5);
            check("latency 1000/s p99 <= 1.5 x raw p99", format!("{:.2} x", row.p99_ratio), row.p99_ratio <= 1.5);
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
        if let Some(sc) = &self.scale {
            let (idle, pct) = (&sc.idle, sc.idle.streamx.command_cpu_pct);
            check(
                &format!("idle, {} PEL, {} consumers: Redis <= 2% core", count(idle.pel as f64), idle.consumers),
                format!("{pct:.2} %"),
                pct <= 2.0,
            );
            let r = sc.takeover.ratio;
            check("take-over >= 0.5 x fresh consume", format!("{r:.2} x"), r >= 0.5);
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
        let _ = writeln!(out, "{:<40} {:>14} {:>14} {:>12}", "figure", "streamx", "raw", "streamx/raw");
        let _ = writeln!(out, "{}", "-".repeat(83));
        let mut row = |name: String, sx: String, raw: String, ratio: String| {
            let _ = writeln!(out, "{name:<40} {sx:>14} {raw:>14} {ratio:>12}");
        };
        if let Some(p) = &self.produce {
            row("produce (msg/s)".into(), count(p.streamx), count(p.raw), format!("{:.2}", p.ratio));
        }
        for c in &self.consume {
            let t = &c.throughput;
            row(
                format!("consume c={} (msg/s)", c.concurrency),
                count(t.streamx),
                count(t.raw),
                format!("{:.2}", t.ratio),
            );
        }
        for l in &self.latency {
            let ms = |us: f64| format!("{:.3}", us / 1000.0);
            let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
            let (x, r) = (&l.streamx, &l.raw);
            row(format!("latency {}/s p50 (ms)", l.rate), ms(x.p50_us), ms(r.p50_us), ratio(x.p50_us, r.p50_us));
            row(format!("latency {}/s p99 (ms)", l.rate), ms(x.p99_us), ms(r.p99_us), ratio(x.p99_us, r.p99_us));
            row(format!("latency {}/s max (ms)", l.rate), ms(x.max_us), ms(r.max_us), ratio(x.max_us, r.max_us));
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
                format!("{} fresh", count(t.fresh)),
                format!("{:.2}", t.ratio),
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
                 fresh: {} msg/s, {} handler runs",
                count(t.messages as f64),
                t.claim_idle_ms,
                t.waited_for_idle_secs,
                count(t.takeover),
                t.takeover_handled,
                count(t.fresh),
                t.fresh_handled
            );
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
