//! A worker process as a user would write it: consumers declared with
//! `#[stream_consumer]`, `main` calling the runtime. The integration tests start it as a
//! separate process (several at once, killing it, restarting it).
//!
//! Run with: `STREAMX_REDIS_URL=redis://127.0.0.1:6379 cargo run -p streamx-test-app --bin worker`
//!
//! Environment: `STREAMX_REDIS_URL`; `WORKER_ONLY` (comma-separated registration names to
//! run, default all); `WORKER_SHUTDOWN_TIMEOUT_MS`.
//!
//! Every handler records what it did by publishing a [`Handled`] record to the stream
//! `app.handled` before it returns, so tests can account for every message id.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamx::prelude::*;

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
    let producer = Producer::connect_with(&streamx::RedisUrl::from_env()?).await?;
    let runtime = builder.state(producer).build()?;
    eprintln!("worker {} ready", std::process::id());
    runtime.run().await
}
