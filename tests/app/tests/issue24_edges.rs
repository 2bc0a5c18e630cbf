//! Edge cases of issue 24's features (delayed messages, idempotency, safe retention), each a
//! defect found after they landed: the test shows the bad case against spawned servers.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{start_runtime, wait_until, Job, TestRedis, Topology};
use streamx::{Capabilities, Consumer, Headers, Message, Producer, PublishOptions, Retention, IDEMPOTENCY_KEY_HEADER};

async fn capabilities(url: &str) -> Capabilities {
    let producer = Producer::connect(url).await.unwrap();
    let caps = Capabilities::detect(&producer.client()).await;
    producer.close().await;
    caps
}

/// The ids of `stream`'s entries, oldest first (read with redis-cli).
fn all_ids(server: &TestRedis, stream: &str) -> Vec<String> {
    let out = server.cli(&["XRANGE", stream, "-", "+"]).unwrap();
    out.lines()
        .map(str::trim)
        .filter(|l| l.split_once('-').is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok()))
        .map(str::to_string)
        .collect()
}

/// On servers with `XTRIM ... ACKED` (Redis 8.2+) the README promises that the trimmer
/// *skips* pending entries and deletes the acknowledged ones around them. A group with more
/// pending entries at the head of the stream than one trim call reads (a stuck consumer, a
/// run of parked retries) must not hold back the acknowledged entries behind them: the
/// stream goes back to about the pending entries plus `max_len`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_acked_trim_gets_past_a_long_run_of_pending_entries() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    if !capabilities(&url).await.xackdel {
        println!("SKIPPED: no XTRIM ... ACKED here (on 7.x the trim stops at the oldest pending entry, as documented)");
        return;
    }
    let stream = "{e24}.held";
    let producer = Producer::connect(&url).await.unwrap();
    let jobs: Vec<Job> = (0..3_000).map(Job::ok).collect();
    producer.publish_batch_with(stream, &jobs, &PublishOptions::new()).await.unwrap();
    // Group `audit`: its consumer `stuck` read everything and acknowledged all but the first
    // 1,200 (more than a trim call's chunk of 1,000).
    server.cli(&["XGROUP", "CREATE", stream, "audit", "0"]).unwrap();
    server.cli(&["XREADGROUP", "GROUP", "audit", "stuck", "COUNT", "3000", "STREAMS", stream, ">"]).unwrap();
    let ids = all_ids(&server, stream);
    assert_eq!(ids.len(), 3_000);
    let mut ack = vec!["XACK", stream, "audit"];
    ack.extend(ids[1_200..].iter().map(String::as_str));
    assert_eq!(server.cli(&ack).unwrap().trim(), "1800");

    let work = Consumer::new(stream, "work", |_: Message<Job>| async {}).retention(Retention::new().max_len(100));
    let runtime = start_runtime(&url, vec![work]).await;
    let stats = runtime.stats(&format!("{stream}/work")).unwrap();
    wait_until(Duration::from_secs(30), "the work group handled everything", || async {
        stats.snapshot().succeeded >= 3_000
    })
    .await
    .unwrap();
    let reached = wait_until(Duration::from_secs(10), "the stream is trimmed past the pending run", || async {
        server.xlen(stream).unwrap() <= 1_300
    })
    .await;
    let left = all_ids(&server, stream);
    println!("XLEN {} with 1,200 pending at the head, max_len 100", left.len());
    reached.unwrap();
    // Nothing pending is gone.
    assert!(ids[..1_200].iter().all(|id| left.contains(id)), "a pending entry was trimmed");
    runtime.shutdown().await.unwrap();
}

/// The README: "The window ends: the key is forgotten; a later duplicate runs". With a
/// window shorter than the half minute a process remembers the keys it recorded itself, a
/// duplicate arriving after the window (Redis has forgotten the key) must run, not be
/// acknowledged unrun from the process's own memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_after_a_short_dedupe_window_runs_again() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = "{e24}.short-window";
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let consumer = Consumer::new(stream, "g", move |_: Message<Job>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {}
    })
    .dedupe(Duration::from_millis(500));
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    let keyed = PublishOptions::new().headers(Headers::new().with(IDEMPOTENCY_KEY_HEADER, "evt-1"));
    producer.publish_with(stream, &Job::ok(1), &keyed).await.unwrap();
    wait_until(Duration::from_secs(10), "the first copy ran", || async { runs.load(Ordering::SeqCst) == 1 })
        .await
        .unwrap();
    // Past the window: the key's score (its window's end) is behind the Redis clock.
    let handled = streamx::keys::handled(stream, "g");
    wait_until(Duration::from_secs(10), "the first copy is recorded", || async { stats.snapshot().ack_batches >= 1 })
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the window ended on the Redis clock", || async {
        let time = server.cli(&["TIME"]).unwrap();
        let mut parts = time.lines().map(|l| l.trim().parse::<u64>().unwrap());
        let now_ms = parts.next().unwrap() * 1000 + parts.next().unwrap() / 1000;
        let end: Option<f64> = server.cli(&["ZSCORE", &handled, "evt-1"]).unwrap().trim().parse().ok();
        // Gone (the set expired) or scored before now.
        end.is_none_or(|end| (end as u64) < now_ms)
    })
    .await
    .unwrap();
    producer.publish_with(stream, &Job::ok(1), &keyed).await.unwrap();
    wait_until(Duration::from_secs(10), "the second copy settled", || async {
        let s = stats.snapshot();
        s.succeeded + s.deduplicated >= 2
    })
    .await
    .unwrap();
    let s = stats.snapshot();
    assert_eq!(
        (runs.load(Ordering::SeqCst), s.deduplicated),
        (2, 0),
        "a duplicate after the 500 ms window ended must run: {s:?}"
    );
    runtime.shutdown().await.unwrap();
}

/// The group's `handled` set is trimmed only by the group's own acknowledgements: once its
/// consumers stop for good (a group retired, renamed, or a dedupe turned off) the set kept
/// every key recorded within the window, forever. It must expire when the last window ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_handled_set_of_a_group_that_stopped_expires_with_its_window() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = "{e24}.retired";
    let consumer = Consumer::new(stream, "g", |_: Message<Job>| async {}).dedupe(Duration::from_secs(1));
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    for n in 0..10 {
        producer.publish(stream, &Job::ok(n)).await.unwrap();
    }
    wait_until(Duration::from_secs(10), "all handled", || async { stats.snapshot().succeeded >= 10 }).await.unwrap();
    runtime.shutdown().await.unwrap();
    let handled = streamx::keys::handled(stream, "g");
    assert_eq!(server.cli(&["ZCARD", &handled]).unwrap().trim(), "10");
    wait_until(Duration::from_secs(10), "the handled set expired after its 1 s window", || async {
        server.cli(&["EXISTS", &handled]).unwrap().trim() == "0"
    })
    .await
    .unwrap();
}
