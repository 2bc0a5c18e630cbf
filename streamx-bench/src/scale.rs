//! The scale phase: what a large pending entries list (PEL) costs, measured through the
//! public API only (so it keeps measuring the same thing whatever the engine does inside).
//!
//! - **Idle cost**: a group whose PEL holds `--scale-pel` entries, none of them due (each
//!   failed once with `HandlerError::retry_after(.., 1 h)`), then `--scale-consumers` idle
//!   streamx consumers of that group. Figure: the Redis CPU they cause, from `INFO
//!   commandstats` (sum of `usec` over every command but INFO, per second of wall time, as %
//!   of one core), with calls/s by command; the same for no client at all (the floor of the
//!   server) and for as many hand-written `XREADGROUP ... BLOCK 2000` loops.
//! - **Take-over rate**: `--takeover-messages` entries read by a raw consumer `dead` that
//!   never acknowledges them; once `dead` has been idle longer than `claim_idle` (1 s here), a
//!   streamx consumer (concurrency 8, no-op handler) starts in the group; time until every
//!   entry was handled and the PEL is empty. Compared with the strongest hand-written
//!   take-over (one `XAUTOCLAIM ... COUNT 500` loop acknowledging each claim with the next,
//!   the same entries orphaned alike in a third group), and with the same consumer draining
//!   the same number of fresh entries in another group.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, StreamsInterface};
use fred::types::streams::XCap;
use fred::types::{Key, Value};
use serde::{Deserialize, Serialize};
use streamx::{Consumer, HandlerError, Message, Runtime};
use tokio::task::JoinHandle;

use crate::args::Settings;
use crate::progress::{note, Progress};
use crate::raw;
use crate::redis_stats;
use crate::streamx_side::start;
use crate::workload::Keys;

/// The longest the fill, a drain or a take-over may take before the run gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(900);
/// The retry delay of the entries that fill the PEL: far beyond any measurement.
const NOT_DUE_FOR: Duration = Duration::from_secs(3600);
/// Handler concurrency of the consumer that fills the PEL.
const FILL_CONCURRENCY: usize = 64;
/// Entries per XREADGROUP of the raw `dead` consumer.
const DEAD_READ_COUNT: u64 = 1000;
/// XREADGROUP BLOCK of the raw idle readers, ms.
const RAW_BLOCK_MS: u64 = 2000;

/// The scale phase's payload: `{"n":123456}`, about 12 bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Small {
    pub n: u64,
}

/// Redis load over a measurement window.
#[derive(Debug, Clone, Serialize)]
pub struct RedisLoad {
    pub secs: f64,
    /// Sum of `INFO commandstats` usec (INFO excluded) per second of wall time, % of one core.
    pub command_cpu_pct: f64,
    /// `used_cpu_user + used_cpu_sys` of the server per second of wall time, % of one core
    /// (everything the process did, including networking and the INFO calls).
    pub process_cpu_pct: f64,
    /// Per command, busiest first.
    pub commands: Vec<CommandLoad>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandLoad {
    pub command: String,
    pub calls_per_sec: f64,
    /// Server time per second of wall time, µs/s.
    pub usec_per_sec: f64,
    pub usec_per_call: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleCost {
    /// Entries in the PEL when the window started / ended.
    pub pel: u64,
    pub pel_after: u64,
    pub consumers: usize,
    /// `claim_idle` of the streamx consumers, ms (`None`: the default).
    pub claim_idle_ms: Option<u64>,
    pub settle_secs: f64,
    /// Publishing the entries and failing each once, s.
    pub fill_secs: f64,
    /// No client but the sampler.
    pub floor: RedisLoad,
    /// As many raw `XREADGROUP ... BLOCK 2000 ... >` loops, in the same group.
    pub raw: RedisLoad,
    pub streamx: RedisLoad,
    /// Handler runs of the idle streamx consumers before the window (settling) and in it;
    /// none of the entries is due, so both should be 0.
    pub handled_settling: u64,
    pub handled_in_window: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TakeOver {
    pub messages: u64,
    pub concurrency: usize,
    pub claim_idle_ms: u64,
    /// Fresh entries, msg/s (start of the runtime to an empty PEL).
    pub fresh: f64,
    /// Entries pending for a dead consumer, msg/s (same clock).
    pub takeover: f64,
    /// The same entries taken over by the hand-written XAUTOCLAIM loop
    /// ([`raw::take_over_all`]), msg/s (its connection to its last XACK).
    pub raw: f64,
    /// takeover / fresh.
    pub ratio: f64,
    /// takeover / raw.
    pub raw_ratio: f64,
    /// Handler runs (more than `messages` means some entry was handled twice).
    pub fresh_handled: u64,
    pub takeover_handled: u64,
    /// How long `dead` took to become idle longer than `claim_idle`, s.
    pub waited_for_idle_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    pub idle: IdleCost,
    pub takeover: TakeOver,
}

pub async fn run(s: &Settings, keys: &Keys, admin: &Client) -> Result<ScaleRow> {
    let idle = idle_cost(s, keys, admin).await?;
    let takeover = takeover(s, keys, admin).await?;
    Ok(ScaleRow { idle, takeover })
}

// ---------------------------------------------------------------------------------------
// Idle cost

async fn idle_cost(s: &Settings, keys: &Keys, admin: &Client) -> Result<IdleCost> {
    let n = s.scale_pel;
    let claim = s.scale_claim_idle_ms.map(Duration::from_millis);
    note(&format!(
        "== scale: idle Redis CPU of {} streamx consumers with a {n}-entry PEL, none due, {:.0} s window",
        s.scale_consumers, s.scale_secs
    ));
    let stream = keys.stream("scale-pel");
    let group = keys.group("scale");
    let started = Instant::now();
    publish_small(admin, &stream, n, "scale: publish").await?;
    fill_pel(s, &stream, &group, claim, n).await?;
    let fill_secs = started.elapsed().as_secs_f64();
    let window = Duration::from_secs_f64(s.scale_secs);
    let settle = Duration::from_secs_f64(s.scale_settle_secs);

    let floor = measure(admin, window).await?;
    progress_line("scale floor: no client", &floor);
    if floor.command_cpu_pct > 0.5 {
        note("warning: other clients are using this Redis; every figure below includes their load");
    }

    let raw = raw_idle(s, admin, &stream, &group, settle, window).await?;
    progress_line(&format!("scale raw: {} XREADGROUP BLOCK loops", s.scale_consumers), &raw);

    let pel = pending_count(admin, &stream, &group).await?;
    let handled = Arc::new(AtomicU64::new(0));
    let mut builder = Runtime::builder().redis_url(&s.url).registered_consumers(false);
    for i in 0..s.scale_consumers {
        let name: &'static str = format!("idle-{i}").leak();
        let mut consumer = not_due_consumer(&stream, &group, handled.clone()).consumer_name(name).name_as(name);
        if let Some(idle) = claim {
            consumer = consumer.claim_idle(idle);
        }
        builder = builder.consumer(consumer);
    }
    let running = builder.shutdown_timeout(Duration::from_secs(5)).build()?.start().await?;
    tokio::time::sleep(settle).await;
    let handled_settling = handled.load(Ordering::Relaxed);
    let streamx = measure(admin, window).await;
    let handled_in_window = handled.load(Ordering::Relaxed) - handled_settling;
    let stopped = running.shutdown().await;
    let streamx = streamx?;
    stopped?;
    progress_line(&format!("scale streamx: {} idle consumers", s.scale_consumers), &streamx);
    if handled_settling + handled_in_window > 0 {
        note(&format!(
            "scale streamx: the idle consumers ran the handler {handled_settling} times while settling and \
             {handled_in_window} times in the window (no entry was due)"
        ));
    }
    let pel_after = pending_count(admin, &stream, &group).await?;
    raw::delete(admin, vec![stream]).await?;
    Ok(IdleCost {
        pel,
        pel_after,
        consumers: s.scale_consumers,
        claim_idle_ms: s.scale_claim_idle_ms,
        settle_secs: s.scale_settle_secs,
        fill_secs,
        floor,
        raw,
        streamx,
        handled_settling,
        handled_in_window,
    })
}

/// A consumer whose handler asks for a retry in an hour, counting its runs in `handled`.
fn not_due_consumer(stream: &str, group: &str, handled: Arc<AtomicU64>) -> Consumer {
    Consumer::new(stream.to_string(), group.to_string(), move |msg: Message<Small>| {
        let handled = handled.clone();
        async move {
            std::hint::black_box(msg.payload());
            handled.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(HandlerError::retry_after("later", NOT_DUE_FOR))
        }
    })
}

/// Runs a streamx consumer whose handler fails every entry of `stream` once with a retry an
/// hour away, until all `n` were handled and are pending, then shuts it down.
async fn fill_pel(s: &Settings, stream: &str, group: &str, claim: Option<Duration>, n: u64) -> Result<()> {
    let handled = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("scale: fail each entry once (retry in 1 h)", n, handled.clone());
    let started = Instant::now();
    let mut consumer = not_due_consumer(stream, group, handled.clone())
        .concurrency(FILL_CONCURRENCY)
        .consumer_name("scale-fill")
        .name_as("scale-fill");
    if let Some(idle) = claim {
        consumer = consumer.claim_idle(idle);
    }
    let running = start(&s.url, consumer).await?;
    let checker = raw::connect(&s.url).await?;
    let filled = wait_until(started + STEP_TIMEOUT, Duration::from_millis(100), || {
        let handled = handled.load(Ordering::Relaxed);
        let checker = &checker;
        async move { Ok(handled >= n && pending_count(checker, stream, group).await? >= n) }
    })
    .await;
    let _ = checker.quit().await;
    let stopped = running.shutdown().await;
    let handled = handled.load(Ordering::Relaxed);
    if !filled? {
        bail!("scale: only {handled} of {n} entries were handled within {STEP_TIMEOUT:?}");
    }
    stopped?;
    progress.finish(&format!("{n} entries pending, not due, in {:.1} s", started.elapsed().as_secs_f64())).await;
    Ok(())
}

/// `count` hand-written idle readers (`XREADGROUP ... BLOCK 2000 ... >`, each on its own
/// connection) in `group` for `settle + window`; the load of the window.
async fn raw_idle(
    s: &Settings,
    admin: &Client,
    stream: &str,
    group: &str,
    settle: Duration,
    window: Duration,
) -> Result<RedisLoad> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers: Vec<(String, JoinHandle<Result<()>>)> = Vec::new();
    for i in 0..s.scale_consumers {
        let name = format!("raw-idle-{i}");
        let client = raw::connect(&s.url).await?;
        let (stop, stream, group, me) = (stop.clone(), stream.to_string(), group.to_string(), name.clone());
        let task = tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let read: Value = client
                    .xreadgroup(group.as_str(), me.as_str(), Some(100), Some(RAW_BLOCK_MS), false, stream.as_str(), ">")
                    .await
                    .context("raw idle XREADGROUP")?;
                std::hint::black_box(read);
            }
            let _ = client.quit().await;
            Ok(())
        });
        readers.push((name, task));
    }
    tokio::time::sleep(settle).await;
    let load = measure(admin, window).await;
    stop.store(true, Ordering::Relaxed);
    for (name, task) in readers {
        task.await.context("raw idle reader panicked")??;
        // They owned nothing; keep the group as the streamx consumers will find it.
        let _: Value = admin.xgroup_delconsumer(stream, group, name.as_str()).await.context("XGROUP DELCONSUMER")?;
    }
    load
}

// ---------------------------------------------------------------------------------------
// Take-over rate

async fn takeover(s: &Settings, keys: &Keys, admin: &Client) -> Result<TakeOver> {
    let n = s.takeover_messages;
    let (c, claim_idle) = (s.takeover_concurrency, Duration::from_millis(s.takeover_claim_idle_ms));
    note(&format!(
        "== scale: take-over of {n} entries pending for a dead consumer vs {n} fresh ones, streamx c={c}, \
         claim_idle {claim_idle:?}"
    ));
    let stream = keys.stream("scale-takeover");
    publish_small(admin, &stream, n, "scale: publish").await?;

    let fresh_group = keys.group("fresh");
    let (fresh_secs, fresh_handled) =
        drain(s, &stream, &fresh_group, n, &format!("scale: consume {n} fresh entries c={c}")).await?;

    let group = keys.group("takeover");
    let waited_for_idle_secs = orphan(admin, &stream, &group, n, s.takeover_claim_idle_ms).await?;
    let (takeover_secs, takeover_handled) =
        drain(s, &stream, &group, n, &format!("scale: take over {n} entries from `dead` c={c}")).await?;

    // The same, taken over by the hand-written XAUTOCLAIM loop (timed alike: from its
    // connection to the last XACK).
    let raw_group = keys.group("takeover-raw");
    orphan(admin, &stream, &raw_group, n, s.takeover_claim_idle_ms).await?;
    let started = Instant::now();
    let raw_handled =
        raw::take_over_all::<Small>(&s.url, &stream, &raw_group, "raw-taker", s.takeover_claim_idle_ms).await?;
    let raw_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(raw_handled == n, "scale: the raw XAUTOCLAIM loop took over {raw_handled} of {n} entries");
    note(&format!(
        "scale: raw XAUTOCLAIM loop took over {n} entries: {:.0} msg/s ({raw_secs:.2} s)",
        n as f64 / raw_secs
    ));

    raw::delete(admin, vec![stream]).await?;
    let (fresh, takeover, raw) = (n as f64 / fresh_secs, n as f64 / takeover_secs, n as f64 / raw_secs);
    Ok(TakeOver {
        messages: n,
        concurrency: c,
        claim_idle_ms: s.takeover_claim_idle_ms,
        fresh,
        takeover,
        raw,
        ratio: takeover / fresh,
        raw_ratio: takeover / raw,
        fresh_handled,
        takeover_handled,
        waited_for_idle_secs,
    })
}

/// Makes the `n` entries of `stream` pending in `group` for a consumer `dead` that reads them
/// all and never acknowledges, then waits until `dead` has been idle longer than `claim_ms`;
/// the seconds that wait took.
pub async fn orphan(admin: &Client, stream: &str, group: &str, n: u64, claim_ms: u64) -> Result<f64> {
    raw::create_group(admin, stream, group).await?;
    let mut read = 0u64;
    while read < n {
        let reply: Value = admin
            .xreadgroup(group, "dead", Some(DEAD_READ_COUNT), None, false, stream, ">")
            .await
            .context("XREADGROUP as dead")?;
        let got = entry_count(reply);
        if got == 0 {
            bail!("scale: the dead consumer read only {read} of {n} entries");
        }
        read += got;
    }
    let waiting = Instant::now();
    let idle_enough = wait_until(waiting + Duration::from_secs(60), Duration::from_millis(50), move || async move {
        Ok(consumer_idle_ms(admin, stream, group, "dead").await? > claim_ms)
    })
    .await?;
    anyhow::ensure!(idle_enough, "scale: the dead consumer did not become idle for {claim_ms} ms");
    Ok(waiting.elapsed().as_secs_f64())
}

/// Runs a streamx consumer (no-op handler) in `group` until `n` entries were handled and the
/// group's PEL is empty; seconds from the runtime's start, and handler runs.
async fn drain(s: &Settings, stream: &str, group: &str, n: u64, label: &str) -> Result<(f64, u64)> {
    let handled = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, n, handled.clone());
    let counter = handled.clone();
    let consumer = Consumer::new(stream.to_string(), group.to_string(), move |msg: Message<Small>| {
        let counter = counter.clone();
        async move {
            std::hint::black_box(msg.payload());
            counter.fetch_add(1, Ordering::Relaxed);
        }
    })
    .concurrency(s.takeover_concurrency)
    .claim_idle(Duration::from_millis(s.takeover_claim_idle_ms))
    .consumer_name("scale-drain")
    .name_as("scale-drain");
    let started = Instant::now();
    let running = start(&s.url, consumer).await?;
    // A cheap check (the counter) until every entry ran, then XPENDING's O(1) summary.
    let checker = raw::connect(&s.url).await?;
    let done = wait_until(started + STEP_TIMEOUT, Duration::from_millis(5), || {
        let handled = handled.load(Ordering::Relaxed);
        let checker = &checker;
        async move { Ok(handled >= n && pending_count(checker, stream, group).await? == 0) }
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let _ = checker.quit().await;
    let stopped = running.shutdown().await;
    let handled = handled.load(Ordering::Relaxed);
    if !done? {
        bail!("{label}: {handled} handler runs, PEL not empty within {STEP_TIMEOUT:?}");
    }
    stopped?;
    let extra = if handled > n { format!(", {} handled twice", handled - n) } else { String::new() };
    progress.finish(&format!("{:.0} msg/s ({secs:.2} s{extra})", n as f64 / secs)).await;
    Ok((secs, handled))
}

// ---------------------------------------------------------------------------------------
// Helpers

/// Calls `check` every `every` until it returns true (→ true) or `deadline` passes (→ false).
pub async fn wait_until<F, Fut>(deadline: Instant, every: Duration, mut check: F) -> Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    loop {
        if check().await? {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(every).await;
    }
}

/// Publishes `n` entries `{"n":i}` to `stream`, pipelined in chunks of 1,000.
pub async fn publish_small(client: &Client, stream: &str, n: u64, label: &str) -> Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, n, done.clone());
    let started = Instant::now();
    let mut next = 0;
    while next < n {
        let len = (raw::PUBLISH_CHUNK as u64).min(n - next);
        let pipeline = client.pipeline();
        for i in next..next + len {
            let data = Bytes::from(serde_json::to_vec(&Small { n: i })?);
            let fields = vec![(Key::from_static_str(streamx::DATA_FIELD), Value::Bytes(data))];
            let _: () = pipeline.xadd(stream, false, XCap::from(None::<()>), "*", fields).await?;
        }
        let _: Vec<Value> = pipeline.all().await.context("pipelined XADD")?;
        next += len;
        done.store(next, Ordering::Relaxed);
    }
    progress.finish(&format!("{n} entries of ~12 B in {:.1} s", started.elapsed().as_secs_f64())).await;
    Ok(())
}

/// The group's pending count (the XPENDING summary form, O(1) in Redis).
pub async fn pending_count(client: &Client, stream: &str, group: &str) -> Result<u64> {
    let reply: Value = client.xpending(stream, group, ()).await.context("XPENDING")?;
    match reply {
        Value::Array(parts) => {
            parts.first().and_then(Value::as_u64).ok_or_else(|| anyhow!("unexpected XPENDING reply"))
        }
        other => bail!("unexpected XPENDING reply {other:?}"),
    }
}

/// `idle` of consumer `name` in XINFO CONSUMERS (0 if it is not listed).
async fn consumer_idle_ms(client: &Client, stream: &str, group: &str, name: &str) -> Result<u64> {
    let reply: Value = client.xinfo_consumers(stream, group).await.context("XINFO CONSUMERS")?;
    for consumer in reply.into_array() {
        let fields = pairs(consumer);
        let field = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        if field("name").and_then(Value::as_string).as_deref() == Some(name) {
            return field("idle").and_then(Value::as_u64).context("XINFO CONSUMERS: no idle field");
        }
    }
    Ok(0)
}

/// The field/value pairs of a RESP2 flat array or a RESP3 map.
fn pairs(v: Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(map) => map.inner().into_iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), v))).collect(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = k.as_string() {
                    out.push((k, v));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Entries in an XREADGROUP reply of one stream (RESP2 or RESP3 shape; nil has none).
fn entry_count(reply: Value) -> u64 {
    let per_stream: Vec<Value> = match reply {
        Value::Array(streams) => streams.into_iter().filter_map(|s| s.into_array().into_iter().nth(1)).collect(),
        Value::Map(map) => map.inner().into_values().collect(),
        _ => Vec::new(),
    };
    per_stream.into_iter().map(|entries| entries.into_array().len() as u64).sum()
}

/// Samples, waits `window`, samples again: the load in between (INFO itself left out of the
/// command figures).
async fn measure(admin: &Client, window: Duration) -> Result<RedisLoad> {
    let before = redis_stats::sample(admin).await?;
    tokio::time::sleep(window).await;
    let after = redis_stats::sample(admin).await?;
    let secs = (after.at - before.at).as_secs_f64();
    let commands: Vec<CommandLoad> = after
        .commands_since(&before)
        .into_iter()
        .map(|d| CommandLoad {
            calls_per_sec: d.calls as f64 / secs,
            usec_per_sec: d.usec as f64 / secs,
            usec_per_call: d.usec as f64 / d.calls as f64,
            command: d.command,
        })
        .collect();
    // A fold from +0.0: an empty f64 sum is -0.0, printed as "-0.000".
    let usec = commands.iter().fold(0.0, |sum, c| sum + c.usec_per_sec);
    Ok(RedisLoad {
        secs,
        command_cpu_pct: usec / 1e6 * 100.0,
        process_cpu_pct: after.cpu_secs_since(&before) / secs * 100.0,
        commands,
    })
}

fn progress_line(label: &str, load: &RedisLoad) {
    note(&format!(
        "{label}: {:.3}% of a core in commands ({:.2}% process CPU); {}",
        load.command_cpu_pct,
        load.process_cpu_pct,
        calls_summary(load, 6)
    ));
}

/// `xpending 4.0/s (180,000 µs/call), ...`, the `max` busiest commands.
pub fn calls_summary(load: &RedisLoad, max: usize) -> String {
    if load.commands.is_empty() {
        return "no command".to_string();
    }
    load.commands
        .iter()
        .take(max)
        .map(|c| format!("{} {:.1}/s ({:.0} µs/call)", c.command, c.calls_per_sec, c.usec_per_call))
        .collect::<Vec<_>>()
        .join(", ")
}
