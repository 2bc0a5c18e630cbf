//! Messages as handlers see them: [`MessageId`], [`Headers`] and [`Message<T>`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::state::State;

/// A Redis stream entry id, `<milliseconds>-<sequence>`.
///
/// ```
/// use streamx_runtime::MessageId;
/// let id: MessageId = "1700000000000-3".parse().unwrap();
/// assert_eq!(id.millis(), 1_700_000_000_000);
/// assert_eq!(id.to_string(), "1700000000000-3");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MessageId {
    ms: u64,
    seq: u64,
}

impl MessageId {
    /// The smallest id, `0-0`.
    pub const MIN: MessageId = MessageId { ms: 0, seq: 0 };
    /// The largest id.
    pub const MAX: MessageId = MessageId { ms: u64::MAX, seq: u64::MAX };

    /// An id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        MessageId { ms, seq }
    }

    /// The millisecond part: for ids Redis generated, the Unix time of the XADD.
    pub const fn millis(&self) -> u64 {
        self.ms
    }

    /// The sequence part.
    pub const fn sequence(&self) -> u64 {
        self.seq
    }

    /// The next id after this one (for exclusive range starts).
    pub const fn successor(&self) -> Option<MessageId> {
        if self.seq < u64::MAX {
            Some(MessageId { ms: self.ms, seq: self.seq + 1 })
        } else if self.ms < u64::MAX {
            Some(MessageId { ms: self.ms + 1, seq: 0 })
        } else {
            None
        }
    }

    /// Parses `ms-seq` or `ms` (sequence 0) from raw bytes.
    pub fn parse_bytes(raw: &[u8]) -> Option<Self> {
        let (ms, rest) = leading_u64(raw)?;
        let seq = match rest {
            [] => 0,
            [b'-', seq @ ..] => match leading_u64(seq)? {
                (seq, []) => seq,
                _ => return None,
            },
            _ => return None,
        };
        Some(MessageId { ms, seq })
    }
}

/// The decimal number `raw` starts with (at least one digit, within a `u64`), and the rest
/// of `raw`. One pass, and no overflow check before the 20th digit (19 cannot overflow):
/// every read parses the id of each entry it delivers.
fn leading_u64(raw: &[u8]) -> Option<(u64, &[u8])> {
    let mut n: u64 = 0;
    let mut len = 0;
    for &b in raw {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        n = if len < 19 { n * 10 + u64::from(digit) } else { n.checked_mul(10)?.checked_add(u64::from(digit))? };
        len += 1;
    }
    (len > 0).then(|| (n, &raw[len..]))
}

/// `ids` as Redis command arguments (`<ms>-<seq>` byte strings), all formatted into one
/// buffer that the arguments share: one allocation for a whole XACK instead of one per id,
/// no formatting machinery and no UTF-8 check (this runs for every acknowledged message).
pub(crate) fn id_args(ids: &[MessageId]) -> Vec<fred::types::Value> {
    let mut text = bytes::BytesMut::with_capacity(ids.len() * 24);
    let mut ends = Vec::with_capacity(ids.len());
    let mut digits = itoa::Buffer::new();
    for id in ids {
        text.extend_from_slice(digits.format(id.ms).as_bytes());
        text.extend_from_slice(b"-");
        text.extend_from_slice(digits.format(id.seq).as_bytes());
        ends.push(text.len());
    }
    crate::wire::split_at_ends(text.freeze(), ends).map(fred::types::Value::Bytes).collect()
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// The error of parsing a [`MessageId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a stream id (expected `<ms>-<seq>` or `<ms>`)")]
pub struct ParseMessageIdError(String);

impl FromStr for MessageId {
    type Err = ParseMessageIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageId::parse_bytes(s.as_bytes()).ok_or_else(|| ParseMessageIdError(s.to_string()))
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads the `<ms>-<seq>` text [`Serialize`](serde::Serialize) writes, so ids can be kept in
/// payloads (a snapshot's position, a saga's step).
impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// String headers carried beside the payload (stored as `h:<name>` fields).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub const fn new() -> Self {
        Headers { entries: Vec::new() }
    }

    /// The value of header `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let (name, value) = (name.into(), value.into());
        match self.entries.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((name, value)),
        }
        self
    }

    /// Removes header `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let at = self.entries.iter().position(|(k, _)| k == name)?;
        Some(self.entries.remove(at).1)
    }

    /// Builder-style [`insert`](Self::insert).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// Iterates over `(name, value)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (k, v) in iter {
            h.insert(k, v);
        }
        h
    }
}

/// The header that carries a message's key (see [`Message::key`] and
/// [`Producer::publish_keyed`](crate::Producer::publish_keyed)): what per-key ordering and a
/// topic's shard choice go by.
pub const MESSAGE_KEY_HEADER: &str = "streamx-key";

/// A decoded message, as a handler receives it.
#[derive(Debug, Clone)]
pub struct Message<T> {
    pub(crate) id: MessageId,
    pub(crate) stream: Arc<str>,
    pub(crate) payload: T,
    pub(crate) headers: Headers,
    pub(crate) attempt: u32,
    pub(crate) state: State,
}

impl<T> Message<T> {
    /// Builds a message by hand: for unit-testing handlers without Redis.
    ///
    /// ```
    /// use streamx_runtime::{Message, MessageId};
    /// let msg = Message::new("orders", MessageId::new(1, 0), 42u32).with_attempt(2);
    /// assert_eq!(*msg.payload(), 42);
    /// assert_eq!(msg.attempt(), 2);
    /// ```
    pub fn new(stream: &str, id: MessageId, payload: T) -> Self {
        Message { id, stream: Arc::from(stream), payload, headers: Headers::new(), attempt: 1, state: State::new() }
    }

    /// Sets the delivery attempt (builder style, for tests).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Sets the headers (builder style, for tests).
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the application state (builder style, for tests).
    pub fn with_state(mut self, state: State) -> Self {
        self.state = state;
        self
    }

    /// The application value of type `S` given to
    /// [`RuntimeBuilder::state`](crate::RuntimeBuilder::state), e.g. a database pool or a
    /// [`Producer`](crate::Producer).
    ///
    /// ```
    /// use streamx_runtime::{Message, MessageId, State};
    /// struct Db { name: &'static str }
    /// let msg = Message::new("orders", MessageId::new(1, 0), ()).with_state(State::new().with(Db { name: "main" }));
    /// assert_eq!(msg.state::<Db>().map(|db| db.name), Some("main"));
    /// ```
    pub fn state<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.state.get::<S>()
    }

    /// The entry id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The stream the message was read from.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The decoded payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Takes the payload out of the message.
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// The 1-based delivery count: 1 on the first delivery, 2 on the first retry, and so on.
    /// Deliveries to a consumer that crashed count too.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The headers published with the message.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The message's key (its [`MESSAGE_KEY_HEADER`] header), if it was published with one
    /// ([`Producer::publish_keyed`](crate::Producer::publish_keyed)).
    ///
    /// ```
    /// use streamx_runtime::{Headers, Message, MessageId, MESSAGE_KEY_HEADER};
    /// let msg = Message::new("orders", MessageId::new(1, 0), ()).with_headers(Headers::new().with(MESSAGE_KEY_HEADER, "order-7"));
    /// assert_eq!(msg.key(), Some("order-7"));
    /// ```
    pub fn key(&self) -> Option<&str> {
        self.headers.get(MESSAGE_KEY_HEADER)
    }

    /// When the entry was added to the stream, taken from the millisecond part of its id
    /// (exact for ids Redis generated with `*`).
    pub fn published_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.id.millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_order_and_print() {
        let a: MessageId = "5-1".parse().unwrap();
        let b: MessageId = "5".parse().unwrap();
        assert_eq!(b, MessageId::new(5, 0));
        assert!(b < a);
        assert_eq!(a.successor(), Some(MessageId::new(5, 2)));
        assert_eq!(MessageId::new(1, u64::MAX).successor(), Some(MessageId::new(2, 0)));
        assert!("5-".parse::<MessageId>().is_err());
        assert!("x-1".parse::<MessageId>().is_err());
        assert!("99999999999999999999999-1".parse::<MessageId>().is_err());
        // The most a u64 holds parses; one more is an error, not a wrapped-around number.
        assert_eq!(
            "18446744073709551615-9999999999999999999".parse::<MessageId>().ok(),
            Some(MessageId::new(u64::MAX, 9_999_999_999_999_999_999))
        );
        assert!("18446744073709551616-0".parse::<MessageId>().is_err());
        assert!("99999999999999999999-0".parse::<MessageId>().is_err());
        assert!("1-".parse::<MessageId>().is_err());
        assert!("-1".parse::<MessageId>().is_err());
        assert!("1-2-3".parse::<MessageId>().is_err());
        assert!("1x".parse::<MessageId>().is_err());
        assert!("1-2 ".parse::<MessageId>().is_err());
        assert!("".parse::<MessageId>().is_err());
        assert_eq!("1700000000000".parse::<MessageId>().ok(), Some(MessageId::new(1_700_000_000_000, 0)));
    }

    #[test]
    fn id_args_are_the_ids_as_text() {
        let ids = [MessageId::new(0, 0), MessageId::new(1_700_000_000_123, 42), MessageId::new(u64::MAX, u64::MAX)];
        let args: Vec<String> = id_args(&ids).iter().filter_map(|v| v.as_bytes_str()).map(|s| s.to_string()).collect();
        let expected: Vec<String> = ids.iter().map(MessageId::to_string).collect();
        assert_eq!(args, expected);
    }

    #[test]
    fn ids_round_trip_through_json() {
        let id = MessageId::new(1_700_000_000_000, 7);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"1700000000000-7\"");
        assert_eq!(serde_json::from_str::<MessageId>(&json).unwrap(), id);
        let err = serde_json::from_str::<MessageId>("\"7-x\"").unwrap_err();
        assert!(err.to_string().contains("`7-x` is not a stream id"), "{err}");
    }

    #[test]
    fn headers_replace_and_lookup() {
        let mut h = Headers::new().with("a", "1");
        h.insert("a", "2").insert("b", "3");
        assert_eq!(h.get("a"), Some("2"));
        assert_eq!(h.len(), 2);
        assert_eq!(h.get("c"), None);
    }
}
