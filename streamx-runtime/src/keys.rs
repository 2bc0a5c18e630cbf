//! Redis key names: the one place that decides them, so cluster hash slots are right.
//!
//! A consumer's stream is the user's key as given. Every key streamx derives from it
//! shares the stream's hash slot, so scripts touching both stay legal on Redis Cluster:
//! - the default dead-letter stream of `orders` is `{orders}:dlq` (Redis Cluster hashes
//!   only the text inside `{...}`, so `{orders}:dlq` lives in the slot of `orders`);
//! - when the stream name already has a hash tag (`{shop}.orders`), the suffix is appended:
//!   `{shop}.orders:dlq`.

use crate::policy::DeadLetterTarget;

/// The text Redis Cluster hashes for `key`: the first non-empty `{...}` section, or the
/// whole key.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
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

/// The Redis Cluster slot of `key` (CRC16/XMODEM of its hash tag, mod 16384).
pub fn slot(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for &b in hash_tag(key).as_bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
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
    }
}
