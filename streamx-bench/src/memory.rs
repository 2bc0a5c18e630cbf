//! Peak RSS of a process that only consumes: the parent publishes a large backlog, then
//! re-executes this binary as `consume-only` (once with streamx, once with the raw
//! consumer), and each child drains the backlog and prints its own `VmHWM`.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fred::clients::Client;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::args::{ConsumeOnlyArgs, Side};
use crate::progress::Progress;
use crate::raw::{self, RawConsumer};
use crate::streamx_side::{self, Drain, Tally, Work};
use crate::workload::events;

/// How long a child may take to drain its backlog.
const CHILD_TIMEOUT: Duration = Duration::from_secs(900);

/// What a `consume-only` child reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildReport {
    pub handled: u64,
    pub secs: f64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub vm_hwm_kib: u64,
    /// Resident set size at the end (`VmRSS`), KiB.
    pub vm_rss_kib: u64,
}

impl ChildReport {
    pub fn rate(&self) -> f64 {
        self.handled as f64 / self.secs.max(1e-9)
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

/// Runs a `consume-only` child draining `count` messages of `stream` in `group`.
pub async fn run_child(
    url: &str,
    stream: &str,
    group: &str,
    count: u64,
    concurrency: usize,
    side: Side,
) -> Result<ChildReport> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("consume-only")
        .args(["--url", url, "--stream", stream, "--group", group])
        .args(["--count", &count.to_string(), "--concurrency", &concurrency.to_string()])
        .args(["--side", side.name()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the consume-only child")?;
    let stdout = child.stdout.take().context("child has no stdout")?;
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("memory {} child (pid {})", side.name(), child.id().unwrap_or(0)),
        count,
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
        bail!("the {} consume-only child failed ({status})", side.name());
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
    let counter = tally.handled.clone();
    let printer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            println!("progress {}", counter.load(Ordering::Relaxed));
        }
    });
    let started = Instant::now();
    let elapsed = match a.side {
        Side::Streamx => {
            let drain = Drain {
                url: &a.url,
                stream: &a.stream,
                group: &a.group,
                target: a.count,
                concurrency: a.concurrency,
                work: Work::None,
                timeout: CHILD_TIMEOUT,
            };
            streamx_side::consume(&drain, tally.clone()).await?
        }
        Side::Raw => {
            let consumer = RawConsumer::connect(&a.url, &a.stream, &a.group).await?;
            let handled = tally.handled.clone();
            let last = consumer
                .run(a.count, CHILD_TIMEOUT, |_| {
                    handled.fetch_add(1, Ordering::Relaxed);
                })
                .await?;
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
    };
    println!("result {}", serde_json::to_string(&report)?);
    Ok(())
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
