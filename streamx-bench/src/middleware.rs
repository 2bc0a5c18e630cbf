//! Issue 27: the cost of middleware on consume. The same backlog drained at concurrency 8
//! by a consumer without layers (the default path: the handler is called directly) and by
//! the same consumer with one pass-through layer (`next.run(delivery).await`), alternating
//! per repeat, best of the repeats; msg/s and the client's CPU per message, as ratios
//! with a layer / without.

use std::sync::Arc;

use anyhow::Result;
use fred::clients::Client;
use serde::Serialize;
use streamx::{Delivery, Next, Outcome, Producer};

use crate::args::Settings;
use crate::progress::note;
use crate::raw;
use crate::report::best;
use crate::streamx_side::{self, Tally, Work};
use crate::workload::{events, Event, Keys};

/// Handler concurrency of the drains.
const CONCURRENCY: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub struct MiddlewareRow {
    pub messages: u64,
    pub concurrency: usize,
    /// msg/s, best run; every run.
    pub none: f64,
    pub one_layer: f64,
    pub none_runs: Vec<f64>,
    pub one_layer_runs: Vec<f64>,
    /// The process's CPU per consumed message, µs, lowest run.
    pub none_cpu_us: f64,
    pub one_layer_cpu_us: f64,
}

/// The layer measured: does nothing but run the rest of the chain.
async fn pass_through(delivery: Delivery, next: Next) -> Outcome {
    next.run(delivery).await
}

pub async fn run(s: &Settings, keys: &Keys, admin: &Client) -> Result<MiddlewareRow> {
    let messages = s.messages.min(200_000);
    note(&format!(
        "== middleware: {messages} events drained at concurrency {CONCURRENCY}, no layer against one pass-through \
         layer, best of {}",
        s.repeat
    ));
    let stream = keys.stream("middleware");
    let producer = Producer::connect(&s.url).await?;
    producer.publish_batch(&stream, &events(0, messages)).await?;
    producer.close().await;
    let (mut none, mut one) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for r in 0..s.repeat {
        let order = if r % 2 == 0 { [false, true] } else { [true, false] };
        for layered in order {
            let group = keys.group(&format!("middleware-{layered}-{r}"));
            let (rate, cpu_us) = drain(s, &stream, &group, messages, layered).await;
            let rate = rate?;
            let runs = if layered { &mut one } else { &mut none };
            runs.0.push(rate);
            runs.1.push(cpu_us);
            let name = if layered { "1 layer" } else { "no layer" };
            note(&format!("   {name} run {}: {rate:.0} msg/s ({cpu_us:.2} µs CPU/msg)", r + 1));
        }
    }
    raw::delete(admin, vec![stream]).await?;
    let lowest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(MiddlewareRow {
        messages,
        concurrency: CONCURRENCY,
        none: best(&none.0),
        one_layer: best(&one.0),
        none_cpu_us: lowest(&none.1),
        one_layer_cpu_us: lowest(&one.1),
        none_runs: none.0,
        one_layer_runs: one.0,
    })
}

/// Drains `stream` with the fresh group `group`, with or without the layer; msg/s from the
/// start to the last handled message and the process's CPU per message meanwhile.
async fn drain(s: &Settings, stream: &str, group: &str, target: u64, layered: bool) -> (Result<f64>, f64) {
    let tally = Arc::new(Tally::default());
    let mut consumer = streamx_side::consumer::<Event>(stream, group, CONCURRENCY, Work::None, tally.clone(), target);
    if layered {
        consumer = consumer.layer(pass_through);
    }
    crate::codecs::drain_with(s, stream, consumer, &tally, target).await
}
