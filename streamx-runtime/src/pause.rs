//! Pausing a consumer group: one key per (stream, group), [`crate::keys::paused`], whose
//! presence means "start no handler". Operators set and delete it ([`crate::Inspector::pause`],
//! [`crate::Inspector::resume`], `streamx pause` / `streamx resume`); every runtime polls the
//! keys of its consumers' groups and each consumer loop gates on the result (see
//! [`PauseFlag`] and the worker's reader, dispatch and take-over).
//!
//! Why a polled key: it is plain data in the stream's hash slot, so it survives a process or
//! Redis restart exactly as the stream does (AOF or RDB), needs no connection of its own (a
//! Pub/Sub message sent while a process was disconnected would be lost), and one pipelined
//! `EXISTS` per group every [`POLL_EVERY`] (jittered) costs a runtime of 50 consumers on a
//! shared Redis one round trip of 50 O(1) commands three times a second.
//!
//! What a pause does to a running consumer, within [`POLL_EVERY`] and a round trip: no
//! read is sent and a blocked read is woken; what a read or claim already returned is held
//! unstarted (pending under this member, whose heartbeat goes on, so nobody takes it over);
//! no due retry and no stopped member's entry is claimed; handlers already running finish and
//! are acknowledged. A resume (the key deleted) starts the held entries first, then reads on.
//! While Redis cannot be asked, each consumer keeps the state it saw last.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::KeysInterface;
use fred::types::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::connection::HealingClient;
use crate::retry_delay::jittered;

/// How often a runtime asks Redis whether its groups are paused (jittered by ±20 %): a pause
/// takes effect in every process within this, a round trip and the wake-up of a blocked read,
/// well within the second the README promises.
pub const POLL_EVERY: Duration = Duration::from_millis(300);

/// Whether one consumer group is paused, as its runtime last saw it: a lock-free flag for the
/// dispatch's per-entry check, and a watch channel to wait on.
///
/// The state may also be *unknown*: after a failed poll, or a failed read (Redis may have
/// restarted, and the group been paused meanwhile). Handlers go on starting on the last state
/// seen, but no new read is sent until a poll has told the state again
/// ([`wait_readable`](Self::wait_readable)): a consumer that reconnects after an outage
/// never reads a paused group's entries before it knows of the pause.
#[derive(Debug)]
pub(crate) struct PauseFlag {
    paused: AtomicBool,
    /// `(paused, known)`.
    changes: watch::Sender<(bool, bool)>,
}

impl Default for PauseFlag {
    fn default() -> Self {
        // Unknown until the runtime's first poll, which runs before any loop starts.
        PauseFlag { paused: AtomicBool::new(false), changes: watch::Sender::new((false, false)) }
    }
}

impl PauseFlag {
    /// Whether the group is paused now (one atomic load: checked before every handler start).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Records the state seen in Redis; true if it changed.
    pub fn set(&self, paused: bool) -> bool {
        self.paused.store(paused, Ordering::Release);
        let mut changed = false;
        self.changes.send_if_modified(|now| {
            changed = now.0 != paused;
            let modified = *now != (paused, true);
            *now = (paused, true);
            modified
        });
        changed
    }

    /// Redis could not be asked, or a read failed: the state is unknown until the next poll
    /// (see [`wait_readable`](Self::wait_readable)).
    pub fn unknown(&self) {
        self.changes.send_if_modified(|now| std::mem::replace(&mut now.1, false));
    }

    /// Waits until the group is not paused: true at once when it is not, false if `stop` is
    /// cancelled first.
    pub async fn wait_resumed(&self, stop: &CancellationToken) -> bool {
        if !self.is_paused() {
            return true;
        }
        self.wait_for(stop, |(paused, _)| !paused).await
    }

    /// Waits until a read may be sent: the group is known not to be paused. False if `stop`
    /// is cancelled first.
    pub async fn wait_readable(&self, stop: &CancellationToken) -> bool {
        self.wait_for(stop, |(paused, known)| !paused && known).await
    }

    async fn wait_for(&self, stop: &CancellationToken, ok: impl Fn((bool, bool)) -> bool) -> bool {
        let mut rx = self.changes.subscribe();
        tokio::select! {
            biased;
            _ = stop.cancelled() => false,
            state = rx.wait_for(|state| ok(*state)) => state.is_ok(),
        }
    }

    /// Resolves once the group is paused (at once if it is).
    pub async fn wait_paused(&self) {
        let mut rx = self.changes.subscribe();
        if rx.wait_for(|(paused, _)| *paused).await.is_err() {
            // The sender lives as long as `self`: never; but never resolve if it did.
            std::future::pending::<()>().await;
        }
    }
}

/// One group a runtime watches.
struct Watched {
    stream: String,
    group: String,
    key: String,
    flag: Arc<PauseFlag>,
    gauge: metrics::Gauge,
}

/// The pause flags of a runtime's consumer groups, one per (stream, group) however many
/// consumers share it, and the poll that keeps them current.
#[derive(Default)]
pub(crate) struct PauseWatch {
    groups: Vec<Watched>,
}

impl PauseWatch {
    /// The flag of `group` on `stream` (created on first use, shared after).
    pub fn flag_for(&mut self, stream: &str, group: &str) -> Arc<PauseFlag> {
        if let Some(w) = self.groups.iter().find(|w| w.stream == stream && w.group == group) {
            return w.flag.clone();
        }
        let flag = Arc::new(PauseFlag::default());
        self.groups.push(Watched {
            stream: stream.to_string(),
            group: group.to_string(),
            key: crate::keys::paused(stream, group),
            flag: flag.clone(),
            gauge: crate::observe::paused_gauge(stream, group),
        });
        flag
    }

    /// Asks Redis once about every group (one pipelined `EXISTS` each: the keys are in as
    /// many hash slots as streams, so one `MGET` would be refused by a cluster) and updates
    /// the flags. A group whose answer failed keeps its state.
    pub async fn poll(&self, client: &Client) -> Result<(), fred::error::Error> {
        if self.groups.is_empty() {
            return Ok(());
        }
        let pipeline = client.pipeline();
        for w in &self.groups {
            if let Err(e) = pipeline.exists::<(), _>(w.key.as_str()).await {
                self.groups.iter().for_each(|w| w.flag.unknown());
                return Err(e);
            }
        }
        let replies = pipeline.try_all::<Value>().await;
        let mut first_error = None;
        for (w, reply) in self.groups.iter().zip(replies) {
            match reply {
                Ok(v) => {
                    let paused = v.as_u64().unwrap_or(0) > 0;
                    w.gauge.set(if paused { 1.0 } else { 0.0 });
                    if w.flag.set(paused) {
                        if paused {
                            tracing::warn!(stream = %w.stream, group = %w.group, "the group is paused: no handler starts until it is resumed");
                        } else {
                            tracing::info!(stream = %w.stream, group = %w.group, "the group is resumed");
                        }
                    }
                }
                Err(e) => {
                    w.flag.unknown();
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Polls every [`POLL_EVERY`] (jittered) until `stop`, on the runtime's command client.
    pub fn spawn(self, command: HealingClient, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if self.groups.is_empty() {
                return;
            }
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(jittered(POLL_EVERY)) => {}
                }
                let client = command.get();
                match self.poll(&client).await {
                    Ok(()) => failing = false,
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot read the groups' pause flags; each consumer keeps the state it saw last");
                        }
                        failing = true;
                        command.heal(&client, &e).await;
                    }
                }
            }
        })
    }
}

/// What a pause key holds: who paused the group and when (Unix ms, this process's clock), for
/// display; the engine looks only at whether the key exists.
pub(crate) fn pause_value(by: &str) -> String {
    let at_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    format!("{at_ms} {by}")
}

/// Reads a pause key's value back (see [`pause_value`]); a value written by hand is kept
/// whole as `by`.
pub(crate) fn parse_pause_value(value: &str) -> (Option<u64>, String) {
    match value.split_once(' ') {
        Some((at, by)) => match at.parse() {
            Ok(at) => (Some(at), by.to_string()),
            Err(_) => (None, value.to_string()),
        },
        None => (value.parse().ok(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_value_reads_back() {
        let (at, by) = parse_pause_value(&pause_value("ops@host"));
        assert!(at.is_some_and(|at| at > 1_600_000_000_000));
        assert_eq!(by, "ops@host");
        assert_eq!(parse_pause_value("by hand"), (None, "by hand".to_string()));
    }

    #[tokio::test]
    async fn the_flag_wakes_its_waiters() {
        let flag = Arc::new(PauseFlag::default());
        let stop = CancellationToken::new();
        assert!(flag.wait_resumed(&stop).await);
        assert!(flag.set(true));
        assert!(!flag.set(true));
        assert!(flag.is_paused());
        flag.wait_paused().await;
        let waiting = tokio::spawn({
            let (flag, stop) = (flag.clone(), stop.clone());
            async move { flag.wait_resumed(&stop).await }
        });
        assert!(flag.set(false));
        assert!(waiting.await.unwrap());
        flag.unknown();
        assert!(!flag.is_paused() && flag.wait_resumed(&stop).await, "handlers go on");
        let reading = tokio::spawn({
            let (flag, stop) = (flag.clone(), stop.clone());
            async move { flag.wait_readable(&stop).await }
        });
        tokio::task::yield_now().await;
        assert!(!reading.is_finished(), "reads wait for the next poll");
        assert!(!flag.set(false));
        assert!(reading.await.unwrap());
        flag.set(true);
        stop.cancel();
        assert!(!flag.wait_resumed(&stop).await);
    }
}
