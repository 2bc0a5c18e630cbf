//! The reader: one blocking `XREADGROUP ... >` at a time on a connection of its own, and
//! dispatch of what it reads to handler tasks, never more than `concurrency` at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::{ClientInterface, ClientLike, ClusterInterface};
use fred::types::{ClusterHash, CustomCommand, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::budget::Charge;
use super::dispatch::{self, Dispatched};
use super::group::ensure_group;
use super::shared::Shared;
use super::sizing::FetchSize;
use super::stats::ConsumerStats;
use crate::connection::{ClientRole, HealingClient};
use crate::error::{is_no_group, Result};
use crate::keys::slot;
use crate::retry_delay::RetryDelay;
use crate::wire::{parse_read_frame, RawEntry};

/// Entries averaging more than this are read by one read loop only (see [`read_loop`]).
const LARGE_ENTRY: usize = 64 * 1024;

/// A read in flight: its entries are tracked (held) and charged to the byte budget as soon
/// as its reply arrives, that is, as soon as the future that sent it sees the reply.
enum PendingRead {
    /// A read ahead, on a task of its own: it must see its reply (and track its entries)
    /// while the loop dispatches the batch before it and waits for permits.
    Ahead(JoinHandle<Read>),
    /// A read the loop awaits and does nothing else meanwhile: polled in the loop itself,
    /// so its reply reaches the handlers with one task wake-up fewer (the latency of a
    /// quiet stream, where every read is this one).
    Here(Pin<Box<dyn Future<Output = Read> + Send>>),
    /// A read ahead that ended when it was first polled (e.g. the connection was closed).
    Done(Option<Read>),
}

impl Future for PendingRead {
    /// `None` if the read's task panicked.
    type Output = Option<Read>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            PendingRead::Ahead(task) => Pin::new(task).poll(cx).map(|joined| joined.ok()),
            PendingRead::Here(read) => read.as_mut().poll(cx).map(Some),
            PendingRead::Done(read) => Poll::Ready(read.take()),
        }
    }
}

impl PendingRead {
    /// A read ahead: polled once here, so its command is on its way to Redis now (not when
    /// a worker thread first runs its task), then moved to a task of its own.
    fn ahead(read: impl Future<Output = Read> + Send + 'static) -> Self {
        let mut read = Box::pin(read);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match read.as_mut().poll(&mut cx) {
            Poll::Ready(done) => PendingRead::Done(Some(done)),
            // The task polls it again at once, with its own waker.
            Poll::Pending => PendingRead::Ahead(tokio::spawn(read)),
        }
    }

    /// Gives the read up (at shutdown, after it did not end in time).
    fn abandon(self) {
        if let PendingRead::Ahead(task) = self {
            task.abort();
        }
    }
}

/// A finished read: the client it used, how many entries it asked for, and what it got.
struct Read {
    client: Client,
    count: usize,
    reply: Result<(Vec<RawEntry>, Charge), FredError>,
}

/// Reads and dispatches until `shutdown`, with the consumer's
/// [`effective_readers`](crate::ConsumerOptions::effective_readers) read loops, each on a
/// connection and a task of its own (see [`read_loop`]): quick handlers run inline in the
/// loop that read them, so one loop is one core's worth of dispatch; several loops share the
/// permits and the byte budget, so concurrency and memory stay bounded as with one.
///
/// If one loop ends (it cannot: it only panics), the others are stopped too and this returns
/// an error; the supervisor restarts the whole reader, which first releases what the loops
/// read and never started (nothing else can start it any more).
pub(crate) async fn run(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    restarted: bool,
) -> std::result::Result<(), &'static str> {
    // Entries an earlier run of this task read but never started: nothing will start them
    // now; the reconciliation of this consumer's own PEL takes them up. (Only on a restart:
    // at the first run, what is held and not started yet is the take-over's, e.g. a topic
    // shard's catch-up, and must stay held.)
    let orphaned = if restarted { shared.untrack_unstarted() } else { 0 };
    if orphaned > 0 {
        tracing::warn!(consumer = %shared.name, count = orphaned, "the reader restarted; its unstarted messages are taken up again after claim_idle");
    }
    // Ordered: one read loop, so entries reach the key gate in stream order; and this
    // member's own pending entries (a predecessor under its name stopped) go through the
    // gate before any new entry is read.
    let readers = if shared.gate.is_some() { 1 } else { shared.consumer.options.effective_readers() };
    // (A topic shard's loop takes them up in its catch-up instead, sorted with what earlier
    // owners held: see `super::takeover`.)
    if shared.gate.is_some() && shared.fence().is_none() {
        super::ordering::take_up_own_pending(&shared).await;
    }
    let stop = shutdown.child_token();
    let mut loops = tokio::task::JoinSet::new();
    for index in 0..readers {
        loops.spawn(read_loop(shared.clone(), index, readers, stop.clone()));
    }
    let mut ended_early = false;
    while let Some(ended) = loops.join_next().await {
        if !stop.is_cancelled() {
            if let Err(join) = ended {
                tracing::error!(consumer = %shared.name, panicked = join.is_panic(), "a read loop failed; restarting the reader");
            }
            ended_early = true;
            stop.cancel();
        }
    }
    if ended_early && !shutdown.is_cancelled() {
        return Err("a read loop of the consumer ended");
    }
    Ok(())
}

/// One read loop: one blocking `XREADGROUP ... >` at a time on a connection of its own (of
/// as many entries as [`FetchSize`] says), then dispatch of what it read. Redis errors are logged and retried
/// with backoff (100 ms doubling to 5 s); a vanished group is recreated.
///
/// When a read returns a full batch there is probably more: the next read (without BLOCK,
/// on the loop's connection) is sent at once and runs while the batch is dispatched, so
/// Redis round trips overlap handler work. At most `concurrency` handlers run and at most
/// two batches per loop wait, whatever the backlog; the byte budget sizes every read. (Two
/// reads ahead measured faster, but with more entries held per consumer a taker that dies
/// leaves more crash suspects, run one at a time: see BENCHMARKS.md, issue 13.)
///
/// The loops after the first (`index > 0`) start reading once the first has learned the
/// size of entries, and pause while entries average more than [`LARGE_ENTRY`]: each
/// connection buffers whole replies, so on large entries several loops would hold several
/// replies' worth of buffers beside the byte budget. One loop then reads, and the others
/// look again every `block`.
async fn read_loop(shared: Arc<Shared>, index: usize, readers: usize, shutdown: CancellationToken) {
    let options = &shared.consumer.options;
    let mut size = FetchSize::for_reads(options, readers);
    // What this consumer may hold (read, claimed, running or waiting for its XACK): two
    // reads of the most each loop asks for, twice over, plus the handlers. Acknowledgements
    // that fall behind the reads slow the reads down instead of piling up in the pending
    // list and in memory.
    let mut held_limit = readers.saturating_mul(size.most()).saturating_mul(4).saturating_add(shared.slots);
    if shared.gate.is_some() {
        // Entries queued behind a busy key by id only are held too: as many more as their
        // charge fits in the byte budget (see `super::ordering`), so other keys keep
        // flowing while one waits for a retry (at most MOST_QUEUED_IDS more: acknowledgements
        // that fall behind must still slow the reads down).
        let ids = shared.settings.max_buffered_bytes / super::ordering::ID_ONLY_BYTES;
        held_limit = held_limit.saturating_add(ids.min(super::ordering::MOST_QUEUED_IDS));
    }
    let role = ClientRole::Reader { block: options.block };
    shared.readiness.connecting();
    let Some(reader) = connect_until(&shared, role, &shutdown).await else { return };
    shared.readiness.reading();
    let block_ms = options.block.as_millis().max(1) as u64;
    let mut backoff = RetryDelay::new();
    let mut ahead: Option<PendingRead> = None;
    // Rate-limited only: the grant of the read in flight, and whether the last read found
    // nothing (the next one then waits for entries before asking for a grant).
    let mut grant: Option<crate::rate_limit::Grant> = None;
    let mut idle = false;
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;

    while !shutdown.is_cancelled() {
        let mut read = match ahead.take() {
            Some(read) => read,
            None => {
                let average = shared.budget.average_entry();
                if index > 0 && average == 0 {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = shared.budget.size_known() => continue,
                    }
                }
                if index > 0 && average > LARGE_ENTRY {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(options.block) => continue,
                    }
                }
                if !shared.wait_held_room(size.current(), held_limit, &shutdown).await {
                    break;
                }
                if !shared.wait_read_allowed(options.block, &shutdown).await {
                    break;
                }
                let Some(room) = shared.budget.wait_room_for(size.current(), &shutdown).await else { break };
                match shared.limiter.as_ref() {
                    None => PendingRead::Here(Box::pin(send_read(&shared, reader.get(), room, Some(block_ms)))),
                    Some(_) if std::mem::take(&mut idle) => {
                        PendingRead::Here(Box::pin(wait_for_entries(&shared, reader.get(), block_ms)))
                    }
                    Some(limiter) => {
                        // Rate-limited (see `crate::rate_limit`): permits first, then a grant
                        // of no more, then a read of what it allows, without BLOCK (a read
                        // that blocked would start its entries long after their grant). The
                        // permits are held throughout, so what is read starts at once.
                        let (count, reserved) = room;
                        let Some(mut permits) = dispatch::take_one_permit(&shared).await else { break };
                        let more = shared.permits.available_permits().min(count.min(limiter.most).saturating_sub(1));
                        if let Ok(more) = shared.permits.clone().try_acquire_many_owned(more as u32) {
                            permits.merge(more);
                        }
                        let want = permits.num_permits();
                        let Some(g) = super::rate::grant(&shared, limiter, want, &shutdown).await else { break };
                        let count = g.count.min(count);
                        held = permits.split(count);
                        grant = Some(g);
                        PendingRead::Here(Box::pin(send_read(&shared, reader.get(), (count, reserved), None)))
                    }
                }
            }
        };
        let joined = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                stop_read(&shared, &reader, read).await;
                break;
            }
            joined = await_read(&shared, &reader, &mut read) => joined,
        };
        // (The permits held for a rate-limited read go to its entries, or back.)
        let read_permits = held.take();
        let Some(Read { client, count, reply }) = joined else {
            tracing::error!(consumer = %shared.name, "a read task panicked; reading again");
            continue;
        };
        match reply {
            Ok((entries, charge)) => {
                backoff.reset();
                if let (Some(limiter), Some(g)) = (shared.limiter.as_ref(), grant.take()) {
                    // A short read: the stream ran dry; what it did not use goes back.
                    if entries.len() < g.count {
                        super::rate::refund(&shared, limiter, &g, entries.len()).await;
                        idle = entries.is_empty();
                    }
                }
                shared.readiness.reading();
                let full = entries.len() >= count;
                // (A topic shard reads ahead only while its lease surely outlasts the read.)
                let fence_ok = shared.fence().is_none_or(|f| f.holds_for() > crate::topic::fence::READ_MARGIN * 2);
                // (Nor while the group is paused: see `crate::pause`.)
                let paused = shared.pause().is_paused();
                // (Nor under a rate limit: every read takes a grant first.)
                let limited = shared.limiter.is_some();
                if full && fence_ok && !paused && !limited && shared.has_held_room(size.current(), held_limit) {
                    // A full batch: probably more waiting. Read ahead if the budget has room.
                    if let Some(room) = shared.budget.room_for(size.current()) {
                        ahead = Some(PendingRead::ahead(send_read(&shared, reader.get(), room, None)));
                    }
                }
                let read = entries.len();
                if read > 0 {
                    super::dedupe::screen(&shared, &entries).await;
                    let entries = entries.into_iter().map(|e| (e, 1));
                    match dispatch::start_queued(&shared, entries, charge, Some(&client), read_permits).await {
                        Dispatched::Stopped => break,
                        Dispatched::Started { waited } => size.after(count, read, waited),
                    }
                } else {
                    size.after(count, read, false);
                }
            }
            Err(e) if is_no_group(&e) => {
                shared.readiness.read_failed();
                // Redis restarted or lost data: read again once the pause state is known anew.
                shared.pause().unknown();
                tracing::warn!(consumer = %shared.name, stream = shared.stream(), group = shared.group(),
                    "the consumer group is gone (Redis restarted or flushed?); recreating it");
                if let Err(e) = ensure_group(&shared.command.get(), shared.stream(), shared.group(), "0").await {
                    tracing::warn!(consumer = %shared.name, error = %e, "cannot recreate the group yet");
                    backoff.wait(&shutdown).await;
                }
            }
            Err(e) if crate::topic::fence::is_fenced(&e) => {
                shared.fenced();
                break;
            }
            Err(e) => {
                tracing::warn!(consumer = %shared.name, error = %e, retry_in = ?backoff.current(), "XREADGROUP failed; retrying");
                shared.readiness.read_failed();
                // Redis may have restarted, the group paused meanwhile: the next read waits
                // for the pause state to be known anew (see `crate::pause`).
                shared.pause().unknown();
                shared.permissions.failed(&e);
                reader.heal(&client, &e).await;
                backoff.wait(&shutdown).await;
            }
        }
    }
    if let Some(read) = ahead.take() {
        stop_read(&shared, &reader, read).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), reader.quit()).await;
}

/// One XREADGROUP of `count` entries (the room reserved for them in the byte budget) on
/// `client`, blocking for `block_ms` if given; its entries are tracked the moment the
/// future sees them, so shutdown hands them back even if none started.
fn send_read(
    shared: &Arc<Shared>,
    client: Client,
    (count, reserved): (usize, Charge),
    block_ms: Option<u64>,
) -> impl Future<Output = Read> + Send + 'static {
    let shared = shared.clone();
    async move {
        let reply = match shared.fence() {
            // A topic shard's read runs behind its fence (see `crate::topic::fence::read`).
            Some(fence) => {
                let (stream, group, me) = (shared.stream(), shared.group(), shared.member_name());
                let block = block_ms.map(Duration::from_millis);
                crate::topic::fence::read(&client, fence, stream, group, me, count, block).await
            }
            None => client
                .custom_raw(read_command(&shared, block_ms.is_some()), read_args(&shared, count, block_ms))
                .await
                .and_then(parse_read_frame),
        };
        let reply = reply.map(|entries| {
            shared.track_read(entries.iter().map(|e| e.id));
            ConsumerStats::bump(&shared.stats.delivered, entries.len() as u64);
            let charge = shared.budget.charge(&entries);
            drop(reserved); // the estimate gives way to what was read
            (entries, charge)
        });
        Read { client, count, reply }
    }
}

/// A rate-limited loop's wait on a stream its last read found empty: `XREAD BLOCK <block>
/// COUNT 1 STREAMS <stream> $`, which ends when an entry is added (or after `block`) and
/// delivers nothing to the group, so no grant is held while the stream is quiet. An entry
/// added between the empty read and this wait is read at the latest after `block`.
fn wait_for_entries(
    shared: &Arc<Shared>,
    client: Client,
    block_ms: u64,
) -> impl Future<Output = Read> + Send + 'static {
    let shared = shared.clone();
    async move {
        let cmd = CustomCommand::new_static("XREAD", ClusterHash::Custom(slot(shared.stream())), true);
        let args = vec![
            Value::from_static_str("BLOCK"),
            Value::Integer(i64::try_from(block_ms).unwrap_or(i64::MAX)),
            Value::from_static_str("COUNT"),
            Value::Integer(1),
            Value::from_static_str("STREAMS"),
            Value::from(shared.stream()),
            Value::from_static_str("$"),
        ];
        let reply: Result<Value, FredError> = client.custom(cmd, args).await;
        let reply = reply.map(|_| (Vec::new(), shared.budget.charge(&Vec::new())));
        Read { client, count: 0, reply }
    }
}

/// `XREADGROUP` as a custom command, so its reply frame is parsed straight into entries (see
/// [`parse_read_frame`]). The flags are those fred gives its own `xreadgroup`: one with
/// `BLOCK` blocks its connection (never pipelined behind or ahead of other commands), one
/// without is pipelined (the read ahead, and the XACK written just before it); in a cluster
/// it goes to the stream's node.
fn read_command(shared: &Shared, blocking: bool) -> CustomCommand {
    CustomCommand::new_static("XREADGROUP", ClusterHash::Custom(slot(shared.stream())), blocking)
}

/// `GROUP <group> <me> COUNT <count> [BLOCK <ms>] STREAMS <stream> >`.
fn read_args(shared: &Shared, count: usize, block_ms: Option<u64>) -> Vec<Value> {
    let mut args = Vec::with_capacity(10);
    args.extend([Value::from_static_str("GROUP"), Value::from(shared.group()), Value::from(shared.member_name())]);
    args.extend([Value::from_static_str("COUNT"), Value::Integer(i64::try_from(count).unwrap_or(i64::MAX))]);
    if let Some(ms) = block_ms {
        args.extend([Value::from_static_str("BLOCK"), Value::Integer(i64::try_from(ms).unwrap_or(i64::MAX))]);
    }
    args.extend([Value::from_static_str("STREAMS"), Value::from(shared.stream()), Value::from_static_str(">")]);
    args
}

/// Awaits `read`; if the group is paused meanwhile (see [`crate::pause`]), wakes it once
/// with `CLIENT UNBLOCK`, so a read blocked on a quiet stream does not keep the loop from
/// seeing the pause. What it returns is tracked as it arrives and held unstarted by the
/// dispatch's pause gate until the resume.
async fn await_read(shared: &Shared, reader: &HealingClient, read: &mut PendingRead) -> Option<Read> {
    tokio::select! {
        biased;
        joined = &mut *read => return joined,
        _ = shared.pause().wait_paused() => {}
    }
    unblock(shared, &reader.get()).await;
    read.await
}

/// Ends a read at shutdown without losing what it may still deliver: a blocked read is
/// woken with `CLIENT UNBLOCK` (so shutdown never waits out a BLOCK) and awaited briefly;
/// whatever it returned is tracked and handed back to the group by the drain.
async fn stop_read(shared: &Shared, reader: &HealingClient, mut read: PendingRead) {
    if tokio::time::timeout(Duration::from_millis(20), &mut read).await.is_ok() {
        return;
    }
    unblock(shared, &reader.get()).await;
    if tokio::time::timeout(Duration::from_secs(1), &mut read).await.is_err() {
        read.abandon();
        tracing::warn!(consumer = %shared.name, "a blocked read did not end; what it delivers is handed back by the drain");
    }
}

/// Wakes the blocked XREADGROUP of `reader` (it then returns what it has, or nothing). The
/// server-side id of the reader's connection to the stream's node is the one fred caches on
/// every connect and reconnect (`CLIENT ID`), read at the moment it is needed: a reconnect
/// or a Redis restart since the read began cannot make it miss or hit another client.
async fn unblock(shared: &Shared, reader: &Client) {
    let slot = slot(shared.stream());
    let ids = reader.connection_ids();
    let id = if ids.len() == 1 {
        ids.values().next().copied()
    } else {
        reader
            .cached_cluster_state()
            .and_then(|state| state.get_server(slot).and_then(|server| ids.get(server).copied()))
    };
    let Some(id) = id else {
        tracing::debug!(consumer = %shared.name, "the reader's connection id is unknown; cannot unblock it");
        return;
    };
    let cmd = CustomCommand::new_static("CLIENT", ClusterHash::Custom(slot), false);
    let result: Result<Value, FredError> =
        shared.command.get().custom(cmd, vec![Value::from("UNBLOCK"), Value::from(id)]).await;
    if let Err(e) = result {
        tracing::debug!(consumer = %shared.name, error = %e, "CLIENT UNBLOCK failed");
    }
}

async fn connect_until(shared: &Shared, role: ClientRole, shutdown: &CancellationToken) -> Option<HealingClient> {
    let mut backoff = RetryDelay::new();
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
