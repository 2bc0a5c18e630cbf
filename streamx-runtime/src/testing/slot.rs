//! Redis Cluster hash slots: CRC16 (XMODEM) of the key or of its hash tag, modulo 16384.

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// The cluster hash slot of `key`, as `CLUSTER KEYSLOT` computes it.
///
/// When the key contains `{...}` with at least one byte between the first `{` and the
/// first `}` after it, only that hash tag is hashed, so `{user1000}.following` and
/// `{user1000}.followers` share a slot.
///
/// ```
/// use streamx_runtime::testing::key_slot;
///
/// assert_eq!(key_slot("foo"), 12182);
/// assert_eq!(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
/// assert_eq!(key_slot("{orders}:dlq"), key_slot("orders"));
/// ```
pub fn key_slot(key: impl AsRef<[u8]>) -> u16 {
    crc16(hash_tag(key.as_ref())) % SLOT_COUNT
}

/// The part of `key` that is hashed: the hash tag if there is a non-empty one.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let after = &key[open + 1..];
        if let Some(close) = after.iter().position(|&b| b == b'}') {
            if close > 0 {
                return &after[..close];
            }
        }
    }
    key
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster uses.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_xmodem_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("bar"), 5061);
        assert_eq!(key_slot("123456789"), 0x31C3 % SLOT_COUNT);
    }

    #[test]
    fn hash_tags_follow_the_cluster_rules() {
        assert_eq!(
            key_slot("{user1000}.following"),
            key_slot("{user1000}.followers")
        );
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        // Empty tag: the whole key is hashed.
        assert_eq!(key_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOT_COUNT);
        // Only the first `{` and the first `}` after it count.
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
        assert_eq!(key_slot("foo{bar}{zap}"), key_slot("bar"));
        // No closing brace: the whole key is hashed.
        assert_eq!(key_slot("foo{bar"), crc16(b"foo{bar") % SLOT_COUNT);
    }
}
