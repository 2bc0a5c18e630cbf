//! Codecs: how a payload is laid out in an entry's `data` field, named by the entry's
//! `content-type` header so that producers and consumers in other languages interoperate.
//!
//! | `content-type` | payload | decoded by |
//! |---|---|---|
//! | none, `application/json` | JSON (the default, what streamx always wrote) | `Message<T>` |
//! | `application/msgpack` (`application/x-msgpack`, `application/vnd.msgpack`) | MessagePack | `Message<T>` with the `msgpack` feature |
//! | `application/octet-stream` | raw bytes | `Message<Bytes>` only |
//! | anything else | — | `Message<Bytes>` only |
//!
//! A handler taking `Message<Bytes>` gets the `data` field as it is, whatever the content
//! type. Any other handler gets an entry it cannot decode dead-lettered at its first delivery
//! with kind [`FailureKind::UnsupportedCodec`]. An entry without the header is read in the
//! consumer's [`codec`](crate::ConsumerOptions::codec) (JSON unless set).

use std::any::{Any, TypeId};

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::handler::FailureKind;

/// The header naming a payload's codec. JSON entries are published without it (they are
/// byte-identical to those of earlier versions); every other codec sets it.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// The content type of JSON payloads.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// The content type of MessagePack payloads (`application/x-msgpack` and
/// `application/vnd.msgpack` are read as well).
pub const MSGPACK_CONTENT_TYPE: &str = "application/msgpack";
/// The content type of raw bytes ([`Producer::publish_bytes`](crate::Producer::publish_bytes)).
pub const OCTET_STREAM_CONTENT_TYPE: &str = "application/octet-stream";

/// How a typed payload is serialized: by a producer when publishing
/// ([`PublishOptions::codec`](crate::PublishOptions::codec)), by a consumer for entries that
/// have no `content-type` header ([`ConsumerOptions::codec`](crate::ConsumerOptions::codec)).
///
/// ```
/// use streamx_runtime::Codec;
/// assert_eq!(Codec::default(), Codec::Json);
/// assert_eq!(Codec::Json.content_type(), "application/json");
/// assert_eq!(Codec::from_name("json"), Some(Codec::Json));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// JSON (`serde_json`), the default: published without a `content-type` header.
    #[default]
    Json,
    /// MessagePack (`rmp-serde`, structs as maps with their field names, so other languages
    /// read them), published with `content-type: application/msgpack`. Feature `msgpack`.
    #[cfg(feature = "msgpack")]
    MsgPack,
}

impl Codec {
    /// The codec's content type, as written in the `content-type` header.
    pub const fn content_type(&self) -> &'static str {
        match self {
            Codec::Json => JSON_CONTENT_TYPE,
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => MSGPACK_CONTENT_TYPE,
        }
    }

    /// The codec of a short name: `json`, or `msgpack` (with the feature).
    pub fn from_name(name: &str) -> Option<Codec> {
        match name {
            "json" => Some(Codec::Json),
            #[cfg(feature = "msgpack")]
            "msgpack" => Some(Codec::MsgPack),
            _ => None,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.content_type())
    }
}

/// What an entry's `content-type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentType {
    Json,
    MsgPack,
    OctetStream,
    Unknown,
}

/// Classifies a `content-type` value: the media type before any `;` parameters, ASCII
/// case-insensitive, surrounding spaces ignored.
fn content_type(value: &str) -> ContentType {
    let media = value.split(';').next().unwrap_or_default().trim();
    let is = |name: &str| media.eq_ignore_ascii_case(name);
    if is(JSON_CONTENT_TYPE) {
        ContentType::Json
    } else if is(MSGPACK_CONTENT_TYPE) || is("application/x-msgpack") || is("application/vnd.msgpack") {
        ContentType::MsgPack
    } else if is(OCTET_STREAM_CONTENT_TYPE) {
        ContentType::OctetStream
    } else {
        ContentType::Unknown
    }
}

/// `data` itself when `T` is [`Bytes`] (a raw handler); `Err(data)` for any other `T`.
fn as_raw<T: 'static>(data: Bytes) -> Result<T, Bytes> {
    if TypeId::of::<T>() != TypeId::of::<Bytes>() {
        return Err(data);
    }
    let mut slot = Some(data);
    let taken = (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>().and_then(Option::take);
    taken.ok_or_else(|| slot.take().unwrap_or_default())
}

/// Decodes the payload `data` of an entry whose `content-type` header is `declared` (`None`:
/// no header, read as `assumed`) into `T`. A [`Bytes`] `T` is `data` as it is. An error is
/// the kind and reason of the rejection: [`FailureKind::UnsupportedCodec`] for a content type
/// this build cannot decode into `T`, today's malformed-payload kinds
/// ([`FailureKind::InvalidJson`], [`FailureKind::WrongShape`]) for a payload that is not
/// valid in its codec.
pub(crate) fn decode<T: DeserializeOwned + 'static>(
    data: Bytes,
    declared: Option<&str>,
    assumed: Codec,
) -> Result<T, (FailureKind, String)> {
    let data = match as_raw::<T>(data) {
        Ok(raw) => return Ok(raw),
        Err(data) => data,
    };
    let kind = match declared {
        None => match assumed {
            Codec::Json => ContentType::Json,
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => ContentType::MsgPack,
        },
        Some(value) => content_type(value),
    };
    match kind {
        ContentType::Json => decode_json(&data),
        ContentType::MsgPack => decode_msgpack(&data, declared.unwrap_or(MSGPACK_CONTENT_TYPE)),
        ContentType::OctetStream | ContentType::Unknown => Err((
            FailureKind::UnsupportedCodec,
            format!(
                "unsupported content type {:?}: a handler taking {} decodes {}; only one taking \
                 `Message<Bytes>` accepts any content type",
                declared.unwrap_or_default(),
                std::any::type_name::<T>(),
                decodable()
            ),
        )),
    }
}

/// The content types this build decodes into a typed payload, for rejection reasons.
fn decodable() -> &'static str {
    if cfg!(feature = "msgpack") {
        "application/json and application/msgpack"
    } else {
        "application/json only (application/msgpack needs streamx's `msgpack` feature)"
    }
}

fn decode_json<T: DeserializeOwned>(data: &[u8]) -> Result<T, (FailureKind, String)> {
    serde_json::from_slice::<T>(data).map_err(|e| {
        let kind = if e.is_data() { FailureKind::WrongShape } else { FailureKind::InvalidJson };
        (kind, format!("cannot decode payload as {}: {e}", std::any::type_name::<T>()))
    })
}

#[cfg(feature = "msgpack")]
fn decode_msgpack<T: DeserializeOwned>(data: &[u8], _declared: &str) -> Result<T, (FailureKind, String)> {
    use rmp_serde::decode::Error as E;
    rmp_serde::from_slice::<T>(data).map_err(|e| {
        // A value of the wrong type or shape (serde's own errors: a missing field, a bad
        // variant) is `wrong_shape`, as for JSON; bytes that are not MessagePack at all
        // (truncated, a reserved marker, bad UTF-8) are the malformed kind, `invalid_json`.
        let kind = match e {
            E::TypeMismatch(_) | E::OutOfRange | E::Syntax(_) | E::Uncategorized(_) => FailureKind::WrongShape,
            _ => FailureKind::InvalidJson,
        };
        (kind, format!("cannot decode MessagePack payload as {}: {e}", std::any::type_name::<T>()))
    })
}

#[cfg(not(feature = "msgpack"))]
fn decode_msgpack<T>(_data: &[u8], declared: &str) -> Result<T, (FailureKind, String)> {
    Err((
        FailureKind::UnsupportedCodec,
        format!(
            "unsupported content type {declared:?}: MessagePack payloads need streamx's `msgpack` \
             feature, which this consumer was built without"
        ),
    ))
}

/// Serializes `payload` in `codec`, appending to `out`; `stream` names the target in the error.
pub(crate) fn encode_into<T: serde::Serialize + ?Sized>(
    codec: Codec,
    out: &mut Vec<u8>,
    payload: &T,
    stream: &str,
) -> crate::Result<()> {
    match codec {
        Codec::Json => {
            serde_json::to_writer(out, payload).map_err(|source| Error::Encode { stream: stream.to_string(), source })
        }
        #[cfg(feature = "msgpack")]
        Codec::MsgPack => rmp_serde::encode::write_named(out, payload)
            .map_err(|source| Error::EncodeMsgPack { stream: stream.to_string(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize, serde::Serialize)]
    struct Order {
        id: u64,
        item: String,
    }

    #[test]
    fn content_types_are_read_with_aliases_parameters_and_any_case() {
        assert_eq!(content_type("application/json"), ContentType::Json);
        assert_eq!(content_type(" Application/JSON; charset=utf-8"), ContentType::Json);
        for alias in ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack"] {
            assert_eq!(content_type(alias), ContentType::MsgPack, "{alias}");
        }
        assert_eq!(content_type("application/octet-stream"), ContentType::OctetStream);
        assert_eq!(content_type("application/x-protobuf"), ContentType::Unknown);
        assert_eq!(content_type(""), ContentType::Unknown);
    }

    #[test]
    fn json_decodes_with_or_without_the_header() {
        let data = Bytes::from_static(br#"{"id":7,"item":"tea"}"#);
        let want = Order { id: 7, item: "tea".into() };
        assert_eq!(decode::<Order>(data.clone(), None, Codec::Json), Ok(want));
        assert!(decode::<Order>(data, Some("application/json"), Codec::Json).is_ok());
        let bad = decode::<Order>(Bytes::from_static(b"{nope"), None, Codec::Json).unwrap_err();
        assert_eq!(bad.0, FailureKind::InvalidJson);
    }

    #[test]
    fn raw_bytes_are_the_payload_as_it_is_whatever_the_content_type() {
        let data = Bytes::from_static(b"\x00\xffnot json");
        for declared in
            [None, Some("application/octet-stream"), Some("application/x-unknown"), Some("application/json")]
        {
            assert_eq!(decode::<Bytes>(data.clone(), declared, Codec::Json), Ok(data.clone()), "{declared:?}");
        }
    }

    #[test]
    fn unknown_and_raw_content_types_are_unsupported_for_a_typed_payload() {
        for declared in ["application/x-protobuf", "application/octet-stream"] {
            let (kind, reason) = decode::<Order>(Bytes::from_static(b"{}"), Some(declared), Codec::Json).unwrap_err();
            assert_eq!(kind, FailureKind::UnsupportedCodec);
            assert!(reason.contains(declared), "{reason}");
        }
    }

    #[cfg(not(feature = "msgpack"))]
    #[test]
    fn msgpack_without_the_feature_is_unsupported() {
        // {"id": 7, "item": "tea"} as MessagePack.
        let data = Bytes::from_static(b"\x82\xa2id\x07\xa4item\xa3tea");
        let (kind, reason) = decode::<Order>(data, Some("application/msgpack"), Codec::Json).unwrap_err();
        assert_eq!(kind, FailureKind::UnsupportedCodec);
        assert!(reason.contains("application/msgpack") && reason.contains("`msgpack` feature"), "{reason}");
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack_decodes_maps_and_arrays_and_is_assumed_when_asked() {
        let want = Order { id: 7, item: "tea".into() };
        // {"id": 7, "item": "tea"} as MessagePack, as another language writes it.
        let map = Bytes::from_static(b"\x82\xa2id\x07\xa4item\xa3tea");
        assert_eq!(decode::<Order>(map.clone(), Some("application/x-msgpack"), Codec::Json).as_ref(), Ok(&want));
        assert_eq!(decode::<Order>(map.clone(), None, Codec::MsgPack).as_ref(), Ok(&want));
        // Without the header a JSON consumer reads it as JSON: not valid.
        assert_eq!(decode::<Order>(map, None, Codec::Json).unwrap_err().0, FailureKind::InvalidJson);
        // rmp-serde's compact form (a struct as an array) decodes too.
        let array = Bytes::from(rmp_serde::to_vec(&want).unwrap());
        assert_eq!(decode::<Order>(array, Some("application/msgpack"), Codec::Json), Ok(want));
        let wrong = Bytes::from_static(b"\x81\xa2id\xa1x");
        assert_eq!(
            decode::<Order>(wrong, Some("application/msgpack"), Codec::Json).unwrap_err().0,
            FailureKind::WrongShape
        );
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack_encodes_with_field_names() {
        let mut out = Vec::new();
        encode_into(Codec::MsgPack, &mut out, &Order { id: 7, item: "tea".into() }, "orders").unwrap();
        assert_eq!(out, b"\x82\xa2id\x07\xa4item\xa3tea");
    }
}
