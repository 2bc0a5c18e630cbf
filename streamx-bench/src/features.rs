//! Issue 24's figures: what `dedupe` and `delete_on_ack` cost on the consume path (each on
//! against off, same backlog size and concurrency, alternating, best of the repeats), how
//! fast delayed messages are promoted, and the Redis CPU of the retention trimmer on a
//! 1,000,000-entry stream. Run it against Redis 7.0 and 8.2 to see both code paths
//! (`--only features --url ...` twice); the server's version is printed with the figures.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use fred::clients::Client;
use fred::interfaces::{ClientLike, StreamsInterface};
use fred::types::{ClusterHash, CustomCommand};
use serde::Serialize;
use streamx::{Consumer, Producer, Retention};

use crate::args::Settings;
use crate::memory;
use crate::progress::note;
use crate::raw;
use crate::redis_stats;
use crate::report::best;
use crate::streamx_side::{self, Tally, Work};
use crate::workload::{events, Event, Keys};

/// Handler concurrency of the on/off drains.
const CONCURRENCY: usize = 8;
/// Messages of the delayed-promotion run.
const DELAYED: u64 = 20_000;
/// Entries of the trimmer's stream.
const TRIMMED_STREAM: u64 = 1_000_000;
/// The retention bound of the trimmer run.
const KEEP: u64 = 1_000;
/// How long the trimmer's idle cost is sampled.
const IDLE_SAMPLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct FeaturesRow {
    /// `INFO server`'s name and version, e.g. `redis 8.2.3`.
    pub server: String,
    pub messages: u64,
    pub concurrency: usize,
    /// msg/s, best run, plain consumer / with `dedupe` / with `delete_on_ack`.
    pub plain: f64,
    pub dedupe: f64,
    pub delete_on_ack: f64,
    pub plain_runs: Vec<f64>,
    pub dedupe_runs: Vec<f64>,
    pub delete_on_ack_runs: Vec<f64>,
    /// XLEN left by the last `delete_on_ack` drain.
    pub delete_on_ack_left: u64,
    /// Delayed messages scheduled per second (`publish_at`, one at a time, 64 in flight).
    pub scheduled_per_sec: f64,
    /// Due delayed messages promoted and handled per second by one runtime.
    pub promoted_per_sec: f64,
    /// Trimming a 1,000,000-entry stream that every group has read down to `KEEP`: seconds
    /// and Redis CPU seconds.
    pub trim_secs: f64,
    pub trim_redis_cpu_secs: f64,
    /// The trimmer's Redis CPU while nothing may be trimmed (a group has read nothing of the
    /// 1,000,000 entries), ms per second, with the trimmer's runtime against without it.
    pub idle_trimmer_cpu_ms_per_s: f64,
    pub idle_baseline_cpu_ms_per_s: f64,
}

pub async fn run(s: &Settings, keys: &Keys, admin: &Client) -> Result<FeaturesRow> {
    let server = server_version(admin).await?;
    let messages = s.messages.min(100_000);
    note(&format!(
        "== features ({server}): {messages} messages at concurrency {CONCURRENCY}: plain vs dedupe vs delete_on_ack, \
         best of {}; {DELAYED} delayed messages; the retention trimmer on a {TRIMMED_STREAM}-entry stream",
        s.repeat
    ));
    let (mut plain, mut dedupe, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    let mut delete_on_ack_left = 0;
    for r in 0..s.repeat {
        let order: [Mode; 3] = if r % 2 == 0 {
            [Mode::Plain, Mode::Dedupe, Mode::DeleteOnAck]
        } else {
            [Mode::DeleteOnAck, Mode::Dedupe, Mode::Plain]
        };
        for mode in order {
            // Each run drains a backlog of its own: delete_on_ack deletes what it acknowledges.
            let stream = keys.stream(mode.name());
            memory::publish_backlog(admin, &stream, messages, &format!("backlog for {}", mode.name())).await?;
            let rate = drain(s, &stream, &keys.group(mode.name()), messages, mode).await;
            let left: u64 = admin.xlen(&stream).await.unwrap_or(0);
            raw::delete(admin, vec![stream]).await?;
            let rate = rate?;
            note(&format!("   {} run {}: {rate:.0} msg/s, XLEN after {left}", mode.name(), r + 1));
            match mode {
                Mode::Plain => plain.push(rate),
                Mode::Dedupe => dedupe.push(rate),
                Mode::DeleteOnAck => {
                    delete.push(rate);
                    delete_on_ack_left = left;
                }
            }
        }
    }
    let (scheduled_per_sec, promoted_per_sec) = delayed(s, keys, admin).await?;
    let trim = trimmer(s, keys, admin).await?;
    Ok(FeaturesRow {
        server,
        messages,
        concurrency: CONCURRENCY,
        plain: best(&plain),
        dedupe: best(&dedupe),
        delete_on_ack: best(&delete),
        plain_runs: plain,
        dedupe_runs: dedupe,
        delete_on_ack_runs: delete,
        delete_on_ack_left,
        scheduled_per_sec,
        promoted_per_sec,
        trim_secs: trim.secs,
        trim_redis_cpu_secs: trim.cpu_secs,
        idle_trimmer_cpu_ms_per_s: trim.idle_ms_per_s,
        idle_baseline_cpu_ms_per_s: trim.baseline_ms_per_s,
    })
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Plain,
    Dedupe,
    DeleteOnAck,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Dedupe => "dedupe",
            Mode::DeleteOnAck => "delete-on-ack",
        }
    }

    fn configure(self, consumer: Consumer) -> Consumer {
        match self {
            Mode::Plain => consumer,
            Mode::Dedupe => consumer.dedupe(Duration::from_secs(24 * 3600)),
            Mode::DeleteOnAck => consumer.delete_on_ack(true),
        }
    }
}

/// Drains `stream` with a fresh group configured for `mode`; msg/s from the start to the last
/// handled message.
async fn drain(s: &Settings, stream: &str, group: &str, target: u64, mode: Mode) -> Result<f64> {
    let tally = Arc::new(Tally::default());
    let consumer = streamx_side::consumer::<Event>(stream, group, CONCURRENCY, Work::None, tally.clone(), target);
    let started = Instant::now();
    let running = streamx_side::start(&s.url, mode.configure(consumer)).await?;
    let finished = streamx_side::wait_for(&tally, target, started + Duration::from_secs(600)).await;
    running.shutdown().await?;
    let at = finished.with_context(|| format!("{}: the drain did not finish", mode.name()))?;
    Ok(target as f64 / (at - started).as_secs_f64())
}

/// Schedules [`DELAYED`] messages due at once, then times one runtime promoting and handling
/// them: (scheduled/s, promoted and handled/s).
async fn delayed(s: &Settings, keys: &Keys, admin: &Client) -> Result<(f64, f64)> {
    use futures_util::StreamExt;
    let stream = keys.stream("delayed");
    let producer = Producer::connect(&s.url).await?;
    let due = SystemTime::now();
    let payloads = events(0, DELAYED);
    let started = Instant::now();
    let scheduled: Vec<_> = futures_util::stream::iter(payloads.iter().map(|e| producer.publish_at(&stream, e, due)))
        .buffer_unordered(64)
        .collect()
        .await;
    let scheduling = started.elapsed();
    if let Some(Err(e)) = scheduled.into_iter().find(Result::is_err) {
        return Err(e.into());
    }
    let tally = Arc::new(Tally::default());
    let consumer = streamx_side::consumer::<Event>(
        &stream,
        &keys.group("delayed"),
        CONCURRENCY,
        Work::None,
        tally.clone(),
        DELAYED,
    );
    let started = Instant::now();
    let running = streamx_side::start(&s.url, consumer).await?;
    let finished = streamx_side::wait_for(&tally, DELAYED, started + Duration::from_secs(600)).await;
    running.shutdown().await?;
    producer.close().await;
    raw::delete_matching(admin, &format!("*{stream}*")).await?;
    let at = finished.context("the delayed messages were not all promoted")?;
    let (scheduled, promoted) =
        (DELAYED as f64 / scheduling.as_secs_f64(), DELAYED as f64 / (at - started).as_secs_f64());
    note(&format!("   delayed: {scheduled:.0} scheduled/s, {promoted:.0} promoted and handled/s"));
    Ok((scheduled, promoted))
}

struct TrimFigures {
    secs: f64,
    cpu_secs: f64,
    idle_ms_per_s: f64,
    baseline_ms_per_s: f64,
}

/// The trimmer on a [`TRIMMED_STREAM`]-entry stream: its Redis CPU while a group still needs
/// every entry (nothing may go; against the same runtime without retention), then the time
/// and Redis CPU to trim the stream to [`KEEP`] once every group has read it.
async fn trimmer(s: &Settings, keys: &Keys, admin: &Client) -> Result<TrimFigures> {
    let stream = keys.stream("trimmed");
    memory::publish_backlog(admin, &stream, TRIMMED_STREAM, "backlog for the trimmer").await?;
    // A group that has read nothing holds every entry; the consumers run in another group,
    // created at the end of the stream, so they read nothing either.
    xgroup_create(admin, &stream, "holder", "0").await?;
    let tally = Arc::new(Tally::default());
    let idle = |retention: bool| {
        let consumer = streamx_side::consumer::<Event>(&stream, "reader", 1, Work::None, tally.clone(), u64::MAX);
        if retention {
            consumer.retention(Retention::new().max_len(KEEP))
        } else {
            consumer
        }
    };
    xgroup_create(admin, &stream, "reader", "$").await?;
    let mut per_second = [0.0; 2];
    for (i, retention) in [false, true].into_iter().enumerate() {
        let running = streamx_side::start(&s.url, idle(retention)).await?;
        let before = redis_stats::sample(admin).await?;
        tokio::time::sleep(IDLE_SAMPLE).await;
        let after = redis_stats::sample(admin).await?;
        running.shutdown().await?;
        per_second[i] = after.cpu_secs_since(&before) * 1000.0 / (after.at - before.at).as_secs_f64();
    }
    let left: u64 = admin.xlen(&stream).await?;
    anyhow::ensure!(left == TRIMMED_STREAM, "the trimmer removed entries a group had not read: {left} left");
    // Now the holder has read (and acknowledged) everything: all but `KEEP` may go.
    let _: () = admin
        .custom(
            CustomCommand::new_static("XGROUP", ClusterHash::FirstKey, false),
            vec!["SETID", &stream, "holder", "$"],
        )
        .await?;
    let running = streamx_side::start(&s.url, idle(true)).await?;
    let (started, before) = (Instant::now(), redis_stats::sample(admin).await?);
    let limit = started + Duration::from_secs(300);
    loop {
        let len: u64 = admin.xlen(&stream).await?;
        if len <= KEEP * 2 || Instant::now() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (secs, after) = (started.elapsed().as_secs_f64(), redis_stats::sample(admin).await?);
    running.shutdown().await?;
    let len: u64 = admin.xlen(&stream).await?;
    raw::delete_matching(admin, &format!("*{stream}*")).await?;
    anyhow::ensure!(len <= KEEP * 2, "the trimmer left {len} entries of {TRIMMED_STREAM} after {secs:.0} s");
    let figures = TrimFigures {
        secs,
        cpu_secs: after.cpu_secs_since(&before),
        idle_ms_per_s: per_second[1],
        baseline_ms_per_s: per_second[0],
    };
    note(&format!(
        "   trimmer: {TRIMMED_STREAM} -> {len} entries in {:.2} s, {:.2} s Redis CPU; idle {:.2} ms/s Redis CPU \
         ({:.2} ms/s without retention)",
        figures.secs, figures.cpu_secs, figures.idle_ms_per_s, figures.baseline_ms_per_s
    ));
    Ok(figures)
}

async fn xgroup_create(admin: &Client, stream: &str, group: &str, at: &str) -> Result<()> {
    let _: () = admin
        .custom(CustomCommand::new_static("XGROUP", ClusterHash::FirstKey, false), vec!["CREATE", stream, group, at])
        .await
        .with_context(|| format!("XGROUP CREATE {stream} {group} {at}"))?;
    Ok(())
}

/// `redis 8.2.3`, `valkey 8.1.8`.
pub(crate) async fn server_version(admin: &Client) -> Result<String> {
    let info: String =
        admin.custom(CustomCommand::new_static("INFO", ClusterHash::Random, false), vec!["server"]).await?;
    let field =
        |name: &str| info.lines().find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':').map(str::to_string));
    Ok(match field("valkey_version") {
        Some(v) => format!("valkey {v}"),
        None => format!("redis {}", field("redis_version").unwrap_or_default()),
    })
}
