//! Batched acknowledgements: handlers queue ids; one task sends them as XACKs of up to
//! [`MAX_ACK_BATCH`] ids, up to [`IN_FLIGHT`] at once (pipelined on the command connection,
//! so acknowledging keeps up with several read loops). An id is queued only after its
//! handler succeeded, waits at most for the XACKs in flight before it (no timer: a batch is
//! whatever queued meanwhile), and stays held by this consumer until Redis has the XACK (so
//! a shutdown never hands back a handled entry whose acknowledgement is still on its way,
//! nor forgets one whose XACK failed). Held entries also bound the reads (see
//! [`Shared::wait_held_room`]): acknowledgements that fall behind slow the reads down
//! instead of piling up.

use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::shared::{AckReceiver, Acks, Shared};
use super::stats::ConsumerStats;
use crate::message::{id_args, MessageId};
use crate::retry_delay::RetryDelay;
use fred::clients::Client;
use fred::interfaces::{ClientLike, SetsInterface};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Value};
use std::future::Future;
use std::sync::LazyLock;

/// The most ids sent in one XACK.
const MAX_ACK_BATCH: usize = 1000;

/// The most XACKs in flight at once.
const IN_FLIGHT: usize = 4;

/// Attempts of the last XACKs once the loop is stopping (the drain hands back what fails).
const LAST_ATTEMPTS: u32 = 3;

pub(crate) async fn run(shared: Arc<Shared>, mut rx: AckReceiver) {
    let mut sending = FuturesUnordered::new();
    let mut batch: Vec<MessageId> = Vec::new();
    loop {
        let room = sending.len() < IN_FLIGHT;
        let first = tokio::select! {
            biased;
            Some(()) = sending.next(), if !sending.is_empty() => continue,
            first = rx.recv(), if room => first,
            // No handler runs any more and nothing is queued: every ack has been sent.
            _ = shared.acks_closed().cancelled(), if room => None,
        };
        let Some(first) = first else { break };
        add(&mut batch, first);
        while batch.len() < MAX_ACK_BATCH {
            let Ok(more) = rx.try_recv() else { break };
            add(&mut batch, more);
        }
        // A message of many ids may take the batch past the most one XACK sends.
        while batch.len() > MAX_ACK_BATCH {
            let rest = batch.split_off(MAX_ACK_BATCH);
            sending.push(send(shared.clone(), std::mem::replace(&mut batch, rest), None));
        }
        sending.push(send(shared.clone(), std::mem::take(&mut batch), None));
    }
    while sending.next().await.is_some() {}
}

/// Acknowledges `ids` on `client` (a read loop's own connection) right away: the XACK is
/// queued on the connection before this returns, so it goes out ahead of the loop's next
/// read (in the same write, as the raw loop does), and its reply is awaited on a task of its
/// own. Used for the handlers a read loop ran to completion inline: their acknowledgements
/// then need no other task to be scheduled, which on a busy machine is what lets
/// acknowledging keep up with the reads.
pub(crate) fn send_now(shared: &Arc<Shared>, client: &Client, ids: Vec<MessageId>) {
    if ids.is_empty() {
        return;
    }
    let mut sending = Box::pin(send(shared.clone(), ids, Some(client.clone())));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if sending.as_mut().poll(&mut cx).is_pending() {
        shared.tasks.spawn(sending);
    }
}

/// `XACK stream group ids...` as a command of its own, routed by the stream's slot: the
/// ids go as byte strings, where fred's typed `xack` would wrap each in a string it first
/// checks for UTF-8 (sending an XACK: 629 -> 453 instructions per acknowledged message).
///
/// In work-queue mode (`delete_on_ack`) on a server with `XACKDEL` (see
/// [`crate::Capabilities`]): `XACKDEL stream group ACKED IDS n ids...` instead, which also
/// deletes each entry no other group still needs (one another group has not read or
/// acknowledged stays, and leaves with that group's acknowledgement or the trimmer). A user
/// refused `XACKDEL` by its ACL falls back to `XACK` (the trimmer then deletes what is
/// acknowledged, as on servers without it).
async fn xack(client: &Client, shared: &Shared, ids: &[MessageId]) -> Result<u64, fred::error::Error> {
    if let Some(fence) = shared.fence() {
        let mut keys = vec![shared.stream().to_string()];
        let mut args: Vec<Value> = Vec::with_capacity(ids.len() + 2);
        args.push(Value::from(shared.group()));
        args.extend(id_args(ids));
        fence.append(&mut keys, &mut args);
        return FENCED_ACK.evalsha_with_reload(client, keys, args).await;
    }
    let slot = ClusterHash::Custom(crate::keys::slot(shared.stream()));
    let mut args = Vec::with_capacity(ids.len() + 5);
    args.push(Value::from(shared.stream()));
    args.push(Value::from(shared.group()));
    match AckCommand::of(shared) {
        AckCommand::Xack => {
            args.extend(id_args(ids));
            client.custom(CustomCommand::new_static("XACK", slot, false), args).await
        }
        AckCommand::XackDel => {
            args.extend([Value::from("ACKED"), Value::from("IDS"), Value::from(ids.len() as i64)]);
            args.extend(id_args(ids));
            match client.custom::<Value, _>(CustomCommand::new_static("XACKDEL", slot, false), args).await {
                // One code per id: 1 deleted, 2 acknowledged and kept (still needed), -1 unknown.
                Ok(reply) => Ok(reply.into_array().iter().filter(|v| v.as_i64().is_some_and(|c| c > 0)).count() as u64),
                Err(e) if e.details().contains("NOPERM") => {
                    tracing::warn!(consumer = %shared.name, error = %e, "XACKDEL is refused by the ACL: acknowledging with XACK; the retention trimmer deletes acknowledged entries instead (grant +xackdel to delete them at once)");
                    shared.xackdel_refused.store(true, std::sync::atomic::Ordering::Relaxed);
                    Box::pin(xack(client, shared, ids)).await
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// `XACK` of a topic shard's loop: only while the shard's lease holds the loop's token (see
/// [`crate::topic::fence`]). Crash safety: one XACK, whole or not at all; re-sent, it
/// acknowledges nothing more.
pub(super) static FENCED_ACK: LazyLock<Script> = LazyLock::new(|| {
    crate::scripts::assemble(
        &[crate::topic::fence::FENCE],
        r#"
-- KEYS: stream; ARGV: group, ids... (at most the acker's batch of 1,000)
return redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
"#,
    )
});

/// The command that acknowledges: `XACKDEL ... ACKED` in work-queue mode where the server
/// has it (and the ACL allows it), else `XACK`.
pub(super) enum AckCommand {
    Xack,
    XackDel,
}

impl AckCommand {
    pub(super) fn of(shared: &Shared) -> AckCommand {
        let refused = shared.xackdel_refused.load(std::sync::atomic::Ordering::Relaxed);
        if shared.consumer.options.delete_on_ack && shared.settings.capabilities.xackdel && !refused {
            AckCommand::XackDel
        } else {
            AckCommand::Xack
        }
    }
}

/// A dedupe consumer forgets the keys of `ids` (recorded, or gone with the group).
fn settled(shared: &Shared, ids: &[MessageId]) {
    if let Some(dedupe) = &shared.dedupe {
        dedupe.settled(ids);
    }
}

fn add(batch: &mut Vec<MessageId>, acks: Acks) {
    match acks {
        Acks::One(id) => batch.push(id),
        Acks::Many(ids) => batch.extend(ids),
    }
}

/// Sends one XACK for `ids` (on `via` first if given, on the command connection after a
/// failure) and clears the take-over marks of those that had one, retrying failures with
/// backoff; once the loop is stopping, a few more attempts, after which the entries stay
/// pending and are handed back by the drain (redelivered: at-least-once).
async fn send(shared: Arc<Shared>, ids: Vec<MessageId>, mut via: Option<Client>) {
    // A settled entry's take-over mark and its isolation mark (see `super::takeover`).
    let marked: Vec<String> =
        shared.taken_over_among(&ids).iter().flat_map(|id| super::takeover::marks_of(*id)).collect();
    let mut delay = RetryDelay::new();
    let mut last_attempts = 0;
    loop {
        let client = via.take().unwrap_or_else(|| shared.command.get());
        let result = match &shared.dedupe {
            None => xack(&client, &shared, &ids).await,
            Some(dedupe) => super::dedupe::ack(&client, &shared, dedupe, &ids).await,
        };
        match result {
            Ok(_) => {
                ConsumerStats::bump(&shared.stats.ack_batches, 1);
                if !marked.is_empty() {
                    let cleared: Result<u64, _> = client.srem(&shared.keys.marks, marked.clone()).await;
                    if let Err(e) = cleared {
                        tracing::debug!(consumer = %shared.name, error = %e, "cannot clear take-over marks");
                    }
                }
                shared.untrack(ids.iter().copied());
                settled(&shared, &ids);
                return;
            }
            Err(e) if crate::error::is_no_group(&e) => {
                tracing::warn!(consumer = %shared.name, count = ids.len(), "XACK: the group is gone (Redis restarted or flushed?); these entries are gone with it");
                shared.untrack(ids.iter().copied());
                settled(&shared, &ids);
                return;
            }
            Err(e) if crate::topic::fence::is_fenced(&e) => {
                // The shard moved: these entries are the new owner's to run again.
                shared.fenced();
                shared.started_all(ids.iter().map(|id| (*id, None)));
                return;
            }
            Err(e) => {
                tracing::warn!(consumer = %shared.name, error = %e, retry_in = ?delay.current(), "XACK failed; retrying");
                shared.command_failed(&client, &e).await;
                if shared.stopping.is_cancelled() {
                    last_attempts += 1;
                    if last_attempts >= LAST_ATTEMPTS {
                        tracing::error!(consumer = %shared.name, count = ids.len(), "XACK kept failing at shutdown; these entries stay pending and will be redelivered");
                        // They ran: the hand-back must count this delivery (handlers that
                        // finished inline are not marked started when they run).
                        shared.started_all(ids.iter().map(|id| (*id, None)));
                        return;
                    }
                }
                // While running, keep trying; at shutdown the wait is short-circuited.
                let never = tokio_util::sync::CancellationToken::new();
                let stop = if shared.stopping.is_cancelled() { &never } else { &shared.stopping };
                delay.wait(stop).await;
            }
        }
    }
}
