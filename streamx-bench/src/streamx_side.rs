//! The streamx side: `Producer::publish_batch` and the runtime with a `Consumer`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::de::DeserializeOwned;
use streamx::{Consumer, Message, Producer, RunningRuntime, Runtime};

use crate::workload::Event;

/// Times `Producer::publish_batch` of `events` (the connection is made before the clock
/// starts).
pub async fn produce(url: &str, stream: &str, events: &[Event]) -> Result<Duration> {
    let producer = Producer::connect(url).await?;
    let started = Instant::now();
    let ids = producer.publish_batch(stream, events).await?;
    let elapsed = started.elapsed();
    producer.close().await;
    anyhow::ensure!(ids.len() == events.len(), "published {} of {} messages", ids.len(), events.len());
    Ok(elapsed)
}

/// What the benchmark handler does besides decoding the payload.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    /// Nothing.
    None,
    /// Awaits a timer (an I/O-bound handler).
    Sleep(Duration),
}

/// Counts handled messages and remembers when the `target`-th one finished.
#[derive(Default)]
pub struct Tally {
    pub handled: Arc<AtomicU64>,
    finished_at: OnceLock<Instant>,
}

impl Tally {
    pub fn record(&self, target: u64) {
        if self.handled.fetch_add(1, Ordering::Relaxed) + 1 == target {
            let _ = self.finished_at.set(Instant::now());
        }
    }

    pub fn finished_at(&self) -> Option<Instant> {
        self.finished_at.get().copied()
    }
}

/// A consumer of `stream` in a fresh `group` running `work` per message after decoding its
/// payload as `T`, counting into `tally`.
pub fn consumer<T>(
    stream: &str,
    group: &str,
    concurrency: usize,
    work: Work,
    tally: Arc<Tally>,
    target: u64,
) -> Consumer
where
    T: DeserializeOwned + Send + 'static,
{
    Consumer::new(stream.to_string(), group.to_string(), move |msg: Message<T>| {
        let tally = tally.clone();
        async move {
            std::hint::black_box(msg.payload());
            if let Work::Sleep(d) = work {
                tokio::time::sleep(d).await;
            }
            tally.record(target);
        }
    })
    .concurrency(concurrency)
}

/// Starts a runtime with just `consumer`.
pub async fn start(url: &str, consumer: Consumer) -> Result<RunningRuntime> {
    start_with(url, consumer, false).await
}

/// [`start`], serving the HTTP endpoint on a free loopback port if `http`.
async fn start_with(url: &str, consumer: Consumer, http: bool) -> Result<RunningRuntime> {
    let mut builder = Runtime::builder()
        .redis_url(url)
        .registered_consumers(false)
        .consumer(consumer)
        .shutdown_timeout(Duration::from_secs(5));
    if http {
        builder = builder.http("127.0.0.1:0");
    }
    Ok(builder.build()?.start().await?)
}

/// Fails unless `/metrics` at `addr` counts at least `handled` successes: the metrics-on
/// runs really recorded.
async fn check_metrics(addr: std::net::SocketAddr, handled: u64) -> Result<()> {
    let text = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(addr)?;
        // HTTP/1.0: the body comes whole, never chunked.
        conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        Ok(text)
    })
    .await??;
    let counted: f64 = text
        .lines()
        .filter(|l| l.starts_with("streamx_messages_consumed_total") && l.contains(r#"outcome="success""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    if counted < handled as f64 {
        bail!("/metrics counted {counted} successes for {handled} handled messages");
    }
    Ok(())
}

/// How the consumer of a [`Drain`] reads, when not the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadTuning {
    /// `.batch_size(n)`.
    pub batch_size: Option<usize>,
    /// `.readers(n)`.
    pub readers: Option<usize>,
}

impl ReadTuning {
    /// The consumer's defaults.
    pub const DEFAULT: ReadTuning = ReadTuning { batch_size: None, readers: None };

    fn apply(self, mut consumer: Consumer) -> Consumer {
        if let Some(n) = self.batch_size {
            consumer = consumer.batch_size(n);
        }
        if let Some(n) = self.readers {
            consumer = consumer.readers(n);
        }
        consumer
    }
}

/// One drain of a backlog by a fresh group.
#[derive(Clone, Copy)]
pub struct Drain<'a> {
    pub url: &'a str,
    pub stream: &'a str,
    pub group: &'a str,
    /// Messages to handle.
    pub target: u64,
    pub concurrency: usize,
    pub read: ReadTuning,
    pub work: Work,
    pub timeout: Duration,
    /// Serve the HTTP endpoint on a free loopback port: metrics recorded into the
    /// Prometheus recorder and gauges sampled, as in production with `/metrics` on.
    pub http: bool,
}

/// Runs `drain` with the streamx runtime (payloads decoded as [`Event`]), counting into
/// `tally`; returns the time from the runtime's start to the last handled message.
pub async fn consume(drain: &Drain<'_>, tally: Arc<Tally>) -> Result<Duration> {
    consume_as::<Event>(drain, tally).await
}

/// [`consume`] with payloads decoded as `T`.
pub async fn consume_as<T>(drain: &Drain<'_>, tally: Arc<Tally>) -> Result<Duration>
where
    T: DeserializeOwned + Send + 'static,
{
    let Drain { url, stream, group, target, concurrency, read, work, timeout, http } = *drain;
    let started = Instant::now();
    let consumer = read.apply(consumer::<T>(stream, group, concurrency, work, tally.clone(), target));
    let running = start_with(url, consumer, http).await?;
    let finished = wait_for(&tally, target, started + timeout).await;
    if let Some(addr) = running.http_addr() {
        check_metrics(addr, tally.handled.load(Ordering::Relaxed)).await?;
    }
    running.shutdown().await?;
    match finished {
        Some(at) => Ok(at - started),
        None => bail!(
            "streamx consumer: only {} of {target} messages handled within {timeout:?}",
            tally.handled.load(Ordering::Relaxed)
        ),
    }
}

/// Polls until `tally` reaches `target` (the time is stamped by the handler, so the poll
/// interval does not matter) or `deadline`.
pub async fn wait_for(tally: &Tally, target: u64, deadline: Instant) -> Option<Instant> {
    loop {
        if let Some(at) = tally.finished_at() {
            return Some(at);
        }
        if tally.handled.load(Ordering::Relaxed) >= target {
            return tally.finished_at();
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
