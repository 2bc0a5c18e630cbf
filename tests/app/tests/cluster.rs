//! Redis Cluster topology changes while producers and consumers run: master failover with
//! durable publishes, and slot migration (resharding).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start_runtime, start_server, wait_until, Job};
use streamx::testing::{key_slot, unique_name, RedisCluster};
use streamx::{Consumer, Error, Inspector, Message, Producer, PublishOptions, RunningRuntime};

type Seen = Arc<Mutex<HashMap<u64, usize>>>;

async fn counting_consumer(url: &str, stream: &str) -> (RunningRuntime, Seen) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = Consumer::new(stream.to_string(), "g".to_string(), move |msg: Message<Job>| {
        let s = s.clone();
        async move {
            *s.lock().unwrap().entry(msg.payload().n).or_insert(0) += 1;
        }
    })
    .concurrency(8)
    .claim_idle(Duration::from_secs(2));
    let runtime = start_runtime(url, vec![consumer]).await;
    (runtime, seen)
}

/// Publishes jobs `from..to` in batches of 50, retrying a failed batch until it is
/// acknowledged (at most `max_failures` failures in all); returns the failures.
async fn publish_all(
    producer: &Producer,
    stream: &str,
    from: u64,
    to: u64,
    options: &PublishOptions,
    acked: &mut HashSet<u64>,
) -> usize {
    let mut failures = 0;
    let mut n = from;
    while n < to {
        let batch: Vec<Job> = (n..n + 50).map(Job::ok).collect();
        match producer.publish_batch_with(stream, &batch, options).await {
            Ok(_) => {
                acked.extend(n..n + 50);
                n += 50;
            }
            Err(e) => {
                failures += 1;
                assert!(failures < 400, "the producer never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_publishes_survive_a_master_failover() {
    let cluster = RedisCluster::start(3, 1).unwrap();
    let url = cluster.url();
    let stream = unique_name("failover");
    let slot = key_slot(&stream);
    let (runtime, seen) = counting_consumer(&url, &stream).await;
    let producer = Producer::connect(&url).await.unwrap();
    let durable = PublishOptions::new().durable(1, Duration::from_millis(500));

    let mut acked = HashSet::new();
    publish_all(&producer, &stream, 0, 1000, &durable, &mut acked).await;
    let cluster = Arc::new(Mutex::new(cluster));
    let c = cluster.clone();
    let s = stream.clone();
    let failover = tokio::task::spawn_blocking(move || {
        let mut cluster = c.lock().unwrap();
        let old = cluster.kill_master_of(&s).unwrap();
        let new = cluster.wait_for_failover(slot).unwrap();
        // The promoted replica has no replica of its own until the old master comes back
        // (as its replica): durable publishes fail until then, as they must.
        cluster.node(old).restart().unwrap();
        cluster.wait_until_healthy().unwrap();
        (old, new)
    });
    // Keep publishing through the failover until the old master is back as a replica.
    let mut failures = 0;
    let mut next = 1000;
    while !failover.is_finished() {
        failures += publish_all(&producer, &stream, next, next + 50, &durable, &mut acked).await;
        next += 50;
    }
    let (old, new) = failover.await.unwrap();
    failures += publish_all(&producer, &stream, next, next + 500, &durable, &mut acked).await;
    assert_ne!(old, new);

    wait_until(Duration::from_secs(90), "every durably acknowledged publish handled", || async {
        let seen = seen.lock().unwrap();
        acked.iter().all(|n| seen.contains_key(n))
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let group = Inspector::connect(&url).await.unwrap().group(&stream, "g").await.unwrap().unwrap();
    assert_eq!(group.pending, 0);
    eprintln!(
        "failover: master {old} killed, replica {new} promoted; {} durable publishes acknowledged and handled ({} handled twice), {failures} publish attempts failed during the failover",
        acked.len(),
        seen.lock().unwrap().values().filter(|n| **n > 1).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_streams_slot_to_another_master_loses_nothing() {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let url = cluster.url();
    let stream = unique_name("reshard");
    let slot = key_slot(&stream);
    let from = cluster.master_for_slot(slot).unwrap();
    let to = cluster.masters().unwrap().into_iter().find(|m| *m != from).unwrap();
    let (runtime, seen) = counting_consumer(&url, &stream).await;
    let producer = Producer::connect(&url).await.unwrap();
    let plain = PublishOptions::new();

    let mut acked = HashSet::new();
    publish_all(&producer, &stream, 0, 1000, &plain, &mut acked).await;
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    let migrating = tokio::task::spawn_blocking(move || c.migrate_slot(slot, to));
    let failures = publish_all(&producer, &stream, 1000, 2000, &plain, &mut acked).await;
    migrating.await.unwrap().unwrap();
    assert_eq!(cluster.master_for_slot(slot).unwrap(), to);
    publish_all(&producer, &stream, 2000, 2500, &plain, &mut acked).await;

    wait_until(Duration::from_secs(60), "every acknowledged publish handled", || async {
        let seen = seen.lock().unwrap();
        acked.iter().all(|n| seen.contains_key(n))
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    assert_eq!(acked.len(), 2500);
    let group = Inspector::connect(&url).await.unwrap().group(&stream, "g").await.unwrap().unwrap();
    assert_eq!(group.pending, 0);
    eprintln!("resharding: slot {slot} moved from node {from} to node {to}; 2500 publishes handled, {failures} failed attempts during the move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_publish_without_enough_replicas_is_an_error() {
    let server = start_server();
    let producer = Producer::connect(&server.url()).await.unwrap();
    let err = producer
        .publish_with("orders", &Job::ok(1), &PublishOptions::new().durable(1, Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotReplicated { wanted: 1, acked: 0, .. }), "{err}");
    assert!(err.to_string().contains("reached 0 replica(s) of the 1 required"), "{err}");
}
