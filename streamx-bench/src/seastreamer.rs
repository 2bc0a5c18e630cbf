//! SeaStreamer's Redis producer (`sea-streamer-redis` 0.5), used as its documentation
//! shows: a reference for the produce phase beside the raw fred designs.
//!
//! `RedisStreamer::connect(url, Default::default())`, `create_producer(key,
//! Default::default())`, then `producer.send(payload)` for every message, every receipt
//! awaited, and `flush()`. Its producer queues each message on a channel; a task of its own
//! takes whatever has queued as one pipeline (per stream), waits for the replies and
//! repeats. It writes the payload in the entry field [`MESSAGE_FIELD`] (`msg`), where
//! streamx and the raw designs write `data`: the bytes are the same JSON.
//!
//! Its stream keys may only hold letters, digits, `.`, `_` and `-` (no `:`): the phase
//! gives it a name from [`Keys::plain_stream`](crate::workload::Keys::plain_stream).
//!
//! Built without the `seastreamer` feature (on by default), [`publish`] fails with a note
//! and the produce phase goes on without this reference.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::workload::Event;

/// The entry field SeaStreamer writes the payload in (its default, `sea_streamer_redis::MSG`).
#[cfg(feature = "seastreamer")]
pub const MESSAGE_FIELD: &str = sea_streamer_redis::MSG;
/// The entry field SeaStreamer writes the payload in (its default).
#[cfg(not(feature = "seastreamer"))]
pub const MESSAGE_FIELD: &str = "msg";

/// Publishes `events` to `stream` with SeaStreamer's producer, counting receipts into
/// `done`; the time from the first send to the flush (connecting and creating the producer
/// happen before the clock starts). Runs on a task of its own, so that a panic inside the
/// crate (its URL handling and its writer task have some) is an error here, not the end of
/// the benchmark.
pub async fn publish(url: &str, stream: &str, events: Arc<Vec<Event>>, done: Arc<AtomicU64>) -> Result<Duration> {
    let (url, stream) = (url.to_string(), stream.to_string());
    match tokio::spawn(async move { imp::publish(&url, &stream, &events, &done).await }).await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => Err(anyhow::anyhow!("SeaStreamer panicked: {}", panic_text(e.into_panic()))),
        Err(e) => Err(anyhow::anyhow!("SeaStreamer task: {e}")),
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload.downcast_ref::<&str>().map_or("(no message)".to_string(), |s| s.to_string()),
    }
}

#[cfg(feature = "seastreamer")]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use anyhow::{anyhow, Context, Result};
    use sea_streamer_redis::RedisStreamer;
    use sea_streamer_types::{Producer, StreamKey, Streamer, StreamerUri};

    use crate::workload::Event;

    pub(super) async fn publish(url: &str, stream: &str, events: &[Event], done: &AtomicU64) -> Result<Duration> {
        let uri: StreamerUri = url.parse().map_err(|e| anyhow!("SeaStreamer cannot parse the URL: {e}"))?;
        let streamer = RedisStreamer::connect(uri, Default::default())
            .await
            .map_err(|e| anyhow!("SeaStreamer cannot connect: {e}"))?;
        let key = StreamKey::new(stream).with_context(|| format!("SeaStreamer refuses the stream key {stream:?}"))?;
        let mut producer = streamer
            .create_producer(key, Default::default())
            .await
            .map_err(|e| anyhow!("SeaStreamer cannot create a producer: {e}"))?;
        let started = Instant::now();
        let mut receipts = Vec::with_capacity(events.len());
        for event in events {
            let payload = serde_json::to_string(event)?;
            receipts.push(producer.send(payload).map_err(|e| anyhow!("SeaStreamer send: {e}"))?);
        }
        for receipt in receipts {
            receipt.await.map_err(|e| anyhow!("SeaStreamer receipt: {e}"))?;
            done.fetch_add(1, Ordering::Relaxed);
        }
        producer.flush().await.map_err(|e| anyhow!("SeaStreamer flush: {e}"))?;
        Ok(started.elapsed())
    }
}

#[cfg(not(feature = "seastreamer"))]
mod imp {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use anyhow::{bail, Result};

    use crate::workload::Event;

    pub(super) async fn publish(_: &str, _: &str, _: &[Event], _: &AtomicU64) -> Result<Duration> {
        bail!("built without the `seastreamer` feature")
    }
}
