//! Run with: `cargo run --example analytics` (the aggregator; needs Redis on
//! 127.0.0.1:6379, or set `STREAMX_REDIS_URL`), then in another terminal
//! `cargo run --example analytics -- publish` (20,000 page views over the last 10 minutes).
//! Ctrl-C prints the views per minute and page; `-- cleanup` deletes the recipe's keys
//! (20,000 entries a run are not worth keeping). `redis-cli XREVRANGE analytics.reports + -
//! COUNT 1` shows the latest report.
//!
//! Windowed aggregation with a batch handler: page views counted per page and per minute by
//! a consumer that writes each batch to the store in one go.
//!
//! - The handler takes `Vec<Message<PageView>>`: up to `max_batch` views per call, so the
//!   store gets one write per batch instead of one per view.
//! - A view without a page is bad data: only it is dead-lettered (`BatchOutcome::fail` with
//!   a permanent error); the rest of its batch is counted.
//! - Delivery is at-least-once, so the store remembers which views it counted (by message
//!   id) and counts a redelivered one only once.
//! - A periodic job (`#[periodic]`) publishes the store's totals to `analytics.reports` every
//!   10 seconds: one report per tick however many workers run, each with the tick in its
//!   `streamx-periodic-tick` header, for a dashboard or an alert to consume.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use fred::interfaces::KeysInterface;
use streamx::prelude::*;
use streamx::BatchOutcome;
use streamx_examples::{delete_stream_keys, exit, init_logging, subcommand, RecipeError};

const PAGE_VIEWS: &str = "analytics.page_views";
const REPORTS: &str = "analytics.reports";
const REPORT_JOB: &str = "analytics-report";

/// One page view, as a web front end would publish it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PageView {
    /// The page, e.g. `/pricing`.
    page: String,
    /// When the view happened, Unix milliseconds.
    at_ms: u64,
}

/// One aggregation window: the minute (its start, Unix milliseconds) and the page.
type Window = (u64, String);

/// The start of the minute `at_ms` falls in.
fn minute_of(at_ms: u64) -> u64 {
    at_ms - at_ms % 60_000
}

/// The aggregate store: views per page per minute. A stand-in for the table an analytics
/// service would upsert into; the handler gets it from the application state.
#[derive(Default)]
struct Store(Mutex<Tables>);

#[derive(Default)]
struct Tables {
    counts: BTreeMap<Window, u64>,
    counted: HashSet<MessageId>,
    writes: u64,
}

impl Store {
    /// Adds a batch's counts in one write, skipping views it already counted; the total.
    fn write(&self, views: Vec<(MessageId, Window)>) -> u64 {
        let mut tables = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tables.writes += 1;
        for (id, window) in views {
            if tables.counted.insert(id) {
                *tables.counts.entry(window).or_insert(0) += 1;
            }
        }
        tables.counted.len() as u64
    }

    /// The totals so far: views counted, and per minute.
    fn report(&self, tick_ms: u64) -> Report {
        let tables = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut per_minute: BTreeMap<u64, u64> = BTreeMap::new();
        for ((minute, _), n) in &tables.counts {
            *per_minute.entry(*minute).or_insert(0) += n;
        }
        Report { tick_ms, counted: tables.counted.len() as u64, writes: tables.writes, per_minute }
    }

    /// Prints the counts per minute.
    fn print(&self) {
        let tables = self.0.lock().unwrap_or_else(|e| e.into_inner());
        println!("counted {} views in {} store writes; views per minute:", tables.counted.len(), tables.writes);
        let mut minutes: Vec<u64> = tables.counts.keys().map(|(minute, _)| *minute).collect();
        minutes.dedup();
        for minute in minutes {
            let row: Vec<String> =
                tables.counts.iter().filter(|((m, _), _)| *m == minute).map(|((_, p), n)| format!("{p} {n}")).collect();
            let of_day = minute / 60_000 % (24 * 60);
            println!("  {:02}:{:02} UTC  {}", of_day / 60, of_day % 60, row.join(", "));
        }
    }
}

/// What the periodic job publishes: the store's totals at a tick.
#[derive(Debug, serde::Serialize)]
struct Report {
    tick_ms: u64,
    counted: u64,
    writes: u64,
    /// Views per minute (the minute's start, Unix ms).
    per_minute: BTreeMap<u64, u64>,
}

/// Every 10 seconds, the totals so far to `analytics.reports`: published once per tick across
/// every worker running the recipe (the state key `{analytics.reports}:periodic:analytics-report`
/// holds the last tick published).
#[periodic(cron = "*/10 * * * * *", stream = "analytics.reports", name = "analytics-report")]
async fn report(tick: Tick) -> Result<Report, String> {
    let store = tick.state::<Arc<Store>>().ok_or("the runtime was built without the analytics `Store` state")?;
    Ok(store.report(tick.unix_ms()))
}

/// Counts a batch of views per minute and page, in one write.
#[stream_consumer(
    stream = "analytics.page_views",
    group = "per-minute",
    name = "per-minute",
    concurrency = 2,
    max_batch = 500,
    batch_wait = "100ms"
)]
async fn count_views(batch: Vec<Message<PageView>>) -> Result<BatchOutcome, HandlerError> {
    let Some(store) = batch.first().and_then(|msg| msg.state::<Arc<Store>>()) else {
        return Err(HandlerError::from("the runtime was built without the analytics `Store` state"));
    };
    let mut outcome = BatchOutcome::new();
    let mut views = Vec::with_capacity(batch.len());
    for msg in &batch {
        let view = msg.payload();
        if view.page.is_empty() {
            outcome.fail(msg.id(), HandlerError::permanent("a page view without a page"));
        } else {
            views.push((msg.id(), (minute_of(view.at_ms), view.page.clone())));
        }
    }
    let (good, bad) = (views.len(), batch.len() - views.len());
    let total = store.write(views);
    println!(
        "per-minute: a batch of {}: {good} counted in one write, {bad} without a page; {total} so far",
        batch.len()
    );
    Ok(outcome)
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let (command, _) = subcommand("worker");
    let result = match command.as_str() {
        "worker" => worker().await,
        "publish" => publish().await,
        "cleanup" => cleanup().await,
        other => Err(RecipeError::Usage(format!("unknown command `{other}`: worker, publish or cleanup"))),
    };
    exit("analytics", result)
}

/// Deletes the recipe's streams, their streamx keys and the report job's state.
async fn cleanup() -> Result<(), RecipeError> {
    delete_stream_keys(&[(PAGE_VIEWS, &["per-minute"]), (REPORTS, &[])]).await?;
    let producer = Producer::from_env().await?;
    let state = streamx::keys::periodic_state(REPORTS, REPORT_JOB);
    let deleted: u64 = producer
        .client()
        .del(&state)
        .await
        .map_err(|source| RecipeError::Redis { what: format!("deleting `{state}`"), source })?;
    producer.close().await;
    println!("deleted the report job's state ({deleted} key(s))");
    Ok(())
}

/// Aggregates until Ctrl-C or SIGTERM, then prints the counts.
async fn worker() -> Result<(), RecipeError> {
    let store = Arc::new(Store::default());
    let runtime = streamx::Runtime::builder().state(store.clone()).build()?;
    println!(
        "analytics: counting `{PAGE_VIEWS}` on {}, reporting to `{REPORTS}` every 10 s; Ctrl-C to stop",
        runtime.url()
    );
    runtime.run().await?;
    store.print();
    Ok(())
}

/// Publishes 20,000 views over the 10 minutes before this one, on a few pages; every 997th
/// has no page (bad data).
async fn publish() -> Result<(), RecipeError> {
    const VIEWS: u64 = 20_000;
    const PAGES: [&str; 4] = ["/", "/pricing", "/docs", "/blog"];
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let (start, span) = (minute_of(now_ms) - 10 * 60_000, 10 * 60_000);
    let views: Vec<PageView> = (0..VIEWS)
        .map(|i| PageView {
            page: if i % 997 == 996 { String::new() } else { PAGES[(i * 7 % 11) as usize % PAGES.len()].to_string() },
            at_ms: start + i * span / VIEWS,
        })
        .collect();
    let producer = Producer::from_env().await?;
    producer.publish_batch(PAGE_VIEWS, &views).await?;
    let bad = views.iter().filter(|v| v.page.is_empty()).count();
    println!("published {VIEWS} page views to `{PAGE_VIEWS}`: {} with a page, {bad} without", views.len() - bad);
    Ok(())
}
