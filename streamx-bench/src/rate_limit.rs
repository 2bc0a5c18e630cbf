//! Issue 27's rate-limit figure: what a rate limit that never binds costs, in one run. The
//! same backlog drained at concurrency 8 by a consumer without a limit and by one with
//! `rate_limit` 10,000,000/s, alternating which goes first per repeat; the ratio is limited /
//! unlimited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use fred::clients::Client;
use serde::Serialize;
use streamx::{Producer, RateLimit};

use crate::args::Settings;
use crate::progress::note;
use crate::raw;
use crate::report::best;
use crate::streamx_side::{self, Tally, Work};
use crate::workload::{events, Event, Keys};

/// Handler concurrency of the drains.
const CONCURRENCY: usize = 8;

/// A limit that never binds at these rates.
const NEVER_BINDS: RateLimit = RateLimit::per_second(10_000_000);

#[derive(Debug, Clone, Serialize)]
pub struct RateLimitRow {
    pub messages: u64,
    pub concurrency: usize,
    /// Drain msg/s, best run; every run.
    pub unlimited: f64,
    pub limited: f64,
    pub unlimited_runs: Vec<f64>,
    pub limited_runs: Vec<f64>,
}

pub async fn run(s: &Settings, keys: &Keys, admin: &Client) -> Result<RateLimitRow> {
    let messages = s.messages.min(100_000);
    note(&format!(
        "== rate-limit: {messages} events drained at concurrency {CONCURRENCY}, without a limit and with \
         {NEVER_BINDS} (never binds), best of {}",
        s.repeat
    ));
    let payloads = events(0, messages);
    let producer = Producer::connect(&s.url).await?;
    let (mut unlimited, mut limited) = (Vec::new(), Vec::new());
    for r in 0..s.repeat {
        let order = if r % 2 == 0 { [false, true] } else { [true, false] };
        for with_limit in order {
            let name = if with_limit { "limited" } else { "unlimited" };
            let stream = keys.stream(&format!("rate-{name}"));
            producer.publish_batch(&stream, &payloads).await?;
            let rate = drain(s, &stream, &keys.group(&format!("rate-{name}")), messages, with_limit).await;
            raw::delete(
                admin,
                vec![stream.clone(), streamx::keys::rate_limit(&stream, &keys.group(&format!("rate-{name}")))],
            )
            .await?;
            let rate = rate?;
            note(&format!("   {name} run {}: consume {rate:.0} msg/s", r + 1));
            if with_limit {
                limited.push(rate)
            } else {
                unlimited.push(rate)
            }
        }
    }
    producer.close().await;
    Ok(RateLimitRow {
        messages,
        concurrency: CONCURRENCY,
        unlimited: best(&unlimited),
        limited: best(&limited),
        unlimited_runs: unlimited,
        limited_runs: limited,
    })
}

/// Drains `stream` with a fresh group; msg/s from the start to the last handled message.
async fn drain(s: &Settings, stream: &str, group: &str, target: u64, with_limit: bool) -> Result<f64> {
    let tally = Arc::new(Tally::default());
    let mut consumer = streamx_side::consumer::<Event>(stream, group, CONCURRENCY, Work::None, tally.clone(), target);
    if with_limit {
        consumer = consumer.rate_limit(NEVER_BINDS);
    }
    let started = Instant::now();
    let running = streamx_side::start(&s.url, consumer).await?;
    let finished = streamx_side::wait_for(&tally, target, started + Duration::from_secs(600)).await;
    running.shutdown().await?;
    let at = finished.ok_or_else(|| anyhow::anyhow!("{stream}: the drain did not finish"))?;
    Ok(target as f64 / (at - started).as_secs_f64())
}
