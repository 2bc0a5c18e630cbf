//! Redis key names: the one place that decides them, so cluster hash slots are right.
//!
//! A consumer's stream is the user's key as given. Every key streamx derives from it
//! shares the stream's hash slot, so scripts touching both stay legal on Redis Cluster:
//! - the default dead-letter stream of `orders` is `{orders}:dlq` (Redis Cluster hashes
//!   only the text inside `{...}`, so `{orders}:dlq` lives in the slot of `orders`);
//! - when the stream name already has a hash tag (`{shop}.orders`), the suffix is appended:
//!   `{shop}.orders:dlq`.
//!
//! Per consumer group, the engine keeps three small keys next to the stream (same slot):
//! - `{orders}:retries:<group>`: the retry schedule, a sorted set of entry ids scored by the
//!   time (Unix ms, Redis clock) their next attempt is due;
//! - `{orders}:consumers:<group>`: consumer heartbeats, a sorted set of consumer names scored
//!   by their last heartbeat (Unix ms, Redis clock);
//! - `{orders}:takeovers:<group>`: ids taken over from a stopped consumer and not settled
//!   yet, so that a crash during such a run is pinned on them (crash-loop isolation).

use crate::policy::DeadLetterTarget;

/// The text Redis Cluster hashes for `key`: the first non-empty `{...}` section, or the
/// whole key.
pub fn hash_tag(key: &str) -> &str {
    // The tag is delimited by ASCII braces, so the range falls on char boundaries.
    &key[hash_tag_range(key.as_bytes())]
}

/// A key derived from `base` (with `:suffix`) that shares `base`'s hash slot.
pub fn derived_key(base: &str, suffix: &str) -> String {
    if hash_tag(base).len() != base.len() {
        format!("{base}:{suffix}")
    } else {
        format!("{{{base}}}:{suffix}")
    }
}

/// The dead-letter stream for `stream` under `target`; `None` when dead letters are off.
pub fn dead_letter_stream(stream: &str, target: &DeadLetterTarget) -> Option<String> {
    match target {
        DeadLetterTarget::Default => Some(derived_key(stream, "dlq")),
        DeadLetterTarget::Disabled => None,
        DeadLetterTarget::Stream(name) => Some((*name).to_string()),
    }
}

/// The retry schedule of `group` on `stream` (see the module docs).
pub fn retry_schedule(stream: &str, group: &str) -> String {
    derived_key(stream, &format!("retries:{group}"))
}

/// The consumer heartbeats of `group` on `stream` (see the module docs).
pub fn heartbeats(stream: &str, group: &str) -> String {
    derived_key(stream, &format!("consumers:{group}"))
}

/// The take-over marks of `group` on `stream` (see the module docs).
pub fn takeover_marks(stream: &str, group: &str) -> String {
    derived_key(stream, &format!("takeovers:{group}"))
}

/// The members' liveness deadlines of `group` on `stream`: a sorted set of member names,
/// each scored by the time (Unix ms, Redis clock) until which that member promised to be
/// alive: the member's own `claim_idle` after its last heartbeat.
pub fn member_deadlines(stream: &str, group: &str) -> String {
    derived_key(stream, &format!("members:{group}"))
}

/// The ids of `group` on `stream` that a member claimed to run alone as crash suspects: if
/// that member stops while holding one, its run is counted (see the worker's take-over).
pub fn isolated_marks(stream: &str, group: &str) -> String {
    derived_key(stream, &format!("isolated:{group}"))
}

/// Every key the engine touches for `group` on `stream`, each with what it is: the stream,
/// its dead-letter stream (`dead_letters`, `None` when off) and the group's bookkeeping keys
/// above. A key added to the engine is added here too: the start-up permission check (see
/// [`crate::Runtime::start`] and the README's "TLS and ACL") asks Redis about each.
pub fn engine_keys(stream: &str, group: &str, dead_letters: Option<&str>) -> Vec<(&'static str, String)> {
    let mut keys = vec![("stream", stream.to_string())];
    keys.extend(dead_letters.map(|dlq| ("dead-letter stream", dlq.to_string())));
    keys.extend([
        ("retry schedule", retry_schedule(stream, group)),
        ("heartbeats", heartbeats(stream, group)),
        ("take-over marks", takeover_marks(stream, group)),
        ("member deadlines", member_deadlines(stream, group)),
        ("isolated marks", isolated_marks(stream, group)),
    ]);
    keys
}

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// The Redis Cluster hash slot of `key`, as `CLUSTER KEYSLOT` computes it: CRC16/XMODEM of
/// its hash tag (the first non-empty `{...}`) or of the whole key, modulo 16384 (fred's
/// `redis_keyslot`, the hash its cluster routing uses).
///
/// ```
/// use streamx_runtime::keys::slot;
/// assert_eq!(slot("foo"), 12182);
/// assert_eq!(slot("{orders}:dlq"), slot("orders"));
/// ```
pub fn slot(key: impl AsRef<[u8]>) -> u16 {
    fred::util::redis_keyslot(key.as_ref())
}

/// Where the hashed part of `key` is: inside the first `{...}` if non-empty, else all of it.
fn hash_tag_range(key: &[u8]) -> std::ops::Range<usize> {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return open + 1..open + 1 + len;
            }
        }
    }
    0..key.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_share_the_slot() {
        assert_eq!(derived_key("orders", "dlq"), "{orders}:dlq");
        assert_eq!(derived_key("{shop}.orders", "dlq"), "{shop}.orders:dlq");
        assert_eq!(slot("orders"), slot("{orders}:dlq"));
        assert_eq!(slot("{shop}.orders"), slot("{shop}.orders:dlq"));
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(hash_tag("a{}b"), "a{}b");
        for key in [retry_schedule("orders", "g"), heartbeats("orders", "g"), takeover_marks("{shop}.orders", "g")] {
            assert_eq!(slot(&key), slot(if key.starts_with("{shop}") { "{shop}.orders" } else { "orders" }));
        }
        assert_eq!(retry_schedule("orders", "billing"), "{orders}:retries:billing");
    }

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` (Redis 7.0).
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
        assert_eq!(slot("123456789"), 12739);
    }

    #[test]
    fn hash_tags_follow_the_cluster_rules() {
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        // Empty tag: the whole key is hashed.
        assert_eq!(slot("foo{}{bar}"), 8363);
        // Only the first `{` and the first `}` after it count.
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
        // No closing brace: the whole key is hashed.
        assert_eq!(slot("foo{bar"), 15278);
    }
}
