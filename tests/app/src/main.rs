//! A worker process as a user would write it: consumers declared with
//! `#[stream_consumer]`, `main` calling the runtime. The integration tests start it as a
//! separate process (several at once, killing it, restarting it).
//!
//! Run with: `STREAMX_REDIS_URL=redis://127.0.0.1:6379 cargo run -p streamx-test-app --bin worker`
//!
//! Environment: `STREAMX_REDIS_URL`; `WORKER_ONLY` (comma-separated registration names to
//! run, default all); `WORKER_SHUTDOWN_TIMEOUT_MS`; `CHAOS_JOURNAL_DIR` (where the chaos
//! consumers note the log writes that failed, one file per process); `WORKER_SLEEP_FACTOR`
//! (multiplies the sleep of the topic consumer's steps); `WORKER_PERIODIC_FAIL` (the periodic
//! job `ticks` fails at every tick in this process); `WORKER_PERIODIC_CRON` (adds the periodic
//! job `window`, by the builder, on this schedule).
//!
//! The periodic jobs (`ticks`, `ticks_caught_up`, `window`) publish a [`TickReport`] every
//! second (see `tests/periodic.rs`).
//!
//! Every handler records what it did by publishing a [`Handled`] record to the stream
//! `app.handled` before it returns, so tests can account for every message id. The chaos
//! consumers (`chaos_r1`, `chaos`, `chaos_r3`: `max_retries` 1, 2 and 3) instead log the
//! start and the end of every attempt to `app.chaos.log`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx::PeriodicJob;

/// What a test asks a job's handler to do.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    /// Succeed at once.
    Ok,
    /// Sleep this many milliseconds, then succeed.
    Sleep(u64),
    /// Fail on the first N deliveries, then succeed.
    FailTimes(u32),
    /// Abort the whole process (a crash) on every delivery.
    Abort,
    /// Panic on every delivery.
    Panic,
}

/// A job published by the tests.
#[derive(Debug, Deserialize, Serialize)]
struct Job {
    n: u64,
    action: Action,
}

/// What a handler records in `app.handled`.
#[derive(Debug, Serialize)]
struct Handled<'a> {
    consumer: &'a str,
    id: String,
    n: u64,
    attempt: u32,
    pid: u32,
}

async fn record(consumer: &str, msg: &Message<Job>) -> Result<(), HandlerError> {
    // The producer comes from the runtime's state (see `main`): no globals.
    let producer = msg.state::<Producer>().ok_or("no producer in the runtime state")?;
    let record = Handled {
        consumer,
        id: msg.id().to_string(),
        n: msg.payload().n,
        attempt: msg.attempt(),
        pid: std::process::id(),
    };
    producer.publish("app.handled", &record).await?;
    Ok(())
}

async fn perform(consumer: &str, msg: Message<Job>) -> Result<(), HandlerError> {
    match &msg.payload().action {
        Action::Ok => {}
        Action::Sleep(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        Action::FailTimes(n) if msg.attempt() <= *n => {
            return Err(format!("failing on purpose (attempt {} of {n} failures)", msg.attempt()).into())
        }
        Action::FailTimes(_) => {}
        Action::Abort => std::process::abort(),
        Action::Panic => panic!("panicking on purpose"),
    }
    record(consumer, &msg).await
}

/// The main job consumer: 16 at once, fast take-over and retries so tests run quickly.
#[stream_consumer(
    stream = "app.jobs",
    group = "workers",
    name = "jobs",
    concurrency = 16,
    claim_idle = "1s",
    max_retries = 2,
    backoff(initial = "200ms", multiplier = 2.0, max = "1s")
)]
async fn jobs(msg: Message<Job>) -> Result<(), HandlerError> {
    perform("jobs", msg).await
}

/// A second group on the same stream: sees every message too.
#[stream_consumer(stream = "app.jobs", group = "audit", name = "audit", concurrency = 4, start = "begin")]
async fn audit(msg: Message<Job>) -> Result<(), HandlerError> {
    record("audit", &msg).await
}

/// The middleware consumer (`tests/middleware.rs`): its attribute names an async fn and a
/// const of a type implementing `Middleware`. `tenant_required` dead-letters a job without a
/// `tenant` header; `STAMP` adds the header `stamped` that the handler checks.
#[stream_consumer(
    stream = "app.guarded",
    group = "guards",
    name = "guarded",
    start = "begin",
    middleware = [tenant_required, layers::STAMP]
)]
async fn guarded(msg: Message<Job>) -> Result<(), HandlerError> {
    if msg.headers().get("stamped") != Some("yes") {
        return Err(HandlerError::permanent("the STAMP layer did not run before the handler"));
    }
    record("guarded", &msg).await
}

/// Dead-letters a message without a `tenant` header, without running the handler.
async fn tenant_required(delivery: streamx::Delivery, next: streamx::Next) -> streamx::Outcome {
    if delivery.headers().get("tenant").is_none() {
        return streamx::Outcome::dead_letter("no tenant header");
    }
    next.run(delivery).await
}

mod layers {
    use streamx::{BoxFuture, Delivery, Middleware, Next, Outcome};

    /// Adds `stamped: yes` to what the handler sees.
    pub struct Stamp;

    pub const STAMP: Stamp = Stamp;

    impl Middleware for Stamp {
        fn call(&self, mut delivery: Delivery, next: Next) -> BoxFuture<'static, Outcome> {
            delivery.headers_mut().insert("stamped", "yes");
            Box::pin(next.run(delivery))
        }
    }
}

/// A consumer for the pause tests (`tests/pause.rs`): records each handler *start* in
/// `app.pause.starts` (the entry id of that record is the Redis time just after the start),
/// then does the job like `jobs`.
#[stream_consumer(stream = "app.pausable", group = "pausers", name = "pausable", concurrency = 8, claim_idle = "1s")]
async fn pausable(msg: Message<Job>) -> Result<(), HandlerError> {
    let producer = msg.state::<Producer>().ok_or("no producer in the runtime state")?;
    let start = Handled {
        consumer: "pausable",
        id: msg.id().to_string(),
        n: msg.payload().n,
        attempt: msg.attempt(),
        pid: std::process::id(),
    };
    producer.publish("app.pause.starts", &start).await?;
    perform("pausable", msg).await
}

/// A handler start of the rate-limited consumer (`tests/rate_limit.rs`), in
/// `app.limited.starts`: the wall clock (µs since the Unix epoch) read first thing in the
/// handler; every worker runs on the test's machine, so one clock.
#[derive(Debug, Serialize)]
struct Started {
    id: String,
    n: u64,
    attempt: u32,
    pid: u32,
    at_us: u64,
}

/// A consumer for the rate-limit tests (`tests/rate_limit.rs`): at most 100 handler starts a
/// second for the whole group; records each start, then does the job like `jobs`.
#[stream_consumer(
    stream = "app.limited",
    group = "limiters",
    name = "limited",
    concurrency = 8,
    claim_idle = "1s",
    rate_limit = "100/s",
    backoff(initial = "100ms", multiplier = 1.0, max = "100ms")
)]
async fn limited(msg: Message<Job>) -> Result<(), HandlerError> {
    let at_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let producer = msg.state::<Producer>().ok_or("no producer in the runtime state")?;
    let start = Started {
        id: msg.id().to_string(),
        n: msg.payload().n,
        attempt: msg.attempt(),
        pid: std::process::id(),
        at_us,
    };
    producer.publish("app.limited.starts", &start).await?;
    perform("limited", msg).await
}

/// What a chaos job's handler does on each attempt (see `tests/chaos.rs`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Behaviour {
    /// Succeed.
    Ok,
    /// Fail (retryably) on attempts up to this number, then succeed.
    FailUntil(u32),
    /// Fail with [`HandlerError::permanent`].
    Permanent,
    /// Panic on every attempt.
    Panic,
}

/// A job published by the chaos test.
#[derive(Debug, Deserialize)]
struct ChaosJob {
    n: u64,
    behaviour: Behaviour,
    /// How long the attempt works, between its start and its end record.
    sleep_ms: u64,
}

/// How an attempt of a chaos job ended, as its end record says.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum ChaosOutcome {
    Ok,
    Fail,
    Permanent,
    Panic,
}

/// One record in `app.chaos.log`: the start or the end of one attempt.
#[derive(Debug, Serialize)]
struct ChaosRecord<'a> {
    id: String,
    n: u64,
    attempt: u32,
    pid: u32,
    /// Numbers the attempts this process ran, so a start and an end pair up exactly.
    run: u64,
    phase: &'a str,
    outcome: Option<ChaosOutcome>,
}

/// State of the `chaos` consumer (runtime state, no globals).
struct ChaosState {
    runs: AtomicU64,
    journal: Option<PathBuf>,
}

impl ChaosState {
    fn from_env() -> Self {
        let journal = std::env::var_os("CHAOS_JOURNAL_DIR")
            .map(|dir| PathBuf::from(dir).join(format!("{}.journal", std::process::id())));
        ChaosState { runs: AtomicU64::new(0), journal }
    }

    /// Notes, in this process's journal file, that the `phase` record of attempt `run`
    /// could not be written (its XADD failed, so it may or may not be in the log). Best
    /// effort: a process killed while writing it was killed during the attempt anyway.
    fn note_log_failure(&self, run: u64, msg: &Message<ChaosJob>, phase: &str, error: &streamx::Error) {
        let Some(path) = &self.journal else { return };
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let line = format!(
            "{run}\t{}\t{}\t{phase}\t{at}\t{}\n",
            msg.id(),
            msg.attempt(),
            error.to_string().replace('\n', " ")
        );
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("worker: cannot write the chaos journal {}: {e}", path.display());
        }
    }
}

/// The chaos test's consumers, one per `max_retries` it runs with, each on its own stream
/// (otherwise the same: 16 at once, `claim_idle` 1 s, short backoff). Every attempt logs its
/// start, works a little, logs its end with the outcome its job asks for, then returns that
/// outcome. An attempt whose log write fails returns a retryable error instead (it never
/// succeeds unlogged) and notes the failure in its process's journal.
#[stream_consumer(
    stream = "app.chaos",
    group = "chaos",
    name = "chaos",
    concurrency = 16,
    claim_idle = "1s",
    max_retries = 2,
    backoff(initial = "50ms", multiplier = 2.0, max = "200ms")
)]
async fn chaos(msg: Message<ChaosJob>) -> Result<(), HandlerError> {
    chaos_attempt(msg).await
}

/// [`chaos`] with `max_retries = 1`.
#[stream_consumer(
    stream = "app.chaos.r1",
    group = "chaos",
    name = "chaos_r1",
    concurrency = 16,
    claim_idle = "1s",
    max_retries = 1,
    backoff(initial = "50ms", multiplier = 2.0, max = "200ms")
)]
async fn chaos_r1(msg: Message<ChaosJob>) -> Result<(), HandlerError> {
    chaos_attempt(msg).await
}

/// [`chaos`] with `max_retries = 3`.
#[stream_consumer(
    stream = "app.chaos.r3",
    group = "chaos",
    name = "chaos_r3",
    concurrency = 16,
    claim_idle = "1s",
    max_retries = 3,
    backoff(initial = "50ms", multiplier = 2.0, max = "200ms")
)]
async fn chaos_r3(msg: Message<ChaosJob>) -> Result<(), HandlerError> {
    chaos_attempt(msg).await
}

/// One attempt of a chaos job (see [`chaos`]).
async fn chaos_attempt(msg: Message<ChaosJob>) -> Result<(), HandlerError> {
    let producer = msg.state::<Producer>().ok_or("no producer in the runtime state")?;
    let state = msg.state::<ChaosState>().ok_or("no chaos state in the runtime state")?;
    let run = state.runs.fetch_add(1, Ordering::Relaxed);
    let job = msg.payload();
    let record = |phase, outcome| ChaosRecord {
        id: msg.id().to_string(),
        n: job.n,
        attempt: msg.attempt(),
        pid: std::process::id(),
        run,
        phase,
        outcome,
    };
    if let Err(e) = producer.publish(CHAOS_LOG, &record("start", None)).await {
        state.note_log_failure(run, &msg, "start", &e);
        return Err(format!("cannot log the start of the attempt: {e}").into());
    }
    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    let outcome = match job.behaviour {
        Behaviour::Ok => ChaosOutcome::Ok,
        Behaviour::FailUntil(n) if msg.attempt() <= n => ChaosOutcome::Fail,
        Behaviour::FailUntil(_) => ChaosOutcome::Ok,
        Behaviour::Permanent => ChaosOutcome::Permanent,
        Behaviour::Panic => ChaosOutcome::Panic,
    };
    if let Err(e) = producer.publish(CHAOS_LOG, &record("end", Some(outcome))).await {
        state.note_log_failure(run, &msg, "end", &e);
        return Err(format!("cannot log the end of the attempt: {e}").into());
    }
    match outcome {
        ChaosOutcome::Ok => Ok(()),
        ChaosOutcome::Fail => Err(format!("failing on purpose (attempt {})", msg.attempt()).into()),
        ChaosOutcome::Permanent => Err(HandlerError::permanent("rejected on purpose")),
        ChaosOutcome::Panic => panic!("panicking on purpose (attempt {})", msg.attempt()),
    }
}

/// A message of the topic test (see `tests/topic_processes.rs`): one step `seq` of the
/// sequence of `key`.
#[derive(Debug, Deserialize)]
struct Step {
    key: String,
    seq: u64,
    /// How long the handler works.
    #[serde(default)]
    sleep_ms: u64,
    /// Fail (retryably) on the first this many attempts.
    #[serde(default)]
    fail: u32,
    /// Fail permanently (dead-lettered at once).
    #[serde(default)]
    permanent: bool,
}

/// One record in `app.topic.log`: the start or the end of a handler run of a [`Step`].
#[derive(Debug, Serialize)]
struct StepRecord<'a> {
    key: &'a str,
    seq: u64,
    id: String,
    stream: &'a str,
    pid: u32,
    attempt: u32,
    phase: &'a str,
    ok: bool,
}

async fn log_step(msg: &Message<Step>, phase: &str, ok: bool) -> Result<(), HandlerError> {
    let producer = msg.state::<Producer>().ok_or("no producer in the runtime state")?;
    let step = msg.payload();
    let record = StepRecord {
        key: &step.key,
        seq: step.seq,
        id: msg.id().to_string(),
        stream: msg.stream(),
        pid: std::process::id(),
        attempt: msg.attempt(),
        phase,
        ok,
    };
    producer.publish(TOPIC_LOG, &record).await?;
    Ok(())
}

/// A 16-shard topic, handled in per-key order, with a short lease so tests see shards move
/// quickly. Each run logs its start and end in `app.topic.log`.
#[stream_consumer(
    topic = "app.orders",
    shards = 16,
    group = "shipping",
    name = "orders",
    concurrency = 8,
    claim_idle = "2s",
    max_retries = 3,
    backoff(initial = "20ms", multiplier = 2.0, max = "100ms")
)]
async fn orders(msg: Message<Step>) -> Result<(), HandlerError> {
    log_step(&msg, "start", true).await?;
    let step = msg.payload();
    if step.sleep_ms > 0 {
        // `WORKER_SLEEP_FACTOR` stretches this process's runs (a test's second process
        // runs its copies longer than the first).
        let factor: u64 = std::env::var("WORKER_SLEEP_FACTOR").ok().and_then(|f| f.parse().ok()).unwrap_or(1);
        tokio::time::sleep(Duration::from_millis(step.sleep_ms.saturating_mul(factor))).await;
    }
    let fails = step.permanent || msg.attempt() <= step.fail;
    log_step(&msg, "end", !fails).await?;
    if step.permanent {
        return Err(HandlerError::permanent("failing for good on purpose"));
    }
    if fails {
        return Err(format!("failing on purpose (attempt {})", msg.attempt()).into());
    }
    Ok(())
}

/// What the periodic jobs publish: the tick, and which process computed it.
#[derive(Debug, Serialize)]
struct TickReport {
    tick_ms: u64,
    pid: u32,
}

fn tick_report(tick: Tick) -> TickReport {
    TickReport { tick_ms: tick.unix_ms(), pid: std::process::id() }
}

/// Every second, missed ticks skipped; fails at every tick where `WORKER_PERIODIC_FAIL` is set.
#[periodic(cron = "* * * * * *", stream = "app.ticks", name = "ticks")]
async fn ticks(tick: Tick) -> Result<TickReport, String> {
    if std::env::var_os("WORKER_PERIODIC_FAIL").is_some() {
        return Err(format!("failing tick {} on purpose", tick.unix_ms()));
    }
    Ok(tick_report(tick))
}

/// Every second, missed ticks caught up.
#[periodic(cron = "* * * * * *", stream = "app.ticks.caught_up", name = "ticks_caught_up", catch_up = true)]
async fn ticks_caught_up(tick: Tick) -> TickReport {
    tick_report(tick)
}

/// Where the topic consumer logs its runs.
const TOPIC_LOG: &str = "app.topic.log";

/// Where the chaos consumers log their attempts.
const CHAOS_LOG: &str = "app.chaos.log";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), streamx::Error> {
    let mut builder = streamx::Runtime::builder().connect_timeout(Duration::ZERO);
    if let Ok(only) = std::env::var("WORKER_ONLY") {
        builder = builder.only(only.split(',').map(str::trim).filter(|s| !s.is_empty()));
    }
    if let Some(ms) = std::env::var("WORKER_SHUTDOWN_TIMEOUT_MS").ok().and_then(|v| v.parse().ok()) {
        builder = builder.shutdown_timeout(Duration::from_millis(ms));
    }
    if let Ok(cron) = std::env::var("WORKER_PERIODIC_CRON") {
        let window = PeriodicJob::new("window", cron, "app.window", |tick: Tick| async move { tick_report(tick) });
        builder = builder.periodic(window);
    }
    let producer = Producer::connect_with(&streamx::RedisUrl::from_env()?).await?;
    let runtime = builder.state(producer).state(ChaosState::from_env()).build()?;
    eprintln!("worker {} ready", std::process::id());
    runtime.run().await
}
