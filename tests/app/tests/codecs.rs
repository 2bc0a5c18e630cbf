//! Codecs beyond JSON (issue 27) against real servers: MessagePack written by a client that
//! is not streamx (a raw RESP `XADD`, as a Python or Go producer sends it) is consumed into
//! the typed struct; streamx's own MessagePack publishes (single and batch) are consumed;
//! raw bytes round trip through `Message<Bytes>`; a content type the consumer cannot decode
//! is dead-lettered as `unsupported_codec` after exactly one delivery; the attribute's
//! `codec = "msgpack"` reads entries without a header as MessagePack.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start_runtime, start_server, wait_until};
use streamx::testing::{unique_name, RedisServer};
use streamx::{
    Bytes, Codec, Consumer, DeadLetters, FailureKind, Inspector, Message, MessageId, Producer, PublishOptions, Runtime,
    CONTENT_TYPE_HEADER,
};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    item: String,
    qty: i64,
}

/// `{"id": 300, "item": "tea", "qty": -2}` in MessagePack, byte by byte as any MessagePack
/// library writes a map (Python's `msgpack.packb`, Go's `msgpack.Marshal`).
const ORDER_MSGPACK: &[u8] = b"\x83\xa2id\xcd\x01\x2c\xa4item\xa3tea\xa3qty\xfe";

fn order() -> Order {
    Order { id: 300, item: "tea".into(), qty: -2 }
}

fn dlq_of(stream: &str) -> String {
    streamx::keys::dead_letter_stream(stream, &streamx::DeadLetterTarget::Default).unwrap()
}

async fn pending(url: &str, stream: &str, group: &str) -> u64 {
    Inspector::connect(url).await.unwrap().group(stream, group).await.unwrap().map_or(0, |g| g.pending)
}

/// `XADD stream * field value ...` written as raw RESP on a plain TCP connection (no Redis
/// client library, no streamx): what a producer in another language sends. Returns the id.
fn raw_xadd(server: &RedisServer, stream: &str, fields: &[(&str, &[u8])]) -> String {
    let mut args: Vec<&[u8]> = vec![b"XADD", stream.as_bytes(), b"*"];
    for (name, value) in fields {
        args.push(name.as_bytes());
        args.push(value);
    }
    let mut command = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg);
        command.extend_from_slice(b"\r\n");
    }
    let mut conn = TcpStream::connect(server.addr()).unwrap();
    conn.write_all(&command).unwrap();
    let mut reader = BufReader::new(conn);
    let mut len_line = String::new();
    reader.read_line(&mut len_line).unwrap();
    assert!(len_line.starts_with('$'), "XADD replied {len_line:?}");
    let mut id = String::new();
    reader.read_line(&mut id).unwrap();
    id.trim_end().to_string()
}

/// What a recording consumer saw: each message's id, payload and headers, in order.
type Seen<T> = Arc<Mutex<Vec<(MessageId, T, streamx::Headers)>>>;

/// A consumer of `stream` in `group` that records every message it gets, with its headers.
fn recording<T: serde::de::DeserializeOwned + Send + Clone + 'static>(
    stream: &str,
    group: &str,
) -> (Consumer, Seen<T>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let seen = seen.clone();
        Consumer::new(stream.to_string(), group.to_string(), move |msg: Message<T>| {
            seen.lock().unwrap().push((msg.id(), msg.payload().clone(), msg.headers().clone()));
            async {}
        })
    };
    (consumer, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_written_outside_streamx_is_consumed_into_the_typed_struct() {
    let server = start_server();
    let url = server.url();
    let stream = unique_name("foreign-msgpack");
    // The three names MessagePack goes by, each on an entry of its own.
    let mut ids = Vec::new();
    for content_type in ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack"] {
        let id = raw_xadd(&server, &stream, &[("data", ORDER_MSGPACK), ("h:content-type", content_type.as_bytes())]);
        ids.push(id.parse::<MessageId>().unwrap());
    }
    let (consumer, seen) = recording::<Order>(&stream, "g");
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    wait_until(Duration::from_secs(15), "three MessagePack entries handled", || async {
        seen.lock().unwrap().len() == 3 && pending(&url, &stream, "g").await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(), ids);
    assert!(seen.iter().all(|(_, payload, _)| *payload == order()), "{seen:?}");
    let stats = stats.snapshot();
    assert_eq!((stats.succeeded, stats.dead_lettered, stats.retried), (3, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_published_by_streamx_is_consumed_and_readable_by_other_languages() {
    let server = start_server();
    let url = server.url();
    let stream = unique_name("msgpack");
    let producer = Producer::connect(&url).await.unwrap();
    let msgpack = PublishOptions::new().codec(Codec::MsgPack);
    let single = producer.publish_with(&stream, &order(), &msgpack).await.unwrap();
    let batch: Vec<Order> = (1..=5).map(|id| Order { id, item: format!("item-{id}"), qty: id as i64 }).collect();
    let batch_ids = producer.publish_batch_with(&stream, &batch, &msgpack).await.unwrap();
    // A JSON publish beside them: no content-type header, the bytes serde_json writes.
    let json = producer.publish(&stream, &order()).await.unwrap();

    let (typed, typed_seen) = recording::<Order>(&stream, "typed");
    let (raw, raw_seen) = recording::<Bytes>(&stream, "raw");
    let runtime = start_runtime(&url, vec![typed, raw]).await;
    wait_until(Duration::from_secs(15), "both groups handled all 7", || async {
        typed_seen.lock().unwrap().len() == 7
            && raw_seen.lock().unwrap().len() == 7
            && pending(&url, &stream, "typed").await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();

    let typed = typed_seen.lock().unwrap();
    let mut want = vec![(single, order())];
    want.extend(batch_ids.iter().copied().zip(batch.iter().cloned()));
    want.push((json, order()));
    assert_eq!(typed.iter().map(|(id, p, _)| (*id, p.clone())).collect::<Vec<_>>(), want);

    let raw = raw_seen.lock().unwrap();
    // As stored: MessagePack maps with the field names (what a Python consumer unpacks into
    // a dict), under `content-type: application/msgpack`.
    assert_eq!(raw[0].1, Bytes::from_static(ORDER_MSGPACK));
    assert_eq!(raw[0].2.get(CONTENT_TYPE_HEADER), Some("application/msgpack"));
    assert_eq!(&raw[1].1[..], b"\x83\xa2id\x01\xa4item\xa6item-1\xa3qty\x01");
    assert!(raw[1..6].iter().all(|(_, _, h)| h.get(CONTENT_TYPE_HEADER) == Some("application/msgpack")));
    assert_eq!(raw[6].1, Bytes::from(serde_json::to_vec(&order()).unwrap()));
    assert!(raw[6].2.is_empty(), "a JSON entry carries no header: {:?}", raw[6].2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_round_trip_and_a_typed_consumer_dead_letters_them() {
    let server = start_server();
    let url = server.url();
    let stream = unique_name("raw");
    let producer = Producer::connect(&url).await.unwrap();
    let image: Vec<u8> = (0..=255u8).rev().chain([0, 0xff, b'{']).collect();
    let id = producer.publish_bytes(&stream, image.clone()).await.unwrap();
    // Bytes of a format streamx does not decode, under their own content type.
    let proto =
        PublishOptions::new().headers(streamx::Headers::new().with(CONTENT_TYPE_HEADER, "application/x-protobuf"));
    let proto_id = producer.publish_bytes_with(&stream, &b"\x08\x96\x01"[..], &proto).await.unwrap();

    let (raw, raw_seen) = recording::<Bytes>(&stream, "raw");
    let (typed, typed_seen) = recording::<Order>(&stream, "typed");
    let runtime = start_runtime(&url, vec![raw, typed.max_retries(3)]).await;
    let letters = DeadLetters::connect(&url, &dlq_of(&stream)).await.unwrap();
    wait_until(Duration::from_secs(15), "raw handled both, typed dead-lettered both", || async {
        raw_seen.lock().unwrap().len() == 2
            && letters.count().await.unwrap() == 2
            && pending(&url, &stream, "typed").await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let raw = raw_seen.lock().unwrap().clone();
    assert_eq!((raw[0].0, &raw[0].1[..]), (id, &image[..]));
    assert_eq!(raw[0].2.get(CONTENT_TYPE_HEADER), Some("application/octet-stream"));
    assert_eq!((raw[1].0, &raw[1].1[..]), (proto_id, &b"\x08\x96\x01"[..]));
    assert_eq!(raw[1].2.get(CONTENT_TYPE_HEADER), Some("application/x-protobuf"));
    assert!(typed_seen.lock().unwrap().is_empty());
    let page = letters.list(None, 10).await.unwrap();
    assert!(
        page.entries.iter().all(|l| l.kind == Some(FailureKind::UnsupportedCodec) && l.deliveries == 1),
        "{page:?}"
    );
    assert_eq!(page.entries[0].payload.as_deref(), Some(&image[..]), "the letter keeps the bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_content_type_is_dead_lettered_after_exactly_one_delivery() {
    let server = start_server();
    let url = server.url();
    let stream = unique_name("unknown-type");
    let id =
        raw_xadd(&server, &stream, &[("data", br#"{"id":1,"item":"x","qty":1}"#), ("h:content-type", b"text/csv")]);
    let ok = Producer::connect(&url).await.unwrap().publish(&stream, &order()).await.unwrap();
    let (consumer, seen) = recording::<Order>(&stream, "g");
    let runtime = start_runtime(&url, vec![consumer.max_retries(5)]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let letters = DeadLetters::connect(&url, &dlq_of(&stream)).await.unwrap();
    wait_until(Duration::from_secs(15), "the unknown type dead-lettered, the JSON one handled", || async {
        letters.count().await.unwrap() == 1 && seen.lock().unwrap().len() == 1 && pending(&url, &stream, "g").await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    assert_eq!(seen.lock().unwrap()[0].0, ok, "the handler ran for the JSON entry only");
    let letter = &letters.list(None, 10).await.unwrap().entries[0];
    assert_eq!(letter.origin_id, Some(id.parse().unwrap()));
    assert_eq!(letter.kind, Some(FailureKind::UnsupportedCodec));
    assert_eq!(letter.deliveries, 1, "not retried, though max_retries is 5");
    assert!(letter.error.contains("text/csv"), "the reason names the type: {}", letter.error);
    assert_eq!(letter.headers.get(CONTENT_TYPE_HEADER), Some("text/csv"));
    let stats = stats.snapshot();
    assert_eq!((stats.succeeded, stats.dead_lettered, stats.retried), (1, 1, 0));
}

/// Registered by the attribute (the runtime below runs registered consumers): entries without
/// a content-type header are read as MessagePack, those that name JSON as JSON.
#[streamx::stream_consumer(stream = "codecs-attribute-orders", group = "g", codec = "msgpack")]
async fn attribute_consumer(msg: Message<Order>) {
    ATTRIBUTE_SEEN.lock().unwrap().push(msg.into_payload());
}

static ATTRIBUTE_SEEN: Mutex<Vec<Order>> = Mutex::new(Vec::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codec_attribute_reads_entries_without_a_header_as_msgpack() {
    let server = start_server();
    let url = server.url();
    let stream = "codecs-attribute-orders";
    raw_xadd(&server, stream, &[("data", ORDER_MSGPACK)]);
    raw_xadd(
        &server,
        stream,
        &[("data", br#"{"id":2,"item":"json","qty":0}"#), ("h:content-type", b"application/json")],
    );
    let runtime = Runtime::builder().redis_url(url.clone()).build().unwrap().start().await.unwrap();
    wait_until(Duration::from_secs(15), "both entries handled", || async {
        ATTRIBUTE_SEEN.lock().unwrap().len() == 2 && pending(&url, stream, "g").await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let seen = ATTRIBUTE_SEEN.lock().unwrap().clone();
    assert_eq!(seen, vec![order(), Order { id: 2, item: "json".into(), qty: 0 }]);
    let registration = streamx::registered().into_iter().find(|r| r.name().ends_with("attribute_consumer")).unwrap();
    assert_eq!(registration.to_consumer().options().codec, Codec::MsgPack);
}

/// A batch handler decodes each entry of its batch in the entry's own codec: JSON and
/// MessagePack side by side reach the call, and an entry it cannot decode is dead-lettered
/// alone, at its first delivery, without reaching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handler_decodes_each_entry_in_its_own_codec() {
    let server = start_server();
    let url = server.url();
    let stream = unique_name("batch-codecs");
    raw_xadd(&server, &stream, &[("data", ORDER_MSGPACK), ("h:content-type", b"application/msgpack")]);
    let bad = raw_xadd(&server, &stream, &[("data", b"id,item\n1,tea"), ("h:content-type", b"text/csv")]);
    let producer = Producer::connect(&url).await.unwrap();
    producer.publish(&stream, &Order { id: 1, item: "json".into(), qty: 1 }).await.unwrap();
    let msgpack = PublishOptions::new().codec(Codec::MsgPack);
    producer.publish_with(&stream, &Order { id: 2, item: "msgpack".into(), qty: 2 }, &msgpack).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let seen = seen.clone();
        Consumer::batch(stream.clone(), "g", move |batch: Vec<Message<Order>>| {
            seen.lock().unwrap().extend(batch.into_iter().map(Message::into_payload));
            async {}
        })
        .max_retries(5)
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let letters = DeadLetters::connect(&url, &dlq_of(&stream)).await.unwrap();
    wait_until(Duration::from_secs(15), "three handled, one dead-lettered", || async {
        seen.lock().unwrap().len() == 3 && letters.count().await.unwrap() == 1 && pending(&url, &stream, "g").await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let mut ids: Vec<u64> = seen.lock().unwrap().iter().map(|o| o.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 300]);
    let letter = &letters.list(None, 10).await.unwrap().entries[0];
    assert_eq!(letter.origin_id, Some(bad.parse().unwrap()));
    assert_eq!((letter.kind, letter.deliveries), (Some(FailureKind::UnsupportedCodec), 1));
}
