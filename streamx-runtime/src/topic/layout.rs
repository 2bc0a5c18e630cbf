//! A topic's key layout and its record in Redis.
//!
//! Shard `i` of a topic of `N` shards is the stream `<topic>:shard<i>.<salt>`, where `salt` is
//! the smallest integer from 0 up for which the key's hash slot lies in the `i`-th of `N` equal
//! slot ranges, `[⌊i·16384/N⌋, ⌊(i+1)·16384/N⌋)`. Masters own contiguous slot ranges, so the
//! shards spread over the masters as evenly as the slots do (a shard whose range straddles two
//! masters' slots lands on either, depending on the name); the rule needs nothing but
//! CRC16, so any client can compute the names (they are also listed by `streamx topics`).
//! Topic names with `{` or `}` are refused: a hash tag in the name would put every shard in
//! one slot.
//!
//! A key's shard is FNV-1a (64-bit) of the key's bytes modulo `N`: stable across processes,
//! versions and languages. Messages without a key go round-robin.
//!
//! The shard count is recorded once, when the topic is first declared, in the hash
//! [`topic_record`](crate::keys::topic_record); every later declaration with another count
//! fails with [`Error::TopicShardsMismatch`], so a key never silently moves to another shard.

use std::sync::LazyLock;

use fred::clients::Client;
use fred::interfaces::SetsInterface;
use fred::types::scripts::Script;
use fred::types::Value;

use crate::error::{Error, Result};
use crate::keys::{self, SLOT_COUNT};

/// The shard count of a topic created without one.
pub const DEFAULT_SHARDS: u32 = 16;

/// The most shards a topic may have (each shard's slot range must hold at least 16 slots).
pub const MAX_SHARDS: u32 = 1024;

/// Where a topic's messages live: its name and shard count.
///
/// ```
/// use streamx_runtime::keys::slot;
/// use streamx_runtime::topic::TopicLayout;
///
/// let topic = TopicLayout::new("orders", 16).unwrap();
/// let shard = topic.shard_of_key("order-7");
/// assert!(shard < 16);
/// let stream = topic.shard_stream(shard);
/// assert!(stream.starts_with("orders:shard"));
/// // Shard i's slot is in the i-th of 16 equal slot ranges.
/// assert_eq!(u32::from(slot(&stream)) / 1024, shard);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    name: String,
    shards: u32,
    streams: Vec<String>,
}

impl TopicLayout {
    /// The layout of `name` with `shards` shards (1 to [`MAX_SHARDS`]); an
    /// [`Error::InvalidTopic`] for a name with braces, an empty name, or a count out of range.
    pub fn new(name: &str, shards: u32) -> Result<Self> {
        let invalid = |reason: &str| Err(Error::InvalidTopic { topic: name.to_string(), reason: reason.to_string() });
        if name.is_empty() {
            return invalid("the name is empty");
        }
        if name.contains(['{', '}']) {
            return invalid("a topic name may not contain `{` or `}` (a hash tag would put every shard in one slot)");
        }
        if shards == 0 || shards > MAX_SHARDS {
            return invalid(&format!("the shard count must be from 1 to {MAX_SHARDS}, not {shards}"));
        }
        let streams = (0..shards).map(|i| shard_key(name, i, shards)).collect();
        Ok(TopicLayout { name: name.to_string(), shards, streams })
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shard count.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The stream of shard `i` (`i` below [`shards`](Self::shards); taken modulo otherwise).
    pub fn shard_stream(&self, i: u32) -> &str {
        &self.streams[(i % self.shards) as usize]
    }

    /// Every shard's stream, shard 0 first.
    pub fn shard_streams(&self) -> &[String] {
        &self.streams
    }

    /// The shard a key's messages go to: FNV-1a 64 of the key's bytes, modulo the count.
    pub fn shard_of_key(&self, key: &str) -> u32 {
        (fnv1a64(key.as_bytes()) % u64::from(self.shards)) as u32
    }

    /// Which shard `stream` is, if it is one of this topic's.
    pub fn shard_index(&self, stream: &str) -> Option<u32> {
        self.streams.iter().position(|s| s == stream).map(|i| i as u32)
    }
}

/// FNV-1a, 64 bits: what picks a key's shard (stable, simple to write in any language).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Shard `i` of `n`'s stream key (see the module docs).
fn shard_key(topic: &str, i: u32, n: u32) -> String {
    let per = u32::from(SLOT_COUNT);
    let (low, high) = (u64::from(i) * u64::from(per) / u64::from(n), u64::from(i + 1) * u64::from(per) / u64::from(n));
    let mut salt: u64 = 0;
    loop {
        let key = format!("{topic}:shard{i}.{salt}");
        let slot = u64::from(keys::slot(&key));
        if (low..high).contains(&slot) {
            return key;
        }
        salt += 1;
    }
}

/// Creates the topic's record with `shards` if it has none, then returns the recorded count.
/// Crash safety: one script, so the record is written whole or not at all; re-sent, it finds
/// the record and returns it.
static DECLARE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
-- KEYS: record; ARGV: shards (or '' to read only), layout version, now is the Redis clock
local recorded = redis.call('HGET', KEYS[1], 'shards')
if recorded then return tonumber(recorded) end
if ARGV[1] == '' then return false end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'shards', ARGV[1], 'layout', ARGV[2], 'created_ms', t[1] * 1000 + math.floor(t[2] / 1000))
return tonumber(ARGV[1])
"#,
    )
});

/// The layout version written in a topic's record (`layout`).
const LAYOUT_VERSION: u32 = 1;

/// Declares the topic `name`: creates it with `shards` (default [`DEFAULT_SHARDS`]) if it does
/// not exist, and returns its layout; [`Error::TopicShardsMismatch`] if it exists with another
/// count than `shards` (nothing is written then). The topic is added to the registry of topic
/// names for tools.
pub async fn declare(client: &Client, name: &str, shards: Option<u32>) -> Result<TopicLayout> {
    let wanted = shards.unwrap_or(DEFAULT_SHARDS);
    // Validates the name and count before anything is written.
    TopicLayout::new(name, wanted)?;
    let record = keys::topic_record(name);
    let recorded: Value = DECLARE
        .evalsha_with_reload(client, vec![record.clone()], vec![wanted.to_string(), LAYOUT_VERSION.to_string()])
        .await
        .map_err(|e| Error::redis("EVALSHA", &record, e))?;
    let recorded = recorded.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(wanted);
    if let Some(requested) = shards {
        if requested != recorded {
            return Err(Error::TopicShardsMismatch { topic: name.to_string(), recorded, requested });
        }
    }
    let _: Value =
        client.sadd(keys::TOPIC_NAMES, name).await.map_err(|e| Error::redis("SADD", keys::TOPIC_NAMES, e))?;
    TopicLayout::new(name, recorded)
}

/// The layout of the topic `name` as recorded in Redis; `None` when no topic of that name
/// exists (nothing is written).
pub async fn lookup(client: &Client, name: &str) -> Result<Option<TopicLayout>> {
    if name.is_empty() || name.contains(['{', '}']) {
        return Ok(None);
    }
    let record = keys::topic_record(name);
    let recorded: Value = DECLARE
        .evalsha_with_reload(client, vec![record.clone()], vec![String::new(), LAYOUT_VERSION.to_string()])
        .await
        .map_err(|e| Error::redis("EVALSHA", &record, e))?;
    // No record: the script's `false` arrives as nil, which `as_u64` reads as 0 (fred's
    // default-nil-types), not as "none".
    if recorded.is_null() {
        return Ok(None);
    }
    match recorded.as_u64().and_then(|n| u32::try_from(n).ok()) {
        Some(n) => TopicLayout::new(name, n).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_fall_in_their_slot_range_and_keys_hash_stably() {
        for n in [1, 3, 16, 100, MAX_SHARDS] {
            let layout = TopicLayout::new("orders", n).expect("valid");
            for (i, stream) in layout.shard_streams().iter().enumerate() {
                let slot = u64::from(keys::slot(stream));
                let i = i as u64;
                assert!(slot >= i * 16384 / u64::from(n) && slot < (i + 1) * 16384 / u64::from(n), "{stream}");
            }
        }
        // FNV-1a 64 test vectors (the published ones), so other languages can match it.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn bad_names_and_counts_are_refused() {
        assert!(matches!(TopicLayout::new("{orders}", 4), Err(Error::InvalidTopic { .. })));
        assert!(matches!(TopicLayout::new("", 4), Err(Error::InvalidTopic { .. })));
        assert!(matches!(TopicLayout::new("orders", 0), Err(Error::InvalidTopic { .. })));
        assert!(matches!(TopicLayout::new("orders", MAX_SHARDS + 1), Err(Error::InvalidTopic { .. })));
    }
}
