//! Idempotent consumption (`dedupe`): a message whose key (its `idempotency-key` header, else
//! its id) the group handled successfully within the window is acknowledged without running,
//! on a single server and on a cluster.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_both_topologies, start_runtime, wait_until, Job, TestRedis, Topology};
use streamx::testing::unique_name;
use streamx::{
    Backoff, Consumer, HandlerError, Headers, Inspector, Message, Producer, PublishOptions, IDEMPOTENCY_KEY_HEADER,
};

/// Handler runs, by the message's key (its header, else its id).
type Runs = Arc<Mutex<HashMap<String, u32>>>;

fn key_of(msg: &Message<Job>) -> String {
    msg.headers().get(IDEMPOTENCY_KEY_HEADER).map_or_else(|| msg.id().to_string(), str::to_string)
}

/// A consumer of `stream`/`g`, concurrency 8, whose handler takes a few ms and counts its
/// runs by key.
fn counting(stream: &str, runs: &Runs) -> Consumer {
    let runs = runs.clone();
    Consumer::new(stream.to_string(), "g".to_string(), move |msg: Message<Job>| {
        *runs.lock().unwrap().entry(key_of(&msg)).or_default() += 1;
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<(), HandlerError>(())
        }
    })
    .concurrency(8)
}

async fn pending(url: &str, stream: &str) -> u64 {
    Inspector::connect(url).await.unwrap().group(stream, "g").await.unwrap().map_or(0, |g| g.pending)
}

fn keyed(key: &str) -> PublishOptions {
    PublishOptions::new().headers(Headers::new().with(IDEMPOTENCY_KEY_HEADER, key))
}

/// 500 keys, each published twice as separate entries (plain publishes carrying the header):
/// half of them back to back (both copies in flight together), half a second time after the
/// first was handled. With `dedupe`, 500 handler runs, one per key, and 500 messages
/// acknowledged unrun; the same entries consumed without `dedupe` run 1,000 times.
async fn each_key_runs_once_with_dedupe_and_twice_without(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let run = |dedupe: bool| {
        let (url, producer) = (url.clone(), producer.clone());
        async move {
            let stream = format!("{{pay}}.{}", unique_name("webhooks"));
            let runs: Runs = Arc::default();
            let consumer = counting(&stream, &runs);
            let consumer = if dedupe { consumer.dedupe(Duration::from_secs(24 * 3600)) } else { consumer };
            let runtime = start_runtime(&url, vec![consumer]).await;
            let stats = runtime.stats(&format!("{stream}/g")).unwrap();
            for n in 0..250u64 {
                for _ in 0..2 {
                    producer.publish_with(&stream, &Job::ok(n), &keyed(&format!("evt-{n}"))).await.unwrap();
                }
            }
            for n in 250..500u64 {
                producer.publish_with(&stream, &Job::ok(n), &keyed(&format!("evt-{n}"))).await.unwrap();
            }
            wait_until(Duration::from_secs(30), "the first 750 entries settled", || async {
                let s = stats.snapshot();
                s.succeeded + s.deduplicated >= 750
            })
            .await
            .unwrap();
            for n in 250..500u64 {
                producer.publish_with(&stream, &Job::ok(n), &keyed(&format!("evt-{n}"))).await.unwrap();
            }
            wait_until(Duration::from_secs(30), "all 1,000 entries settled", || async {
                let s = stats.snapshot();
                s.succeeded + s.deduplicated >= 1000 && pending(&url, &stream).await == 0
            })
            .await
            .unwrap();
            runtime.shutdown().await.unwrap();
            let runs = runs.lock().unwrap().clone();
            (runs, stats.snapshot())
        }
    };

    let (runs, stats) = run(true).await;
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "keys not run exactly once: {twice:?}");
    assert_eq!(runs.len(), 500);
    assert_eq!((stats.succeeded, stats.deduplicated), (500, 500), "{stats:?}");

    let (runs, stats) = run(false).await;
    assert_eq!(runs.values().sum::<u32>(), 1000, "without dedupe every entry runs");
    assert!(runs.values().all(|n| *n == 2));
    assert_eq!((stats.succeeded, stats.deduplicated), (1000, 0));
}

/// A failed run records nothing: its duplicate in flight (waiting for the outcome) runs, and
/// once that succeeded the failed one's retry is acknowledged unrun. A message that fails
/// alone runs again on its retry.
async fn a_failed_run_lets_the_duplicate_run(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("fails");
    let runs: Runs = Arc::default();
    let failed_once: Arc<Mutex<Vec<String>>> = Arc::default();
    let consumer = {
        let (runs, failed_once) = (runs.clone(), failed_once.clone());
        Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Job>| {
            let key = key_of(&msg);
            *runs.lock().unwrap().entry(key.clone()).or_default() += 1;
            let fail = {
                let mut failed = failed_once.lock().unwrap();
                let first = !failed.contains(&key);
                failed.push(key);
                first
            };
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if fail {
                    Err(HandlerError::from("the first run of each key fails"))
                } else {
                    Ok(())
                }
            }
        })
        .concurrency(8)
        .backoff(Backoff::new(Duration::from_millis(300), 2.0, Duration::from_secs(1)))
        .dedupe(Duration::from_secs(60))
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    // Two copies of `pair` together, and `alone` once.
    producer.publish_with(&stream, &Job::ok(1), &keyed("pair")).await.unwrap();
    producer.publish_with(&stream, &Job::ok(2), &keyed("pair")).await.unwrap();
    producer.publish_with(&stream, &Job::ok(3), &keyed("alone")).await.unwrap();
    wait_until(Duration::from_secs(20), "everything settled", || async {
        let s = stats.snapshot();
        s.succeeded >= 2 && s.deduplicated >= 1 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.get("pair"), Some(&2), "the failed first run, then its duplicate");
    assert_eq!(runs.get("alone"), Some(&2), "a failure alone is retried and runs");
    let s = stats.snapshot();
    assert_eq!((s.succeeded, s.retried, s.deduplicated, s.dead_lettered), (2, 2, 1, 0), "{s:?}");
}

/// Entries without the header are known by their id: after the group is set back to the
/// start (`XGROUP SETID ... 0`, as an operator replaying would), every entry is delivered
/// again and acknowledged without running. The ids are in the group's `handled` set.
async fn entries_without_the_header_dedupe_by_id(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("byid");
    let runs: Runs = Arc::default();
    let runtime = start_runtime(&url, vec![counting(&stream, &runs).dedupe(Duration::from_secs(3600))]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    let ids = producer.publish_batch(&stream, &(0..20).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(20), "20 handled", || async { stats.snapshot().succeeded >= 20 }).await.unwrap();
    wait_until(Duration::from_secs(10), "nothing pending", || async { pending(&url, &stream).await == 0 })
        .await
        .unwrap();
    let handled = streamx::keys::handled(&stream, "g");
    for id in &ids {
        assert_ne!(server.cli(&["ZSCORE", &handled, &id.to_string()]).unwrap().trim(), "", "{id} recorded");
    }
    server.cli(&["XGROUP", "SETID", &stream, "g", "0"]).unwrap();
    wait_until(Duration::from_secs(20), "all 20 delivered again and acknowledged unrun", || async {
        stats.snapshot().deduplicated >= 20 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 20);
    assert!(runs.values().all(|n| *n == 1), "each id ran once: {runs:?}");
    assert_eq!(stats.snapshot().succeeded, 20);
}

on_both_topologies!(
    each_key_runs_once_with_dedupe_and_twice_without,
    a_failed_run_lets_the_duplicate_run,
    entries_without_the_header_dedupe_by_id
);
