//! The consumer loop's side of [`dedupe`](crate::ConsumerOptions::dedupe) (the scripts are in
//! [`crate::dedupe`]):
//!
//! - **screening**: each batch of entries read, taken over or due for a retry is checked in
//!   one script against the group's `handled` set; entries whose key is recorded are
//!   acknowledged without running ([`screen`]);
//! - **in-flight duplicates**: within this process, a message whose key is running (or has
//!   succeeded and waits for its acknowledgement) waits for that outcome: on success it is
//!   acknowledged without running, on failure it runs ([`Dedupe::begin`]);
//! - **recording**: a success is recorded with its XACK, in one script ([`ack`]).
//!
//! Across processes two duplicates read close together by different members can both run
//! (a check made when a batch is read is trusted up to [`RECENT`] until the message starts):
//! neither is recorded until one succeeds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::Client;
use tokio::sync::watch;

use super::shared::{lock, Shared};
use super::stats::ConsumerStats;
use crate::dedupe::IDEMPOTENCY_KEY_HEADER;
use crate::handler::{BoxFuture, Outcome};
use crate::message::MessageId;
use crate::wire::RawEntry;

/// The key a message is deduplicated by: its `idempotency-key` header, else its entry id.
pub(crate) fn key_of(entry: &RawEntry) -> Bytes {
    match entry.headers.get(IDEMPOTENCY_KEY_HEADER) {
        Some(key) => Bytes::copy_from_slice(key.as_bytes()),
        None => Bytes::from(entry.id.to_string()),
    }
}

/// Where a key's run in this process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    /// Succeeded; its acknowledgement (with the record) is on its way.
    Succeeded,
    /// Failed (or was cancelled): a waiting duplicate may run.
    Failed,
}

/// One key running (or succeeded, not yet recorded) in this process: its owner's id and
/// where the run stands.
struct Slot {
    owner: MessageId,
    state: watch::Sender<Run>,
}

/// How long this process remembers the keys it recorded, and trusts a screening: a message
/// that starts later than this after its screening is checked again, alone.
const RECENT: Duration = Duration::from_secs(30);

/// The most recorded keys this process remembers (whatever the throughput: at 100,000
/// messages a second, [`RECENT`] would be 3,000,000 keys). Past it, the oldest are forgotten
/// and a screening made before the newest forgotten record is no longer trusted (the message
/// is checked again, alone): memory stays bounded and nothing runs twice.
const MAX_REMEMBERED: usize = 65_536;

#[derive(Default)]
struct State {
    /// Keys running or succeeded here, not yet recorded in Redis.
    slots: HashMap<Bytes, Arc<Slot>>,
    /// Ids whose key the last screening found recorded: acknowledged without running.
    screened: HashSet<MessageId>,
    /// When each id not found recorded was screened (the screening's start): its verdict
    /// holds for the keys recorded in Redis before then; those recorded here since are in
    /// `recorded`, kept [`RECENT`].
    checked: HashMap<MessageId, Instant>,
    /// The keys this process recorded in the last [`RECENT`], oldest first, and by key.
    recorded: VecDeque<(Instant, Bytes)>,
    recorded_keys: HashMap<Bytes, usize>,
    /// The keys of succeeded runs, by id, until their acknowledgement records them.
    to_record: HashMap<MessageId, Bytes>,
    /// When the newest record forgotten for [`MAX_REMEMBERED`] was made: a screening made
    /// before it may have missed that record.
    horizon: Option<Instant>,
}

impl State {
    fn forget_old(&mut self, now: Instant, remember: Duration) {
        self.forget_recorded(now, remember);
        if self.checked.len() > 4096 {
            self.checked.retain(|_, at| now.duration_since(*at) < RECENT);
        }
        // Ids screened as handled whose message never started (dead-lettered unread: too
        // large, no payload) would stay: past what any loop holds at once, forget them all.
        // Safe: a message whose verdict is forgotten is checked again, alone.
        if self.screened.len() > 16_384 {
            self.screened.clear();
        }
    }

    /// Forgets the keys recorded here more than `remember` ago (see [`Dedupe::remembered`]).
    fn forget_recorded(&mut self, now: Instant, remember: Duration) {
        while let Some((at, _)) = self.recorded.front() {
            if now.duration_since(*at) < remember {
                break;
            }
            if let Some((_, key)) = self.recorded.pop_front() {
                if let Some(n) = self.recorded_keys.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        self.recorded_keys.remove(&key);
                    }
                }
            }
        }
    }
}

/// The dedupe state of one consumer loop.
pub(crate) struct Dedupe {
    pub window: Duration,
    /// `keys::handled(stream, group)`.
    pub handled: String,
    state: Mutex<State>,
}

/// What [`Dedupe::begin`] decided for a message.
enum Begin {
    /// Handled already: acknowledge without running.
    Handled,
    /// Run it; the guard tells the outcome to duplicates.
    Run(RunGuard),
    /// A duplicate is running here: wait for its outcome.
    Wait(watch::Receiver<Run>),
    /// Not screened, or screened too long ago: check Redis for this key alone.
    Check,
}

impl Dedupe {
    pub fn new(stream: &str, group: &str, window: Duration) -> Self {
        Dedupe { window, handled: crate::keys::handled(stream, group), state: Mutex::default() }
    }

    /// What to do with message `id` of key `key` now; `checked` when Redis was just asked
    /// about this key alone (and did not have it).
    fn begin(self: &Arc<Self>, id: MessageId, key: &Bytes, checked: bool) -> Begin {
        let mut state = lock(&self.state);
        if state.screened.remove(&id) {
            return Begin::Handled;
        }
        if let Some(slot) = state.slots.get(key) {
            match *slot.state.borrow() {
                Run::Succeeded => return Begin::Handled,
                Run::Running => return Begin::Wait(slot.state.subscribe()),
                Run::Failed => {}
            }
        }
        // Only while Redis has the record too: past a window shorter than `RECENT`, a
        // duplicate runs again.
        state.forget_recorded(Instant::now(), self.remembered());
        if state.recorded_keys.contains_key(key) {
            return Begin::Handled;
        }
        // A screening older than what `recorded` remembers may have missed a key recorded
        // since by this process: ask again.
        let screened_at = state.checked.remove(&id);
        let horizon = state.horizon;
        let stale = |at: Instant| at.elapsed() >= RECENT || horizon.is_some_and(|h| at <= h);
        if !checked && screened_at.is_none_or(stale) {
            return Begin::Check;
        }
        let (tx, _) = watch::channel(Run::Running);
        state.slots.insert(key.clone(), Arc::new(Slot { owner: id, state: tx }));
        Begin::Run(RunGuard { dedupe: self.clone(), id, key: key.clone(), done: false })
    }

    /// How long this process remembers a key it recorded: [`RECENT`], or the window when that
    /// is shorter (Redis forgets the key when its window ends, and so must this process).
    fn remembered(&self) -> Duration {
        RECENT.min(self.window)
    }

    /// The keys to record for `ids`, in order (`None`: acknowledge only).
    pub fn keys_for(&self, ids: &[MessageId]) -> Vec<Option<Bytes>> {
        let state = lock(&self.state);
        ids.iter().map(|id| state.to_record.get(id).cloned()).collect()
    }

    /// `ids` are acknowledged (or gone): their keys are recorded in Redis, their slots here
    /// are no longer needed.
    pub fn settled(&self, ids: &[MessageId]) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        state.forget_old(now, self.remembered());
        for id in ids {
            state.screened.remove(id);
            state.checked.remove(id);
            if let Some(key) = state.to_record.remove(id) {
                if state.slots.get(&key).is_some_and(|slot| slot.owner == *id) {
                    state.slots.remove(&key);
                }
                *state.recorded_keys.entry(key.clone()).or_default() += 1;
                state.recorded.push_back((now, key));
            }
        }
        while state.recorded.len() > MAX_REMEMBERED {
            let Some((at, key)) = state.recorded.pop_front() else { break };
            if let Some(n) = state.recorded_keys.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    state.recorded_keys.remove(&key);
                }
            }
            state.horizon = Some(at);
        }
    }
}

/// A run of a key in this process; dropped without [`finish`](Self::finish) (cancelled), it
/// counts as failed.
struct RunGuard {
    dedupe: Arc<Dedupe>,
    id: MessageId,
    key: Bytes,
    done: bool,
}

impl RunGuard {
    fn finish(mut self, succeeded: bool) {
        self.done = true;
        let mut state = lock(&self.dedupe.state);
        let Some(slot) = state.slots.get(&self.key).filter(|slot| slot.owner == self.id).cloned() else { return };
        if succeeded {
            state.to_record.insert(self.id, self.key.clone());
            slot.state.send_replace(Run::Succeeded);
        } else {
            state.slots.remove(&self.key);
            slot.state.send_replace(Run::Failed);
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if !self.done {
            let mut state = lock(&self.dedupe.state);
            if let Some(slot) = state.slots.get(&self.key).filter(|slot| slot.owner == self.id).cloned() {
                state.slots.remove(&self.key);
                slot.state.send_replace(Run::Failed);
            }
        }
    }
}

/// Screens `entries` (one batch) against the group's `handled` set, in one script: those
/// recorded are acknowledged without running when they start. A failed screening is logged
/// and the batch runs unscreened (at-least-once holds; a duplicate may run).
pub(crate) async fn screen<'a>(shared: &Shared, entries: impl IntoIterator<Item = &'a RawEntry>) {
    let Some(dedupe) = &shared.dedupe else { return };
    let (ids, keys): (Vec<MessageId>, Vec<Bytes>) =
        entries.into_iter().filter(|e| !e.deleted).map(|e| (e.id, key_of(e))).unzip();
    if ids.is_empty() {
        return;
    }
    let client = shared.command.get();
    let at = Instant::now();
    match crate::dedupe::handled_among(&client, &dedupe.handled, keys).await {
        Ok(found) => {
            let mut handled = vec![false; ids.len()];
            for at in found {
                if let Some(h) = handled.get_mut(at) {
                    *h = true;
                }
            }
            let mut state = lock(&dedupe.state);
            for (id, handled) in ids.into_iter().zip(handled) {
                if handled {
                    state.screened.insert(id);
                } else {
                    state.checked.insert(id, at);
                }
            }
        }
        Err(e) => {
            tracing::warn!(consumer = %shared.name, error = %e, "cannot check which messages were handled already; running them unchecked");
            shared.command_failed(&client, &e).await;
        }
    }
}

/// The handling of one message of a dedupe consumer: acknowledged without running if its key
/// was handled (screened, or succeeded here); after the outcome of a duplicate running here;
/// else `run`, whose outcome is told to duplicates waiting here.
pub(crate) fn handle(
    shared: &Arc<Shared>,
    dedupe: &Arc<Dedupe>,
    entry: RawEntry,
    run: impl FnOnce(RawEntry) -> BoxFuture<'static, Outcome> + Send + 'static,
) -> BoxFuture<'static, Outcome> {
    let key = key_of(&entry);
    let id = entry.id;
    let first = dedupe.begin(id, &key, false);
    match first {
        Begin::Handled => return deduplicated(shared),
        Begin::Run(guard) => return Box::pin(run_guarded(run(entry), guard)),
        Begin::Wait(_) | Begin::Check => {}
    }
    let (shared, dedupe) = (shared.clone(), dedupe.clone());
    Box::pin(async move {
        let mut next = first;
        let mut checked = false;
        loop {
            next = match next {
                Begin::Handled => return deduplicated(&shared).await,
                Begin::Run(guard) => return run_guarded(run(entry), guard).await,
                Begin::Wait(mut waiting) => {
                    match waiting.wait_for(|run| *run != Run::Running).await.map(|run| *run) {
                        Ok(Run::Succeeded) => return deduplicated(&shared).await,
                        // Failed (or its slot is gone): look again; the first to look runs.
                        _ => dedupe.begin(id, &key, checked),
                    }
                }
                Begin::Check => {
                    checked = true;
                    if check_alone(&shared, &dedupe, &key).await {
                        Begin::Handled
                    } else {
                        dedupe.begin(id, &key, true)
                    }
                }
            }
        }
    })
}

/// Whether Redis records `key` as handled (a message not screened, or screened long ago). A
/// failed check is logged and taken as "not handled" (the message runs: at-least-once).
async fn check_alone(shared: &Shared, dedupe: &Dedupe, key: &Bytes) -> bool {
    let client = shared.command.get();
    match crate::dedupe::handled_among(&client, &dedupe.handled, vec![key.clone()]).await {
        Ok(found) => !found.is_empty(),
        Err(e) => {
            tracing::warn!(consumer = %shared.name, error = %e, "cannot check whether a message was handled already; running it");
            shared.command_failed(&client, &e).await;
            false
        }
    }
}

async fn run_guarded(run: BoxFuture<'static, Outcome>, guard: RunGuard) -> Outcome {
    let outcome = run.await;
    guard.finish(matches!(outcome, Outcome::Done));
    outcome
}

/// A message acknowledged without running: counted.
fn deduplicated(shared: &Shared) -> BoxFuture<'static, Outcome> {
    ConsumerStats::bump(&shared.stats.deduplicated, 1);
    shared.metrics.deduplicated();
    Box::pin(std::future::ready(Outcome::Deduplicated))
}

/// Acknowledges `ids` and records the keys of those that succeeded, in one script (see
/// [`crate::dedupe::ack_and_record`]).
pub(crate) async fn ack(
    client: &Client,
    shared: &Shared,
    dedupe: &Dedupe,
    ids: &[MessageId],
) -> Result<u64, fred::error::Error> {
    let keys = dedupe.keys_for(ids);
    // Work-queue mode on a server with XACKDEL deletes what no group needs any more, as the
    // plain acknowledgement does (see `super::acker::AckCommand`).
    let delete = matches!(super::acker::AckCommand::of(shared), super::acker::AckCommand::XackDel);
    let acked = crate::dedupe::ack_and_record(
        client,
        shared.stream(),
        shared.group(),
        &dedupe.handled,
        dedupe.window,
        delete,
        ids,
        keys.clone(),
    )
    .await;
    match acked {
        // Refused XACKDEL: the script stopped before its XACK (the keys it recorded are
        // recorded again below); acknowledge with XACK from now on, as the acker does.
        Err(e) if delete && e.details().contains("NOPERM") => {
            tracing::warn!(consumer = %shared.name, error = %e, "XACKDEL is refused by the ACL: acknowledging with XACK; the retention trimmer deletes acknowledged entries instead (grant +xackdel to delete them at once)");
            shared.xackdel_refused.store(true, std::sync::atomic::Ordering::Relaxed);
            let (stream, group) = (shared.stream(), shared.group());
            crate::dedupe::ack_and_record(client, stream, group, &dedupe.handled, dedupe.window, false, ids, keys).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> Bytes {
        Bytes::from(format!("k{n}"))
    }

    /// Records `n` keys `k<from>..` as this process's successes.
    fn record(dedupe: &Dedupe, from: u64, n: u64) {
        let ids: Vec<MessageId> = (from..from + n).map(|i| MessageId::new(1, i)).collect();
        {
            let mut state = lock(&dedupe.state);
            for (i, id) in ids.iter().enumerate() {
                state.to_record.insert(*id, key(from + i as u64));
            }
        }
        dedupe.settled(&ids);
    }

    #[test]
    fn remembered_records_are_bounded_and_a_screening_older_than_the_forgotten_is_checked_again() {
        let dedupe = Arc::new(Dedupe::new("s", "g", Duration::from_secs(3600)));
        let (early, late) = (MessageId::new(0, 1), MessageId::new(0, 2));
        lock(&dedupe.state).checked.insert(early, Instant::now());
        record(&dedupe, 1_000_000, 10);
        // Remembered: a duplicate of a recorded key is handled without asking Redis.
        assert!(matches!(dedupe.begin(MessageId::new(0, 9), &key(1_000_003), false), Begin::Handled));
        record(&dedupe, 0, MAX_REMEMBERED as u64);
        {
            let state = lock(&dedupe.state);
            assert_eq!(state.recorded.len(), MAX_REMEMBERED);
            assert_eq!(state.recorded_keys.len(), MAX_REMEMBERED);
        }
        // `early` was screened before records now forgotten: it is checked again, alone.
        assert!(matches!(dedupe.begin(early, &key(1_000_003), false), Begin::Check));
        // A screening after the newest forgotten record is trusted.
        lock(&dedupe.state).checked.insert(late, Instant::now());
        assert!(matches!(dedupe.begin(late, &key(7_000_000), false), Begin::Run(_)));
    }
}
