//! Idempotent publish (`PublishOptions::idempotency_key`): one entry per key and window,
//! whoever publishes it and however often, on a single server and on a cluster.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{on_both_topologies, wait_until, Job, TestRedis, Topology};
use futures_util::TryStreamExt;
use streamx::testing::unique_name;
use streamx::{Error, Headers, History, Message, MessageId, Producer, PublishOptions, IDEMPOTENCY_KEY_HEADER};

/// 1,000 keys, each published twice at the same time by two producers (on connections of
/// their own): 1,000 entries, and both publishes of a key got the same id. Without the key
/// the same publishes write 2,000 entries (the test proves the option matters).
async fn two_producers_racing_write_each_key_once(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("idem");
    let (a, b) = (Producer::connect(&url).await.unwrap(), Producer::connect(&url).await.unwrap());
    let publish_all = |producer: Producer, stream: String, keyed: bool| {
        tokio::spawn(async move {
            let publishes = (0..1000u64).map(|n| {
                let (producer, stream) = (producer.clone(), stream.clone());
                async move {
                    let options = if keyed {
                        PublishOptions::new().idempotency_key(format!("order-{n}"))
                    } else {
                        PublishOptions::new()
                    };
                    producer.publish_with(&stream, &Job::ok(n), &options).await.map(|id| (n, id))
                }
            });
            futures_util::future::try_join_all(publishes).await
        })
    };
    let (from_a, from_b) =
        tokio::join!(publish_all(a.clone(), stream.clone(), true), publish_all(b.clone(), stream.clone(), true));
    let (from_a, from_b): (HashMap<u64, MessageId>, HashMap<u64, MessageId>) =
        (from_a.unwrap().unwrap().into_iter().collect(), from_b.unwrap().unwrap().into_iter().collect());
    assert_eq!(server.xlen(&stream).unwrap(), 1000, "one entry per key");
    for n in 0..1000 {
        assert_eq!(from_a[&n], from_b[&n], "both publishes of key {n} got the first entry's id");
    }
    let entries: Vec<Message<Job>> =
        History::connect(&url).await.unwrap().read(&stream, ..).try_collect().await.unwrap();
    let by_id: HashMap<MessageId, &Message<Job>> = entries.iter().map(|m| (m.id(), m)).collect();
    for n in 0..1000 {
        let entry = by_id[&from_a[&n]];
        assert_eq!(entry.payload().n, n);
        assert_eq!(
            entry.headers().get(IDEMPOTENCY_KEY_HEADER),
            Some(format!("order-{n}").as_str()),
            "the key is a header"
        );
    }

    // The contrast: the same race without keys writes every publish.
    let plain = unique_name("plain");
    let (x, y) = tokio::join!(publish_all(a, plain.clone(), false), publish_all(b, plain.clone(), false));
    let (x, y) = (x.unwrap().unwrap(), y.unwrap().unwrap());
    assert_eq!(server.xlen(&plain).unwrap(), 2000, "without a key, every publish is an entry");
    let ids: HashSet<MessageId> = x.into_iter().chain(y).map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 2000);
}

/// After its window a key publishes again (a new entry, a new id); within it, not. Headers,
/// `max_len_approx` and `no_mkstream` apply to the write; a batch refuses a key; an explicit
/// id that is not above the stream's last is refused as for a plain publish, writing nothing.
async fn a_key_publishes_again_after_its_window(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    // Braces in the name: the record must share the stream's slot (a cluster refuses
    // scripts whose keys do not).
    let stream = format!("{{shop}}.{}", unique_name("orders"));
    let producer = Producer::connect(&url).await.unwrap();
    let window = Duration::from_millis(300);
    let options = PublishOptions::new()
        .idempotency_key("pay-1")
        .idempotency_window(window)
        .headers(Headers::new().with("tenant", "acme"));
    let first = producer.publish_with(&stream, &Job::ok(1), &options).await.unwrap();
    let again = producer.publish_with(&stream, &Job::ok(2), &options).await.unwrap();
    assert_eq!(first, again, "within the window: the first entry's id, nothing written");
    assert_eq!(server.xlen(&stream).unwrap(), 1);
    let record = streamx::keys::published(&stream, "pay-1");
    assert_eq!(server.cli(&["GET", &record]).unwrap().trim(), first.to_string());
    let ttl: i64 = server.cli(&["PTTL", &record]).unwrap().trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 300, "the record expires with the window: {ttl} ms");

    wait_until(Duration::from_secs(5), "the record expired", || async {
        server.cli(&["EXISTS", &record]).unwrap().trim() == "0"
    })
    .await
    .unwrap();
    let after = producer.publish_with(&stream, &Job::ok(3), &options).await.unwrap();
    assert!(after > first, "after the window the key publishes again: {after} after {first}");
    assert_eq!(server.xlen(&stream).unwrap(), 2);
    let entries: Vec<Message<Job>> =
        History::connect(&url).await.unwrap().read(&stream, ..).try_collect().await.unwrap();
    assert_eq!(entries.iter().map(|m| m.payload().n).collect::<Vec<_>>(), [1, 3]);
    for entry in &entries {
        assert_eq!(entry.headers().get("tenant"), Some("acme"), "the caller's headers are kept");
        assert_eq!(entry.headers().get(IDEMPOTENCY_KEY_HEADER), Some("pay-1"));
    }

    // MAXLEN ~ applies inside the script: the stream stays near the cap.
    for n in 0..500 {
        let keyed = PublishOptions::new().idempotency_key(format!("k{n}")).max_len_approx(100);
        producer.publish_with(&stream, &Job::ok(n), &keyed).await.unwrap();
    }
    assert!(server.xlen(&stream).unwrap() < 300, "trimmed to about 100: {}", server.xlen(&stream).unwrap());

    // NOMKSTREAM: nothing written, no record left, the same error as a plain publish.
    let missing = format!("{{shop}}.{}", unique_name("missing"));
    let refused =
        producer.publish_with(&missing, &Job::ok(1), &PublishOptions::new().idempotency_key("x").no_mkstream()).await;
    assert!(matches!(refused, Err(Error::Decode { .. })), "{refused:?}");
    assert_eq!(server.cli(&["EXISTS", &missing]).unwrap().trim(), "0");
    assert_eq!(server.cli(&["EXISTS", &streamx::keys::published(&missing, "x")]).unwrap().trim(), "0");

    // An explicit id not above the last: refused, nothing written, no record.
    let low = PublishOptions::new().idempotency_key("low").id(MessageId::new(1, 0));
    match producer.publish_with(&stream, &Job::ok(9), &low).await {
        Err(Error::IdNotIncreasing { id, .. }) => assert_eq!(id, MessageId::new(1, 0)),
        other => panic!("expected IdNotIncreasing, got {other:?}"),
    }
    assert_eq!(server.cli(&["EXISTS", &streamx::keys::published(&stream, "low")]).unwrap().trim(), "0");

    // A batch cannot give one key to all its entries.
    let batch = producer
        .publish_batch_with(&stream, &[Job::ok(1), Job::ok(2)], &PublishOptions::new().idempotency_key("b"))
        .await;
    assert!(matches!(batch, Err(Error::IdempotencyKeyInBatch { .. })), "{batch:?}");
}

on_both_topologies!(two_producers_racing_write_each_key_once, a_key_publishes_again_after_its_window);
