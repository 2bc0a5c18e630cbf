//! Peak RSS of a process that only consumes: the parent publishes a backlog, then
//! re-executes this binary as `consume-only` (once with streamx, once with the raw
//! consumer), and each child drains the backlog and prints its own `VmHWM`.
//!
//! Two backlogs: many small [`Event`]s (the memory phase), and a few entries of about
//! 1 MiB each ([`Blob`]s, the memory-large phase), where what bounds memory is the bytes
//! held, not the number of entries.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::args::{ConsumeOnlyArgs, PayloadKind, Side};
use crate::progress::Progress;
use crate::raw::{self, RawConsumer, ReadPlan};
use crate::streamx_side::{self, Drain, ReadTuning, Tally, Work};
use crate::workload::{blob_json, events, Blob, Event};

/// How long a child may take to drain its backlog.
const CHILD_TIMEOUT: Duration = Duration::from_secs(900);
/// The most payload bytes in one pipelined round trip of the large backlog's publisher.
const BLOB_PIPELINE_BYTES: usize = 8 << 20;
/// The most payload bytes the raw consumer asks for in one XREADGROUP when entries are
/// large (a careful hand-written reader sizes COUNT to the payload).
pub const RAW_READ_BYTES: usize = 8 << 20;

/// What a `consume-only` child reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildReport {
    pub handled: u64,
    pub secs: f64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub vm_hwm_kib: u64,
    /// Resident set size at the end (`VmRSS`), KiB.
    pub vm_rss_kib: u64,
    /// CPU time of the drain, all threads, seconds.
    pub cpu_secs: f64,
}

impl ChildReport {
    pub fn rate(&self) -> f64 {
        self.handled as f64 / self.secs.max(1e-9)
    }

    /// CPU per message handled, µs.
    pub fn cpu_us_per_msg(&self) -> f64 {
        self.cpu_secs * 1e6 / self.handled.max(1) as f64
    }
}

/// Publishes `n` messages to `stream` in pipelined chunks, without keeping them all in
/// memory at once.
pub async fn publish_backlog(client: &Client, stream: &str, n: u64, label: &str) -> Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, n, done.clone());
    let started = Instant::now();
    let mut next = 0;
    while next < n {
        let len = (raw::PUBLISH_CHUNK as u64).min(n - next);
        raw::publish_chunk(client, stream, &events(next, len)).await?;
        next += len;
        done.store(next, Ordering::Relaxed);
    }
    progress.finish(&format!("{n} messages in {:.1} s", started.elapsed().as_secs_f64())).await;
    Ok(())
}

/// Publishes `n` blobs of `bytes` bytes of JSON to `stream`, a few per round trip (at most
/// 8 MiB), without keeping more than one round trip's worth in memory.
pub async fn publish_blobs(client: &Client, stream: &str, n: u64, bytes: usize, label: &str) -> Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, n, done.clone());
    let started = Instant::now();
    let per_trip = (BLOB_PIPELINE_BYTES / bytes.max(1)).max(1) as u64;
    let mut next = 0;
    while next < n {
        let len = per_trip.min(n - next);
        let payloads = (next..next + len).map(|seq| Bytes::from(blob_json(seq, bytes))).collect();
        raw::publish_encoded(client, stream, payloads).await?;
        next += len;
        done.store(next, Ordering::Relaxed);
    }
    let mib = (n as f64) * bytes as f64 / f64::from(1 << 20);
    progress.finish(&format!("{n} entries, {mib:.0} MiB in {:.1} s", started.elapsed().as_secs_f64())).await;
    Ok(())
}

/// Fails unless the server can take `bytes` more without reaching `maxmemory` (with 25%
/// to spare for the stream's own overhead). A server that hides CONFIG passes.
pub async fn ensure_room(admin: &Client, bytes: u64) -> Result<()> {
    let config: Result<Value, _> =
        admin.custom(CustomCommand::new_static("CONFIG", ClusterHash::Random, false), vec!["GET", "maxmemory"]).await;
    let max = match config {
        Ok(value) => value.into_array().get(1).and_then(Value::as_u64).unwrap_or(0),
        Err(_) => return Ok(()),
    };
    if max == 0 {
        return Ok(());
    }
    let info: String = admin
        .custom(CustomCommand::new_static("INFO", ClusterHash::Random, false), vec!["memory"])
        .await
        .context("INFO memory")?;
    let used = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("used_memory:"))
        .and_then(|v| v.parse::<u64>().ok())
        .context("no used_memory in INFO memory")?;
    let needed = bytes + bytes / 4;
    if used + needed > max {
        bail!(
            "the memory-large backlog needs about {} MiB but the server's maxmemory leaves {} MiB: \
             raise maxmemory, or lower --large-entries / --large-payload-kib",
            needed >> 20,
            max.saturating_sub(used) >> 20
        );
    }
    Ok(())
}

/// One `consume-only` child's work.
pub struct ChildJob<'a> {
    pub url: &'a str,
    pub stream: &'a str,
    pub group: &'a str,
    /// Messages to drain.
    pub count: u64,
    pub side: Side,
    pub payload: PayloadKind,
    /// streamx: handler concurrency.
    pub concurrency: usize,
    /// raw: how to read.
    pub plan: ReadPlan,
    /// streamx: serve the HTTP endpoint (metrics on).
    pub metrics: bool,
}

/// Runs a `consume-only` child doing `job`.
pub async fn run_child(job: &ChildJob<'_>) -> Result<ChildReport> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("consume-only")
        .args(["--url", job.url, "--stream", job.stream, "--group", job.group])
        .args(["--count", &job.count.to_string(), "--concurrency", &job.concurrency.to_string()])
        .args(["--side", job.side.name(), "--payload", job.payload.name()])
        .args(["--readers", &job.plan.readers.to_string(), "--read-count", &job.plan.count.to_string()])
        .args(job.metrics.then_some("--metrics"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the consume-only child")?;
    let stdout = child.stdout.take().context("child has no stdout")?;
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("memory {} child (pid {})", job.side.name(), child.id().unwrap_or(0)),
        job.count,
        counter.clone(),
    );
    let mut lines = BufReader::new(stdout).lines();
    let mut report: Option<ChildReport> = None;
    while let Some(line) = lines.next_line().await? {
        if let Some(n) = line.strip_prefix("progress ") {
            counter.store(n.trim().parse().unwrap_or(0), Ordering::Relaxed);
        } else if let Some(json) = line.strip_prefix("result ") {
            report = Some(serde_json::from_str(json).context("parsing the child's report")?);
        }
    }
    let status = child.wait().await?;
    if !status.success() {
        bail!("the {} consume-only child failed ({status})", job.side.name());
    }
    let report = report.context("the child printed no result")?;
    progress
        .finish(&format!("peak RSS {:.1} MiB, {:.0} msg/s", report.vm_hwm_kib as f64 / 1024.0, report.rate()))
        .await;
    Ok(report)
}

/// The child: drains the backlog, then prints `result <json>` with its own peak RSS.
/// Prints `progress <n>` every 250 ms meanwhile.
pub async fn consume_only(a: ConsumeOnlyArgs) -> Result<()> {
    let tally = Arc::new(Tally::default());
    let handled = tally.handled.clone();
    let printer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            println!("progress {}", handled.load(Ordering::Relaxed));
        }
    });
    let cpu_before = crate::cost::process_cpu();
    let started = Instant::now();
    let elapsed = match a.side {
        Side::Streamx => {
            let drain = Drain {
                url: &a.url,
                stream: &a.stream,
                group: &a.group,
                target: a.count,
                concurrency: a.concurrency,
                read: ReadTuning { batch_size: a.batch_size, readers: a.streamx_readers },
                work: Work::None,
                timeout: CHILD_TIMEOUT,
                http: a.metrics,
            };
            match a.payload {
                PayloadKind::Event => streamx_side::consume_as::<Event>(&drain, tally.clone()).await?,
                PayloadKind::Blob => streamx_side::consume_as::<Blob>(&drain, tally.clone()).await?,
            }
        }
        Side::Raw => {
            let plan = ReadPlan { readers: a.readers.max(1), count: a.read_count.max(1) };
            let consumer = RawConsumer::connect(&a.url, &a.stream, &a.group, plan).await?;
            let handled = &tally.handled;
            let last = match a.payload {
                PayloadKind::Event => consumer.run(a.count, CHILD_TIMEOUT, counter::<Event>(handled)).await?,
                PayloadKind::Blob => consumer.run(a.count, CHILD_TIMEOUT, counter::<Blob>(handled)).await?,
            };
            consumer.close().await;
            last - started
        }
    };
    printer.abort();
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let report = ChildReport {
        handled: tally.handled.load(Ordering::Relaxed),
        secs: elapsed.as_secs_f64(),
        vm_hwm_kib: status_kib(&status, "VmHWM:").context("no VmHWM in /proc/self/status")?,
        vm_rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        cpu_secs: (crate::cost::process_cpu() - cpu_before).as_secs_f64(),
    };
    println!("result {}", serde_json::to_string(&report)?);
    Ok(())
}

/// A raw consumer's handler that counts the payloads of type `E` into `handled`.
fn counter<E>(handled: &Arc<AtomicU64>) -> impl Fn(&E) + Send + Sync + 'static {
    let handled = handled.clone();
    move |_| {
        handled.fetch_add(1, Ordering::Relaxed);
    }
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
