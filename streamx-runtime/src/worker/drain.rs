//! Graceful shutdown of one consumer loop, after it stopped taking new work: running handlers
//! get `shutdown_timeout` to finish and are cancelled after it; the last acknowledgements
//! go out; everything this process read or claimed and did not settle is handed back to the
//! group through the retry schedule, due at once, with its count corrected (an entry that
//! never started here does not count the delivery); then the member leaves the group's
//! heartbeats. Retries already scheduled keep their due times: they are not this member's.
//!
//! Entries pending under this member's name that this process never held (a crashed
//! predecessor's, under a fixed `consumer` name or a reused `<host>-<pid>-0`) are left
//! where they are: their holder stopped while they may have been running, so they are taken
//! over (marked, see [`super::takeover`]) after `claim_idle`, never handed back uncharged.

use super::retries::{self, Parking};
use super::shared::Shared;

/// Entries parked by one script of the hand-back. The
/// script checks, schedules and moves each entry (~30 µs of Redis per entry on a 2-core VM,
/// in a stream of 1,000,000 entries), and Redis serves no other client while a script
/// runs: a consumer stopped during a backlog hands back thousands of entries it read ahead,
/// and pages of 100 hold Redis up at most 3 ms at a time where pages of 500 held it up 15 ms
/// (the same Redis time in all).
const PAGE: usize = 100;

/// Waits for (or cancels) the running handlers. Returns how many were cancelled.
pub(crate) async fn finish_handlers(shared: &Shared) -> usize {
    let all = u32::try_from(shared.slots).unwrap_or(u32::MAX);
    let timeout = shared.settings.shutdown_timeout;
    if let Ok(Ok(permits)) = tokio::time::timeout(timeout, shared.permits.acquire_many(all)).await {
        permits.forget();
        return 0;
    }
    let cancelled = shared.abort_handlers();
    tracing::warn!(consumer = %shared.name, timeout = ?timeout, cancelled,
        "handlers still running at the shutdown timeout were cancelled; their messages are handed back");
    cancelled
}

/// Hands back what this process holds (see the module docs), in pages of [`PAGE`].
pub(crate) async fn hand_back(shared: &Shared) {
    // A topic shard's loop hands nothing back: what it holds stays pending under its name,
    // and the shard's next owner takes it all over before reading anything new, so a key's
    // earlier entries run before its later ones (the retry schedule would let them race).
    // Nor does an ordered consumer's loop, for the same reason: a restart under its name
    // takes what it held up first, in order (see `super::ordering`); another member takes
    // it over after claim_idle.
    if shared.fence().is_some() {
        // (A topic shard given up gracefully: the marks of what it took over go, or the
        // next owner would run those entries alone, as crash suspects, after later entries
        // of their keys. A loop that lost the shard clears nothing: the script is fenced.)
        let held: Vec<_> = shared.held_entries().into_iter().map(|(id, _)| id).collect();
        super::takeover::clear_marks(shared, &held).await;
        return;
    }
    if shared.gate.is_some() {
        return;
    }
    let mut held = shared.held_entries();
    held.sort_unstable();
    let mut handed = 0usize;
    for page in held.chunks(PAGE) {
        let parking: Vec<Parking> = page
            .iter()
            .map(|(id, started)| Parking { id: *id, delay: std::time::Duration::ZERO, unstarted: !started })
            .collect();
        match retries::park(shared, &parking).await {
            Ok(parked) => handed += parked.len(),
            Err(e) => {
                tracing::warn!(consumer = %shared.name, error = %e,
                    "cannot hand messages back at shutdown; others take them over after claim_idle");
                return;
            }
        }
    }
    if handed > 0 {
        tracing::info!(consumer = %shared.name, count = handed, "handed unfinished messages back to the group");
    }
}
