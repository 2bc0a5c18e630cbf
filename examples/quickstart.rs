//! Run with: `cargo run --example quickstart` (needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`).
//!
//! Publishes a batch of orders to a fresh stream, consumes them with a `#[stream_consumer]`
//! (8 at a time, acknowledged after each success), prints what happened, and exits.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use streamx::prelude::*;
use streamx_examples::{init_logging, Order};

static HANDLED: AtomicU64 = AtomicU64::new(0);
static CHARGED_CENTS: AtomicU64 = AtomicU64::new(0);

#[stream_consumer(stream = "quickstart.orders", group = "billing", concurrency = 8)]
async fn charge(msg: Message<Order>) -> Result<(), HandlerError> {
    let order = msg.payload();
    tracing::debug!(order = order.id, attempt = msg.attempt(), "charging");
    CHARGED_CENTS.fetch_add(order.amount_cents as u64, Ordering::Relaxed);
    HANDLED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

const ORDERS: u64 = 1_000;

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), streamx::Error> {
    let runtime = streamx::Runtime::builder().connect_timeout(Duration::ZERO).build()?;
    println!("streamx quickstart against {}", runtime.url());
    let runtime_url = std::env::var(streamx::REDIS_URL_ENV).unwrap_or_else(|_| streamx::DEFAULT_REDIS_URL.to_string());
    let producer = runtime.producer().await?;

    let orders: Vec<Order> = (1..=ORDERS).map(|id| Order { id, amount_cents: (id as i64 % 50) * 100 + 99 }).collect();
    let started = Instant::now();
    let ids = producer.publish_batch("quickstart.orders", &orders).await?;
    println!(
        "published {} orders in one pipelined batch ({:?}); ids {} .. {}",
        ids.len(),
        started.elapsed(),
        ids.first().map(|i| i.to_string()).unwrap_or_default(),
        ids.last().map(|i| i.to_string()).unwrap_or_default()
    );

    let running = runtime.start().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    // The group is new on the first run (it starts at the beginning of the stream) and
    // resumes where it left off afterwards, so each run handles the orders it published.
    while HANDLED.load(Ordering::Relaxed) < ORDERS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.shutdown().await?;
    let handled = HANDLED.load(Ordering::Relaxed);
    println!(
        "handled {handled} orders in {:?} (8 at a time), charged ${:.2} in total",
        started.elapsed(),
        CHARGED_CENTS.load(Ordering::Relaxed) as f64 / 100.0
    );
    if let Ok(inspector) = streamx::Inspector::connect(&runtime_url).await {
        if let Some(g) = inspector.group("quickstart.orders", "billing").await? {
            println!("group `billing`: pending {}, lag {:?}, consumers {}", g.pending, g.lag, g.consumers);
        }
    }
    if handled < ORDERS {
        return Err(streamx::Error::ConsumerFailed {
            consumer: "charge".into(),
            reason: format!("only {handled} of {ORDERS} orders were handled within 60 s"),
        });
    }
    Ok(())
}
