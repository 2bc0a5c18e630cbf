//! The consumer loop of one consumer: a reader fetching new entries, handler tasks bounded
//! by a semaphore, an acker batching XACKs, and a claimer that renews leases, schedules
//! retries and takes over abandoned entries.

mod acker;
mod claimer;
mod dispatch;
mod group;
mod reader;
mod state;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connection::RedisUrl;
use crate::consumer::Consumer;
use crate::error::Result;

pub(crate) use group::ensure_group;
pub use state::{ConsumerStats, ConsumerStatsSnapshot};
use state::Shared;

/// Settings the runtime passes to every consumer loop.
#[derive(Debug, Clone)]
pub(crate) struct LoopSettings {
    pub url: RedisUrl,
    pub consumer_name: String,
    pub dead_letter_stream: Option<String>,
    pub max_payload_bytes: usize,
    pub shutdown_timeout: Duration,
    pub cleanup_idle: Duration,
    pub state: crate::state::State,
}

/// A running consumer loop.
pub(crate) struct LoopHandle {
    pub name: String,
    pub stats: Arc<ConsumerStats>,
    pub task: JoinHandle<()>,
}

/// Starts the loop of `consumer`. It runs until `shutdown` is cancelled, then drains (see
/// [`Shared::drain`]) and ends.
pub(crate) fn spawn(
    consumer: Consumer,
    settings: LoopSettings,
    command: crate::connection::HealingClient,
    shutdown: CancellationToken,
) -> LoopHandle {
    let name = consumer.name.to_string();
    let (shared, ack_rx) = Shared::new(consumer, settings, command);
    let stats = shared.stats.clone();
    let task = tokio::spawn(run(shared, ack_rx, shutdown));
    LoopHandle { name, stats, task }
}

async fn run(shared: Arc<Shared>, ack_rx: acker::AckReceiver, shutdown: CancellationToken) {
    let stop_background = CancellationToken::new();
    let acker = tokio::spawn(acker::run(shared.clone(), ack_rx));
    let claimer = tokio::spawn(supervise("claimer", shared.clone(), stop_background.clone(), {
        let (shared, shutdown, stop) = (shared.clone(), shutdown.clone(), stop_background.clone());
        move || claimer::run(shared.clone(), shutdown.clone(), stop.clone())
    }));
    supervise("reader", shared.clone(), shutdown.clone(), {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        move || reader::run(shared.clone(), shutdown.clone())
    })
    .await;
    shared.drain().await;
    stop_background.cancel();
    let _ = claimer.await;
    shared.close_acks();
    let _ = acker.await;
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
    let mut backoff = reader::Backoff::new();
    loop {
        let failure = match tokio::spawn(start()).await {
            Ok(outcome) => match outcome.into_task_result() {
                Ok(()) => None,
                Err(e) => Some(e.to_string()),
            },
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

/// What a supervised task returns.
trait IntoTaskResult {
    fn into_task_result(self) -> Result<()>;
}

impl IntoTaskResult for () {
    fn into_task_result(self) -> Result<()> {
        Ok(())
    }
}

impl IntoTaskResult for Result<()> {
    fn into_task_result(self) -> Result<()> {
        self
    }
}
