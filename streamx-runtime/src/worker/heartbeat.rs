//! Membership of the group: the heartbeat that keeps this member's entries its own, leaving
//! the group at shutdown, and removing members that are gone.
//!
//! A member proves it is alive by publishing a **deadline**: every `claim_idle / 3`, on a
//! task of its own (no permit, read or claim can delay it), it writes its name into the
//! group's deadline set (`{stream}:members:<group>`) scored by the Redis clock's time plus
//! *its own* `claim_idle`. Until that deadline passes nothing it holds is taken over, however
//! long a handler runs and whatever `claim_idle` the taker was configured with: during a
//! rolling deploy that changes `claim_idle`, each member is judged by the promise it made
//! itself. Entries are never renewed one by one, so renewal can neither starve nor take an
//! entry back from another member.
//!
//! The same script also writes the last-beat time into `{stream}:consumers:<group>`, the set
//! that versions before the deadlines judged by, so that they, during an upgrade, still see
//! this member alive. A member found only there (an older version) is judged the old way.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fred::types::scripts::Script;
use fred::types::Value;

use super::retries::{ms, SCHEDULED_CONSUMER};
use super::shared::Shared;
use super::takeover::SUSPECTS_CONSUMER;
use crate::retry_delay::RetryDelay;
use crate::scripts::{assemble, CONSUMERS, NOW_MS, REDIS_PAUSED};

pub(super) static BEAT: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, REDIS_PAUSED],
        r#"
-- KEYS: deadlines, heartbeats (last beat, for older versions)
-- ARGV: me, claim_idle ms
local now = now_ms()
redis_paused(KEYS[1], now, tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
"#,
    )
});

/// Deletes members of the group that own nothing, have been idle longer than the threshold
/// and whose deadline (if any) has passed, each checked and deleted in the same script (a
/// member that reads in between cannot lose entries to `XGROUP DELCONSUMER`), and forgets
/// their deadlines and heartbeats; then forgets the deadlines and heartbeats, older than the
/// threshold, of names that are no longer members at all. A member that holds entries keeps
/// its deadline and heartbeat, whatever their age: they are what tells a live one from a
/// stopped one. With a victim, removes only that member (this one, leaving): its deadline
/// and heartbeat go (whatever it still holds is taken over after `claim_idle`), and the
/// member itself if it owns nothing.
pub(super) static CLEAN_UP: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, CONSUMERS],
        r#"
-- KEYS: stream, heartbeats, deadlines
-- ARGV: group, me, scheduled consumer, idle threshold ms, victim ('' = every idle member),
--       suspects consumer
local removed = {}
if ARGV[5] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[5])
  redis.call('ZREM', KEYS[3], ARGV[5])
  if not redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[5])[1] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[5])
    table.insert(removed, ARGV[5])
  end
  return removed
end
local now = now_ms()
local threshold = tonumber(ARGV[4])
local members = {}
for _, c in ipairs(consumers(KEYS[1], ARGV[1])) do
  local placeholder = c.name == ARGV[3] or c.name == ARGV[6]
  local deadline = redis.call('ZSCORE', KEYS[3], c.name)
  local promised = deadline and tonumber(deadline) > now
  if c.pending == 0 and c.idle > threshold and not promised and c.name ~= ARGV[2] and not placeholder then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c.name)
    redis.call('ZREM', KEYS[2], c.name)
    redis.call('ZREM', KEYS[3], c.name)
    table.insert(removed, c.name)
  else
    members[c.name] = true
  end
end
-- Names left behind by members that are gone (deleted by hand, or by an older version).
for _, key in ipairs({KEYS[2], KEYS[3]}) do
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now - threshold, 'LIMIT', 0, 1000)) do
    if not members[name] and name ~= 'streamx:clock' and name ~= 'streamx:paused' then redis.call('ZREM', key, name) end
  end
end
return removed
"#,
    )
});

/// Writes one heartbeat.
pub(crate) async fn beat(shared: &Shared) -> Result<(), fred::error::Error> {
    let client = shared.command.get();
    let keys = vec![shared.keys.deadlines.clone(), shared.keys.heartbeats.clone()];
    let args = vec![shared.member_name().to_string(), ms(shared.consumer.options.claim_idle).to_string()];
    let result: Result<Value, _> = BEAT.evalsha_with_reload(&client, keys, args).await;
    if let Err(e) = &result {
        shared.command_failed(&client, e).await;
    }
    result.map(drop)
}

/// Beats every `claim_idle / 3` until `stop` (see the module docs), and cleans up gone
/// members now and then.
pub(crate) async fn run(shared: Arc<Shared>, stop: tokio_util::sync::CancellationToken) {
    let every = (shared.consumer.options.claim_idle / 3).max(Duration::from_millis(30));
    let cleanup_every = shared.settings.cleanup_idle.clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut last_cleanup = tokio::time::Instant::now();
    let mut failing = RetryDelay::new();
    let mut failed = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match beat(&shared).await {
            Ok(()) => {
                if std::mem::take(&mut failed) {
                    shared.recovered();
                }
                failing.reset();
            }
            Err(e) => {
                failed = true;
                tracing::warn!(consumer = %shared.name, error = %e, next_in = ?failing.current(),
                    "heartbeat failed; if it keeps failing for claim_idle, other consumers take this one's messages over");
                if !failing.wait(&stop).await {
                    return;
                }
                continue;
            }
        }
        if last_cleanup.elapsed() >= cleanup_every && !shared.stopping.is_cancelled() {
            last_cleanup = tokio::time::Instant::now();
            clean_up(&shared, "").await;
        }
    }
}

/// Runs the clean-up script (see [`CLEAN_UP`]); `victim` is `""` or this consumer's name.
pub(crate) async fn clean_up(shared: &Shared, victim: &str) {
    let args = vec![
        shared.group().to_string(),
        shared.member_name().to_string(),
        SCHEDULED_CONSUMER.to_string(),
        ms(shared.settings.cleanup_idle).to_string(),
        victim.to_string(),
        SUSPECTS_CONSUMER.to_string(),
    ];
    let keys = vec![shared.stream().to_string(), shared.keys.heartbeats.clone(), shared.keys.deadlines.clone()];
    let client = shared.command.get();
    let result: Result<Value, _> = CLEAN_UP.evalsha_with_reload(&client, keys, args).await;
    match result {
        Ok(removed) => {
            for name in removed.into_array().into_iter().filter_map(|v| v.as_string()) {
                if name != shared.member_name() {
                    tracing::info!(consumer = %shared.name, removed = %name, "removed a consumer that was idle and owned nothing");
                }
            }
        }
        Err(e) => {
            tracing::debug!(consumer = %shared.name, error = %e, "consumer clean-up failed");
            shared.command_failed(&client, &e).await;
        }
    }
}
