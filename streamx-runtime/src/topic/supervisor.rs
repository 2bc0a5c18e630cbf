//! The consumer of a topic in one process: it keeps this process's fair share of the
//! topic's shards (see [`super::ownership`]) and runs one consumer loop per owned shard, each
//! fenced by its shard's lease (see [`super::fence`]).
//!
//! Every `claim_idle / 3` it beats into the membership, renews the leases it holds (a lease
//! found moved, or not renewed before it may have lapsed, stops that shard's loop at once),
//! releases its excess shards (each after its loop drained: running handlers finish and are
//! acknowledged, then the lease goes), and takes free shards up to its share. A shard's new
//! loop takes over everything the shard's earlier owners held before it reads anything new.
//! At shutdown it stops every loop, releases their leases and leaves the membership, so the
//! other processes take the shards at their next beat instead of after the lease time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::fence::Fence;
use super::ownership::{self, fair_share, first_preferred};
use super::TopicLayout;
use crate::connection::HealingClient;
use crate::consumer::Consumer;
use crate::observe::Readiness;
use crate::worker::{self, ConsumerStats, LoopHandle, LoopSettings};

/// One shard this process owns, and its loop.
struct Owned {
    fence: Arc<Fence>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Being given up (rebalancing): its loop is draining; the lease goes when it ended.
    releasing: bool,
    /// How long the loop's reads block: a read the loop gave up at its end (its `CLIENT
    /// UNBLOCK` lost) may still be blocked in Redis that long, and would take new entries
    /// from the next owner; the lease is released only after it.
    block: Duration,
    /// When the loop was first seen ended.
    ended: Option<Instant>,
}

/// Starts the consumer of a topic: what the runtime runs for a topic consumer in place of a
/// stream's loop.
pub(crate) fn spawn(
    consumer: Consumer,
    layout: TopicLayout,
    settings: LoopSettings,
    command: HealingClient,
    shutdown: CancellationToken,
) -> LoopHandle {
    let stats = Arc::new(ConsumerStats::default());
    let readiness = Arc::new(Readiness::default());
    let name = consumer.name().to_string();
    let supervisor =
        Supervisor { consumer, layout, settings, command, stats: stats.clone(), readiness: readiness.clone() };
    let task = tokio::spawn(supervisor.run(shutdown));
    LoopHandle { name, stats, readiness, task }
}

struct Supervisor {
    consumer: Consumer,
    layout: TopicLayout,
    settings: LoopSettings,
    command: HealingClient,
    stats: Arc<ConsumerStats>,
    readiness: Arc<Readiness>,
}

impl Supervisor {
    fn ttl(&self) -> Duration {
        self.consumer.options.claim_idle
    }

    fn me(&self) -> &str {
        &self.settings.member_name
    }

    async fn run(self, shutdown: CancellationToken) {
        let tick = (self.ttl() / 3).max(Duration::from_millis(50));
        let mut owned: BTreeMap<u32, Owned> = BTreeMap::new();
        self.readiness.connecting();
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(tick) => {}
                }
            }
            first = false;
            if shutdown.is_cancelled() {
                break;
            }
            self.renew(&mut owned).await;
            self.reap(&mut owned).await;
            let record_ok = self.redeclare().await;
            let members = match ownership::beat(
                &self.command.get(),
                self.layout.name(),
                self.consumer.group(),
                self.me(),
                self.ttl(),
            )
            .await
            {
                Ok(members) => members,
                Err(e) => {
                    tracing::warn!(consumer = %self.consumer.name(), error = %e, "cannot beat into the topic's membership; retrying");
                    self.readiness.read_failed();
                    continue;
                }
            };
            if record_ok {
                self.readiness.reading();
            }
            let mut members = members;
            if !members.iter().any(|m| m == self.me()) {
                members.push(self.me().to_string());
                members.sort();
            }
            let k = members.iter().position(|m| m == self.me()).unwrap_or(0);
            let share = fair_share(self.layout.shards(), members.len(), k) as usize;
            // (A loop being given up or lost counts no more: a lost one's shard may be taken
            // again once it ended.)
            let active: Vec<u32> = owned.iter().filter(|(_, o)| !o.stop.is_cancelled()).map(|(i, _)| *i).collect();
            if active.len() > share {
                // The excess, highest shards first: its loops drain, then the leases go.
                for shard in active.iter().rev().take(active.len() - share) {
                    if let Some(o) = owned.get_mut(shard) {
                        tracing::info!(consumer = %self.consumer.name(), shard = self.layout.shard_stream(*shard), "giving a shard up to rebalance the topic");
                        o.releasing = true;
                        o.stop.cancel();
                    }
                }
            } else if active.len() < share {
                let mut wanted = share - active.len();
                let n = self.layout.shards();
                let start = first_preferred(n, members.len(), k);
                for step in 0..n {
                    if wanted == 0 || shutdown.is_cancelled() {
                        break;
                    }
                    let shard = (start + step) % n;
                    if owned.contains_key(&shard) {
                        continue;
                    }
                    if let Some(o) = self.acquire(shard, &shutdown).await {
                        owned.insert(shard, o);
                        wanted -= 1;
                    }
                }
            }
        }
        // Shutdown: every loop drains (its lease renewed meanwhile: a drain that outlasted
        // the lease would see its acknowledgements refused and the next owner run those
        // messages again), then its lease goes, then this process leaves.
        for o in owned.values_mut() {
            o.releasing = true;
            o.stop.cancel();
        }
        while owned.values().any(|o| !o.task.is_finished()) {
            self.renew(&mut owned).await;
            let pending: Vec<_> = owned.values_mut().filter(|o| !o.task.is_finished()).map(|o| &mut o.task).collect();
            if pending.is_empty() {
                break;
            }
            let _ = tokio::time::timeout(tick, futures_util::future::select_all(pending)).await;
        }
        let mut longest_block = Duration::ZERO;
        let mut ended = Vec::new();
        for (shard, o) in std::mem::take(&mut owned) {
            longest_block = longest_block.max(o.block);
            ended.push((shard, o.fence));
        }
        // (No read of the loops may still be blocked in Redis: see `Owned::block`.)
        tokio::time::sleep(longest_block + super::fence::READ_MARGIN).await;
        for (shard, fence) in ended {
            self.release(shard, &fence).await;
        }
        ownership::leave(&self.command.get(), self.layout.name(), self.consumer.group(), self.me()).await;
        self.readiness.stopped();
    }

    /// Declares the topic again (one `HGET` when its record is there): a Redis that lost its
    /// data gets the record back, so producers keep routing to the shards this consumer
    /// reads. A record with another count is logged as an error (the topic was recreated
    /// under this consumer: its shards are not the ones read here).
    /// `false` (and the consumer not ready) when the record names another shard count.
    async fn redeclare(&self) -> bool {
        // (Only read, one script, while the record is there; written again only when gone.)
        let client = self.command.get();
        let checked = match super::layout::lookup(&client, self.layout.name()).await {
            Ok(Some(recorded)) if recorded.shards() == self.layout.shards() => return true,
            Ok(Some(recorded)) => Err(crate::error::Error::TopicShardsMismatch {
                topic: self.layout.name().to_string(),
                recorded: recorded.shards(),
                requested: self.layout.shards(),
            }),
            Ok(None) => super::declare(&client, self.layout.name(), Some(self.layout.shards())).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match checked {
            Ok(()) => true,
            Err(e @ crate::error::Error::TopicShardsMismatch { .. }) => {
                tracing::error!(consumer = %self.consumer.name(), error = %e, "the topic was recreated with another shard count while this consumer runs; restart it with the new count");
                self.readiness.read_failed();
                false
            }
            Err(e) => {
                tracing::debug!(consumer = %self.consumer.name(), error = %e, "cannot check the topic's record");
                true
            }
        }
    }

    /// Renews every lease held; a loop whose lease moved, or may have lapsed, stops now.
    async fn renew(&self, owned: &mut BTreeMap<u32, Owned>) {
        let client = self.command.get();
        for (shard, o) in owned.iter() {
            if o.stop.is_cancelled() && !o.releasing {
                continue; // lost already; reaped once its loop ended
            }
            let stream = self.layout.shard_stream(*shard);
            let sent = Instant::now();
            match ownership::renew(&client, stream, self.consumer.group(), o.fence.token(), self.ttl()).await {
                Ok(true) => o.fence.renewed(sent, self.ttl()),
                Ok(false) => {
                    tracing::warn!(consumer = %self.consumer.name(), shard = stream, "the shard's lease moved to another process; stopping its loop");
                    o.stop.cancel();
                }
                Err(e) => {
                    tracing::warn!(consumer = %self.consumer.name(), shard = stream, error = %e, "cannot renew the shard's lease");
                    if o.fence.holds_for().is_zero() {
                        o.stop.cancel();
                    }
                }
            }
        }
    }

    /// Forgets the loops that ended: the lease of a shard given up goes once no read of its
    /// loop can still be blocked in Redis; a lost one's is another's already.
    async fn reap(&self, owned: &mut BTreeMap<u32, Owned>) {
        let now = Instant::now();
        let mut ended = Vec::new();
        for (shard, o) in owned.iter_mut() {
            if o.task.is_finished() {
                let at = *o.ended.get_or_insert(now);
                if now.duration_since(at) >= o.block + super::fence::READ_MARGIN {
                    ended.push(*shard);
                }
            }
        }
        for shard in ended {
            if let Some(o) = owned.remove(&shard) {
                if o.releasing || o.fence.holds_for() > Duration::ZERO {
                    self.release(shard, &o.fence).await;
                } else {
                    ConsumerStats::bump(&self.stats.shards_released, 1);
                }
            }
        }
    }

    async fn release(&self, shard: u32, fence: &Fence) {
        let stream = self.layout.shard_stream(shard);
        ownership::release(&self.command.get(), stream, self.consumer.group(), fence.token()).await;
        ConsumerStats::bump(&self.stats.shards_released, 1);
        tracing::info!(consumer = %self.consumer.name(), shard = stream, "released the shard");
    }

    /// Takes `shard` if it is free, and starts its loop.
    async fn acquire(&self, shard: u32, shutdown: &CancellationToken) -> Option<Owned> {
        let stream = self.layout.shard_stream(shard).to_string();
        let group = self.consumer.group();
        let taken = match ownership::acquire(&self.command.get(), &stream, group, self.me(), self.ttl()).await {
            Ok(Some(taken)) => taken,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(consumer = %self.consumer.name(), shard = %stream, error = %e, "cannot take the shard's lease");
                return None;
            }
        };
        ConsumerStats::bump(&self.stats.shards_acquired, 1);
        // (The group may be gone with a Redis that lost its data; the loop's catch-up
        // recreates it too.)
        if let Err(e) = worker::ensure_group(&self.command.get(), &stream, group, "0").await {
            tracing::debug!(consumer = %self.consumer.name(), shard = %stream, error = %e, "cannot create the group on the shard yet");
        }
        tracing::info!(consumer = %self.consumer.name(), shard = %stream, token = %taken.token, "took the shard");
        let fence = Arc::new(Fence::new(crate::keys::shard_lease(&stream, group), taken.token, taken.sent, self.ttl()));
        let mut consumer = self.consumer.clone();
        consumer.stream = stream.clone().into();
        consumer.options.topic = false;
        consumer.options.ordered = Some(self.consumer.options.effective_ordered());
        // A read blocks at most a quarter of the lease: it ends long before the lease could
        // lapse unnoticed (see the fence).
        consumer.options.block = consumer.options.block.min(self.ttl() / 4).max(Duration::from_millis(10));
        let mut settings = self.settings.clone();
        settings.dead_letter_stream = crate::keys::dead_letter_stream(&stream, &consumer.options.retry.dead_letter);
        settings.fence = Some(fence.clone());
        settings.stats = Some(self.stats.clone());
        let block = consumer.options.block;
        let stop = shutdown.child_token();
        let handle = worker::spawn(consumer, settings, self.command.clone(), stop.clone());
        Some(Owned { fence, stop, task: handle.task, releasing: false, block, ended: None })
    }
}
