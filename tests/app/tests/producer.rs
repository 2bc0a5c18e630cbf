//! Batch publishing: nothing is written when a payload cannot be encoded, and a batch that
//! fails part-way says exactly which entries it wrote.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::start_server;
use futures_util::TryStreamExt;
use serde::ser::{Error as _, Serialize, Serializer};
use streamx::testing::unique_name;
use streamx::{Error, History, Inspector, MessageId, Producer, PublishOptions};

/// A payload whose encoding fails when `poisoned`.
struct Item {
    n: u64,
    poisoned: bool,
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.poisoned {
            return Err(S::Error::custom("this payload cannot be encoded"));
        }
        self.n.serialize(serializer)
    }
}

fn items(count: u64, poisoned_at: Option<u64>) -> Vec<Item> {
    (0..count).map(|n| Item { n, poisoned: Some(n) == poisoned_at }).collect()
}

/// The ids of every entry of `stream`, oldest first.
async fn stored_ids(url: &str, stream: &str) -> Vec<MessageId> {
    let history = History::connect(url).await.unwrap();
    history.read::<u64>(stream, ..).map_ok(|m| m.id()).try_collect().await.unwrap()
}

async fn stored_values(url: &str, stream: &str) -> Vec<u64> {
    let history = History::connect(url).await.unwrap();
    history.read::<u64>(stream, ..).map_ok(|m| m.into_payload()).try_collect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencodable_payload_fails_the_batch_before_anything_is_written() {
    let server = start_server();
    let stream = unique_name("encode");
    let producer = Producer::connect(&server.url()).await.unwrap();

    let err = producer.publish_batch(&stream, &items(1_500, Some(1_200))).await.unwrap_err();

    assert!(matches!(err, Error::Encode { .. }), "an encode error: {err:?}");
    let len = Inspector::connect(&server.url()).await.unwrap().stream_len(&stream).await.unwrap();
    assert_eq!(len, 0, "nothing is written when one payload of the batch cannot be encoded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_after_its_first_chunk_reports_the_written_ids() {
    let server = start_server();
    let stream = unique_name("partial");
    let producer = Producer::connect(&server.url()).await.unwrap();
    // No replicas: the first chunk of 500 is written, then WAIT confirms it on none.
    let options = PublishOptions::new().durable(1, Duration::from_millis(20));

    let err = producer.publish_batch_with(&stream, &items(1_500, None), &options).await.unwrap_err();

    let Error::PartialPublish { written, source, .. } = &err else { panic!("a partial publish: {err:?}") };
    assert!(matches!(**source, Error::NotReplicated { wanted: 1, acked: 0, .. }), "stopped by WAIT: {source:?}");
    assert_eq!(err.written(), &written[..]);
    let positions: Vec<usize> = written.iter().map(|(at, _)| *at).collect();
    assert_eq!(positions, (0..500).collect::<Vec<_>>(), "the first chunk, by position");
    let ids: Vec<MessageId> = written.iter().map(|(_, id)| *id).collect();
    assert_eq!(stored_ids(&server.url(), &stream).await, ids, "the stream holds exactly the ids reported as written");

    // Retrying the rest completes the batch without duplicates.
    let rest = &items(1_500, None)[500..];
    let more = producer.publish_batch(&stream, rest).await.unwrap();
    let all: Vec<MessageId> = ids.into_iter().chain(more).collect();
    let stored = stored_ids(&server.url(), &stream).await;
    assert_eq!(stored, all);
    let values = stored_values(&server.url(), &stream).await;
    assert_eq!(values, (0..1_500).collect::<Vec<_>>(), "each payload once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_writes_nothing_fails_with_the_error_itself() {
    let server = start_server();
    let stream = unique_name("absent");
    let producer = Producer::connect(&server.url()).await.unwrap();

    let err = producer.publish_batch_with(&stream, &items(10, None), &PublishOptions::new().no_mkstream()).await;

    let err = err.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "NOMKSTREAM on a missing stream: {err:?}");
    assert!(err.written().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_lands_in_order_with_round_trips_in_flight() {
    let server = start_server();
    let stream = unique_name("order");
    let producer = Producer::connect(&server.url()).await.unwrap();
    // 20 round trips of 500, 8 in flight at once: the stream still holds the batch's order,
    // and the returned ids are the stored ones, in the same order.
    let ids = producer.publish_batch(&stream, &(0..10_000u64).collect::<Vec<_>>()).await.unwrap();
    let stored = stored_ids(&server.url(), &stream).await;
    assert_eq!(stored, ids);
    let values = stored_values(&server.url(), &stream).await;
    assert_eq!(values, (0..10_000).collect::<Vec<_>>());
}

/// Client connections that last ran an XADD (`cmd=xadd` in CLIENT LIST), and all the
/// normal client connections but redis-cli's own.
fn connections(server: &streamx::testing::RedisServer) -> (usize, usize) {
    let list = common::redis_cli(server, &["CLIENT", "LIST", "TYPE", "normal"]).unwrap();
    let others: Vec<&str> = list.lines().filter(|l| !l.contains("cmd=client|list")).collect();
    (others.iter().filter(|l| l.contains(" cmd=xadd ")).count(), others.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_many_round_trips_go_over_a_second_connection_made_once() {
    let server = start_server();
    let stream = unique_name("bulk");
    let producer = Producer::connect(&server.url()).await.unwrap();

    // Single publishes and a batch of one round trip share the first connection.
    producer.publish(&stream, &0u64).await.unwrap();
    producer.publish_batch(&stream, &(1..=500u64).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(connections(&server), (1, 1), "one connection so far");

    // A batch of more than one round trip opens the bulk connection; later ones reuse it,
    // and what is awaited in turn lands in turn across the two connections.
    producer.publish_batch(&stream, &(501..=1_700u64).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(connections(&server), (2, 2), "the bulk connection");
    producer.publish(&stream, &1_701u64).await.unwrap();
    producer.clone().publish_batch(&stream, &(1_702..=3_000u64).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(connections(&server), (2, 2), "clones share both connections");
    assert_eq!(stored_values(&server.url(), &stream).await, (0..=3_000).collect::<Vec<_>>());

    // Closing closes both (what is left is the history reader's).
    producer.close().await;
    common::wait_until(Duration::from_secs(10), "both connections closed", || async { connections(&server).0 == 0 })
        .await
        .unwrap();
}
