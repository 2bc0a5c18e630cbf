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
pub use state::ConsumerStats;
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
    let claimer = tokio::spawn(claimer::run(shared.clone(), shutdown.clone(), stop_background.clone()));
    let outcome: Result<()> = reader::run(shared.clone(), shutdown.clone()).await;
    if let Err(e) = outcome {
        tracing::error!(consumer = %shared.name, error = %e, "consumer loop ended with an error");
    }
    shared.drain().await;
    stop_background.cancel();
    let _ = claimer.await;
    shared.close_acks();
    let _ = acker.await;
    tracing::info!(consumer = %shared.name, "consumer stopped");
}
