//! The consumer loop of one consumer:
//!
//! - a **reader** fetching new entries (`XREADGROUP >`) on a connection of its own, each
//!   read sized by the **budget** of fetched, unfinished bytes;
//! - handlers, never more than `concurrency` at once (**dispatch**; a handler that waits
//!   runs on a task of its own), whose outcomes are acknowledged in batches (**acker**),
//!   parked in the durable retry schedule (**retries**) or dead-lettered;
//! - a **heartbeat** on its own timer, proving this consumer alive so nothing it holds is
//!   taken over;
//! - **take-overs** of what stopped consumers held, with crash-loop isolation, and due
//!   retries (**promoter**), each sized by the permits and the budget;
//! - a graceful **drain** at shutdown.
//!
//! Glossary (see also the README's): a *consumer* (the API's `Consumer`, a registration)
//! is a handler bound to a stream and group; its loop joins the group as a *member* under a
//! *member name* (`member=` in logs; the option is still called `consumer_name`, Redis's
//! word). *Held* entries are those pending under this member's name; the *byte budget*
//! bounds the bytes of fetched, unfinished entries.

mod acker;
mod batcher;
mod budget;
mod dedupe;
mod dispatch;
mod drain;
mod group;
mod heartbeat;
mod held;
mod notified;
mod ordering;
mod promoter;
mod rate;
mod reader;
mod retries;
mod sampler;
mod script_index;
mod shared;
mod sizing;
mod stats;
mod takeover;
mod ticker;
mod timeout;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connection::RedisUrl;
use crate::consumer::Consumer;
use crate::error::Result;

use crate::retry_delay::RetryDelay;
pub(crate) use group::ensure_group;
pub use retries::SCHEDULED_CONSUMER;
pub(crate) use script_index::scripts;
use shared::Shared;
pub use stats::{ConsumerStats, ConsumerStatsSnapshot};
pub use takeover::SUSPECTS_CONSUMER;

/// Settings the runtime passes to every consumer loop.
#[derive(Debug, Clone)]
pub(crate) struct LoopSettings {
    pub url: RedisUrl,
    pub member_name: String,
    pub dead_letter_stream: Option<String>,
    pub max_payload_bytes: usize,
    pub max_buffered_bytes: usize,
    pub shutdown_timeout: Duration,
    pub cleanup_idle: Duration,
    /// How often the gauges are sampled (zero: never).
    pub metrics_interval: Duration,
    pub state: crate::state::State,
    /// What the server offers beyond Redis 7.0, detected at start (see [`crate::Capabilities`]).
    pub capabilities: crate::Capabilities,
    /// The fence of a topic shard's loop (see [`crate::topic::fence`]): its scripts check the
    /// shard's lease, its reads wait while the lease may have lapsed, and it stops when the
    /// shard moved. `None` for a stream's loop.
    pub fence: Option<Arc<crate::topic::fence::Fence>>,
    /// Counters shared with other loops (a topic's shards count into their consumer's);
    /// `None`: the loop's own.
    pub stats: Option<Arc<ConsumerStats>>,
    /// Whether the consumer's group is paused (see [`crate::pause`]), kept current by the
    /// runtime; a topic's shards share their topic's.
    pub pause: Arc<crate::pause::PauseFlag>,
}

/// A running consumer loop.
pub(crate) struct LoopHandle {
    pub name: String,
    pub stats: Arc<ConsumerStats>,
    pub readiness: Arc<crate::observe::Readiness>,
    pub task: JoinHandle<()>,
}

/// Starts the loop of `consumer`. It runs until `shutdown` is cancelled, then drains (see
/// [`drain`]) and ends; when its task has ended, nothing of it runs any more.
pub(crate) fn spawn(
    consumer: Consumer,
    settings: LoopSettings,
    command: crate::connection::HealingClient,
    shutdown: CancellationToken,
) -> LoopHandle {
    let name = consumer.name.to_string();
    let (shared, ack_rx) = Shared::new(consumer, settings, command, shutdown);
    let stats = shared.stats.clone();
    let readiness = shared.readiness.clone();
    let task = tokio::spawn(run(shared, ack_rx));
    LoopHandle { name, stats, readiness, task }
}

async fn run(shared: Arc<Shared>, ack_rx: shared::AckReceiver) {
    let shutdown = shared.stopping.clone();
    // Alive before the first read, so no take-over mistakes this member for a stopped one.
    let mut delay = RetryDelay::new();
    while let Err(e) = heartbeat::beat(&shared).await {
        tracing::warn!(consumer = %shared.name, error = %e, "cannot send the first heartbeat yet");
        if !delay.wait(&shutdown).await {
            break;
        }
    }
    let stop_beating = CancellationToken::new();
    let acker = tokio::spawn(acker::run(shared.clone(), ack_rx));
    let beating = tokio::spawn(supervise("heartbeat", shared.clone(), stop_beating.clone(), {
        let (shared, stop) = (shared.clone(), stop_beating.clone());
        move || heartbeat::run(shared.clone(), stop.clone())
    }));
    let taking_over = tokio::spawn(supervise("take-over", shared.clone(), shutdown.clone(), {
        let shared = shared.clone();
        move || takeover::run(shared.clone())
    }));
    let promoting = tokio::spawn(supervise("retries", shared.clone(), shutdown.clone(), {
        let shared = shared.clone();
        move || promoter::run(shared.clone())
    }));
    // Gauges only when a recorder would keep them.
    let sampling = (!shared.settings.metrics_interval.is_zero() && crate::observe::recorder_installed())
        .then(|| tokio::spawn(sampler::run(shared.clone(), shared.settings.metrics_interval)));
    supervise("reader", shared.clone(), shutdown.clone(), {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        let restarted = std::sync::atomic::AtomicBool::new(false);
        move || {
            reader::run(shared.clone(), shutdown.clone(), restarted.swap(true, std::sync::atomic::Ordering::Relaxed))
        }
    })
    .await;
    shared.readiness.stopped();
    let _ = taking_over.await;
    let _ = promoting.await;
    if let Some(sampling) = sampling {
        let _ = sampling.await;
    }
    drain::finish_handlers(&shared).await;
    shared.tasks.close();
    shared.tasks.wait().await;
    shared.close_acks();
    let _ = acker.await;
    drain::hand_back(&shared).await;
    stop_beating.cancel();
    let _ = beating.await;
    heartbeat::clean_up(&shared, shared.member_name()).await;
    tracing::info!(consumer = %shared.name, "consumer stopped");
}

/// Runs a task of the loop until `until` is cancelled, restarting it (after a pause that
/// grows to 5 s) if it fails or panics, so a consumer never dies silently.
async fn supervise<F, Fut, T>(what: &'static str, shared: Arc<Shared>, until: CancellationToken, start: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: IntoTaskResult + Send + 'static,
{
    let mut backoff = RetryDelay::new();
    loop {
        let failure = match tokio::spawn(start()).await {
            Ok(outcome) => outcome.into_task_result().err(),
            Err(join) => Some(if join.is_panic() { "it panicked".to_string() } else { join.to_string() }),
        };
        if until.is_cancelled() {
            return;
        }
        let reason = failure.unwrap_or_else(|| "it stopped".to_string());
        tracing::error!(consumer = %shared.name, task = what, %reason, retry_in = ?backoff.current(), "consumer task ended; restarting it");
        backoff.wait(&until).await;
    }
}

/// What a supervised task returns: why it failed, if it did.
trait IntoTaskResult {
    fn into_task_result(self) -> std::result::Result<(), String>;
}

impl IntoTaskResult for () {
    fn into_task_result(self) -> std::result::Result<(), String> {
        Ok(())
    }
}

impl IntoTaskResult for Result<()> {
    fn into_task_result(self) -> std::result::Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

impl IntoTaskResult for std::result::Result<(), &'static str> {
    fn into_task_result(self) -> std::result::Result<(), String> {
        self.map_err(str::to_string)
    }
}
