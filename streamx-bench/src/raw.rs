//! The raw baseline: fred used directly, the way a careful hand-written program would.
//!
//! - Publish: XADDs pipelined in chunks of 1,000, one round trip per chunk.
//! - Consume: `XREADGROUP COUNT 500 BLOCK 2000` on a connection of its own, serde_json
//!   decode of each payload, and one XACK per batch on a second connection, sent while the
//!   next batch is being read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use fred::bytes_utils::Str;
use fred::clients::Client;
use fred::interfaces::{ClientLike, KeysInterface, StreamsInterface};
use fred::prelude::{Builder, Config};
use fred::types::streams::XCap;
use fred::types::{Key, Value};

use crate::workload::Event;

/// XADDs per pipelined round trip.
pub const PUBLISH_CHUNK: usize = 1000;
/// Entries per XREADGROUP.
pub const READ_COUNT: u64 = 500;
/// XREADGROUP BLOCK, ms.
const BLOCK_MS: u64 = 2000;
/// The payload field, as streamx writes it.
const DATA_FIELD: &str = "data";

/// A connected fred client with TCP_NODELAY (as streamx sets it).
pub async fn connect(url: &str) -> Result<Client> {
    let config = Config::from_url(url).with_context(|| format!("invalid Redis URL {}", streamx::redact(url)))?;
    let mut builder = Builder::from_config(config);
    builder.with_connection_config(|c| {
        c.tcp.nodelay = Some(true);
    });
    let client = builder.build()?;
    client.init().await.with_context(|| format!("cannot connect to {}", streamx::redact(url)))?;
    Ok(client)
}

/// Publishes `events` in one pipelined round trip.
pub async fn publish_chunk(client: &Client, stream: &str, events: &[Event]) -> Result<()> {
    let pipeline = client.pipeline();
    for e in events {
        let data = Bytes::from(serde_json::to_vec(e)?);
        let fields = vec![(Key::from_static_str(DATA_FIELD), Value::Bytes(data))];
        let _: () = pipeline.xadd(stream, false, XCap::from(None::<()>), "*", fields).await?;
    }
    let _: Vec<Value> = pipeline.all().await.context("pipelined XADD")?;
    Ok(())
}

/// Publishes `events` in chunks of [`PUBLISH_CHUNK`], counting them in `done`.
pub async fn publish(client: &Client, stream: &str, events: &[Event], done: &AtomicU64) -> Result<()> {
    for chunk in events.chunks(PUBLISH_CHUNK) {
        publish_chunk(client, stream, chunk).await?;
        done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// One unpipelined XADD (the latency phase's publisher).
pub async fn publish_one(client: &Client, stream: &str, event: &Event) -> Result<()> {
    let data = Bytes::from(serde_json::to_vec(event)?);
    let fields = vec![(Key::from_static_str(DATA_FIELD), Value::Bytes(data))];
    let _: Value = client.xadd(stream, false, XCap::from(None::<()>), "*", fields).await.context("XADD")?;
    Ok(())
}

/// Creates `group` at the start of `stream` (and the stream) unless it exists.
pub async fn create_group(client: &Client, stream: &str, group: &str) -> Result<()> {
    let created: Result<Value, _> = client.xgroup_create(stream, group, "0", true).await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.details().starts_with("BUSYGROUP") => Ok(()),
        Err(e) => Err(anyhow!(e).context("XGROUP CREATE")),
    }
}

/// Deletes `keys`.
pub async fn delete(client: &Client, keys: Vec<String>) -> Result<()> {
    for chunk in keys.chunks(100) {
        let _: i64 = client.del(chunk.to_vec()).await.context("DEL")?;
    }
    Ok(())
}

/// A hand-written consumer: a reading connection and an acknowledging one.
pub struct RawConsumer {
    reader: Client,
    acker: Client,
    stream: String,
    group: String,
}

impl RawConsumer {
    /// Connects and creates the group.
    pub async fn connect(url: &str, stream: &str, group: &str) -> Result<Self> {
        let reader = connect(url).await?;
        let acker = connect(url).await?;
        create_group(&acker, stream, group).await?;
        Ok(RawConsumer { reader, acker, stream: stream.to_string(), group: group.to_string() })
    }

    /// Reads, decodes and acknowledges until `target` messages were handled (each passed to
    /// `handle` right after decoding) or `timeout` passes. Returns when the last one was
    /// handled.
    pub async fn run(&self, target: u64, timeout: Duration, mut handle: impl FnMut(&Event)) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        let (stream, group) = (self.stream.as_str(), self.group.as_str());
        let mut handled = 0u64;
        let mut last = Instant::now();
        let mut ids: Vec<Str> = Vec::new();
        while handled < target {
            if Instant::now() > deadline {
                bail!("raw consumer: only {handled} of {target} messages arrived within {timeout:?}");
            }
            let to_ack = std::mem::replace(&mut ids, Vec::with_capacity(READ_COUNT as usize));
            let read = self.reader.xreadgroup::<Value, _, _, _, _>(
                group,
                "raw",
                Some(READ_COUNT),
                Some(BLOCK_MS),
                false,
                stream,
                ">",
            );
            let (reply, acked) = tokio::join!(read, self.ack(to_ack));
            acked?;
            for_each_entry(reply.context("XREADGROUP")?, |id, data| {
                let event: Event = serde_json::from_slice(data).context("decoding a payload")?;
                handle(std::hint::black_box(&event));
                ids.push(id);
                Ok(())
            })?;
            if !ids.is_empty() {
                handled += ids.len() as u64;
                last = Instant::now();
            }
        }
        self.ack(ids).await?;
        Ok(last)
    }

    async fn ack(&self, ids: Vec<Str>) -> Result<()> {
        if !ids.is_empty() {
            let _: i64 = self.acker.xack(self.stream.as_str(), self.group.as_str(), ids).await.context("XACK")?;
        }
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.acker.quit().await;
        // A BLOCK may still be running; QUIT would queue behind it.
        tokio::spawn(async move {
            let _ = self.reader.quit().await;
        });
    }
}

/// Calls `f(id, data)` for each entry of an XREADGROUP reply (RESP2 or RESP3 shape); nil
/// (the BLOCK timed out) has none.
fn for_each_entry(reply: Value, mut f: impl FnMut(Str, &[u8]) -> Result<()>) -> Result<()> {
    let per_stream: Vec<Value> = match reply {
        Value::Null => return Ok(()),
        Value::Array(streams) => streams.into_iter().filter_map(|s| s.into_array().into_iter().nth(1)).collect(),
        Value::Map(map) => map.inner().into_values().collect(),
        other => bail!("unexpected XREADGROUP reply {other:?}"),
    };
    for entries in per_stream {
        for entry in entries.into_array() {
            let mut parts = entry.into_array().into_iter();
            let id = match parts.next() {
                Some(Value::String(id)) => id,
                other => bail!("unexpected entry id {other:?}"),
            };
            let fields = parts.next().map(Value::into_array).unwrap_or_default();
            let data = fields
                .chunks(2)
                .find(|kv| kv[0].as_bytes() == Some(DATA_FIELD.as_bytes()))
                .and_then(|kv| kv.get(1))
                .and_then(Value::as_bytes)
                .ok_or_else(|| anyhow!("entry {id} has no `data` field"))?;
            f(id, data)?;
        }
    }
    Ok(())
}
