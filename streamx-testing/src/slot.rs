//! The Redis Cluster hash slot of a key, to find the node that serves it.

/// Number of hash slots in a Redis Cluster: slots are `0..SLOT_COUNT`.
pub const SLOT_COUNT: u16 = 16384;

/// The Redis Cluster hash slot of `key`, as `CLUSTER KEYSLOT` computes it: CRC16/XMODEM of
/// its hash tag (the text inside the first `{...}`, if not empty) or of the whole key,
/// modulo [`SLOT_COUNT`]. Computed by fred (`fred::util::redis_keyslot`), the client
/// streamx routes its commands with.
///
/// ```
/// use streamx_testing::key_slot;
///
/// assert_eq!(key_slot("foo"), 12182);
/// assert_eq!(key_slot("{orders}:dlq"), key_slot("orders"));
/// ```
pub fn key_slot(key: impl AsRef<[u8]>) -> u16 {
    fred::util::redis_keyslot(key.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cluster_keyslot() {
        // What `CLUSTER KEYSLOT` answers on redis-server 7.0.
        let expected =
            [("foo", 12182), ("bar", 5061), ("", 0), ("x{}y", 16116), ("{", 4092), ("a{b", 13340), ("{}", 15257)];
        for (key, slot) in expected {
            assert_eq!(key_slot(key), slot, "{key:?}");
        }
        // A non-empty tag is all that is hashed.
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("a{b}c{d}"), key_slot("b"));
        assert!((0..1000).all(|i| key_slot(format!("key-{i}")) < SLOT_COUNT));
    }
}
