//! The wire format: how a message is laid out in a stream entry, and parsing Redis replies.
//!
//! An entry has a `data` field holding the JSON payload and one `h:<name>` field per
//! header. Other fields are ignored by consumers and kept when an entry is dead-lettered.
//! Dead-letter entries add `dlq:*` fields (see [`crate::dead_letters`]).

use bytes::Bytes;
use fred::types::{Key, Resp3Frame, Value};

use crate::message::{Headers, MessageId};

/// The field that holds the JSON payload.
pub const DATA_FIELD: &str = "data";
/// The prefix of header fields: header `trace-id` is stored as field `h:trace-id`.
pub const HEADER_PREFIX: &str = "h:";
/// The field of an entry published again by a dead-letter replay for one group (its
/// entry was trimmed): the group's name. The consumers of every other group acknowledge such
/// an entry without running it. A field, not a header, so a handler that forwards the
/// headers it received never carries it along.
pub const REPLAY_GROUP_FIELD: &str = "streamx:replay-group";

/// One stream entry as read from Redis, before the payload is decoded: what tools that
/// read streams without a consumer group (`streamx tail`) show.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The entry id.
    pub id: MessageId,
    /// The `data` field; `None` when the entry has none.
    pub data: Option<Bytes>,
    /// The `h:<name>` fields, by header name.
    pub headers: Headers,
    /// True when Redis returned the id without fields: the entry was deleted or trimmed
    /// while it was pending.
    pub deleted: bool,
    /// The group this entry is for when a dead-letter replay published it again (the field
    /// [`REPLAY_GROUP_FIELD`]); `None` for every other entry.
    pub replay_group: Option<String>,
}

/// Builds the field list of an XADD for a payload and headers.
pub(crate) fn entry_fields(data: Bytes, headers: &Headers) -> Vec<(Key, Value)> {
    let mut fields = Vec::with_capacity(1 + headers.len());
    fields.push((Key::from_static_str(DATA_FIELD), Value::Bytes(data)));
    for (name, value) in headers.iter() {
        fields.push((Key::from(format!("{HEADER_PREFIX}{name}")), Value::from(value)));
    }
    fields
}

/// Text of a bulk-string value; `None` for anything else.
pub(crate) fn value_bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(s.into_inner()),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

/// The field/value pairs of an entry, as bytes (pairs that are not strings are skipped),
/// from a reply's values ([`FieldPairs`]) or its frames.
pub(crate) struct Pairs<T> {
    items: std::vec::IntoIter<T>,
    bytes: fn(T) -> Option<Bytes>,
}

/// [`Pairs`] of a reply's values.
pub(crate) type FieldPairs = Pairs<Value>;

impl<T> Iterator for Pairs<T> {
    type Item = (Bytes, Bytes);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (k, v) = (self.items.next()?, self.items.next()?);
            if let (Some(k), Some(v)) = ((self.bytes)(k), (self.bytes)(v)) {
                return Some((k, v));
            }
        }
    }
}

/// Splits one `[id, [field, value, ...]]` entry into its id and fields; the fields are
/// `None` for `[id, nil]` (an entry deleted or trimmed while pending).
pub(crate) fn split_entry(value: Value) -> Option<(MessageId, Option<FieldPairs>)> {
    let mut parts = value.into_array().into_iter();
    let id = MessageId::parse_bytes(&value_bytes(parts.next()?)?)?;
    let fields =
        parts.next().filter(|f| !f.is_null()).map(|f| Pairs { items: f.into_array().into_iter(), bytes: value_bytes });
    Some((id, fields))
}

/// What a field of an entry holds.
pub(crate) enum Field<'a> {
    /// The payload (`data`).
    Data,
    /// A header (`h:<name>`), with its name.
    Header(&'a [u8]),
    /// Anything else.
    Other,
}

/// Classifies a field name.
pub(crate) fn field(name: &[u8]) -> Field<'_> {
    if name == DATA_FIELD.as_bytes() {
        Field::Data
    } else if let Some(header) = name.strip_prefix(HEADER_PREFIX.as_bytes()) {
        Field::Header(header)
    } else {
        Field::Other
    }
}

/// `buf` cut at `ends` (each the end of one piece, ascending): pieces that share `buf`'s
/// one allocation (how a batch's payloads and an XACK's ids are sent).
pub(crate) fn split_at_ends(buf: Bytes, ends: Vec<usize>) -> impl Iterator<Item = Bytes> {
    let mut start = 0;
    ends.into_iter().map(move |end| {
        let piece = buf.slice(start..end);
        start = end;
        piece
    })
}

/// Parses one `[id, [field, value, ...]]` entry (or `[id, nil]` for a deleted one).
pub(crate) fn parse_entry(value: Value) -> Option<RawEntry> {
    let (id, fields) = split_entry(value)?;
    Some(build_entry(id, fields))
}

/// The entry `id` holding `fields` (`None`: deleted while pending).
fn build_entry(id: MessageId, fields: Option<impl Iterator<Item = (Bytes, Bytes)>>) -> RawEntry {
    let Some(fields) = fields else {
        return RawEntry { id, data: None, headers: Headers::new(), deleted: true, replay_group: None };
    };
    let mut data = None;
    let mut headers = Headers::new();
    let mut replay_group = None;
    for (k, v) in fields {
        match field(&k) {
            Field::Data => data = Some(v),
            Field::Header(name) => {
                headers.insert(String::from_utf8_lossy(name), String::from_utf8_lossy(&v));
            }
            Field::Other if &k[..] == REPLAY_GROUP_FIELD.as_bytes() => {
                replay_group = Some(String::from_utf8_lossy(&v).into_owned());
            }
            Field::Other => {}
        }
    }
    RawEntry { id, data, headers, deleted: false, replay_group }
}

/// Parses a list of entries (the reply of XRANGE, XCLAIM, or one stream of XREADGROUP).
pub fn parse_entries(value: Value) -> Vec<RawEntry> {
    let mut entries = Vec::new();
    parse_entries_into(value, &mut entries);
    entries
}

/// [`parse_entries`], appending to `entries` (reserved once for the whole list).
fn parse_entries_into(value: Value, entries: &mut Vec<RawEntry>) {
    if value.is_null() {
        return;
    }
    let list = value.into_array();
    entries.reserve(list.len());
    entries.extend(list.into_iter().filter_map(parse_entry));
}

/// Parses an XREADGROUP/XREAD reply for a single stream: nil (BLOCK timed out) is empty.
/// Handles both the RESP2 shape `[[stream, entries]]` and the RESP3 map `{stream: entries}`.
pub fn parse_read_reply(value: Value) -> Vec<RawEntry> {
    let mut entries = Vec::new();
    match value {
        Value::Map(map) => {
            for list in map.inner().into_values() {
                parse_entries_into(list, &mut entries);
            }
        }
        Value::Array(streams) => {
            for stream in streams {
                if let Some(list) = stream.into_array().into_iter().nth(1) {
                    parse_entries_into(list, &mut entries);
                }
            }
        }
        _ => {}
    }
    entries
}

/// Parses the reply frame of an XREADGROUP/XREAD for a single stream, as
/// [`parse_read_reply`] does its [`Value`], straight from the frame: the payloads are never
/// checked for UTF-8 nor copied, and no [`Value`] tree is built (together, about a tenth of
/// the CPU a consumer spends per message). An error reply is returned as fred's error for it.
pub(crate) fn parse_read_frame(frame: Resp3Frame) -> Result<Vec<RawEntry>, fred::error::Error> {
    let mut entries = Vec::new();
    match frame {
        Resp3Frame::Array { data: streams, .. } => {
            for stream in streams {
                if let Some(list) = frame_items(stream).and_then(|parts| parts.into_iter().nth(1)) {
                    parse_frame_entries_into(list, &mut entries);
                }
            }
        }
        Resp3Frame::Map { data, .. } => {
            for list in data.into_values() {
                parse_frame_entries_into(list, &mut entries);
            }
        }
        Resp3Frame::SimpleError { .. } | Resp3Frame::BlobError { .. } => {
            return Err(Value::try_from(frame).err().unwrap_or_else(|| {
                fred::error::Error::new(fred::error::ErrorKind::Protocol, "an error reply that is not an error")
            }));
        }
        _ => {}
    }
    Ok(entries)
}

/// [`parse_entries_into`] for a list of entry frames.
fn parse_frame_entries_into(list: Resp3Frame, entries: &mut Vec<RawEntry>) {
    let Some(list) = frame_items(list) else { return };
    entries.reserve(list.len());
    entries.extend(list.into_iter().filter_map(|entry| {
        let mut parts = frame_items(entry)?.into_iter();
        let id = MessageId::parse_bytes(&frame_bytes(parts.next()?)?)?;
        let fields =
            parts.next().and_then(frame_items).map(|fields| Pairs { items: fields.into_iter(), bytes: frame_bytes });
        Some(build_entry(id, fields))
    }));
}

/// The items of an array frame; `None` for anything else (nil included).
fn frame_items(frame: Resp3Frame) -> Option<Vec<Resp3Frame>> {
    match frame {
        Resp3Frame::Array { data, .. } | Resp3Frame::Push { data, .. } => Some(data),
        _ => None,
    }
}

/// The bytes of a string frame; `None` for anything else.
fn frame_bytes(frame: Resp3Frame) -> Option<Bytes> {
    match frame {
        Resp3Frame::BlobString { data, .. }
        | Resp3Frame::SimpleString { data, .. }
        | Resp3Frame::VerbatimString { data, .. } => Some(data),
        Resp3Frame::Number { data, .. } => Some(Bytes::from(data.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    #[test]
    fn parses_entries_with_headers_and_unknown_fields() {
        let reply = Value::Array(vec![Value::Array(vec![
            s("orders"),
            Value::Array(vec![
                Value::Array(vec![
                    s("1-0"),
                    Value::Array(vec![s("data"), s("{\"a\":1}"), s("h:k"), s("v"), s("other"), s("x")]),
                ]),
                Value::Array(vec![s("2-0"), Value::Null]),
            ]),
        ])]);
        let entries = parse_read_reply(reply);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, MessageId::new(1, 0));
        assert_eq!(entries[0].data.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(entries[0].headers.get("k"), Some("v"));
        assert!(!entries[0].deleted);
        assert!(entries[1].deleted);
        assert!(parse_read_reply(Value::Null).is_empty());
    }

    fn blob(v: &str) -> Resp3Frame {
        Resp3Frame::BlobString { data: Bytes::copy_from_slice(v.as_bytes()), attributes: None }
    }

    fn array(data: Vec<Resp3Frame>) -> Resp3Frame {
        Resp3Frame::Array { data, attributes: None }
    }

    /// The entries of the reply parsed above, as frames: a full one, and a deleted one.
    fn entry_frames() -> Resp3Frame {
        array(vec![
            array(vec![
                blob("1-0"),
                array(vec![blob("data"), blob("{\"a\":1}"), blob("h:k"), blob("v"), blob("other"), blob("x")]),
            ]),
            array(vec![blob("2-0"), Resp3Frame::Null]),
        ])
    }

    #[test]
    fn parses_read_frames_in_both_protocols() {
        let resp2 = array(vec![array(vec![blob("orders"), entry_frames()])]);
        let resp3 =
            Resp3Frame::Map { data: [(blob("orders"), entry_frames())].into_iter().collect(), attributes: None };
        for frame in [resp2, resp3] {
            let entries = parse_read_frame(frame).unwrap();
            assert_eq!(entries.len(), 2);
            assert_eq!(entries[0].id, MessageId::new(1, 0));
            assert_eq!(entries[0].data.as_deref(), Some(&b"{\"a\":1}"[..]));
            assert_eq!(entries[0].headers.get("k"), Some("v"));
            assert!(!entries[0].deleted);
            assert_eq!(entries[1].id, MessageId::new(2, 0));
            assert!(entries[1].deleted);
        }
        assert!(parse_read_frame(Resp3Frame::Null).unwrap().is_empty());
    }

    #[test]
    fn a_read_error_frame_is_freds_error_for_it() {
        let frame = Resp3Frame::SimpleError {
            data: "NOGROUP No such key 'orders' or consumer group 'g'".into(),
            attributes: None,
        };
        let err = parse_read_frame(frame).unwrap_err();
        assert!(crate::error::is_no_group(&err), "{err:?}");
    }
}
