//! The topic phase (issue 25): a sharded topic against one stream, on a local 3-master Redis
//! Cluster this phase starts itself (`STREAMX_REDIS_SERVER` / `STREAMX_REDIS_CLI` name the
//! binaries; `--url` is not used), in the same run:
//!
//! - **publish**: `publish_batch_keyed` of `--messages` events with `--topic-keys` distinct
//!   keys, and single `publish_keyed` calls from `--topic-tasks` concurrent tasks (a quarter
//!   of the messages), to a `--topic-shards`-shard topic and to one stream;
//! - **consume**: one runtime with a topic consumer (`--topic-concurrency`, ordered, the
//!   default) draining the topic's backlog, against one stream consumer draining the
//!   stream's, ordered and unordered; the clock runs from the runtime's start (the topic
//!   consumer's shard leases included) to the last handled message;
//! - **Redis CPU per message per master**: `INFO commandstats` (sum of `usec` over every
//!   command but INFO; a command called from a script counts twice, on its own line and in
//!   the script's) and `INFO cpu` (`used_cpu_sys + used_cpu_user`) of each master before
//!   and after each measured part, divided by the part's messages.
//!
//! The per-master CPU is what predicts scaling on real hardware: here the masters share the
//! machine's cores with each other and with the client, so msg/s cannot show the spread. The
//! report also prints each part's **ceiling**: the messages per second at which the busiest
//! master would use one whole core (`10⁶ / max over masters of its CPU µs per message`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fred::clients::Client;
use serde::Serialize;
use streamx::testing::RedisCluster;
use streamx::{Consumer, Message, Producer, Runtime};

use crate::args::Settings;
use crate::progress::note;
use crate::raw;
use crate::redis_stats::{self, ServerSample};
use crate::report::{best, count};
use crate::streamx_side::{wait_for, Tally};
use crate::workload::{events, Event};

/// Masters of the cluster the phase starts.
const MASTERS: usize = 3;
/// The longest one drain may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// What one measured part cost one master.
#[derive(Debug, Clone, Serialize)]
pub struct MasterCost {
    pub port: u16,
    /// Sum of `INFO commandstats` usec (INFO excluded) per message of the part, µs.
    pub command_us_per_msg: f64,
    /// `used_cpu_sys + used_cpu_user` per message of the part, µs.
    pub cpu_us_per_msg: f64,
}

/// One measured part, the best of the repeats (its costs are the best run's).
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub name: String,
    pub messages: u64,
    /// msg/s of the best run.
    pub rate: f64,
    pub runs: Vec<f64>,
    pub masters: Vec<MasterCost>,
}

impl Part {
    /// Redis CPU per message over every master, µs.
    pub fn cpu_us_per_msg(&self) -> f64 {
        self.masters.iter().map(|m| m.cpu_us_per_msg).sum()
    }

    /// The msg/s at which the busiest master would use one core.
    pub fn ceiling(&self) -> f64 {
        let busiest = self.masters.iter().map(|m| m.cpu_us_per_msg).fold(0.0, f64::max);
        if busiest > 0.0 {
            1e6 / busiest
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicRow {
    /// `INFO server`'s version of the masters.
    pub server: String,
    pub masters: usize,
    pub shards: u32,
    pub keys: u64,
    pub publish_tasks: usize,
    pub concurrency: usize,
    pub topic_batch: Part,
    pub stream_batch: Part,
    pub topic_single: Part,
    pub stream_single: Part,
    pub topic_consume: Part,
    pub stream_consume_ordered: Part,
    pub stream_consume_unordered: Part,
}

/// The masters' clients, sampled before and after each part.
struct Masters {
    ports: Vec<u16>,
    clients: Vec<Client>,
}

impl Masters {
    async fn connect(cluster: &RedisCluster) -> Result<Self> {
        let mut ports = Vec::new();
        let mut clients = Vec::new();
        for index in cluster.masters().context("the cluster's masters")? {
            let node = &cluster.nodes()[index];
            ports.push(node.port());
            clients.push(raw::connect(&node.url()).await?);
        }
        Ok(Masters { ports, clients })
    }

    async fn sample(&self) -> Result<Vec<ServerSample>> {
        let mut samples = Vec::with_capacity(self.clients.len());
        for client in &self.clients {
            samples.push(redis_stats::sample(client).await?);
        }
        Ok(samples)
    }

    /// Each master's cost per message since `before`.
    async fn cost_since(&self, before: &[ServerSample], messages: u64) -> Result<Vec<MasterCost>> {
        let after = self.sample().await?;
        let n = messages.max(1) as f64;
        Ok(self
            .ports
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(&port, (b, a))| {
                let usec: u64 = a.commands_since(b).iter().map(|c| c.usec).sum();
                MasterCost { port, command_us_per_msg: usec as f64 / n, cpu_us_per_msg: a.cpu_secs_since(b) * 1e6 / n }
            })
            .collect())
    }
}

/// Runs of one part: keeps every rate and the costs of the fastest run.
struct Runs {
    name: String,
    messages: u64,
    runs: Vec<f64>,
    masters: Vec<MasterCost>,
}

impl Runs {
    fn new(name: &str, messages: u64) -> Self {
        Runs { name: name.to_string(), messages, runs: Vec::new(), masters: Vec::new() }
    }

    fn push(&mut self, elapsed: Duration, masters: Vec<MasterCost>) {
        let rate = self.messages as f64 / elapsed.as_secs_f64();
        let cpu: f64 = masters.iter().map(|m| m.cpu_us_per_msg).sum();
        let spread: Vec<String> = masters.iter().map(|m| format!("{:.1}", m.cpu_us_per_msg)).collect();
        note(&format!(
            "   {} run {}: {} msg/s; Redis CPU {cpu:.1} us/msg (per master {})",
            self.name,
            self.runs.len() + 1,
            count(rate),
            spread.join(" / ")
        ));
        if rate > best(&self.runs) {
            self.masters = masters;
        }
        self.runs.push(rate);
    }

    fn part(self) -> Part {
        Part {
            rate: best(&self.runs),
            name: self.name,
            messages: self.messages,
            runs: self.runs,
            masters: self.masters,
        }
    }
}

pub async fn run(s: &Settings) -> Result<TopicRow> {
    let n = s.messages;
    let single = (n / 4).max(1);
    note(&format!(
        "== topic: starting a {MASTERS}-master Redis Cluster; {n} keyed messages ({} keys), a {}-shard topic vs one \
         stream: publish_batch_keyed, publish_keyed from {} tasks ({single} messages), consume at concurrency {}, \
         best of {}",
        s.topic_keys, s.topic_shards, s.topic_tasks, s.topic_concurrency, s.repeat
    ));
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::builder().masters(MASTERS).start())
        .await?
        .context("starting the Redis Cluster (STREAMX_REDIS_SERVER, STREAMX_REDIS_CLI)")?;
    let url = cluster.url();
    let masters = Masters::connect(&cluster).await?;
    let server = crate::features::server_version(&masters.clients[0]).await?;
    let batch: Vec<(String, Event)> =
        events(0, n).into_iter().map(|e| (format!("key-{}", e.seq % s.topic_keys), e)).collect();
    let producer = Producer::connect(&url).await?;

    let mut topic_batch = Runs::new("topic publish_batch_keyed", n);
    let mut stream_batch = Runs::new("stream publish_batch_keyed", n);
    let mut topic_single = Runs::new("topic publish_keyed", single);
    let mut stream_single = Runs::new("stream publish_keyed", single);
    let mut topic_consume = Runs::new("topic consume", n);
    let mut ordered_consume = Runs::new("stream consume ordered", n);
    let mut unordered_consume = Runs::new("stream consume unordered", n);
    for r in 0..s.repeat {
        let topic = format!("bench-topic-{r}");
        let stream = format!("bench-stream-{r}");
        producer.topic(&topic, s.topic_shards).await?;
        // Alternate which side goes first, so neither always runs on a quieter machine.
        let sides = if r % 2 == 0 { [&topic, &stream] } else { [&stream, &topic] };
        for target in sides {
            let runs = if *target == topic { &mut topic_batch } else { &mut stream_batch };
            let before = masters.sample().await?;
            let started = Instant::now();
            let ids = producer.publish_batch_keyed(target, &batch).await?;
            let elapsed = started.elapsed();
            anyhow::ensure!(ids.len() == batch.len(), "published {} of {} messages", ids.len(), batch.len());
            runs.push(elapsed, masters.cost_since(&before, n).await?);
        }
        for target in sides {
            // A target of its own, so the drains below see exactly the batch.
            let single_target = format!("{target}-single");
            if *target == topic {
                producer.topic(&single_target, s.topic_shards).await?;
            }
            let runs = if *target == topic { &mut topic_single } else { &mut stream_single };
            let before = masters.sample().await?;
            let elapsed = publish_single(&producer, &single_target, &batch[..single as usize], s.topic_tasks).await?;
            runs.push(elapsed, masters.cost_since(&before, single).await?);
        }
        let drains = [(&topic, Drain::Topic), (&stream, Drain::Ordered), (&stream, Drain::Unordered)];
        let order: Vec<usize> = if r % 2 == 0 { vec![0, 1, 2] } else { vec![2, 1, 0] };
        for i in order {
            let (target, kind) = drains[i];
            let runs = match kind {
                Drain::Topic => &mut topic_consume,
                Drain::Ordered => &mut ordered_consume,
                Drain::Unordered => &mut unordered_consume,
            };
            let group = format!("{}-{r}", kind.name());
            let before = masters.sample().await?;
            let elapsed = drain(&url, target, &group, kind, s, n).await?;
            runs.push(elapsed, masters.cost_since(&before, n).await?);
        }
    }
    producer.close().await;
    for client in &masters.clients {
        let _ = fred::interfaces::ClientLike::quit(client).await;
    }
    drop(cluster);
    Ok(TopicRow {
        server,
        masters: MASTERS,
        shards: s.topic_shards,
        keys: s.topic_keys,
        publish_tasks: s.topic_tasks,
        concurrency: s.topic_concurrency,
        topic_batch: topic_batch.part(),
        stream_batch: stream_batch.part(),
        topic_single: topic_single.part(),
        stream_single: stream_single.part(),
        topic_consume: topic_consume.part(),
        stream_consume_ordered: ordered_consume.part(),
        stream_consume_unordered: unordered_consume.part(),
    })
}

/// Publishes `entries` one `publish_keyed` at a time from `tasks` tasks (task `t` takes
/// entries `t, t + tasks, ...`); the time from the first call to the last reply.
async fn publish_single(
    producer: &Producer,
    target: &str,
    entries: &[(String, Event)],
    tasks: usize,
) -> Result<Duration> {
    let entries: Arc<[(String, Event)]> = entries.into();
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let (producer, entries, target) = (producer.clone(), entries.clone(), target.to_string());
        handles.push(tokio::spawn(async move {
            for (key, event) in entries.iter().skip(t).step_by(tasks) {
                producer.publish_keyed(&target, key, event).await?;
            }
            Ok::<(), streamx::Error>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(started.elapsed())
}

#[derive(Debug, Clone, Copy)]
enum Drain {
    Topic,
    Ordered,
    Unordered,
}

impl Drain {
    fn name(self) -> &'static str {
        match self {
            Drain::Topic => "topic",
            Drain::Ordered => "ordered",
            Drain::Unordered => "unordered",
        }
    }
}

/// Drains `target` in a fresh `group` with one runtime; the time from the runtime's start to
/// the `n`-th handled message.
async fn drain(url: &str, target: &str, group: &str, kind: Drain, s: &Settings, n: u64) -> Result<Duration> {
    let tally = Arc::new(Tally::default());
    let handler = {
        let tally = tally.clone();
        move |msg: Message<Event>| {
            let tally = tally.clone();
            async move {
                std::hint::black_box(msg.payload());
                tally.record(n);
            }
        }
    };
    let consumer = match kind {
        Drain::Topic => Consumer::topic(target.to_string(), group.to_string(), handler).shards(s.topic_shards),
        Drain::Ordered => Consumer::new(target.to_string(), group.to_string(), handler).ordered(true),
        Drain::Unordered => Consumer::new(target.to_string(), group.to_string(), handler).ordered(false),
    }
    .concurrency(s.topic_concurrency);
    let started = Instant::now();
    let running = Runtime::builder()
        .redis_url(url)
        .registered_consumers(false)
        .consumer(consumer)
        .shutdown_timeout(Duration::from_secs(5))
        .build()?
        .start()
        .await?;
    let finished = wait_for(&tally, n, started + DRAIN_TIMEOUT).await;
    running.shutdown().await?;
    match finished {
        Some(at) => Ok(at - started),
        None => anyhow::bail!(
            "{} consumer of {target}: only {} of {n} messages handled within {DRAIN_TIMEOUT:?}",
            kind.name(),
            tally.handled.load(std::sync::atomic::Ordering::Relaxed)
        ),
    }
}

/// The phase's lines of the report: msg/s topic against stream, then each part's Redis CPU
/// per message on each master and its ceiling.
pub fn table(t: &TopicRow, out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(out, "{:<44} {:>14} {:>14} {:>12}", "figure", "topic", "stream", "topic/stream");
    let _ = writeln!(out, "{}", "-".repeat(87));
    let c = t.concurrency;
    for (name, topic, stream) in [
        (format!("publish_batch_keyed, {} shards (msg/s)", t.shards), &t.topic_batch, &t.stream_batch),
        (format!("publish_keyed x{} tasks (msg/s)", t.publish_tasks), &t.topic_single, &t.stream_single),
        (format!("consume c={c} vs ordered stream (msg/s)"), &t.topic_consume, &t.stream_consume_ordered),
        (format!("consume c={c} vs unordered stream (msg/s)"), &t.topic_consume, &t.stream_consume_unordered),
    ] {
        let _ = writeln!(
            out,
            "{name:<44} {:>14} {:>14} {:>12}",
            count(topic.rate),
            count(stream.rate),
            format!("{:.2}", topic.rate / stream.rate)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "topic phase ({}, {} masters): Redis CPU per message, us: INFO cpu (INFO commandstats); ceiling: msg/s at \
         which the busiest master uses one core",
        t.server, t.masters
    );
    let ports: Vec<String> = t.topic_batch.masters.iter().map(|m| format!(":{}", m.port)).collect();
    let _ = writeln!(out, "{:<28} {:>38} {:>8} {:>12}", "part", ports.join(" / "), "total", "ceiling/s");
    for p in [
        &t.topic_batch,
        &t.stream_batch,
        &t.topic_single,
        &t.stream_single,
        &t.topic_consume,
        &t.stream_consume_ordered,
        &t.stream_consume_unordered,
    ] {
        let per: Vec<String> =
            p.masters.iter().map(|m| format!("{:.1} ({:.1})", m.cpu_us_per_msg, m.command_us_per_msg)).collect();
        let _ = writeln!(
            out,
            "{:<28} {:>38} {:>8.1} {:>12}",
            p.name,
            per.join(" / "),
            p.cpu_us_per_msg(),
            count(p.ceiling())
        );
    }
}
