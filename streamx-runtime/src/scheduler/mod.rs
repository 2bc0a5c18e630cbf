//! Delayed messages: a publish that lands in its stream later ([`Producer::publish_after`],
//! [`Producer::publish_at`]), kept in Redis until it is due, in the stream's hash slot:
//!
//! - [`keys::scheduled`]: a sorted set of [`ScheduleId`]s scored by the time each is due
//!   (Unix ms);
//! - [`keys::scheduled_payloads`]: a hash from schedule id to the entry's fields, encoded
//!   as length-prefixed strings (`<len>:<bytes>` per field name and value, one after the
//!   other): binary-safe, and decoded by Lua without cjson.
//!
//! Scheduling is one script (HSET + ZADD, see [`SCHEDULE`]), so a crash never leaves half a
//! schedule. Every running [`Runtime`](crate::Runtime) promotes the due messages of the
//! streams its consumers read ([`promoter`]): one script per tick takes the due ids, adds each
//! entry to the stream with the header [`SCHEDULED_AT_HEADER`] and removes it from the
//! schedule, atomically, so runtimes promoting at once never duplicate a message.
//! [`Scheduled`] lists and cancels what is waiting.
//!
//! [`Producer::publish_after`]: crate::Producer::publish_after
//! [`Producer::publish_at`]: crate::Producer::publish_at

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use bytes::Bytes;
use fred::types::scripts::Script;

use crate::keys;
use crate::message::Headers;
use crate::scripts::{assemble, NOW_MS};
use crate::wire::{DATA_FIELD, HEADER_PREFIX};

mod list;
pub(crate) mod promoter;

pub use list::{ScheduleCursor, Scheduled, ScheduledMessage, ScheduledPage};

/// The header a promoted delayed message carries: the time it was due, in Unix
/// milliseconds (on the Redis server's clock for [`publish_after`](crate::Producer::publish_after),
/// as given for [`publish_at`](crate::Producer::publish_at)). A handler measures how late it
/// arrived against it.
pub const SCHEDULED_AT_HEADER: &str = "streamx-scheduled-at";

/// The id of a delayed message until it is promoted: 128 random bits, shown as 32 lowercase
/// hex digits. Not a [`MessageId`](crate::MessageId): the entry does not exist yet (it gets
/// its stream id when it is promoted). Used to [cancel](Scheduled::cancel) it.
///
/// ```
/// use streamx_runtime::ScheduleId;
/// let id: ScheduleId = "0123456789abcdef0123456789abcdef".parse()?;
/// assert_eq!(id.to_string(), "0123456789abcdef0123456789abcdef");
/// assert!("not-an-id".parse::<ScheduleId>().is_err());
/// # Ok::<(), streamx_runtime::ParseScheduleIdError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScheduleId(u128);

impl ScheduleId {
    /// A new random id (unique for all practical purposes: 128 random bits).
    pub(crate) fn random() -> Self {
        ScheduleId(rand::random())
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScheduleId({self})")
    }
}

/// The error of parsing a [`ScheduleId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a schedule id (expected 32 hex digits)")]
pub struct ParseScheduleIdError(String);

impl FromStr for ScheduleId {
    type Err = ParseScheduleIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseScheduleIdError(s.to_string()));
        }
        u128::from_str_radix(s, 16).map(ScheduleId).map_err(|_| ParseScheduleIdError(s.to_string()))
    }
}

impl serde::Serialize for ScheduleId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ScheduleId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The most headers a delayed message may have: its fields are passed to one `XADD` in a
/// Lua script, and Lua's `unpack` takes at most about 8,000 values.
pub(crate) const MAX_HEADERS: usize = 3_000;

/// Schedules one message: writes its encoded fields and its due time in one script.
///
/// - Dies before: nothing is scheduled. During: Redis runs a script whole or not at all
///   (with AOF, its writes are logged as one transaction). After: both keys hold it.
/// - Re-sent by the client after a reconnect (a cluster client re-sends once after a
///   redirect): the id is random per call, so a second run finds it scheduled already
///   (`ZSCORE`) and writes nothing. Only if a runtime promoted it between the two runs (a
///   message due at once) would the second run schedule it again.
///
/// KEYS: schedule, payloads. ARGV: schedule id, `at` or `after`, ms (the due time, or the
/// delay added to the Redis clock), the encoded fields. Returns the due time (Unix ms).
pub(crate) static SCHEDULE: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS],
        r#"
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
if known then return tonumber(known) end
local due = tonumber(ARGV[3])
if ARGV[2] == 'after' then due = now_ms() + due end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[1], due, ARGV[1])
return due
"#,
    )
});

/// `decode(s)`: the fields encoded by [`encode`] as a flat list (name, value, ...), or `nil`
/// when `s` is not such an encoding (written by hand), or has no field.
pub(crate) const DECODE: &str = r#"
local function decode(s)
  local out = {}
  local pos = 1
  local n = #s
  while pos <= n do
    local colon = string.find(s, ':', pos, true)
    if not colon then return nil end
    local len = tonumber(string.sub(s, pos, colon - 1))
    if not len or len < 0 or colon + len > n then return nil end
    table.insert(out, string.sub(s, colon + 1, colon + len))
    pos = colon + len + 1
  end
  if #out == 0 or #out % 2 ~= 0 then return nil end
  return out
end
"#;

/// The fields of an entry (`data`, then `h:<name>` per header) encoded for the payload hash:
/// `<len>:<bytes>` per field name and value.
pub(crate) fn encode(data: &[u8], headers: &Headers) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(data.len() + 16 + headers.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>());
    let mut put = |bytes: &[u8]| {
        out.extend_from_slice(bytes.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(bytes);
    };
    put(DATA_FIELD.as_bytes());
    put(data);
    for (name, value) in headers.iter() {
        put(format!("{HEADER_PREFIX}{name}").as_bytes());
        put(value.as_bytes());
    }
    out
}

/// The `(name, value)` fields of an [`encode`]d payload; `None` when it is not one.
pub(crate) fn decode(mut s: &[u8]) -> Option<Vec<(Bytes, Bytes)>> {
    let mut items = Vec::new();
    while !s.is_empty() {
        let colon = s.iter().position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&s[..colon]).ok()?.parse().ok()?;
        let rest = &s[colon + 1..];
        if rest.len() < len {
            return None;
        }
        items.push(Bytes::copy_from_slice(&rest[..len]));
        s = &rest[len..];
    }
    if items.is_empty() || items.len() % 2 != 0 {
        return None;
    }
    let mut it = items.into_iter();
    let mut pairs = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        pairs.push((k, v));
    }
    Some(pairs)
}

/// The two keys of `stream`'s schedule, as the scripts take them.
pub(crate) fn schedule_keys(stream: &str) -> Vec<String> {
    vec![keys::scheduled(stream), keys::scheduled_payloads(stream)]
}

/// The scripts of the promotion, which every runtime runs (see [`crate::permissions`]).
pub(crate) fn engine_scripts() -> [crate::permissions::EngineScript; 1] {
    [crate::permissions::EngineScript {
        serves: crate::permissions::Serves::Promotion,
        name: "scheduled-message promotion",
        ident: "PROMOTE_SCHEDULED",
        script: &promoter::PROMOTE_SCHEDULED,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_is_binary_safe_and_decodes_to_the_fields() {
        let data = b"{\"a\":\"x:y\"}\0\xff12:".to_vec();
        let headers = Headers::new().with("trace-id", "a:b").with("empty", "");
        let encoded = encode(&data, &headers);
        let fields = decode(&encoded).unwrap();
        let as_text: Vec<(&[u8], &[u8])> = fields.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(as_text, [(&b"data"[..], &data[..]), (b"h:trace-id", b"a:b"), (b"h:empty", b"")],);
        for bad in [&b""[..], b"4:data", b"4:data9:short", b"x:data1:a", b"4:data1:"] {
            assert!(decode(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn schedule_ids_round_trip_and_reject_anything_else() {
        let id = ScheduleId::random();
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(id.to_string().parse::<ScheduleId>().unwrap(), id);
        assert_eq!(
            "ABCDEF0123456789ABCDEF0123456789".parse::<ScheduleId>().unwrap().to_string(),
            "abcdef0123456789abcdef0123456789"
        );
        for bad in [
            "",
            "abc",
            "0123456789abcdef0123456789abcdeg",
            "+123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef0",
        ] {
            assert!(bad.parse::<ScheduleId>().is_err(), "{bad}");
        }
        assert_ne!(ScheduleId::random(), ScheduleId::random());
    }
}
