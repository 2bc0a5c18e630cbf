//! Command-line options.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::raw::ReadPlan;
use crate::raw_producer::ProducerDesign;

/// Benchmarks streamx against a hand-written fred baseline on the same Redis, in one run,
/// and prints each figure as a ratio streamx/raw with the project's targets.
#[derive(Debug, Parser)]
#[command(name = "streamx-bench", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Internal: drain a backlog and print this process's peak RSS (used by the memory phase).
    #[command(hide = true)]
    ConsumeOnly(ConsumeOnlyArgs),
}

/// The phases a run can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Publishing a batch of JSON messages: `publish_batch` against the raw fred producers,
    /// SeaStreamer's Redis producer and `redis-benchmark` (the ceiling, when on PATH).
    Produce,
    /// Issue 26: `--publish-tasks` tasks sharing one `Producer`, each awaiting `publish` of
    /// one message after the other, against `publish_batch` of the same messages and
    /// against the same tasks on one raw fred client; msg/s and per-call latency.
    Concurrent,
    /// Draining a backlog with a no-op handler at several concurrencies.
    Consume,
    /// Issue 26: draining a backlog at concurrency 8 with `.batch_size(b)` for each of
    /// `--batch-sizes` (and once with `.readers(2).batch_size(100)`) against the raw loop
    /// reading `COUNT b` with as many readers.
    BatchSizes,
    /// Publish-to-handler latency at steady rates.
    Latency,
    /// A handler awaiting a 10 ms timer at concurrency 256.
    Io,
    /// Peak RSS of a consumer-only child process draining a large backlog.
    Memory,
    /// Peak RSS of a consumer-only child process draining entries of about 1 MiB each.
    MemoryLarge,
    /// Redis CPU of idle consumers with a 1,000,000-entry PEL, and the take-over rate.
    Scale,
    /// A 20,000-entry take-over by a batch consumer (against the raw XAUTOCLAIM loop) and the
    /// drain of 3,000 crash suspects: time, Redis CPU, the longest script.
    Takeover,
    /// Consume throughput and CPU of a consumer-only child at concurrency 8 with the HTTP
    /// endpoint on (metrics recorded, gauges sampled) against the same child without it.
    Metrics,
    /// Issue 24's features: consume with `dedupe` and with `delete_on_ack` against without,
    /// delayed-message promotion, and the retention trimmer's Redis CPU on a 1,000,000-entry
    /// stream.
    Features,
    /// Issue 25: consume throughput of an `ordered = true` consumer against the same
    /// consumer unordered, on one stream with 10, 1,000 and 100,000 distinct keys.
    Ordered,
    /// Issue 25: a sharded topic against one stream on a local 3-master Redis Cluster the
    /// phase starts itself: publish and consume msg/s, and Redis CPU per message per master.
    Topic,
    /// Issue 27: MessagePack against JSON: publish (`publish_batch_with`) and consume
    /// (drain at concurrency 8) msg/s and CPU per message, bytes per payload, as ratios.
    Codecs,
    /// Issue 27: consume throughput and CPU per message at concurrency 8 with one
    /// pass-through middleware layer against none (the default path), as ratios.
    Middleware,
    /// Issue 27: consume throughput with a rate limit that never binds (10,000,000/s)
    /// against without one, as a ratio.
    RateLimit,
}

impl Phase {
    pub const ALL: [Phase; 17] = [
        Phase::Produce,
        Phase::Concurrent,
        Phase::Consume,
        Phase::BatchSizes,
        Phase::Latency,
        Phase::Io,
        Phase::Memory,
        Phase::MemoryLarge,
        Phase::Scale,
        Phase::Takeover,
        Phase::Metrics,
        Phase::Features,
        Phase::Ordered,
        Phase::Topic,
        Phase::Codecs,
        Phase::Middleware,
        Phase::RateLimit,
    ];
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Redis URL.
    #[arg(long, env = "STREAMX_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,
    /// Phases to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Phase>,
    /// Messages for the produce, concurrent, consume, batch-sizes and I/O phases [default: 200000;
    /// --quick: 20000].
    #[arg(long)]
    pub messages: Option<u64>,
    /// Backlog drained by the memory phase [default: 1000000; --quick: 100000].
    #[arg(long)]
    pub backlog: Option<u64>,
    /// Repetitions of each measurement; the best is kept [default: 3; --quick: 1].
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Handler concurrencies of the consume phase.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub concurrency: Vec<usize>,
    /// Steady publish rates of the latency phase, msg/s.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub rates: Vec<u64>,
    /// Seconds of publishing per latency measurement [default: 5; --quick: 2].
    #[arg(long)]
    pub latency_secs: Option<f64>,
    /// Messages handled by the I/O-bound phase (at most --messages) [default: 100000; --quick: 10000].
    #[arg(long)]
    pub io_messages: Option<u64>,
    /// Handler concurrency of the memory phase's consumers.
    #[arg(long, default_value_t = 64)]
    pub memory_concurrency: usize,
    /// Memory-large phase: entries in the backlog.
    #[arg(long, default_value_t = 1500)]
    pub large_entries: u64,
    /// Memory-large phase: size of each entry's JSON payload, KiB.
    #[arg(long, default_value_t = 1024)]
    pub large_payload_kib: usize,
    /// Memory-large phase: handler concurrency of the streamx consumer.
    #[arg(long, default_value_t = 64)]
    pub large_concurrency: usize,
    /// Raw producer designs the produce phase measures; the fastest is the baseline
    /// [default: pipeline-1000+nodelay, pipeline-1000, pipeline-10000, pipeline-1000x2,
    /// pipeline-1000x4, pipeline-1000x4+nodelay, pipeline-500x8, conns-4x1000, queue-writer]. Names:
    /// `pipeline-<chunk>[x<in flight>]`, `conns-<n>x<chunk>`, `inflight-<window>`,
    /// `queue-writer`, each with an optional `+nodelay`.
    #[arg(long, value_delimiter = ',')]
    pub raw_producers: Vec<ProducerDesign>,
    /// Concurrent phase: tasks sharing one producer, each publishing its share of
    /// --messages one message at a time.
    #[arg(long, default_value_t = 1000)]
    pub publish_tasks: usize,
    /// Batch-sizes phase: the `batch_size` values of the streamx consumer (at concurrency 8,
    /// default readers), each against the raw loop reading `COUNT` as many.
    #[arg(long, value_delimiter = ',', default_value = "10,100,500")]
    pub batch_sizes: Vec<usize>,
    /// Reader tasks of the raw consumer at each concurrency [default: the concurrency,
    /// clamped to 1..=8].
    #[arg(long)]
    pub raw_readers: Option<usize>,
    /// Scale phase: entries in the PEL (none due) while the idle cost is measured
    /// [default: 1000000; --quick: 100000].
    #[arg(long)]
    pub scale_pel: Option<u64>,
    /// Scale phase: idle consumers of the group (streamx, and raw readers for the baseline).
    #[arg(long, default_value_t = 8)]
    pub scale_consumers: usize,
    /// Scale phase: seconds of each idle measurement window [default: 10; --quick: 5].
    #[arg(long)]
    pub scale_secs: Option<f64>,
    /// Scale phase: seconds between starting the idle consumers and the window.
    #[arg(long, default_value_t = 2.0)]
    pub scale_settle_secs: f64,
    /// Scale phase: `claim_idle` of the streamx consumers of the idle measurement, ms
    /// [default: the consumer default].
    #[arg(long)]
    pub scale_claim_idle_ms: Option<u64>,
    /// Scale phase: entries taken over from a dead consumer (by streamx and by the raw XAUTOCLAIM loop, and drained fresh, to compare)
    /// [default: 100000; --quick: 20000].
    #[arg(long)]
    pub takeover_messages: Option<u64>,
    /// Scale and takeover phases: `claim_idle` of the take-over and fresh-drain consumers
    /// (and how long the dead consumer is left idle first), ms.
    #[arg(long, default_value_t = 1000)]
    pub takeover_claim_idle_ms: u64,
    /// Scale phase: handler concurrency of the take-over and fresh-drain consumers.
    #[arg(long, default_value_t = 8)]
    pub takeover_concurrency: usize,
    /// Takeover phase: entries pending for a dead consumer, taken over by a batch consumer
    /// (concurrency 100, max_batch 100) and by the raw XAUTOCLAIM loop.
    #[arg(long, default_value_t = 20_000)]
    pub batch_takeover_messages: u64,
    /// Takeover phase: crash suspects (marked entries of a dead taker) drained by a consumer
    /// of concurrency 4.
    #[arg(long, default_value_t = 3_000)]
    pub suspects: u64,
    /// Topic phase: shards of the topic.
    #[arg(long, default_value_t = 16)]
    pub topic_shards: u32,
    /// Topic phase: distinct message keys.
    #[arg(long, default_value_t = 10_000)]
    pub topic_keys: u64,
    /// Topic phase: concurrent tasks publishing one message at a time.
    #[arg(long, default_value_t = 64)]
    pub topic_tasks: usize,
    /// Topic phase: handler concurrency of the consumers.
    #[arg(long, default_value_t = 64)]
    pub topic_concurrency: usize,
    /// A small, fast run (for iterating on the program; figures are less stable).
    #[arg(long)]
    pub quick: bool,
    /// Print the results as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// [`BenchArgs`] with every default resolved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    #[serde(skip)]
    pub url: String,
    pub phases: Vec<Phase>,
    pub messages: u64,
    pub backlog: u64,
    pub repeat: u32,
    pub concurrency: Vec<usize>,
    pub rates: Vec<u64>,
    pub latency_secs: f64,
    pub io_messages: u64,
    pub io_concurrency: usize,
    pub io_sleep_ms: u64,
    pub memory_concurrency: usize,
    pub large_entries: u64,
    pub large_payload_bytes: usize,
    pub large_concurrency: usize,
    pub raw_producers: Vec<ProducerDesign>,
    pub raw_readers: Option<usize>,
    pub publish_tasks: usize,
    pub batch_sizes: Vec<usize>,
    pub scale_pel: u64,
    pub scale_consumers: usize,
    pub scale_secs: f64,
    pub scale_settle_secs: f64,
    pub scale_claim_idle_ms: Option<u64>,
    pub takeover_messages: u64,
    pub takeover_claim_idle_ms: u64,
    pub takeover_concurrency: usize,
    pub batch_takeover_messages: u64,
    pub suspects: u64,
    pub topic_shards: u32,
    pub topic_keys: u64,
    pub topic_tasks: usize,
    pub topic_concurrency: usize,
    pub quick: bool,
}

impl Settings {
    pub fn resolve(a: &BenchArgs) -> anyhow::Result<Self> {
        let q = a.quick;
        let messages = a.messages.unwrap_or(if q { 20_000 } else { 200_000 });
        let s = Settings {
            url: a.url.clone(),
            phases: if a.only.is_empty() { Phase::ALL.to_vec() } else { a.only.clone() },
            messages,
            backlog: a.backlog.unwrap_or(if q { 100_000 } else { 1_000_000 }),
            repeat: a.repeat.unwrap_or(if q { 1 } else { 3 }).max(1),
            concurrency: a.concurrency.clone(),
            rates: a.rates.clone(),
            latency_secs: a.latency_secs.unwrap_or(if q { 2.0 } else { 5.0 }),
            io_messages: a.io_messages.unwrap_or(if q { 10_000 } else { 100_000 }).min(messages),
            io_concurrency: 256,
            io_sleep_ms: 10,
            memory_concurrency: a.memory_concurrency,
            large_entries: a.large_entries,
            large_payload_bytes: a.large_payload_kib.saturating_mul(1024),
            large_concurrency: a.large_concurrency,
            raw_producers: if a.raw_producers.is_empty() {
                ProducerDesign::DEFAULTS.to_vec()
            } else {
                a.raw_producers.clone()
            },
            raw_readers: a.raw_readers,
            publish_tasks: a.publish_tasks,
            batch_sizes: a.batch_sizes.clone(),
            scale_pel: a.scale_pel.unwrap_or(if q { 100_000 } else { 1_000_000 }),
            scale_consumers: a.scale_consumers,
            scale_secs: a.scale_secs.unwrap_or(if q { 5.0 } else { 10.0 }),
            scale_settle_secs: a.scale_settle_secs,
            scale_claim_idle_ms: a.scale_claim_idle_ms,
            takeover_messages: a.takeover_messages.unwrap_or(if q { 20_000 } else { 100_000 }),
            takeover_claim_idle_ms: a.takeover_claim_idle_ms,
            takeover_concurrency: a.takeover_concurrency,
            batch_takeover_messages: a.batch_takeover_messages,
            suspects: a.suspects,
            topic_shards: a.topic_shards,
            topic_keys: a.topic_keys,
            topic_tasks: a.topic_tasks,
            topic_concurrency: a.topic_concurrency,
            quick: q,
        };
        anyhow::ensure!(s.messages > 0 && s.backlog > 0, "--messages and --backlog must be positive");
        anyhow::ensure!(s.concurrency.iter().all(|c| *c > 0), "--concurrency values must be positive");
        anyhow::ensure!(s.rates.iter().all(|r| *r > 0), "--rates must be positive");
        anyhow::ensure!(s.latency_secs > 0.0, "--latency-secs must be positive");
        anyhow::ensure!(s.memory_concurrency > 0, "--memory-concurrency must be positive");
        anyhow::ensure!(
            s.large_entries > 0 && s.large_payload_bytes > 0 && s.large_concurrency > 0,
            "--large-entries, --large-payload-kib and --large-concurrency must be positive"
        );
        anyhow::ensure!(s.raw_readers != Some(0), "--raw-readers must be positive");
        anyhow::ensure!(s.publish_tasks > 0, "--publish-tasks must be positive");
        anyhow::ensure!(
            !s.batch_sizes.is_empty() && s.batch_sizes.iter().all(|b| *b > 0),
            "--batch-sizes must be positive"
        );
        anyhow::ensure!(
            s.scale_pel > 0 && s.takeover_messages > 0,
            "--scale-pel and --takeover-messages must be positive"
        );
        anyhow::ensure!(s.scale_consumers > 0, "--scale-consumers must be positive");
        anyhow::ensure!(s.scale_secs > 0.0 && s.scale_settle_secs >= 0.0, "--scale-secs must be positive");
        anyhow::ensure!(s.scale_claim_idle_ms != Some(0), "--scale-claim-idle-ms must be positive");
        anyhow::ensure!(s.takeover_claim_idle_ms > 0, "--takeover-claim-idle-ms must be positive");
        anyhow::ensure!(s.takeover_concurrency > 0, "--takeover-concurrency must be positive");
        anyhow::ensure!(
            s.batch_takeover_messages > 0 && s.suspects > 0,
            "--batch-takeover-messages and --suspects must be positive"
        );
        anyhow::ensure!(
            s.topic_shards > 0 && s.topic_keys > 0 && s.topic_tasks > 0 && s.topic_concurrency > 0,
            "--topic-shards, --topic-keys, --topic-tasks and --topic-concurrency must be positive"
        );
        Ok(s)
    }

    pub fn runs(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    /// How the raw consumer reads when streamx runs at `concurrency`.
    pub fn raw_plan(&self, concurrency: usize) -> ReadPlan {
        match self.raw_readers {
            Some(readers) => ReadPlan { readers, ..ReadPlan::for_concurrency(concurrency) },
            None => ReadPlan::for_concurrency(concurrency),
        }
    }

    pub fn latency_duration(&self) -> Duration {
        Duration::from_secs_f64(self.latency_secs)
    }
}

/// Which implementation a measurement uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Side {
    Streamx,
    Raw,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Streamx => "streamx",
            Side::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConsumeOnlyArgs {
    #[arg(long, env = "STREAMX_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,
    #[arg(long)]
    pub stream: String,
    #[arg(long)]
    pub group: String,
    /// Stop after handling this many messages.
    #[arg(long)]
    pub count: u64,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, value_enum)]
    pub side: Side,
    /// The payload the backlog holds.
    #[arg(long, value_enum, default_value = "event")]
    pub payload: PayloadKind,
    /// Raw side: reader tasks.
    #[arg(long, default_value_t = 1)]
    pub readers: usize,
    /// Raw side: entries per XREADGROUP.
    #[arg(long, default_value_t = crate::raw::READ_COUNT)]
    pub read_count: u64,
    /// streamx side: serve the HTTP endpoint (metrics recorded into its Prometheus recorder,
    /// gauges sampled).
    #[arg(long)]
    pub metrics: bool,
    /// streamx side: `.batch_size(n)` (for profiling a consumer alone).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// streamx side: `.readers(n)`.
    #[arg(long)]
    pub streamx_readers: Option<usize>,
}

/// What a backlog's entries hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    /// [`Event`](crate::workload::Event), about 100 bytes of JSON.
    Event,
    /// [`Blob`](crate::workload::Blob), a large JSON payload.
    Blob,
}

impl PayloadKind {
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::Event => "event",
            PayloadKind::Blob => "blob",
        }
    }
}
