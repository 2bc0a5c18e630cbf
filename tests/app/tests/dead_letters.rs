//! The dead-letter operator API against a real server.

#![allow(clippy::unwrap_used)]

mod common;

use common::{redis_cli, start_server};
use streamx::testing::unique_name;
use streamx::{DeadLetters, Producer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_returns_exactly_how_many_letters_it_deleted() {
    let server = start_server();
    let dlq_key = format!("{{{}}}:dlq", unique_name("purge"));
    let producer = Producer::connect(&server.url()).await.unwrap();
    // Letter-shaped entries: a purge only deletes a dead-letter stream.
    redis_cli(&server, &["XADD", &dlq_key, "*", "dlq:stream", "orders", "data", "0"]).unwrap();
    producer.publish_batch(&dlq_key, &(1..1_234).collect::<Vec<u64>>()).await.unwrap();
    let dlq = DeadLetters::connect(&server.url(), &dlq_key).await.unwrap();
    assert_eq!(dlq.count().await.unwrap(), 1_234);

    assert_eq!(dlq.purge().await.unwrap(), 1_234);

    assert_eq!(dlq.count().await.unwrap(), 0);
    assert_eq!(redis_cli(&server, &["EXISTS", &dlq_key]).unwrap().trim(), "0", "the stream is deleted");
    assert_eq!(dlq.purge().await.unwrap(), 0, "purging a missing stream removes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_refuses_a_stream_that_is_not_a_dead_letter_stream() {
    let server = start_server();
    let stream = unique_name("live");
    let producer = Producer::connect(&server.url()).await.unwrap();
    producer.publish_batch(&stream, &(0..10).collect::<Vec<u64>>()).await.unwrap();
    // A live stream named as a custom dead-letter stream by mistake.
    let dlq = DeadLetters::connect(&server.url(), &stream).await.unwrap();

    let refused = dlq.purge().await.unwrap_err().to_string();

    assert!(refused.contains("not a dead-letter stream"), "{refused}");
    assert_eq!(redis_cli(&server, &["XLEN", &stream]).unwrap().trim(), "10", "the stream is untouched");
}
