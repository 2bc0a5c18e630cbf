//! Shard ownership: the processes running a topic consumer share the topic's shards, each
//! shard read by one process of the group at a time.
//!
//! - **Membership**: each process beats into `{<topic>}:topic-members:<group>` (a sorted set of
//!   member names scored by their liveness deadline, Redis clock) every `claim_idle / 3`;
//!   members past their deadline are dropped by the next beat of anyone.
//! - **Fair share**: with the members sorted by name, member `k` of `M` owns `N / M` shards,
//!   one more when `k < N % M`. Every member computes the same shares from the same list, so
//!   shards move only when the membership changes, and then only the excess: a member above
//!   its share releases its highest shards (after its loop on each has drained), a member
//!   below it takes free ones, starting from `k · N / M` so members rarely race for the same.
//! - **Leases**: a shard's lease ([`shard_lease`](crate::keys::shard_lease)) holds
//!   `<epoch>:<member>`, the epoch from the shard's counter (one up per lease taken); it
//!   expires after `claim_idle` unless renewed, so a process that dies or stops (SIGSTOP, a
//!   partition) loses its shards that long after its last renewal. The value is the fencing
//!   token (see [`super::fence`]).

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::types::scripts::Script;
use fred::types::Value;

use crate::keys;

/// Beats into the membership and returns every live member. Crash safety: a ZADD and a
/// ZREMRANGEBYSCORE; re-sent, they set the same deadline again.
static MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    crate::scripts::assemble(
        &[crate::scripts::NOW_MS],
        r#"
-- KEYS: members; ARGV: me, lease ms, 'leave' to leave
local now = now_ms()
if ARGV[3] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#,
    )
});

/// Takes a free shard lease: a new epoch, `<epoch>:<member>` set for the lease time. Returns
/// the token, or nil when another process holds the lease. Crash safety: if the process dies
/// after it, the lease expires unused; re-sent after a reconnect, it finds the lease taken
/// (by this very call) and answers nil: the shard stays unowned until the lease expires.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
-- KEYS: lease, epoch; ARGV: member, lease ms
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
"#,
    )
});

/// Renews a lease this process holds (1), or answers 0 when it holds it no more. Re-sent, it
/// renews again.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
-- KEYS: lease; ARGV: token, lease ms
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// The number of shards member `k` (0-based, of the members sorted by name) of `members`
/// owns out of `shards`.
pub(crate) fn fair_share(shards: u32, members: usize, k: usize) -> u32 {
    let members = members.max(1) as u32;
    let k = k as u32;
    shards / members + u32::from(k < shards % members)
}

/// Where member `k` of `members` starts looking for free shards.
pub(crate) fn first_preferred(shards: u32, members: usize, k: usize) -> u32 {
    let members = members.max(1) as u64;
    (k as u64 * u64::from(shards) / members) as u32
}

/// Beats into the membership of `topic`/`group` and returns the live members, sorted.
pub(crate) async fn beat(
    client: &Client,
    topic: &str,
    group: &str,
    me: &str,
    ttl: Duration,
) -> Result<Vec<String>, fred::error::Error> {
    let key = keys::topic_members(topic, group);
    let reply: Value =
        MEMBERS.evalsha_with_reload(client, vec![key], vec![me.to_string(), ms(ttl), String::new()]).await?;
    let mut members: Vec<String> = reply.into_array().into_iter().filter_map(|v| v.into_string()).collect();
    members.sort();
    Ok(members)
}

/// Leaves the membership (a graceful stop: the others take the shards at their next beat).
pub(crate) async fn leave(client: &Client, topic: &str, group: &str, me: &str) {
    let key = keys::topic_members(topic, group);
    let left: Result<Value, _> = MEMBERS
        .evalsha_with_reload(client, vec![key], vec![me.to_string(), "0".to_string(), "leave".to_string()])
        .await;
    if let Err(e) = left {
        tracing::debug!(topic, group, error = %e, "cannot leave the topic's membership; it expires on its own");
    }
}

/// A lease just taken: its token and when its request was sent.
pub(crate) struct Taken {
    pub token: String,
    pub sent: Instant,
}

/// Tries to take the lease of `shard` for `group`.
pub(crate) async fn acquire(
    client: &Client,
    shard: &str,
    group: &str,
    me: &str,
    ttl: Duration,
) -> Result<Option<Taken>, fred::error::Error> {
    let sent = Instant::now();
    let reply: Value = ACQUIRE
        .evalsha_with_reload(
            client,
            vec![keys::shard_lease(shard, group), keys::shard_epoch(shard, group)],
            vec![me.to_string(), ms(ttl)],
        )
        .await?;
    // (A nil reply is not a token: fred's `into_string` would make one of it.)
    if reply.is_null() {
        return Ok(None);
    }
    Ok(reply.into_string().filter(|t| t.contains(':')).map(|token| Taken { token, sent }))
}

/// Renews the lease of `shard` held with `token`: `Ok(true)` if renewed, `Ok(false)` if it
/// moved to another process (or expired).
pub(crate) async fn renew(
    client: &Client,
    shard: &str,
    group: &str,
    token: &str,
    ttl: Duration,
) -> Result<bool, fred::error::Error> {
    let reply: Value = RENEW
        .evalsha_with_reload(client, vec![keys::shard_lease(shard, group)], vec![token.to_string(), ms(ttl)])
        .await?;
    Ok(reply.as_u64() == Some(1))
}

/// Releases the lease of `shard` if it still holds `token`.
pub(crate) async fn release(client: &Client, shard: &str, group: &str, token: &str) {
    crate::lease::release(client, keys::shard_lease(shard, group), token).await;
}

fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for shards in [1u32, 3, 16, 17, 100] {
            for members in 1..=20usize {
                let shares: Vec<u32> = (0..members).map(|k| fair_share(shards, members, k)).collect();
                assert_eq!(shares.iter().sum::<u32>(), shards, "{shards} over {members}");
                let (lo, hi) = (shares.iter().min().copied(), shares.iter().max().copied());
                assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1));
            }
        }
        assert_eq!(first_preferred(16, 3, 0), 0);
        assert_eq!(first_preferred(16, 3, 1), 5);
        assert_eq!(first_preferred(16, 3, 2), 10);
    }
}
