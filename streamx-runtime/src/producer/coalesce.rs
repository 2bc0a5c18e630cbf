//! Coalescing single publishes: many tasks each publishing one message share round trips.
//!
//! A publish queues its encoded entry and waits for its own reply. One writer task per
//! producer (shared by its clones) takes whatever is queued when it has room for another
//! round trip: a lone publish goes out at once, alone, as a plain `XADD`; publishes that
//! arrive while round trips are in flight pile up and leave together, per stream as one call
//! of the append script (see [`super::append`]), or as pipelined `XADD`s where the server
//! refuses scripts. Each caller gets its own id or error.
//!
//! Bounds: a round trip carries at most [`BATCH_CHUNK`](super::BATCH_CHUNK) entries and
//! [`BATCH_CHUNK_BYTES`](super::BATCH_CHUNK_BYTES); [`ROUND_TRIPS`] are in flight at once; the
//! queue holds at most [`MAX_QUEUED`] entries and [`MAX_QUEUED_BYTES`] of payload, beyond
//! which a publish waits for room (backpressure, not memory).
//!
//! Order: the writer takes entries in the order they were queued and writes its round trips
//! to the connection in the order it formed them; within a round trip a stream's entries stay
//! in queue order (a change of NOMKSTREAM or cap starts a new group, sent after the one
//! before). A publish is queued without yielding to tokio's cooperative budget, and waiting for
//! room is first come, first served, so publishes land in the order they were first polled: a
//! caller awaiting each, or publishes started together (`join_all`). Until the server has said
//! whether it runs the script, one round trip is in flight at a time.
//!
//! A caller waits at most the command timeout from its own call; past it the publish fails
//! with a timeout (its entry may still be added: it may already be on the wire).
//!
//! The writer runs on the async runtime of the publish that started it. If that runtime shuts
//! down, the next publish starts a new writer; publishes that were waiting on the old one
//! fail with a `Canceled` error (their entries may or may not have been added, as after a lost
//! connection). A round trip that never reached the connection (the client's connection task
//! ended with that runtime) is sent again, once, on a replacement client.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use fred::interfaces::{ClientLike, StreamsInterface};
use fred::types::streams::XCap;
use fred::types::Value;
use fred::types::{ClusterHash, CustomCommand};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::append::{self, AppendArgs, ScriptUse};
use super::{parse_added_id, BATCH_CHUNK, BATCH_CHUNK_BYTES};
use crate::connection::HealingClient;
use crate::error::{Error, Result};
use crate::message::{Headers, MessageId};
use crate::wire::entry_fields;

/// Round trips of coalesced publishes in flight at once on the connection: one being read
/// by Redis while the next is written.
const ROUND_TRIPS: usize = 2;

/// The most entries waiting to be written.
const MAX_QUEUED: usize = 16_384;

/// The most payload bytes waiting to be written (an entry larger than this waits until the
/// queue is empty of bytes).
const MAX_QUEUED_BYTES: usize = 32 << 20;

/// One queued publish.
struct Request {
    stream: String,
    data: Bytes,
    headers: Headers,
    no_mkstream: bool,
    max_len: Option<u64>,
    reply: oneshot::Sender<Result<MessageId>>,
    /// When its caller stops waiting (see [`ANSWER_WITHIN`]): the writer answers it with a
    /// timeout at the latest then, without a timer per publish.
    deadline: Instant,
    /// Its share of [`MAX_QUEUED_BYTES`], given back when its round trip is answered.
    _bytes: OwnedSemaphorePermit,
}

/// The queue of a producer's single publishes and its writer.
pub(super) struct Coalescer {
    client: HealingClient,
    scripts: Arc<ScriptUse>,
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    bytes: Arc<Semaphore>,
}

impl Coalescer {
    pub fn new(client: HealingClient, scripts: Arc<ScriptUse>) -> Self {
        Coalescer { client, scripts, queue: Mutex::new(None), bytes: Arc::new(Semaphore::new(MAX_QUEUED_BYTES)) }
    }

    /// Adds one entry to `stream` (with the headers, NOMKSTREAM and cap of `options`) in the
    /// next round trip, and returns its id.
    pub async fn add(
        &self,
        stream: &str,
        data: Bytes,
        headers: &Headers,
        no_mkstream: bool,
        max_len: Option<u64>,
    ) -> Result<MessageId> {
        // Queued outside tokio's cooperative budget: a publish polled after others (a caller's
        // `join_all`) must not yield before it is queued, or it would be queued after them.
        // Waiting for room keeps the order too: both waits are first come, first served.
        let deadline = Instant::now() + ANSWER_WITHIN;
        let answer =
            tokio::task::unconstrained(self.enqueue(stream, data, headers, no_mkstream, max_len, deadline)).await?;
        // The writer answers every request it takes, by its deadline (see `ANSWER_WITHIN`);
        // one dropped unanswered was dropped with a writer that stopped.
        answer.await.unwrap_or_else(|_| Err(canceled(stream)))
    }

    /// Queues one entry; the receiver of its outcome.
    async fn enqueue(
        &self,
        stream: &str,
        data: Bytes,
        headers: &Headers,
        no_mkstream: bool,
        max_len: Option<u64>,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Result<MessageId>>> {
        let permits = u32::try_from(data.len().clamp(1, MAX_QUEUED_BYTES)).unwrap_or(u32::MAX);
        let bytes = self.bytes.clone().acquire_many_owned(permits).await.map_err(|_| canceled(stream))?;
        let (reply, answer) = oneshot::channel();
        let mut request = Request {
            stream: stream.to_string(),
            data,
            headers: headers.clone(),
            no_mkstream,
            max_len,
            reply,
            deadline,
            _bytes: bytes,
        };
        // A writer whose runtime shut down has dropped its queue: start another and queue
        // there (nothing of this entry was sent).
        for _ in 0..2 {
            let queue = self.queue();
            match queue.send(request).await {
                Ok(()) => return Ok(answer),
                Err(mpsc::error::SendError(back)) => request = back,
            }
        }
        Err(canceled(stream))
    }

    /// The queue of a running writer, started if there is none.
    fn queue(&self) -> mpsc::Sender<Request> {
        let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*queue {
            Some(sender) if !sender.is_closed() => sender.clone(),
            _ => {
                let (sender, receiver) = mpsc::channel(MAX_QUEUED);
                tokio::spawn(write(receiver, self.client.clone(), self.scripts.clone()));
                *queue = Some(sender.clone());
                sender
            }
        }
    }
}

/// The most a caller waits for its entry's outcome, from its call: the connection's command
/// timeout. (Without it, a publish queued behind round trips stuck on a dead connection would
/// wait for theirs to time out before its own began.) The writer keeps it: a round trip is
/// given up at the earliest deadline of its entries (one timer per round trip, not per
/// publish), and an entry whose deadline passed while it was queued is answered without
/// being sent. Deadlines grow in queue order, so the round trips in flight, which hold the
/// earlier ones, free the writer in time for the later ones.
const ANSWER_WITHIN: std::time::Duration = crate::connection::COMMAND_TIMEOUT;

/// The least command timeout of a round trip sent close to its entries' deadline.
const MIN_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// The error of a publish that got no answer within [`ANSWER_WITHIN`].
fn no_answer(stream: &str) -> Error {
    let e = fred::error::Error::new(
        fred::error::ErrorKind::Timeout,
        "no reply within the command timeout; the entry may or may not have been added",
    );
    Error::redis("XADD", stream, e)
}

/// The error of a publish whose writer stopped before answering.
fn canceled(stream: &str) -> Error {
    let e = fred::error::Error::new(
        fred::error::ErrorKind::Canceled,
        "the producer's writer stopped (its async runtime shut down) before the reply; the entry may or may not have been added",
    );
    Error::redis("XADD", stream, e)
}

/// The writer: takes what is queued whenever fewer than [`ROUND_TRIPS`] are in flight, until
/// every producer clone is gone and the queue is empty.
async fn write(mut queue: mpsc::Receiver<Request>, client: HealingClient, scripts: Arc<ScriptUse>) {
    let mut in_flight = FuturesUnordered::new();
    // An entry taken from the queue that did not fit in the round before: the next round's first.
    let mut carried: Option<Request> = None;
    loop {
        // Until the server has said whether it runs the append script, one round trip at a
        // time: a round sent while an earlier one's EVAL is being refused would land before
        // that one's fallback XADDs.
        let room = in_flight.len() < if scripts.unknown() { 1 } else { ROUND_TRIPS };
        let first = match carried.take() {
            Some(first) if room => first,
            held => {
                carried = held;
                tokio::select! {
                    biased;
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                    first = queue.recv(), if room && carried.is_none() => match first {
                        Some(first) => first,
                        None => break,
                    },
                }
            }
        };
        let round = fill(first, &mut queue, &mut carried);
        let Some(due) = round.iter().map(|r| r.deadline).min() else { continue };
        in_flight.push(send_round(client.clone(), scripts.clone(), round, due));
        // Polled at once, so its commands are queued on the connection before another round
        // trip is formed (a round that is already answered just leaves the set).
        let _ = futures_util::poll!(in_flight.next());
    }
    while in_flight.next().await.is_some() {}
}

/// A round trip from `first` and what is queued behind it: at most [`BATCH_CHUNK`] entries
/// and [`BATCH_CHUNK_BYTES`] of payload (`first` alone may be larger); the entry that would
/// pass the bytes is `carried` to the next round.
fn fill(first: Request, queue: &mut mpsc::Receiver<Request>, carried: &mut Option<Request>) -> Vec<Request> {
    let now = Instant::now();
    let (mut bytes, mut round) = (0, Vec::new());
    // Entries whose callers stopped waiting are answered, not sent.
    if let Some(first) = answered_if_late(first, now) {
        bytes = first.data.len();
        round.push(first);
    }
    while round.len() < BATCH_CHUNK {
        let Ok(next) = queue.try_recv() else { break };
        let Some(next) = answered_if_late(next, now) else { continue };
        if bytes + next.data.len() > BATCH_CHUNK_BYTES {
            *carried = Some(next);
            break;
        }
        bytes += next.data.len();
        round.push(next);
    }
    round
}

/// `request`, unless its deadline has passed: then it is answered with the timeout.
fn answered_if_late(request: Request, now: Instant) -> Option<Request> {
    if now < request.deadline {
        return Some(request);
    }
    let _ = request.reply.send(Err(no_answer(&request.stream)));
    None
}

/// One round trip: per stream (and NOMKSTREAM and cap), the append script for several
/// entries, a plain `XADD` for one; every command queued on the connection before any is
/// awaited.
async fn send_round(client: HealingClient, scripts: Arc<ScriptUse>, round: Vec<Request>, due: Instant) {
    // Per stream, in queue order: an entry joins its stream's latest group if it has the same
    // NOMKSTREAM and cap, and starts a new group otherwise, so a stream's groups are sent (and
    // land) in the order of their entries.
    let mut groups: Vec<Vec<Request>> = Vec::new();
    for request in round {
        match groups.iter_mut().rev().find(|g| g[0].stream == request.stream) {
            Some(group) if group[0].no_mkstream == request.no_mkstream && group[0].max_len == request.max_len => {
                group.push(request)
            }
            _ => groups.push(vec![request]),
        }
    }
    let sends = groups.into_iter().map(|group| send_group(&client, &scripts, group, due));
    futures_util::future::join_all(sends).await;
}

/// The entries of one stream in a round trip, answered each. A round trip that never left
/// (the client's connection task is gone, e.g. with the async runtime it was made on) is sent
/// again, once, on the replacement client: nothing of it was written. Each send's commands
/// time out at `due` (see [`until`]), a resend's too.
async fn send_group(client: &HealingClient, scripts: &ScriptUse, group: Vec<Request>, due: Instant) {
    let fred = client.get();
    let group = match send_group_on(client, &fred, scripts, group, &until(due)).await {
        None => return,
        Some(unsent) => unsent,
    };
    let fred = client.get();
    if let Some(unsent) = send_group_on(client, &fred, scripts, group, &until(due)).await {
        for request in unsent {
            let e = fred::error::Error::new(fred::error::ErrorKind::Unknown, "Failed to send command to router.");
            let _ = request.reply.send(Err(Error::redis("XADD", &request.stream, e)));
        }
    }
}

/// Commands that time out at `due` (at least [`MIN_TIMEOUT`] from now) by fred's own timeout,
/// so that one given up is also never written or re-sent after a reconnect (dropping its
/// future would leave it queued in fred).
fn until(due: Instant) -> fred::types::config::Options {
    let timeout = due.saturating_duration_since(Instant::now()).max(MIN_TIMEOUT);
    fred::types::config::Options { timeout: Some(timeout), ..Default::default() }
}

/// Whether `e` says the command never reached the connection (so nothing was written).
fn never_sent(e: &fred::error::Error) -> bool {
    e.details().contains("Failed to send command to router")
}

/// [`send_group`] on `fred`: `Some(group)` back when it never left and the client was
/// replaced (the caller sends it again).
async fn send_group_on(
    client: &HealingClient,
    fred: &fred::clients::Client,
    scripts: &ScriptUse,
    group: Vec<Request>,
    options: &fred::types::config::Options,
) -> Option<Vec<Request>> {
    let timed = fred.with_options(options);
    let stream = group[0].stream.clone();
    let (no_mkstream, max_len) = (group[0].no_mkstream, group[0].max_len);
    let scripted =
        group.len() > 1 && scripts.may_try() && group.iter().all(|r| r.headers.len() <= append::MAX_SCRIPT_HEADERS);
    if scripted {
        let bare = group.iter().all(|r| r.headers.is_empty());
        let mut args = AppendArgs::new(no_mkstream, max_len, group.len(), bare);
        for request in &group {
            args.push(request.data.clone(), &append::header_args(&request.headers, false), None);
        }
        // As a command of its own: fred's `eval` is not offered with per-command options.
        let eval = CustomCommand::new_static("EVAL", ClusterHash::Custom(crate::keys::slot(&stream)), false);
        let mut eval_args =
            vec![Value::from_static_str(append::APPEND), Value::Integer(1), Value::from(stream.as_str())];
        eval_args.extend(args.into_args());
        let reply: std::result::Result<Value, fred::error::Error> = timed.custom(eval, eval_args).await;
        match reply {
            Ok(reply) => {
                scripts.allowed();
                let sent = group.len();
                for (request, outcome) in group.into_iter().zip(append::entry_replies(&stream, sent, reply)) {
                    let _ = request.reply.send(outcome);
                }
                return None;
            }
            Err(e) if append::scripts_refused(&e) => scripts.refused(),
            Err(e) => {
                if client.heal(fred, &e).await && never_sent(&e) {
                    return Some(group);
                }
                for request in group {
                    let _ = request.reply.send(Err(Error::redis("EVAL (append)", &stream, e.clone())));
                }
                return None;
            }
        }
    }
    let cap = match max_len.map(|len| XCap::try_from(("MAXLEN", "~", len as i64))).transpose() {
        Ok(cap) => cap.unwrap_or_else(|| XCap::from(None::<()>)),
        Err(e) => {
            for request in group {
                let _ = request.reply.send(Err(Error::redis("XADD", &stream, e.clone())));
            }
            return None;
        }
    };
    let adds = group.iter().map(|request| {
        let fields = entry_fields(request.data.clone(), &request.headers);
        timed.xadd::<Value, _, _, _, _>(stream.as_str(), no_mkstream, cap.clone(), "*", fields)
    });
    let replies = futures_util::future::join_all(adds).await;
    if let Some(Err(e)) = replies.iter().find(|r| r.is_err()) {
        let healed = client.heal(fred, e).await;
        if healed && replies.iter().all(|r| r.as_ref().is_err_and(never_sent)) {
            return Some(group);
        }
    }
    for (request, reply) in group.into_iter().zip(replies) {
        let outcome = match reply {
            Ok(reply) => parse_added_id(&stream, reply),
            Err(e) => Err(Error::redis("XADD", &stream, e)),
        };
        let _ = request.reply.send(outcome);
    }
    None
}
