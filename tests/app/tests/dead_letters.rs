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
    producer.publish_batch(&dlq_key, &(0..1_234).collect::<Vec<u64>>()).await.unwrap();
    let dlq = DeadLetters::connect(&server.url(), &dlq_key).await.unwrap();
    assert_eq!(dlq.count().await.unwrap(), 1_234);

    assert_eq!(dlq.purge().await.unwrap(), 1_234);

    assert_eq!(dlq.count().await.unwrap(), 0);
    assert_eq!(redis_cli(&server, &["EXISTS", &dlq_key]).unwrap().trim(), "0", "the stream is deleted");
    assert_eq!(dlq.purge().await.unwrap(), 0, "purging a missing stream removes nothing");
}
