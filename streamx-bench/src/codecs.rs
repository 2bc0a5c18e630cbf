//! Issue 27's figures: what MessagePack costs against JSON, in one run. For each codec, in
//! alternating order per repeat: a `publish_batch_with` of the same events (msg/s and the
//! client's CPU per message), then a drain of that backlog by a consumer at concurrency 8
//! decoding them into the typed event (msg/s and client CPU per message), and the bytes
//! of one stored payload. Ratios are MessagePack / JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::Value;
use serde::Serialize;
use streamx::{Codec, Producer, PublishOptions};

use crate::args::Settings;
use crate::cost::process_cpu;
use crate::progress::note;
use crate::raw;
use crate::report::best;
use crate::streamx_side::{self, Tally, Work};
use crate::workload::{events, Event, Keys};

/// Handler concurrency of the drains.
const CONCURRENCY: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub struct CodecRow {
    pub messages: u64,
    pub concurrency: usize,
    /// Bytes of one stored payload (the `data` field).
    pub json_bytes: usize,
    pub msgpack_bytes: usize,
    /// Publish (`publish_batch_with`), msg/s, best run; every run.
    pub json_publish: f64,
    pub msgpack_publish: f64,
    pub json_publish_runs: Vec<f64>,
    pub msgpack_publish_runs: Vec<f64>,
    /// The process's CPU per published message, µs, best run.
    pub json_publish_cpu_us: f64,
    pub msgpack_publish_cpu_us: f64,
    /// Consume (drain at `concurrency`, decoded into the typed event), msg/s, best run.
    pub json_consume: f64,
    pub msgpack_consume: f64,
    pub json_consume_runs: Vec<f64>,
    pub msgpack_consume_runs: Vec<f64>,
    /// The process's CPU per consumed message, µs, best run.
    pub json_consume_cpu_us: f64,
    pub msgpack_consume_cpu_us: f64,
}

#[derive(Default)]
struct Runs {
    publish: Vec<f64>,
    publish_cpu: Vec<f64>,
    consume: Vec<f64>,
    consume_cpu: Vec<f64>,
    bytes: usize,
}

pub async fn run(s: &Settings, keys: &Keys, admin: &Client) -> Result<CodecRow> {
    let messages = s.messages.min(100_000);
    note(&format!(
        "== codecs: {messages} events published as a batch and drained at concurrency {CONCURRENCY}, \
         JSON against MessagePack, best of {}",
        s.repeat
    ));
    let payloads = events(0, messages);
    let producer = Producer::connect(&s.url).await?;
    let (mut json, mut msgpack) = (Runs::default(), Runs::default());
    for r in 0..s.repeat {
        let order = if r % 2 == 0 { [Codec::Json, Codec::MsgPack] } else { [Codec::MsgPack, Codec::Json] };
        for codec in order {
            let runs = if codec == Codec::Json { &mut json } else { &mut msgpack };
            let name = name(codec);
            let stream = keys.stream(&format!("codec-{name}"));
            let options = PublishOptions::new().codec(codec);
            let (cpu, started) = (process_cpu(), Instant::now());
            producer.publish_batch_with(&stream, &payloads, &options).await?;
            let (secs, cpu) = (started.elapsed().as_secs_f64(), process_cpu().saturating_sub(cpu));
            runs.publish.push(messages as f64 / secs);
            runs.publish_cpu.push(cpu.as_secs_f64() * 1e6 / messages as f64);
            runs.bytes = first_payload_len(admin, &stream).await?;
            let (rate, cpu_us) = drain(s, &stream, &keys.group(&format!("codec-{name}")), messages).await;
            raw::delete(admin, vec![stream]).await?;
            let (rate, cpu_us) = (rate?, cpu_us);
            runs.consume.push(rate);
            runs.consume_cpu.push(cpu_us);
            note(&format!(
                "   {name} run {}: publish {:.0} msg/s, consume {rate:.0} msg/s ({cpu_us:.2} µs CPU/msg), {} B/payload",
                r + 1,
                messages as f64 / secs,
                runs.bytes
            ));
        }
    }
    producer.close().await;
    let lowest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(CodecRow {
        messages,
        concurrency: CONCURRENCY,
        json_bytes: json.bytes,
        msgpack_bytes: msgpack.bytes,
        json_publish: best(&json.publish),
        msgpack_publish: best(&msgpack.publish),
        json_publish_cpu_us: lowest(&json.publish_cpu),
        msgpack_publish_cpu_us: lowest(&msgpack.publish_cpu),
        json_consume: best(&json.consume),
        msgpack_consume: best(&msgpack.consume),
        json_consume_cpu_us: lowest(&json.consume_cpu),
        msgpack_consume_cpu_us: lowest(&msgpack.consume_cpu),
        json_publish_runs: json.publish,
        msgpack_publish_runs: msgpack.publish,
        json_consume_runs: json.consume,
        msgpack_consume_runs: msgpack.consume,
    })
}

fn name(codec: Codec) -> &'static str {
    if codec == Codec::Json {
        "json"
    } else {
        "msgpack"
    }
}

/// The length of the `data` field of the stream's first entry.
async fn first_payload_len(admin: &Client, stream: &str) -> Result<usize> {
    let entries: Vec<Value> = admin.xrange(stream, "-", "+", Some(1)).await?;
    let entry = entries.into_iter().next().context("the published stream is empty")?;
    let fields = entry.into_array().into_iter().nth(1).map(Value::into_array).unwrap_or_default();
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if name.as_bytes() == Some(b"data") {
            return Ok(value.as_bytes().map_or(0, <[u8]>::len));
        }
    }
    anyhow::bail!("the first entry of {stream} has no data field")
}

/// Drains `stream` with a fresh group; msg/s from the start to the last handled message and
/// the process's CPU per message meanwhile.
async fn drain(s: &Settings, stream: &str, group: &str, target: u64) -> (Result<f64>, f64) {
    let tally = Arc::new(Tally::default());
    let consumer = streamx_side::consumer::<Event>(stream, group, CONCURRENCY, Work::None, tally.clone(), target);
    drain_with(s, stream, consumer, &tally, target).await
}

/// Runs `consumer` (which records in `tally`) until it handled `target` messages of
/// `stream`: msg/s from its start to the last one, and the process's CPU per message.
pub async fn drain_with(
    s: &Settings,
    stream: &str,
    consumer: streamx::Consumer,
    tally: &Tally,
    target: u64,
) -> (Result<f64>, f64) {
    let (cpu, started) = (process_cpu(), Instant::now());
    let running = match streamx_side::start(&s.url, consumer).await {
        Ok(running) => running,
        Err(e) => return (Err(e), 0.0),
    };
    let finished = streamx_side::wait_for(tally, target, started + Duration::from_secs(600)).await;
    let cpu = process_cpu().saturating_sub(cpu);
    let shutdown = running.shutdown().await;
    let rate = match (finished, shutdown) {
        (Some(at), Ok(_)) => Ok(target as f64 / (at - started).as_secs_f64()),
        (None, _) => Err(anyhow::anyhow!("{stream}: the drain did not finish")),
        (_, Err(e)) => Err(e.into()),
    };
    (rate, cpu.as_secs_f64() * 1e6 / target as f64)
}
