//! Per-key ordering (`ordered = true`): the **key gate** of one consumer loop. Messages with
//! the same key ([`MESSAGE_KEY_HEADER`]) run one at a time, in stream order; different keys
//! run in parallel up to `concurrency`; messages without a key run unordered.
//!
//! Every path that starts a keyed entry of an ordered consumer passes the gate: the reader
//! (one read loop for an ordered consumer, so entries reach the gate in stream order), the
//! take-overs (and the take-up of this member's own pending entries at start, see
//! [`take_up_own_pending`]), and due retries of the schedule. An entry *admitted* runs at once;
//! one whose key is busy (an earlier entry running, waiting out its retry backoff, or queued)
//! waits in its key's queue, in id order, **without a permit**: permits go to keys that can
//! run. When a key's entry settles (acknowledged or dead-lettered), the next entry of the
//! key starts, on the permit the settled one gave back.
//!
//! - **Retries in place**: a failed keyed delivery is not parked in the group's retry
//!   schedule (any member could promote it, and the key's later entries would run
//!   meanwhile); its task gives its permit back, waits out the backoff holding only the key,
//!   then claims the entry again with [`RETRY_IN_PLACE`] (`RETRYCOUNT` = the next attempt, so
//!   a crash does not reset the count) and runs it on a new permit. The key is released only
//!   when the message settles: a success or its dead letter.
//! - **Memory**: a queued entry keeps its charge of the byte budget, so the budget bounds
//!   what the gate holds. Beyond [`PER_KEY_SHARE`] of the budget, a key's queued entries keep
//!   their id only (charged [`ID_ONLY_BYTES`]) and are fetched again (`XRANGE`) when their
//!   turn comes: one hot key whose head waits for a retry fills the budget with ids, not
//!   payloads, and the other keys keep flowing while the budget has room.
//! - **Crash suspects** (see [`super::takeover`]) run alone as always; their key counts them
//!   as running ([`KeyGate::force`]), so no later entry of the key starts beside them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};

use fred::interfaces::StreamsInterface;
use fred::types::scripts::Script;
use fred::types::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::budget::{charged_size, Charge};
use super::dispatch;
use super::shared::{lock, Shared};
use crate::message::{Headers, MessageId, MESSAGE_KEY_HEADER};
use crate::wire::{parse_entry, RawEntry};

/// What a key's queued entries may keep of the byte budget as payloads: `1 / PER_KEY_SHARE`
/// of it (at least one entry). Beyond, they keep their ids only.
pub(crate) const PER_KEY_SHARE: usize = 4;

/// What the budget is charged for an entry queued by id only (the id, its attempt, the
/// queue slot and the held map's entry).
pub(crate) const ID_ONLY_BYTES: usize = 64;

/// The most entries an ordered consumer holds beyond an unordered one's bound on held
/// entries, for the ids queued behind busy keys (see the reader).
pub(crate) const MOST_QUEUED_IDS: usize = 65_536;

/// The key of an entry, for the gate: its [`MESSAGE_KEY_HEADER`], if any.
pub(crate) fn key_of(entry: &RawEntry) -> Option<Arc<str>> {
    key_in(&entry.headers)
}

fn key_in(headers: &Headers) -> Option<Arc<str>> {
    headers.get(MESSAGE_KEY_HEADER).map(Arc::from)
}

/// An entry waiting for its key's turn.
pub(crate) struct Waiting {
    pub id: MessageId,
    pub attempt: u32,
    body: Body,
}

enum Body {
    /// The entry, and its charge of the byte budget.
    Entry(RawEntry, Charge),
    /// Its id only: the entry is fetched again when its turn comes.
    IdOnly(Charge),
}

/// One key's state: how many of its entries run (0 or 1, more only while a crash suspect
/// runs alone beside it), and those waiting, in id order.
#[derive(Default)]
struct KeyState {
    running: u32,
    queue: VecDeque<Waiting>,
    /// The bytes of the queued entries kept whole.
    queued_bytes: usize,
}

/// See the module docs.
pub(crate) struct KeyGate {
    keys: Mutex<HashMap<Arc<str>, KeyState>>,
    /// The most bytes one key's queued entries keep whole.
    per_key_bytes: usize,
}

impl KeyGate {
    pub fn new(max_buffered_bytes: usize) -> Self {
        KeyGate { keys: Mutex::new(HashMap::new()), per_key_bytes: (max_buffered_bytes / PER_KEY_SHARE).max(1) }
    }

    /// Lets `entry` run now if no entry of its key runs or waits (the key is then busy until
    /// [`release`](Self::release)): returns it. Else queues it with its part of the byte
    /// budget (`split` takes it out of the caller's charge), or with its id only once the
    /// key's queue keeps its share of the budget. One lock: a key released meanwhile cannot
    /// leave an entry queued with nobody to start it.
    pub fn admit(
        &self,
        key: &Arc<str>,
        entry: RawEntry,
        attempt: u32,
        split: impl FnOnce(&RawEntry) -> Charge,
    ) -> Option<RawEntry> {
        let mut keys = lock(&self.keys);
        let state = keys.entry(key.clone()).or_default();
        if state.running == 0 && state.queue.is_empty() {
            state.running = 1;
            return Some(entry);
        }
        let bytes = charged_size(&entry);
        let id = entry.id;
        let charge = split(&entry);
        let body = if state.queued_bytes == 0 || state.queued_bytes + bytes <= self.per_key_bytes {
            state.queued_bytes += bytes;
            Body::Entry(entry, charge)
        } else {
            let mut charge = charge;
            charge.release_part(bytes.saturating_sub(ID_ONLY_BYTES));
            Body::IdOnly(charge)
        };
        // In id order: entries of a key reach the gate in stream order from the reader; an
        // earlier one taken over late goes before the later ones still waiting.
        let at = state.queue.partition_point(|w| w.id < id);
        state.queue.insert(at, Waiting { id, attempt, body });
        None
    }

    /// Counts an entry of `key` as running whatever else runs or waits (a crash suspect,
    /// which runs alone; see the module docs).
    pub fn force(&self, key: &Arc<str>) {
        lock(&self.keys).entry(key.clone()).or_default().running += 1;
    }

    /// An entry of `key` settled: returns the next waiting one, which the caller must start
    /// (the key stays busy for it), or `None` (the key is free).
    pub fn release(&self, key: &Arc<str>) -> Option<Waiting> {
        let mut keys = lock(&self.keys);
        let state = keys.get_mut(key)?;
        state.running = state.running.saturating_sub(1);
        if state.running > 0 {
            return None;
        }
        match state.queue.pop_front() {
            Some(next) => {
                if let Body::Entry(entry, _) = &next.body {
                    state.queued_bytes = state.queued_bytes.saturating_sub(charged_size(entry));
                }
                state.running = 1;
                Some(next)
            }
            None => {
                keys.remove(key);
                None
            }
        }
    }

    /// Entries waiting in the gate (all keys).
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        lock(&self.keys).values().map(|s| s.queue.len()).sum()
    }
}

/// The key of an entry `shared`'s gate orders, if it has a gate and the entry a key.
pub(crate) fn gated_key(shared: &Shared, entry: &RawEntry) -> Option<Arc<str>> {
    shared.gate.as_ref().and_then(|_| key_of(entry))
}

/// An entry of `key` settled: starts the next one of its key, if any, on `permit` (given
/// back by the settled one) or on one it waits for. Returns the permit if no entry took it.
pub(crate) fn released(
    shared: &Arc<Shared>,
    key: &Arc<str>,
    permit: Option<OwnedSemaphorePermit>,
) -> Option<OwnedSemaphorePermit> {
    let Some(gate) = &shared.gate else { return permit };
    let Some(next) = gate.release(key) else { return permit };
    start_waiting(shared, key.clone(), next, permit);
    None
}

/// Starts `next`, whose key is now its own: fetches its entry again if it waited by id
/// only, takes a permit if none is given. At shutdown nothing more starts: it stays held,
/// unstarted, and is left pending for the next member (see [`super::drain`]). An entry no
/// longer held (a restarted reader forgot it; the reconciliation takes it up) is skipped.
fn start_waiting(shared: &Arc<Shared>, key: Arc<str>, next: Waiting, permit: Option<OwnedSemaphorePermit>) {
    if shared.stopping.is_cancelled() {
        return;
    }
    if !shared.is_tracked(next.id) {
        drop(next);
        drop(released(shared, &key, permit));
        return;
    }
    match (next.body, permit) {
        // (Paused: it waits for the resume on a task, below.)
        (Body::Entry(entry, charge), Some(permit)) if !shared.pause().is_paused() => {
            dispatch::start(shared, entry, next.attempt, permit, charge);
        }
        (body, permit) => {
            let shared2 = shared.clone();
            let (id, attempt) = (next.id, next.attempt);
            shared.tasks.spawn(async move {
                let shared = shared2;
                let (entry, charge) = match body {
                    Body::Entry(entry, charge) => (entry, charge),
                    Body::IdOnly(small) => match refetch(&shared, id).await {
                        Some(entry) => {
                            let charge = shared.budget.charge([&entry]);
                            drop(small);
                            (entry, charge)
                        }
                        // Shutdown while Redis failed: left pending here.
                        None => return,
                    },
                };
                let permit = match permit {
                    Some(permit) => permit,
                    None => match dispatch::take_one_permit(&shared).await {
                        Some(permit) => permit,
                        None => return,
                    },
                };
                // A permit handed on by the key's last entry skipped the pause gate of
                // `take_one_permit`.
                if !shared.pause().wait_resumed(&shared.stopping).await || shared.stopping.is_cancelled() {
                    return;
                }
                dispatch::start(&shared, entry, attempt, permit, charge);
            });
        }
    }
}

/// Fetches the entry `id` again (`XRANGE id id`), retried with backoff while Redis fails;
/// an entry deleted meanwhile comes back `deleted` (dead-lettered as trimmed by the
/// handling). `None` at shutdown.
async fn refetch(shared: &Shared, id: MessageId) -> Option<RawEntry> {
    let mut backoff = crate::retry_delay::RetryDelay::new();
    loop {
        let client = shared.command.get();
        let reply: Result<Value, _> = client.xrange(shared.stream(), id.to_string(), id.to_string(), Some(1)).await;
        match reply {
            Ok(reply) => return Some(entry_or_deleted(id, reply.into_array().into_iter().next())),
            Err(e) => {
                tracing::warn!(consumer = %shared.name, %id, error = %e, "cannot fetch a queued message of an ordered key yet");
                shared.command_failed(&client, &e).await;
                if !backoff.wait(&shared.stopping).await {
                    return None;
                }
            }
        }
    }
}

/// The entry in an `[id, fields]` reply, or a `deleted` one when the reply has none.
fn entry_or_deleted(id: MessageId, found: Option<Value>) -> RawEntry {
    found.filter(|v| !v.is_null()).and_then(parse_entry).unwrap_or(RawEntry {
        id,
        data: None,
        headers: Headers::new(),
        deleted: true,
        replay_group: None,
    })
}

/// Claims a failed entry again for its next attempt, after its backoff (see the module
/// docs). Returns `nil` if the entry is no longer this member's (taken over meanwhile),
/// `{1, fields}` if it is (now counted `ARGV[4]` deliveries), `{0}` if it is but was
/// deleted from the stream.
///
/// If the process dies before the script, the entry stays pending here with the count of
/// the failed attempt: a restart under the same name (or a take-over) runs it again with
/// that attempt number, before any later entry of its key. After it, the count is the next
/// attempt's, so a crash during that run is counted. A re-sent script sets the same
/// absolute count again.
pub(super) static RETRY_IN_PLACE: LazyLock<Script> = LazyLock::new(|| {
    crate::scripts::assemble(
        &[crate::topic::fence::FENCE],
        r#"
-- KEYS: stream; ARGV: group, me, id, next attempt
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if not mine[1] then return false end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID', 'RETRYCOUNT', ARGV[4])
local found = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if found[1] then return {1, found[1][2]} end
return {0}
"#,
    )
});

/// A failed delivery of `key` (attempt `attempt`) retried in place: its permit goes back,
/// it waits `delay` holding the key only, then is claimed again ([`RETRY_IN_PLACE`]) and
/// runs on a new permit. Returns whether the key was handed on to the next attempt (else
/// the caller releases it: the entry is no longer this member's, or the loop stops).
pub(crate) async fn retry_in_place(
    shared: &Arc<Shared>,
    id: MessageId,
    attempt: u32,
    delay: std::time::Duration,
    permit: OwnedSemaphorePermit,
) -> bool {
    drop(permit);
    tokio::select! {
        _ = shared.stopping.cancelled() => return false, // left pending here (see `drain`)
        _ = tokio::time::sleep(delay) => {}
    }
    let next = attempt.saturating_add(1);
    let mut backoff = crate::retry_delay::RetryDelay::new();
    let entry = loop {
        let client = shared.command.get();
        let mut args =
            vec![shared.group().to_string(), shared.member_name().to_string(), id.to_string(), next.to_string()];
        let mut keys = vec![shared.stream().to_string()];
        crate::topic::fence::append_opt(shared.fence(), &mut keys, &mut args);
        let reply: Result<Value, _> = RETRY_IN_PLACE.evalsha_with_reload(&client, keys, args).await;
        match reply {
            Ok(reply) if reply.is_null() => {
                tracing::info!("the message was taken over by another consumer meanwhile; leaving it to it");
                shared.untrack([id]);
                return false;
            }
            Ok(reply) => {
                let mut parts = reply.into_array().into_iter();
                let found = parts.next().and_then(|v| v.as_u64()) == Some(1);
                let fields = parts.next();
                break if found {
                    entry_or_deleted(id, fields.map(|f| Value::Array(vec![Value::from(id.to_string()), f])))
                } else {
                    entry_or_deleted(id, None)
                };
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff.current(), "cannot claim the message for its retry yet");
                shared.command_failed(&client, &e).await;
                if !backoff.wait(&shared.stopping).await {
                    return false;
                }
            }
        }
    };
    let charge = shared.budget.charge([&entry]);
    let Some(permit) = dispatch::take_one_permit(shared).await else { return false };
    dispatch::start(shared, entry, next, permit, charge);
    true
}

/// At the start of an ordered consumer's reader, before its first read: takes up the entries
/// pending under this member's name that it does not hold (a predecessor under the same
/// name crashed or stopped, possibly while an entry waited for its retry), through the
/// take-over script, and puts them through the gate: they start before any later entry of
/// their key that a read brings.
pub(crate) async fn take_up_own_pending(shared: &Arc<Shared>) {
    let mut from = "-".to_string();
    loop {
        let client = shared.command.get();
        let reply: Result<Value, _> =
            client.xpending(shared.stream(), shared.group(), (from.as_str(), "+", 1000u64, shared.member_name())).await;
        let pending = match reply {
            Ok(v) => crate::inspect::parse_pending(v),
            Err(e) => {
                if !crate::error::is_no_group(&e) {
                    tracing::warn!(consumer = %shared.name, error = %e, "cannot list own pending messages at start; the reconciliation takes them up later");
                }
                return;
            }
        };
        let Some(last) = pending.last().map(|p| p.id) else { return };
        let page = pending.len();
        let own: Vec<MessageId> = pending.into_iter().map(|p| p.id).filter(|id| !shared.is_tracked(*id)).collect();
        if !own.is_empty() {
            tracing::info!(consumer = %shared.name, count = own.len(), "taking up this member's own pending messages before reading new ones");
            if !super::takeover::take_up(shared, own).await {
                return;
            }
        }
        if page < 1000 {
            return;
        }
        from = format!("({last}");
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::worker::budget::ByteBudget;

    fn entry(ms: u64, key: &str, bytes: usize) -> RawEntry {
        RawEntry {
            id: MessageId::new(ms, 0),
            data: Some(Bytes::from(vec![b'x'; bytes])),
            headers: Headers::new().with(MESSAGE_KEY_HEADER, key),
            deleted: false,
            replay_group: None,
        }
    }

    #[test]
    fn one_entry_of_a_key_at_a_time_in_id_order() {
        let budget = ByteBudget::new(1 << 20);
        let gate = KeyGate::new(1 << 20);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let admit = |e: RawEntry| {
            let key = key_of(&e).expect("keyed");
            let charge = budget.charge([&e]);
            gate.admit(&key, e, 1, move |_| charge).map(|e| e.id)
        };
        assert_eq!(admit(entry(1, "a", 10)), Some(MessageId::new(1, 0)));
        assert_eq!(admit(entry(2, "b", 10)), Some(MessageId::new(2, 0)), "another key runs beside it");
        assert_eq!(admit(entry(5, "a", 10)), None, "a runs: queued");
        assert_eq!(admit(entry(3, "a", 10)), None, "an earlier one taken over late");
        assert_eq!(gate.waiting(), 2);
        assert_eq!(gate.release(&a).map(|w| w.id), Some(MessageId::new(3, 0)), "in id order");
        assert_eq!(gate.release(&a).map(|w| w.id), Some(MessageId::new(5, 0)));
        assert!(gate.release(&a).is_none(), "a is free");
        assert!(gate.release(&b).is_none());
        assert_eq!(admit(entry(6, "a", 10)), Some(MessageId::new(6, 0)));
    }

    #[test]
    fn a_hot_key_keeps_ids_only_beyond_its_share_of_the_budget() {
        let limit = 40_000;
        let budget = ByteBudget::new(limit);
        let gate = KeyGate::new(limit);
        let key: Arc<str> = Arc::from("hot");
        for ms in 0..100 {
            let e = entry(ms, "hot", 858); // 1,000 bytes charged each (with the key header)
            let charge = budget.charge([&e]);
            let _ = gate.admit(&key, e, 1, move |_| charge);
        }
        // One runs (its charge was not taken: dropped here), 99 wait: 10 whole (a
        // quarter of the budget), the rest by id.
        assert_eq!(budget.used(), 10 * 1_000 + 89 * ID_ONLY_BYTES);
        let kinds: Vec<bool> =
            (0..99).map(|_| matches!(gate.release(&key).map(|w| w.body), Some(Body::Entry(..)))).collect();
        assert!(kinds[..10].iter().all(|whole| *whole) && kinds[10..].iter().all(|whole| !whole));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_forced_entry_keeps_its_key_busy() {
        let gate = KeyGate::new(1 << 20);
        let budget = ByteBudget::new(1 << 20);
        let key: Arc<str> = Arc::from("k");
        gate.force(&key);
        let e = entry(1, "k", 10);
        let charge = budget.charge([&e]);
        assert!(gate.admit(&key, e, 1, move |_| charge).is_none(), "the suspect runs");
        assert_eq!(gate.release(&key).map(|w| w.id), Some(MessageId::new(1, 0)));
    }
}
