//! The raw baseline's consumer and helpers: fred used directly, the way a careful
//! hand-written program would (the producers are in [`crate::raw_producer`]).
//!
//! Consume: `readers` tasks, each on a connection of its own (without TCP_NODELAY: the
//! replies are large and the requests few), looping `XREADGROUP COUNT 500 BLOCK 2000`
//! (a custom command whose reply frame is walked as is, without fred's `Value` conversion),
//! serde_json decode of each payload, and one XACK per batch, written on the same
//! connection just before the next XREADGROUP (both leave in one write, one round trip).
//! At the phase's concurrency `c` it runs `c` readers, clamped to 1..=8 (more readers than
//! that only add round trips that wait on the same single-threaded server; see
//! BENCHMARKS.md for the comparison).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, KeysInterface, StreamsInterface};
use fred::prelude::{Builder, Config};
use fred::types::streams::XCap;
use fred::types::{ClusterHash, CustomCommand, Key, Resp3Frame, Value};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::workload::Event;

/// XADDs per pipelined round trip of the backlog publisher.
pub const PUBLISH_CHUNK: usize = 1000;
/// Entries per XREADGROUP.
pub const READ_COUNT: u64 = 500;
/// The most reader tasks the raw consumer runs.
pub const MAX_READERS: usize = 8;
/// XREADGROUP BLOCK, ms.
const BLOCK_MS: u64 = 2000;
/// The payload field, as streamx writes it.
pub const DATA_FIELD: &str = "data";

/// A connected fred client with TCP_NODELAY (as streamx sets it).
pub async fn connect(url: &str) -> Result<Client> {
    connect_with(url, true).await
}

/// A connected fred client, with or without TCP_NODELAY.
pub async fn connect_with(url: &str, nodelay: bool) -> Result<Client> {
    let config = Config::from_url(url).with_context(|| format!("invalid Redis URL {}", streamx::redact(url)))?;
    let mut builder = Builder::from_config(config);
    builder.with_connection_config(|c| {
        c.tcp.nodelay = Some(nodelay);
    });
    let client = builder.build()?;
    client.init().await.with_context(|| format!("cannot connect to {}", streamx::redact(url)))?;
    Ok(client)
}

/// The `data` field of an entry holding `data`.
pub fn entry_fields(data: Bytes) -> Vec<(Key, Value)> {
    vec![(Key::from_static_str(DATA_FIELD), Value::Bytes(data))]
}

/// Publishes `events` in one pipelined round trip.
pub async fn publish_chunk(client: &Client, stream: &str, events: &[Event]) -> Result<()> {
    let encoded = events.iter().map(|e| serde_json::to_vec(e).map(Bytes::from)).collect::<Result<Vec<_>, _>>()?;
    publish_encoded(client, stream, encoded).await
}

/// Publishes already encoded payloads in one pipelined round trip.
pub async fn publish_encoded(client: &Client, stream: &str, payloads: Vec<Bytes>) -> Result<()> {
    let pipeline = client.pipeline();
    for data in payloads {
        let _: () = pipeline.xadd(stream, false, XCap::from(None::<()>), "*", entry_fields(data)).await?;
    }
    let _: Vec<Value> = pipeline.all().await.context("pipelined XADD")?;
    Ok(())
}

/// One unpipelined XADD (the latency phase's publisher).
pub async fn publish_one(client: &Client, stream: &str, event: &Event) -> Result<()> {
    let data = Bytes::from(serde_json::to_vec(event)?);
    let _: Value = client.xadd(stream, false, XCap::from(None::<()>), "*", entry_fields(data)).await.context("XADD")?;
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

/// Deletes every key matching `pattern` (SCAN of the server the client talks to).
pub async fn delete_matching(client: &Client, pattern: &str) -> Result<()> {
    let mut cursor = "0".to_string();
    loop {
        let page: Value = client.scan_page(cursor.as_str(), pattern, Some(1000), None).await.context("SCAN")?;
        let mut parts = page.into_array().into_iter();
        let next = parts.next().and_then(|c| c.as_string()).context("unexpected SCAN reply")?;
        let keys: Vec<String> =
            parts.next().map(Value::into_array).unwrap_or_default().iter().filter_map(Value::as_string).collect();
        if !keys.is_empty() {
            delete(client, keys).await?;
        }
        if next == "0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// How the raw consumer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    /// Reader tasks, each on its own connection.
    pub readers: usize,
    /// Entries per XREADGROUP.
    pub count: u64,
}

impl ReadPlan {
    /// The plan for handler concurrency `concurrency`: as many readers, at most
    /// [`MAX_READERS`], `COUNT 500`.
    pub fn for_concurrency(concurrency: usize) -> Self {
        ReadPlan { readers: concurrency.clamp(1, MAX_READERS), count: READ_COUNT }
    }
}

/// A hand-written consumer: [`ReadPlan::readers`] reading connections.
pub struct RawConsumer {
    readers: Vec<Client>,
    stream: Arc<str>,
    group: Arc<str>,
    count: u64,
}

/// What the reader tasks of one [`RawConsumer::run`] share.
struct Drain<E, H> {
    stream: Arc<str>,
    group: Arc<str>,
    count: u64,
    target: u64,
    handle: H,
    /// Entries handled (decoded and passed to `handle`).
    handled: AtomicU64,
    /// Entries acknowledged.
    acked: AtomicU64,
    /// When the last entry was handled.
    last: Mutex<Option<Instant>>,
    /// Signalled after each acknowledgement.
    progress: Notify,
    payload: PhantomData<fn() -> E>,
}

impl RawConsumer {
    /// Connects the readers and creates the group.
    pub async fn connect(url: &str, stream: &str, group: &str, plan: ReadPlan) -> Result<Self> {
        let mut readers = Vec::with_capacity(plan.readers);
        for _ in 0..plan.readers.max(1) {
            readers.push(connect_with(url, false).await?);
        }
        create_group(&readers[0], stream, group).await?;
        Ok(RawConsumer { readers, stream: stream.into(), group: group.into(), count: plan.count.max(1) })
    }

    /// Reads, decodes and acknowledges until `target` messages were handled and acknowledged
    /// (each passed to `handle` right after decoding) or `timeout` passes. Returns when the
    /// last one was handled. The stream must hold no more than `target` entries for the
    /// group: readers still blocked in XREADGROUP once all are acknowledged are cancelled.
    pub async fn run<E, H>(&self, target: u64, timeout: Duration, handle: H) -> Result<Instant>
    where
        E: DeserializeOwned + 'static,
        H: Fn(&E) + Send + Sync + 'static,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let drain = Arc::new(Drain {
            stream: self.stream.clone(),
            group: self.group.clone(),
            count: self.count,
            target,
            handle,
            handled: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            last: Mutex::new(None),
            progress: Notify::new(),
            payload: PhantomData,
        });
        let mut tasks = JoinSet::new();
        for (i, client) in self.readers.iter().enumerate() {
            tasks.spawn(read_loop(client.clone(), format!("raw-{i}"), drain.clone()));
        }
        let outcome = loop {
            if drain.acked.load(Ordering::Relaxed) >= target {
                break Ok(());
            }
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => break Err(e),
                    Some(Err(e)) => break Err(anyhow!(e).context("raw reader task")),
                    None => break Err(anyhow!("raw consumer: the readers stopped after {} of {target} messages",
                        drain.acked.load(Ordering::Relaxed))),
                },
                _ = drain.progress.notified() => {}
                _ = tokio::time::sleep_until(deadline) => break Err(anyhow!(
                    "raw consumer: only {} of {target} messages arrived within {timeout:?}",
                    drain.handled.load(Ordering::Relaxed)
                )),
            }
        };
        tasks.abort_all();
        outcome?;
        let last = *drain.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.context("raw consumer: no message handled")
    }

    /// Closes the connections (in the background: a reader may still be blocked in
    /// XREADGROUP, and QUIT would queue behind it).
    pub async fn close(self) {
        for client in self.readers {
            tokio::spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

/// One reader: XACK of the previous batch and XREADGROUP of the next, written together,
/// until `target` messages were handled by all the readers. Both are sent as custom
/// commands and the read's reply frame is walked as is: fred's typed `xreadgroup` turns the
/// reply into a `Value` tree first, checking every payload for UTF-8 (about a sixth of the
/// CPU per message, measured with callgrind; see BENCHMARKS.md).
async fn read_loop<E, H>(client: Client, me: String, drain: Arc<Drain<E, H>>) -> Result<()>
where
    E: DeserializeOwned,
    H: Fn(&E),
{
    let (stream, group) = (&*drain.stream, &*drain.group);
    let slot = fred::util::redis_keyslot(stream.as_bytes());
    let mut ids: Vec<Bytes> = Vec::new();
    while drain.handled.load(Ordering::Relaxed) < drain.target {
        let to_ack = std::mem::replace(&mut ids, Vec::with_capacity(drain.count as usize));
        let read = client.custom_raw(
            CustomCommand::new_static("XREADGROUP", ClusterHash::Custom(slot), true),
            vec![
                Value::from_static_str("GROUP"),
                Value::from(group),
                Value::from(me.as_str()),
                Value::from_static_str("COUNT"),
                Value::Integer(drain.count as i64),
                Value::from_static_str("BLOCK"),
                Value::Integer(BLOCK_MS as i64),
                Value::from_static_str("STREAMS"),
                Value::from(stream),
                Value::from_static_str(">"),
            ],
        );
        // The XACK is polled first, so it is written ahead of the XREADGROUP.
        let (acked, reply) = tokio::join!(ack(&client, stream, group, slot, to_ack), read);
        record_acked(&drain, acked?);
        for_each_frame_entry(reply.context("XREADGROUP")?, |id, data| {
            let payload: E = serde_json::from_slice(data).context("decoding a payload")?;
            (drain.handle)(std::hint::black_box(&payload));
            ids.push(id);
            Ok(())
        })?;
        if !ids.is_empty() {
            drain.handled.fetch_add(ids.len() as u64, Ordering::Relaxed);
            *drain.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
    }
    let acked = ack(&client, stream, group, slot, ids).await?;
    record_acked(&drain, acked);
    Ok(())
}

/// XACKs `ids` as a custom command (no command for none); how many were sent.
async fn ack(client: &Client, stream: &str, group: &str, slot: u16, ids: Vec<Bytes>) -> Result<u64> {
    let n = ids.len() as u64;
    if n > 0 {
        let mut args = Vec::with_capacity(ids.len() + 2);
        args.extend([Value::from(stream), Value::from(group)]);
        args.extend(ids.into_iter().map(Value::Bytes));
        let cmd = CustomCommand::new_static("XACK", ClusterHash::Custom(slot), false);
        let _: i64 = client.custom(cmd, args).await.context("XACK")?;
    }
    Ok(n)
}

/// Calls `f(id, data)` for each entry of an XREADGROUP reply frame (RESP2 or RESP3 shape);
/// nil (the BLOCK timed out) has none.
fn for_each_frame_entry(reply: Resp3Frame, mut f: impl FnMut(Bytes, &[u8]) -> Result<()>) -> Result<()> {
    let per_stream: Vec<Resp3Frame> = match reply {
        Resp3Frame::Null => return Ok(()),
        Resp3Frame::Array { data, .. } => data.into_iter().filter_map(|s| items(s).into_iter().nth(1)).collect(),
        Resp3Frame::Map { data, .. } => data.into_values().collect(),
        other => bail!("unexpected XREADGROUP reply {other:?}"),
    };
    for entries in per_stream {
        for_each_listed(entries, &mut f)?;
    }
    Ok(())
}

/// Calls `f(id, data)` for each entry of a list frame of `[id, [field, value, ...]]` (one
/// stream's entries in an XREADGROUP reply, or an XRANGE reply).
fn for_each_listed(entries: Resp3Frame, mut f: impl FnMut(Bytes, &[u8]) -> Result<()>) -> Result<()> {
    for entry in items(entries) {
        let mut parts = items(entry).into_iter();
        let id = match parts.next() {
            Some(Resp3Frame::BlobString { data, .. }) => data,
            other => bail!("unexpected entry id {other:?}"),
        };
        let fields = parts.next().map(items).unwrap_or_default();
        let data = fields
            .chunks(2)
            .find(|kv| blob(&kv[0]) == Some(DATA_FIELD.as_bytes()))
            .and_then(|kv| kv.get(1).and_then(blob))
            .ok_or_else(|| anyhow!("entry {id:?} has no `data` field"))?;
        f(id, data)?;
    }
    Ok(())
}

/// The items of an array frame (none for anything else, nil included).
fn items(frame: Resp3Frame) -> Vec<Resp3Frame> {
    match frame {
        Resp3Frame::Array { data, .. } => data,
        _ => Vec::new(),
    }
}

/// The bytes of a bulk-string frame.
fn blob(frame: &Resp3Frame) -> Option<&[u8]> {
    match frame {
        Resp3Frame::BlobString { data, .. } => Some(data),
        _ => None,
    }
}

fn record_acked<E, H>(drain: &Drain<E, H>, n: u64) {
    if n > 0 {
        drain.acked.fetch_add(n, Ordering::Relaxed);
        drain.progress.notify_one();
    }
}

/// The raw take-over: claims every entry of `group` idle longer than `min_idle_ms` for
/// consumer `me`, 500 at a time, decodes each payload, and acknowledges each claim in the
/// round trip of the next, until the scan wraps around (`0-0`) with nothing claimed. One
/// loop: the next claim needs the cursor the last one returned.
///
/// Each round trip writes `XACK` (the last claim), `XAUTOCLAIM <cursor> COUNT 500 JUSTID`
/// and `XRANGE <cursor> + COUNT 500`: the fields of a dense PEL (one consumer's reads) come
/// from one range read instead of one lookup per claimed id, which is what `XAUTOCLAIM`
/// without `JUSTID` costs Redis (measured in Redis 7.0 with 500 entries per call: 8 µs per
/// entry with the fields, 4.5 µs with `JUSTID`, 0.5 µs per entry of `XRANGE`). Claimed ids
/// the range did not hold are read one by one. Returns the entries handled.
pub async fn take_over_all<E: DeserializeOwned>(
    url: &str,
    stream: &str,
    group: &str,
    me: &str,
    min_idle_ms: u64,
) -> Result<u64> {
    let client = connect_with(url, false).await?;
    let slot = fred::util::redis_keyslot(stream.as_bytes());
    let command = |name: &'static str| CustomCommand::new_static(name, ClusterHash::Custom(slot), false);
    let mut cursor = Bytes::from_static(b"0-0");
    let mut ids: Vec<Bytes> = Vec::new();
    let mut handled = 0u64;
    loop {
        let to_ack = std::mem::replace(&mut ids, Vec::with_capacity(READ_COUNT as usize));
        let claim = client.custom_raw(
            command("XAUTOCLAIM"),
            vec![
                Value::from(stream),
                Value::from(group),
                Value::from(me),
                Value::Integer(min_idle_ms as i64),
                Value::Bytes(cursor.clone()),
                Value::from_static_str("COUNT"),
                Value::Integer(READ_COUNT as i64),
                Value::from_static_str("JUSTID"),
            ],
        );
        let range = client.custom_raw(
            command("XRANGE"),
            vec![
                Value::from(stream),
                Value::Bytes(cursor.clone()),
                Value::from_static_str("+"),
                Value::from_static_str("COUNT"),
                Value::Integer(READ_COUNT as i64),
            ],
        );
        let (acked, claimed, range) = tokio::join!(ack(&client, stream, group, slot, to_ack), claim, range);
        acked?;
        let mut parts = items(claimed.context("XAUTOCLAIM")?).into_iter();
        cursor = match parts.next() {
            Some(Resp3Frame::BlobString { data, .. }) => data,
            other => bail!("unexpected XAUTOCLAIM reply {other:?}"),
        };
        let mut missing: std::collections::HashSet<Bytes> = (parts.next().map(items).unwrap_or_default().into_iter())
            .filter_map(|id| match id {
                Resp3Frame::BlobString { data, .. } => Some(data),
                _ => None,
            })
            .collect();
        let claimed = missing.len();
        let mut found = Vec::with_capacity(claimed);
        let mut handle = |id: Bytes, data: &[u8]| {
            let payload: E = serde_json::from_slice(data).context("decoding a payload")?;
            std::hint::black_box(&payload);
            found.push(id);
            Ok(())
        };
        for_each_listed(range.context("XRANGE")?, |id, data| {
            if missing.remove(&id) {
                handle(id, data)?;
            }
            Ok(())
        })?;
        for id in missing {
            let args = vec![Value::from(stream), Value::Bytes(id.clone()), Value::Bytes(id)];
            let entry = client.custom_raw(command("XRANGE"), args).await.context("XRANGE of one id")?;
            for_each_listed(entry, &mut handle)?;
        }
        ids = found;
        handled += ids.len() as u64;
        if claimed == 0 && cursor.as_ref() == b"0-0" {
            break;
        }
    }
    let _ = client.quit().await;
    Ok(handled)
}
