//! The reader: one blocking `XREADGROUP ... >` at a time on a connection of its own, and
//! dispatch of what it reads to handler tasks, never more than `concurrency` at once.

use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::StreamsInterface;
use fred::types::Value;
use tokio_util::sync::CancellationToken;

use super::dispatch;
use super::group::ensure_group;
use super::state::Shared;
use crate::connection::{ClientRole, HealingClient};
use crate::error::{is_no_group, Result};
use crate::wire::{parse_read_reply, RawEntry};

/// Reads and dispatches until `shutdown`. Redis errors are logged and retried with backoff
/// (100 ms doubling to 5 s); a vanished group is recreated.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<()> {
    let options = &shared.consumer.options;
    let role = ClientRole::Reader { block: options.block };
    let Some(reader) = connect_until(&shared, role, &shutdown).await else { return Ok(()) };
    let count = options.effective_batch_size() as u64;
    let block_ms = options.block.as_millis().max(1) as u64;
    let mut backoff = Backoff::new();

    while !shutdown.is_cancelled() {
        let client = reader.get();
        let read = client.xreadgroup::<Value, _, _, _, _>(
            shared.group(),
            shared.consumer_name(),
            Some(count),
            Some(block_ms),
            false,
            shared.stream(),
            ">",
        );
        let reply = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            reply = read => reply,
        };
        match reply {
            Ok(value) => {
                backoff.reset();
                let entries = parse_read_reply(value);
                if !entries.is_empty() && !dispatch_all(&shared, entries, 1, &shutdown).await {
                    break;
                }
            }
            Err(e) if is_no_group(&e) => {
                tracing::warn!(consumer = %shared.name, stream = shared.stream(), group = shared.group(),
                    "the consumer group is gone (Redis restarted or flushed?); recreating it");
                if let Err(e) = ensure_group(&shared.command.get(), shared.stream(), shared.group(), "0").await {
                    tracing::warn!(consumer = %shared.name, error = %e, "cannot recreate the group yet");
                    backoff.wait(&shutdown).await;
                }
            }
            Err(e) => {
                tracing::warn!(consumer = %shared.name, error = %e, retry_in = ?backoff.current(), "XREADGROUP failed; retrying");
                reader.heal(&client, &e).await;
                backoff.wait(&shutdown).await;
            }
        }
    }
    // A BLOCK may still be running on the server; quitting queues behind it, so don't wait.
    tokio::spawn(async move { reader.quit().await });
    Ok(())
}

/// Tracks `entries` (so they are leased) and starts a handler for each as permits free
/// up. Returns false if shutdown came first; the entries not started stay tracked and are
/// handed back to the group by the drain.
pub(crate) async fn dispatch_all(
    shared: &Arc<Shared>,
    entries: Vec<RawEntry>,
    attempt: u32,
    shutdown: &CancellationToken,
) -> bool {
    shared.track(entries.iter().map(|e| e.id));
    shared.stats.delivered.fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
    dispatch_tracked(shared, entries.into_iter().map(|e| (e, attempt)), shutdown).await
}

/// Starts a handler for each already-tracked `(entry, attempt)` as permits free up.
pub(crate) async fn dispatch_tracked(
    shared: &Arc<Shared>,
    entries: impl IntoIterator<Item = (RawEntry, u32)>,
    shutdown: &CancellationToken,
) -> bool {
    for (entry, attempt) in entries {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return false,
            permit = shared.permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return false,
            },
        };
        tokio::spawn(dispatch::handle(shared.clone(), entry, attempt, permit));
    }
    true
}

async fn connect_until(shared: &Shared, role: ClientRole, shutdown: &CancellationToken) -> Option<HealingClient> {
    let mut backoff = Backoff::new();
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match HealingClient::connect(&shared.settings.url, role, Duration::ZERO).await {
            Ok(c) => return Some(c),
            Err(e) => {
                tracing::warn!(consumer = %shared.name, error = %e, "reader cannot connect; retrying");
                backoff.wait(shutdown).await;
            }
        }
    }
}

/// Delay between retries of a failing Redis call: 100 ms doubling to 5 s.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Self {
        Backoff(Duration::from_millis(100))
    }
    pub fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
    pub fn current(&self) -> Duration {
        self.0
    }
    /// Sleeps for the current delay (or until shutdown) and doubles it.
    pub async fn wait(&mut self, shutdown: &CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(self.0) => {}
        }
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}
