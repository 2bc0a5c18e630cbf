//! The raw producers: publishing a batch of events with fred directly, in several designs.
//! The produce phase measures each and takes the fastest as the baseline, so the baseline
//! is the best hand-written fred producer we know, not one particular loop.
//!
//! Why the designs differ so much: fred writes the commands of one pipeline one by one and
//! flushes the socket after each unless another command is already queued behind it (then
//! it flushes every 200 commands, or when the queue is empty). A lone pipeline therefore
//! leaves as one `write` per XADD, and with TCP_NODELAY as one packet per XADD; without
//! TCP_NODELAY, Nagle's algorithm coalesces the packets (not the syscalls). Several
//! pipelines (or single commands) in flight on one connection keep the queue non-empty,
//! so their commands leave in few large writes whatever the socket option.
//!
//! Every design but `conns-*` keeps the order of the batch in the stream (one connection,
//! requests written in order).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, StreamsInterface};
use fred::types::streams::XCap;
use fred::types::Value;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::raw::{self, entry_fields};
use crate::workload::Event;

/// How a raw producer sends a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// XADDs pipelined `chunk` per round trip, up to `in_flight` round trips outstanding on
    /// one connection.
    Pipelined { chunk: usize, in_flight: usize },
    /// `connections` connections, each with one pipeline of `chunk` XADDs in flight (the
    /// order of the batch is not kept across connections).
    Connections { connections: usize, chunk: usize },
    /// Single XADDs, up to `window` in flight on one connection (fred's auto-pipelining).
    InFlight { window: usize },
    /// SeaStreamer's design: sending queues the message; a writer task takes whatever has
    /// queued as one pipeline, waits for its replies, and repeats.
    QueueWriter,
}

/// A raw producer design: a [`Shape`] and the TCP_NODELAY socket option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerDesign {
    pub shape: Shape,
    pub nodelay: bool,
}

impl ProducerDesign {
    const fn new(shape: Shape, nodelay: bool) -> Self {
        ProducerDesign { shape, nodelay }
    }

    /// The designs the produce phase measures unless told otherwise.
    pub const DEFAULTS: [ProducerDesign; 10] = [
        // The previous baseline (and what streamx's connections do).
        ProducerDesign::new(Shape::Pipelined { chunk: 1000, in_flight: 1 }, true),
        // The raw loop.
        ProducerDesign::new(Shape::Pipelined { chunk: 1000, in_flight: 1 }, false),
        ProducerDesign::new(Shape::Pipelined { chunk: 10_000, in_flight: 1 }, false),
        ProducerDesign::new(Shape::Pipelined { chunk: 1000, in_flight: 2 }, false),
        ProducerDesign::new(Shape::Pipelined { chunk: 1000, in_flight: 4 }, false),
        ProducerDesign::new(Shape::Pipelined { chunk: 1000, in_flight: 4 }, true),
        ProducerDesign::new(Shape::Pipelined { chunk: 500, in_flight: 8 }, false),
        // The same with TCP_NODELAY: what the socket option alone costs at this shape
        // (publish_batch's shape, whose connection for batches leaves it off).
        ProducerDesign::new(Shape::Pipelined { chunk: 500, in_flight: 8 }, true),
        ProducerDesign::new(Shape::Connections { connections: 4, chunk: 1000 }, false),
        ProducerDesign::new(Shape::QueueWriter, false),
    ];
}

impl fmt::Display for ProducerDesign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shape {
            Shape::Pipelined { chunk, in_flight: 1 } => write!(f, "pipeline-{chunk}")?,
            Shape::Pipelined { chunk, in_flight } => write!(f, "pipeline-{chunk}x{in_flight}")?,
            Shape::Connections { connections, chunk } => write!(f, "conns-{connections}x{chunk}")?,
            Shape::InFlight { window } => write!(f, "inflight-{window}")?,
            Shape::QueueWriter => write!(f, "queue-writer")?,
        }
        if self.nodelay {
            write!(f, "+nodelay")?;
        }
        Ok(())
    }
}

impl FromStr for ProducerDesign {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, nodelay) = match s.strip_suffix("+nodelay") {
            Some(name) => (name, true),
            None => (s, false),
        };
        let positive = |v: &str| match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{v:?} in raw producer {s:?} is not a positive number")),
        };
        let pair = |v: &str| match v.split_once('x') {
            Some((a, b)) => Ok::<_, String>((positive(a)?, positive(b)?)),
            None => Ok((positive(v)?, 1)),
        };
        let shape = if let Some(v) = name.strip_prefix("pipeline-") {
            let (chunk, in_flight) = pair(v)?;
            Shape::Pipelined { chunk, in_flight }
        } else if let Some(v) = name.strip_prefix("conns-") {
            let (connections, chunk) = pair(v)?;
            Shape::Connections { connections, chunk }
        } else if let Some(v) = name.strip_prefix("inflight-") {
            Shape::InFlight { window: positive(v)? }
        } else if name == "queue-writer" {
            Shape::QueueWriter
        } else {
            return Err(format!(
                "unknown raw producer {s:?}: expected pipeline-<chunk>[x<in flight>], conns-<n>x<chunk>, \
                 inflight-<window> or queue-writer, with an optional +nodelay"
            ));
        };
        Ok(ProducerDesign { shape, nodelay })
    }
}

impl serde::Serialize for ProducerDesign {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Publishes `events` to `stream` with `design`, counting them in `done`; the time from the
/// first send to the last reply (connections are made before the clock starts).
pub async fn publish(
    design: ProducerDesign,
    url: &str,
    stream: &str,
    events: &[Event],
    done: &AtomicU64,
) -> Result<Duration> {
    let connections = match design.shape {
        Shape::Connections { connections, .. } => connections,
        _ => 1,
    };
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(raw::connect_with(url, design.nodelay).await?);
    }
    let started = Instant::now();
    let published = match design.shape {
        Shape::Pipelined { chunk, in_flight } => pipelined(&clients[0], stream, events, chunk, in_flight, done).await,
        Shape::Connections { chunk, .. } => per_connection(&clients, stream, events, chunk, done).await,
        Shape::InFlight { window } => in_flight(&clients[0], stream, events, window, done).await,
        Shape::QueueWriter => queue_writer(&clients[0], stream, events, done).await,
    };
    let elapsed = started.elapsed();
    for client in clients {
        let _ = client.quit().await;
    }
    published.with_context(|| format!("raw producer {design}"))?;
    Ok(elapsed)
}

fn encode(event: &Event) -> Result<Bytes> {
    Ok(Bytes::from(serde_json::to_vec(event)?))
}

async fn pipelined(
    client: &Client,
    stream: &str,
    events: &[Event],
    chunk: usize,
    in_flight: usize,
    done: &AtomicU64,
) -> Result<()> {
    stream::iter(events.chunks(chunk))
        .map(|chunk| async move {
            raw::publish_chunk(client, stream, chunk).await?;
            done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok::<_, anyhow::Error>(())
        })
        .buffered(in_flight)
        .try_collect::<()>()
        .await
}

async fn per_connection(
    clients: &[Client],
    stream: &str,
    events: &[Event],
    chunk: usize,
    done: &AtomicU64,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let chunks: Vec<&[Event]> = events.chunks(chunk).collect();
    let workers = clients.iter().map(|client| {
        let (next, chunks) = (&next, &chunks);
        async move {
            while let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) {
                raw::publish_chunk(client, stream, chunk).await?;
                done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    futures_util::future::try_join_all(workers).await.map(|_| ())
}

async fn in_flight(client: &Client, stream: &str, events: &[Event], window: usize, done: &AtomicU64) -> Result<()> {
    stream::iter(events)
        .map(|event| async move {
            let data = encode(event)?;
            let _: Value =
                client.xadd(stream, false, XCap::from(None::<()>), "*", entry_fields(data)).await.context("XADD")?;
            done.fetch_add(1, Ordering::Relaxed);
            Ok::<_, anyhow::Error>(())
        })
        .buffered(window)
        .try_collect::<()>()
        .await
}

/// A message waiting for the queue writer, and where to report its fate.
struct Queued {
    data: Bytes,
    written: oneshot::Sender<Result<(), String>>,
}

async fn queue_writer(client: &Client, stream: &str, events: &[Event], done: &AtomicU64) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
    let (client, stream_name) = (client.clone(), stream.to_string());
    let writer = tokio::spawn(async move {
        let mut batch: Vec<Queued> = Vec::new();
        while rx.recv_many(&mut batch, usize::MAX).await > 0 {
            let pipeline = client.pipeline();
            for q in &batch {
                let queued: Result<(), _> = pipeline
                    .xadd(stream_name.as_str(), false, XCap::from(None::<()>), "*", entry_fields(q.data.clone()))
                    .await;
                if let Err(e) = queued {
                    return Err(anyhow!(e).context("queueing an XADD"));
                }
            }
            let replies = pipeline.try_all::<Value>().await;
            for (q, reply) in batch.drain(..).zip(replies) {
                let _ = q.written.send(reply.map(|_| ()).map_err(|e| e.to_string()));
            }
        }
        Ok(())
    });
    let mut receipts = Vec::with_capacity(events.len());
    for event in events {
        let (written, receipt) = oneshot::channel();
        tx.send(Queued { data: encode(event)?, written }).map_err(|_| anyhow!("the queue writer stopped"))?;
        receipts.push(receipt);
    }
    drop(tx);
    for receipt in receipts {
        match receipt.await {
            Ok(Ok(())) => {
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => return Err(anyhow!("XADD: {e}")),
            Err(_) => break,
        }
    }
    writer.await.context("queue writer task")??;
    anyhow::ensure!(done.load(Ordering::Relaxed) >= events.len() as u64, "the queue writer lost messages");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_names_round_trip() {
        for design in ProducerDesign::DEFAULTS {
            assert_eq!(design.to_string().parse::<ProducerDesign>(), Ok(design));
        }
        assert_eq!(
            "pipeline-500x2+nodelay".parse::<ProducerDesign>(),
            Ok(ProducerDesign::new(Shape::Pipelined { chunk: 500, in_flight: 2 }, true))
        );
        assert!("pipeline-0".parse::<ProducerDesign>().is_err());
        assert!("bulk".parse::<ProducerDesign>().is_err());
    }
}
