//! Run with: `cargo run --example analytics` (needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`).
//!
//! Windowed aggregation with a batch handler: publishes 20,000 page views spread over ten
//! minutes to a fresh stream, counts them per page and per minute with a consumer that
//! takes up to 500 views per call (one store write per batch), dead-letters the few views
//! without a page, prints the per-minute table and exits. The core is in
//! `recipes/analytics.rs`; its test runs it against a throwaway redis-server.

#[path = "recipes/analytics.rs"]
mod analytics;

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use analytics::{consumer, workload, Store};
use fred::interfaces::KeysInterface;
use streamx::DeadLetters;
use streamx_examples::init_logging;

const VIEWS: u64 = 20_000;
const MINUTES: u64 = 10;

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("analytics failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), streamx::Error> {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    // A fresh stream per run, so each run counts exactly the views it published.
    let stream = format!("analytics.page_views.{now_ms}");
    let store = Store::default();
    let runtime = streamx::Runtime::builder()
        .registered_consumers(false)
        .consumer(consumer(&stream, "per-minute"))
        .state(store.clone())
        .connect_timeout(Duration::ZERO)
        .build()?;
    println!("streamx analytics against {}", runtime.url());
    let producer = runtime.producer().await?;
    let dlq = format!("{{{stream}}}:dlq");
    let (views, expected) = workload(VIEWS, MINUTES, analytics::minute_of(now_ms) - MINUTES * 60_000);
    let valid: u64 = expected.values().sum();
    producer.publish_batch(&stream, &views).await?;
    println!("published {} page views over {MINUTES} minutes to `{stream}`", views.len());

    let started = Instant::now();
    let running = runtime.start().await?;
    let dead_letters = DeadLetters::with_client(producer.client(), &dlq);
    let deadline = started + Duration::from_secs(60);
    while (store.total() < valid || dead_letters.count().await? < VIEWS - valid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await?;

    let counts = store.counts();
    println!(
        "counted {} views in {} store writes ({:?}); views per minute:",
        store.total(),
        store.writes(),
        started.elapsed()
    );
    let mut minutes: Vec<u64> = counts.keys().map(|(minute, _)| *minute).collect();
    minutes.dedup();
    for minute in minutes {
        let row: Vec<String> =
            counts.iter().filter(|((m, _), _)| *m == minute).map(|((_, page), n)| format!("{page} {n}")).collect();
        let of_day = minute / 60_000 % (24 * 60);
        println!("  {:02}:{:02} UTC  {}", of_day / 60, of_day % 60, row.join(", "));
    }
    let rejected = dead_letters.count().await?;
    println!("dead-lettered {rejected} views without a page");
    if counts != expected || rejected != VIEWS - valid {
        return Err(streamx::Error::ConsumerFailed {
            consumer: "analytics".into(),
            reason: format!("counted {} of {valid} views and dead-lettered {rejected} within 60 s", store.total()),
        });
    }
    // The run's streams are not needed any more (the producer's client is a plain fred
    // client, for commands streamx does not wrap).
    let deleted: Result<i64, _> = producer.client().del(vec![stream.clone(), dlq]).await;
    if let Err(e) = deleted {
        eprintln!("cannot delete the run's streams: {e}");
    }
    Ok(())
}
