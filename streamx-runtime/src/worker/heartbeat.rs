//! Membership of the group: the heartbeat that keeps this consumer's entries its own, leaving
//! the group at shutdown, and removing consumers that are gone.
//!
//! A consumer proves it is alive by writing its name with the Redis clock's time into the
//! group's heartbeat set (`{stream}:consumers:<group>`) every `claim_idle / 3`, on a task of
//! its own: no permit, read or claim can delay it. While the heartbeat is fresh, nothing this
//! consumer holds is taken over, however long a handler runs; entries are never renewed one
//! by one, so renewal can neither starve nor take an entry back from another consumer.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fred::types::scripts::Script;
use fred::types::Value;

use super::retries::{ms, SCHEDULED_CONSUMER};
use super::shared::Shared;
use crate::retry_delay::RetryDelay;
use crate::scripts::{assemble, CONSUMERS, NOW_MS};

pub(super) static BEAT: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS],
        r#"
-- KEYS: heartbeats; ARGV: me
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
return 1
"#,
    )
});

/// Deletes consumers of the group that own nothing and have been idle longer than the
/// threshold, each checked and deleted in the same script (a consumer that reads in between
/// cannot lose entries to `XGROUP DELCONSUMER`), and forgets their heartbeats. With a
/// victim, removes only that consumer (this one, leaving) if it owns nothing.
pub(super) static CLEAN_UP: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, CONSUMERS],
        r#"
-- KEYS: stream, heartbeats
-- ARGV: group, me, scheduled consumer, idle threshold ms, victim ('' = every idle consumer)
local removed = {}
if ARGV[5] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[5])
  if not redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[5])[1] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[5])
    table.insert(removed, ARGV[5])
  end
  return removed
end
local threshold = tonumber(ARGV[4])
for _, c in ipairs(consumers(KEYS[1], ARGV[1])) do
  if c.pending == 0 and c.idle > threshold and c.name ~= ARGV[2] and c.name ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c.name)
    redis.call('ZREM', KEYS[2], c.name)
    table.insert(removed, c.name)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms() - threshold)
return removed
"#,
    )
});

/// Writes one heartbeat.
pub(crate) async fn beat(shared: &Shared) -> Result<(), fred::error::Error> {
    let client = shared.command.get();
    let result: Result<Value, _> = BEAT
        .evalsha_with_reload(&client, vec![shared.keys.heartbeats.clone()], vec![shared.member_name().to_string()])
        .await;
    if let Err(e) = &result {
        shared.command_failed(&client, e).await;
    }
    result.map(drop)
}

/// Beats every `claim_idle / 3` until `stop`, and cleans up gone consumers now and then.
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
    ];
    let client = shared.command.get();
    let result: Result<Value, _> = CLEAN_UP
        .evalsha_with_reload(&client, vec![shared.stream().to_string(), shared.keys.heartbeats.clone()], args)
        .await;
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
