//! The cost of per-key ordering (`ordered = true`, issue 25): consume throughput of an
//! ordered consumer against the same consumer unordered, on one stream of keyed messages,
//! with 10, 1,000 and 100,000 distinct keys (keys assigned round-robin, so every key's
//! messages are spread over the stream). Same backlog for both sides (each drains it with a
//! fresh group), alternating, best of the repeats; printed as ratios ordered / unordered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::streams::XCap;
use fred::types::{Key, Value};
use serde::Serialize;

use crate::args::Settings;
use crate::progress::note;
use crate::raw::{self, DATA_FIELD};
use crate::report::best;
use crate::streamx_side::{self, Tally, Work};
use crate::workload::{events, Event, Keys};

/// Handler concurrency of both sides.
pub const CONCURRENCY: usize = 32;
/// The distinct keys of the three runs.
pub const KEY_COUNTS: [u64; 3] = [10, 1_000, 100_000];

#[derive(Debug, Clone, Serialize)]
pub struct OrderedRow {
    pub keys: u64,
    pub messages: u64,
    pub concurrency: usize,
    /// msg/s, best run.
    pub ordered: f64,
    pub unordered: f64,
    /// The unordered consumer with one read loop (`readers = 1`, as an ordered consumer
    /// reads): how much of the cost is the single reader.
    pub unordered_one_reader: f64,
    pub ordered_runs: Vec<f64>,
    pub unordered_runs: Vec<f64>,
    pub unordered_one_reader_runs: Vec<f64>,
}

impl OrderedRow {
    pub fn ratio(&self) -> f64 {
        self.ordered / self.unordered
    }
}

/// Runs the phase: one row per entry of [`KEY_COUNTS`].
pub async fn run(s: &Settings, keys: &Keys, admin: &Client) -> Result<Vec<OrderedRow>> {
    let messages = s.messages.clamp(100_000, 200_000);
    note(&format!(
        "== ordered: {messages} keyed messages at concurrency {CONCURRENCY}, ordered vs unordered, keys {KEY_COUNTS:?}, \
         best of {}",
        s.repeat
    ));
    let mut rows = Vec::new();
    for key_count in KEY_COUNTS {
        let stream = keys.stream(&format!("ordered-{key_count}"));
        publish_keyed_backlog(admin, &stream, messages, key_count).await?;
        let (mut ordered, mut unordered, mut one_reader) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..s.repeat {
            let order = if r % 2 == 0 {
                [Mode::Ordered, Mode::Unordered, Mode::OneReader]
            } else {
                [Mode::OneReader, Mode::Unordered, Mode::Ordered]
            };
            for mode in order {
                let rate = drain(s, &stream, &keys.group(mode.name()), messages, mode).await?;
                note(&format!("   {key_count} keys, {} run {}: {rate:.0} msg/s", mode.name(), r + 1));
                match mode {
                    Mode::Ordered => ordered.push(rate),
                    Mode::Unordered => unordered.push(rate),
                    Mode::OneReader => one_reader.push(rate),
                }
            }
        }
        raw::delete(admin, vec![stream]).await?;
        let row = OrderedRow {
            keys: key_count,
            messages,
            concurrency: CONCURRENCY,
            ordered: best(&ordered),
            unordered: best(&unordered),
            unordered_one_reader: best(&one_reader),
            ordered_runs: ordered,
            unordered_runs: unordered,
            unordered_one_reader_runs: one_reader,
        };
        note(&format!(
            "   {key_count} keys: ordered / unordered = {:.2}, ordered / unordered with one reader = {:.2}",
            row.ratio(),
            row.ordered / row.unordered_one_reader
        ));
        rows.push(row);
    }
    Ok(rows)
}

/// Publishes `n` events, the `i`-th keyed `k<i mod keys>`, pipelined.
async fn publish_keyed_backlog(client: &Client, stream: &str, n: u64, keys: u64) -> Result<()> {
    let started = Instant::now();
    let mut next = 0;
    while next < n {
        let len = (raw::PUBLISH_CHUNK as u64).min(n - next);
        let pipeline = client.pipeline();
        // A message's key on the wire: the header field `h:` + MESSAGE_KEY_HEADER.
        let key_field = format!("h:{}", streamx::MESSAGE_KEY_HEADER);
        for (i, event) in (next..).zip(events(next, len)) {
            let data = Bytes::from(serde_json::to_vec(&event)?);
            let fields: Vec<(Key, Value)> = vec![
                (Key::from_static_str(DATA_FIELD), Value::Bytes(data)),
                (Key::from(key_field.as_str()), Value::from(format!("k{}", i % keys))),
            ];
            let _: () = pipeline.xadd(stream, false, XCap::from(None::<()>), "*", fields).await?;
        }
        let _: Vec<Value> = pipeline.all().await.context("pipelined XADD")?;
        next += len;
    }
    note(&format!("   {n} messages over {keys} keys published in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Ordered,
    Unordered,
    /// Unordered with one read loop.
    OneReader,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Ordered => "ordered",
            Mode::Unordered => "unordered",
            Mode::OneReader => "unordered-1-reader",
        }
    }
}

/// Drains `stream` with a fresh group; msg/s from the start to the last handled message.
async fn drain(s: &Settings, stream: &str, group: &str, target: u64, mode: Mode) -> Result<f64> {
    let tally = Arc::new(Tally::default());
    let consumer = streamx_side::consumer::<Event>(stream, group, CONCURRENCY, Work::None, tally.clone(), target);
    let consumer = match mode {
        Mode::Ordered => consumer.ordered(true),
        Mode::Unordered => consumer.ordered(false),
        Mode::OneReader => consumer.ordered(false).readers(1),
    };
    let started = Instant::now();
    let running = streamx_side::start(&s.url, consumer).await?;
    let finished = streamx_side::wait_for(&tally, target, started + Duration::from_secs(600)).await;
    running.shutdown().await?;
    let at = finished.context("the drain did not finish")?;
    Ok(target as f64 / (at - started).as_secs_f64())
}
