//! The takeover phase: what the delivery engine's take-overs cost Redis, measured through the
//! public API only (issue 22; the engine side is `streamx-runtime/src/worker/takeover.rs`).
//!
//! - **A large take-over by a batch consumer**: `--batch-takeover-messages` entries (20,000)
//!   read by a raw consumer `dead` that never acknowledges them; once `dead` has been idle
//!   longer than `claim_idle` (`--takeover-claim-idle-ms`, 1 s), a runtime with one
//!   `Consumer::batch` (concurrency 100, `max_batch` 100: 10,000 permits, so every take-over
//!   script looks at the most it may, 1,000 pending entries) and a no-op handler starts in
//!   the group. Figures: time from `start()` until every entry was handled and the PEL is
//!   empty, and what Redis spent over that window (see [`DrainCost`]), with the longest
//!   single script from the slow log. The same entries, orphaned alike in another group, are
//!   taken over by the hand-written XAUTOCLAIM loop ([`raw::take_over_all`]) and measured
//!   alike; the two sides alternate which goes first.
//! - **Suspect drain**: `--suspects` entries (3,000) read by `dead`, every id added to the
//!   group's take-over marks (`streamx::keys::takeover_marks`), as a taker that died leaves
//!   what it had taken over. A streamx consumer (concurrency 4, the same `claim_idle`,
//!   no-op handler) moves them once to the suspects' placeholder member and runs each alone,
//!   one after another. Figures: the Redis CPU of the whole drain (**target: < 0.5 s**),
//!   wall time, scripts called and their time; also that every suspect ran once, at attempt
//!   1, and that no mark is left.
//!
//! Each measurement is repeated `--repeat` times, in a fresh group of the same stream; the
//! summary keeps the fastest time and the least Redis time of each side (noise only adds),
//! and every run is in the JSON.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fred::clients::Client;
use fred::interfaces::{ClientLike, SetsInterface, StreamsInterface};
use fred::types::Value;
use serde::Serialize;
use streamx::{Consumer, HandlerError, Message};

use crate::args::Settings;
use crate::progress::{note, Progress};
use crate::raw;
use crate::redis_stats::{self, CommandDelta, SlowEntry, SlowLog};
use crate::report::count;
use crate::scale::{orphan, pending_count, publish_small, wait_until, Small};
use crate::streamx_side::start;
use crate::workload::Keys;

/// The longest a take-over or a drain may take before the run gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// Handler calls of the batch consumer at once.
pub const BATCH_CONCURRENCY: usize = 100;
/// Entries per call of the batch consumer's handler.
pub const MAX_BATCH: usize = 100;
/// Handler concurrency of the consumer that drains the suspects.
pub const SUSPECT_CONCURRENCY: usize = 4;
/// Commands at least this long go to the slow log while the phase runs, µs.
const SLOW_US: u64 = 100;
/// Slow-log entries kept while the phase runs.
const SLOW_LEN: u64 = 100_000;
/// The suspect drain's target: Redis CPU, s.
pub const SUSPECT_TARGET_SECS: f64 = 0.5;

/// What Redis spent over one drain, from `INFO cpu commandstats` before and after and the
/// slow log.
#[derive(Debug, Clone, Serialize)]
pub struct DrainCost {
    /// From the start of the runtime (the raw loop: its connection) until every entry was
    /// handled and the PEL was empty, s.
    pub secs: f64,
    /// Handler runs (entries, for a batch handler).
    pub handled: u64,
    /// Sum of `INFO commandstats` usec over the window (INFO left out), s. Redis counts a
    /// command a script calls on its own line too, so this counts script work twice.
    pub command_secs: f64,
    /// `used_cpu_user + used_cpu_sys` of the server over the window (everything it did,
    /// networking included, each thing once), s.
    pub process_secs: f64,
    /// EVALSHA calls in the window, and their time (their commands included), s.
    pub scripts: u64,
    pub script_secs: f64,
    /// The longest single script (EVALSHA) in the slow log over the window, µs; `None`:
    /// none took [`SLOW_US`] or more.
    pub longest_script_us: Option<u64>,
    /// Scripts of [`SLOW_US`] or more.
    pub slow_scripts: u64,
    /// Per command, most time first.
    pub commands: Vec<CommandDelta>,
}

/// The large take-over by a batch consumer, against the raw XAUTOCLAIM loop.
#[derive(Debug, Clone, Serialize)]
pub struct BatchTakeOver {
    pub messages: u64,
    pub concurrency: usize,
    pub max_batch: usize,
    pub claim_idle_ms: u64,
    pub streamx_runs: Vec<DrainCost>,
    pub raw_runs: Vec<DrainCost>,
}

/// The drain of crash suspects.
#[derive(Debug, Clone, Serialize)]
pub struct SuspectDrain {
    pub suspects: u64,
    pub concurrency: usize,
    pub claim_idle_ms: u64,
    pub runs: Vec<SuspectRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SuspectRun {
    #[serde(flatten)]
    pub cost: DrainCost,
    /// Runs at an attempt other than 1 (charged for the deaths): 0 expected.
    pub charged: u64,
    /// Members of the take-over marks left after the drain: 0 expected.
    pub marks_left: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TakeoverRow {
    /// The slow log's threshold, µs.
    pub slow_us: u64,
    pub batch: BatchTakeOver,
    pub suspects: SuspectDrain,
}

/// The least of `f` over `runs` (noise only adds time).
pub fn least(runs: &[DrainCost], f: impl Fn(&DrainCost) -> f64) -> f64 {
    runs.iter().map(f).fold(f64::INFINITY, f64::min)
}

impl SuspectDrain {
    /// The run with the least Redis CPU (the target's figure).
    pub fn quietest(&self) -> Option<&SuspectRun> {
        self.runs.iter().min_by(|a, b| a.cost.process_secs.total_cmp(&b.cost.process_secs))
    }
}

pub async fn run(s: &Settings, keys: &Keys, admin: &Client) -> Result<TakeoverRow> {
    let slow = SlowLog::enable(admin, SLOW_US, SLOW_LEN).await?;
    let measured = async {
        let batch = batch_takeover(s, keys, admin, &slow).await?;
        let suspects = suspect_drain(s, keys, admin, &slow).await?;
        Ok::<_, anyhow::Error>(TakeoverRow { slow_us: slow.threshold_us(), batch, suspects })
    }
    .await;
    slow.restore(admin).await?;
    measured
}

// ---------------------------------------------------------------------------------------
// A large take-over by a batch consumer

async fn batch_takeover(s: &Settings, keys: &Keys, admin: &Client, slow: &SlowLog) -> Result<BatchTakeOver> {
    let n = s.batch_takeover_messages;
    let claim_ms = s.takeover_claim_idle_ms;
    note(&format!(
        "== takeover: {n} entries pending for a dead consumer, taken over by a batch consumer \
         ({BATCH_CONCURRENCY} x {MAX_BATCH}) vs the raw XAUTOCLAIM loop, claim_idle {claim_ms} ms, {} runs",
        s.repeat
    ));
    let stream = keys.stream("takeover-batch");
    publish_small(admin, &stream, n, "takeover: publish").await?;
    let (mut streamx_runs, mut raw_runs) = (Vec::new(), Vec::new());
    for r in 0..s.repeat {
        let sides = if r % 2 == 0 { [true, false] } else { [false, true] };
        for streamx_side in sides {
            let run = format!("run {}/{}", r + 1, s.repeat);
            if streamx_side {
                let group = keys.group("takeover-batch");
                orphan(admin, &stream, &group, n, claim_ms).await?;
                let label = format!("takeover: batch consumer takes over {n} entries, {run}");
                let cost = batch_drain(s, admin, slow, &stream, &group, n, &label).await?;
                streamx_runs.push(cost);
            } else {
                let group = keys.group("takeover-raw");
                orphan(admin, &stream, &group, n, claim_ms).await?;
                let label = format!("takeover: raw XAUTOCLAIM loop takes over {n} entries, {run}");
                raw_runs.push(raw_drain(s, admin, slow, &stream, &group, n, &label).await?);
            }
        }
    }
    raw::delete(admin, vec![stream]).await?;
    Ok(BatchTakeOver {
        messages: n,
        concurrency: BATCH_CONCURRENCY,
        max_batch: MAX_BATCH,
        claim_idle_ms: claim_ms,
        streamx_runs,
        raw_runs,
    })
}

async fn batch_drain(
    s: &Settings,
    admin: &Client,
    slow: &SlowLog,
    stream: &str,
    group: &str,
    n: u64,
    label: &str,
) -> Result<DrainCost> {
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();
    let consumer = Consumer::batch(stream.to_string(), group.to_string(), move |batch: Vec<Message<Small>>| {
        let counter = counter.clone();
        async move {
            std::hint::black_box(batch.iter().map(Message::payload).count());
            counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok::<(), HandlerError>(())
        }
    })
    .concurrency(BATCH_CONCURRENCY)
    .max_batch(MAX_BATCH)
    .claim_idle(Duration::from_millis(s.takeover_claim_idle_ms))
    .consumer_name("takeover-batch")
    .name_as("takeover-batch");
    let cost = streamx_drain(s, admin, slow, consumer, &handled, stream, group, n, label).await?;
    Ok(cost)
}

async fn raw_drain(
    s: &Settings,
    admin: &Client,
    slow: &SlowLog,
    stream: &str,
    group: &str,
    n: u64,
    label: &str,
) -> Result<DrainCost> {
    let handled = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, n, handled.clone());
    let window = Window::open(admin, slow).await?;
    let started = Instant::now();
    let taken = raw::take_over_all::<Small>(&s.url, stream, group, "raw-taker", s.takeover_claim_idle_ms).await?;
    let secs = started.elapsed().as_secs_f64();
    let cost = window.close(admin, slow, secs, taken).await?;
    handled.store(taken, Ordering::Relaxed);
    anyhow::ensure!(taken == n, "{label}: took over {taken} of {n} entries");
    let left = pending_count(admin, stream, group).await?;
    anyhow::ensure!(left == 0, "{label}: {left} entries still pending");
    progress.finish(&cost_line(&cost)).await;
    Ok(cost)
}

// ---------------------------------------------------------------------------------------
// Suspect drain

async fn suspect_drain(s: &Settings, keys: &Keys, admin: &Client, slow: &SlowLog) -> Result<SuspectDrain> {
    let n = s.suspects;
    let claim_ms = s.takeover_claim_idle_ms;
    note(&format!(
        "== takeover: drain of {n} crash suspects (marked entries of a dead taker) by a consumer \
         c={SUSPECT_CONCURRENCY}, claim_idle {claim_ms} ms, {} runs",
        s.repeat
    ));
    let stream = keys.stream("takeover-suspects");
    publish_small(admin, &stream, n, "takeover: publish").await?;
    let ids = stream_ids(admin, &stream, n).await?;
    let mut runs = Vec::new();
    for r in 0..s.repeat {
        let group = keys.group("suspects");
        orphan(admin, &stream, &group, n, claim_ms).await?;
        let marks = streamx::keys::takeover_marks(&stream, &group);
        for chunk in ids.chunks(1000) {
            let _: i64 = admin.sadd(marks.as_str(), chunk.to_vec()).await.context("SADD to the take-over marks")?;
        }
        let handled = Arc::new(AtomicU64::new(0));
        let charged = Arc::new(AtomicU64::new(0));
        let (counter, charges) = (handled.clone(), charged.clone());
        let consumer = Consumer::new(stream.to_string(), group.to_string(), move |msg: Message<Small>| {
            let (counter, charges) = (counter.clone(), charges.clone());
            async move {
                std::hint::black_box(msg.payload());
                if msg.attempt() != 1 {
                    charges.fetch_add(1, Ordering::Relaxed);
                }
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
        .concurrency(SUSPECT_CONCURRENCY)
        .claim_idle(Duration::from_millis(claim_ms))
        .consumer_name("suspect-drain")
        .name_as("suspect-drain");
        let label = format!("takeover: drain {n} suspects c={SUSPECT_CONCURRENCY}, run {}/{}", r + 1, s.repeat);
        let cost = streamx_drain(s, admin, slow, consumer, &handled, &stream, &group, n, &label).await?;
        let marks_left: u64 = admin.scard(marks.as_str()).await.context("SCARD of the take-over marks")?;
        let charged = charged.load(Ordering::Relaxed);
        if charged > 0 || marks_left > 0 {
            note(&format!("{label}: {charged} runs at an attempt other than 1, {marks_left} marks left"));
        }
        runs.push(SuspectRun { cost, charged, marks_left });
    }
    raw::delete(admin, vec![stream]).await?;
    Ok(SuspectDrain { suspects: n, concurrency: SUSPECT_CONCURRENCY, claim_idle_ms: claim_ms, runs })
}

/// The ids of the first `n` entries of `stream`, pages of 1,000.
async fn stream_ids(admin: &Client, stream: &str, n: u64) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::with_capacity(n as usize);
    let mut from = "-".to_string();
    while (ids.len() as u64) < n {
        let page: Value = admin.xrange(stream, from.as_str(), "+", Some(1000)).await.context("XRANGE")?;
        let before = ids.len();
        for entry in page.into_array() {
            if let Some(id) = entry.into_array().into_iter().next().and_then(|id| id.as_string()) {
                ids.push(id);
            }
        }
        match ids.last() {
            Some(last) if ids.len() > before => from = format!("({last}"),
            _ => bail!("takeover: {stream} holds only {} entries", ids.len()),
        }
    }
    ids.truncate(n as usize);
    Ok(ids)
}

// ---------------------------------------------------------------------------------------
// Measuring a drain

/// Runs `consumer` alone until `handled` reaches `n` and `group`'s PEL is empty; what that
/// cost Redis (the shutdown left out).
#[allow(clippy::too_many_arguments)]
async fn streamx_drain(
    s: &Settings,
    admin: &Client,
    slow: &SlowLog,
    consumer: Consumer,
    handled: &Arc<AtomicU64>,
    stream: &str,
    group: &str,
    n: u64,
    label: &str,
) -> Result<DrainCost> {
    let progress = Progress::start(label, n, handled.clone());
    let checker = raw::connect(&s.url).await?;
    let window = Window::open(admin, slow).await?;
    let started = Instant::now();
    let running = start(&s.url, consumer).await?;
    // A cheap check (the counter) until every entry ran, then XPENDING's O(1) summary.
    let done = wait_until(started + STEP_TIMEOUT, Duration::from_millis(5), || {
        let handled = handled.load(Ordering::Relaxed);
        let checker = &checker;
        async move { Ok(handled >= n && pending_count(checker, stream, group).await? == 0) }
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let cost = window.close(admin, slow, secs, handled.load(Ordering::Relaxed)).await;
    let _ = checker.quit().await;
    let stopped = running.shutdown().await;
    if !done? {
        bail!("{label}: {} handler runs, PEL not empty within {STEP_TIMEOUT:?}", handled.load(Ordering::Relaxed));
    }
    stopped?;
    let cost = cost?;
    let extra = if cost.handled > n { format!(", {} handled twice", cost.handled - n) } else { String::new() };
    progress.finish(&format!("{}{extra}", cost_line(&cost))).await;
    Ok(cost)
}

/// The server's figures at the start of a drain.
struct Window {
    before: redis_stats::ServerSample,
    slow_after: Option<i64>,
}

impl Window {
    async fn open(admin: &Client, slow: &SlowLog) -> Result<Self> {
        let slow_after = slow.last_id(admin).await?;
        let before = redis_stats::sample(admin).await?;
        Ok(Window { before, slow_after })
    }

    async fn close(self, admin: &Client, slow: &SlowLog, secs: f64, handled: u64) -> Result<DrainCost> {
        let after = redis_stats::sample(admin).await?;
        let slow_entries: Vec<SlowEntry> =
            slow.since(admin, self.slow_after).await?.into_iter().filter(|e| is_script(&e.command)).collect();
        let commands = after.commands_since(&self.before);
        let usec = |c: &CommandDelta| c.usec as f64 / 1e6;
        let scripts: Vec<&CommandDelta> = commands.iter().filter(|c| is_script(&c.command)).collect();
        Ok(DrainCost {
            secs,
            handled,
            command_secs: commands.iter().map(usec).fold(0.0, |sum, s| sum + s),
            process_secs: after.cpu_secs_since(&self.before),
            scripts: scripts.iter().map(|c| c.calls).sum(),
            script_secs: scripts.iter().map(|c| usec(c)).fold(0.0, |sum, s| sum + s),
            longest_script_us: slow_entries.iter().map(|e| e.usec).max(),
            slow_scripts: slow_entries.len() as u64,
            commands,
        })
    }
}

fn is_script(command: &str) -> bool {
    matches!(command, "evalsha" | "eval" | "fcall" | "evalsha_ro" | "eval_ro" | "fcall_ro")
}

/// `0.41 s; Redis 0.12 s CPU, 0.15 s in commands; 45 scripts (0.09 s, longest 3.1 ms)`.
fn cost_line(c: &DrainCost) -> String {
    format!(
        "{:.2} s ({} msg/s); Redis {:.3} s CPU, {:.3} s in commands; {} scripts ({:.3} s, longest {})",
        c.secs,
        count(c.handled as f64 / c.secs),
        c.process_secs,
        c.command_secs,
        c.scripts,
        c.script_secs,
        longest(c.longest_script_us)
    )
}

/// `3.10 ms`, or `< 0.1 ms` when no script reached the slow log.
pub fn longest(us: Option<u64>) -> String {
    match us {
        Some(us) => format!("{:.2} ms", us as f64 / 1000.0),
        None => format!("< {:.1} ms", SLOW_US as f64 / 1000.0),
    }
}

/// `evalsha 3,012 calls (312 ms, 104 µs/call), ...`, the `max` busiest commands.
pub fn commands_summary(commands: &[CommandDelta], max: usize) -> String {
    if commands.is_empty() {
        return "no command".to_string();
    }
    commands
        .iter()
        .take(max)
        .map(|c| {
            format!(
                "{} {} calls ({:.1} ms, {:.0} µs/call)",
                c.command,
                count(c.calls as f64),
                c.usec as f64 / 1000.0,
                c.usec as f64 / c.calls as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
