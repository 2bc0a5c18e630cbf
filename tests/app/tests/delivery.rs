//! Delivery through consumer groups, in one process: exact accounting of ids.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{on_both_topologies, start_error, start_runtime, wait_until, Job, TestRedis, Topology};
use futures_util::TryStreamExt;
use streamx::testing::unique_name;
use streamx::{Consumer, Error, HandlerError, History, Inspector, Message, MessageId, Producer, Runtime, StartFrom};
use tokio::sync::oneshot;

type Seen = Arc<Mutex<Vec<(MessageId, u32)>>>;

/// A consumer that records every id it handles.
fn recorder(stream: &str, group: &str) -> (Consumer, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = Consumer::new(stream.to_string(), group.to_string(), move |msg: Message<Job>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push((msg.id(), msg.attempt()));
            Ok::<(), HandlerError>(())
        }
    });
    (consumer, seen)
}

fn len(seen: &Seen) -> usize {
    seen.lock().unwrap().len()
}

async fn ten_thousand_messages_are_each_handled_exactly_once(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let stream = unique_name("orders");
    let producer = Producer::connect(&server.url()).await.unwrap();
    let jobs: Vec<Job> = (0..10_000).map(Job::ok).collect();
    let published = producer.publish_batch(&stream, &jobs).await.unwrap();
    assert_eq!(published.len(), 10_000);

    let (consumer, seen) = recorder(&stream, "billing");
    let runtime = start_runtime(server.url(), vec![consumer.concurrency(8)]).await;
    wait_until(Duration::from_secs(60), "10,000 handled", || async { len(&seen) >= 10_000 }).await.unwrap();
    runtime.shutdown().await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 10_000, "no message handled twice");
    let handled: HashSet<MessageId> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(handled, published.iter().copied().collect::<HashSet<_>>());
    assert!(seen.iter().all(|(_, attempt)| *attempt == 1));
    let group = Inspector::connect(&server.url()).await.unwrap().group(&stream, "billing").await.unwrap().unwrap();
    assert_eq!(group.pending, 0, "everything acknowledged");
    assert_eq!(group.lag, Some(0));
}

async fn two_groups_on_one_stream_each_see_every_message(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let stream = unique_name("events");
    let producer = Producer::connect(&server.url()).await.unwrap();
    let published: HashSet<_> = producer
        .publish_batch(&stream, &(0..500).map(Job::ok).collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .collect();

    let (billing, billing_seen) = recorder(&stream, "billing");
    let (audit, audit_seen) = recorder(&stream, "audit");
    let runtime = Runtime::builder()
        .redis_url(server.url())
        .registered_consumers(false)
        .consumer(billing.concurrency(4))
        .consumer(audit)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "both groups done", || async {
        len(&billing_seen) >= 500 && len(&audit_seen) >= 500
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    for seen in [billing_seen, audit_seen] {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 500);
        assert_eq!(seen.iter().map(|(id, _)| *id).collect::<HashSet<_>>(), published);
    }
}

async fn start_decides_where_a_new_group_begins(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let stream = unique_name("start");
    let producer = Producer::connect(&server.url()).await.unwrap();
    let before = producer.publish_batch(&stream, &(0..5).map(Job::ok).collect::<Vec<_>>()).await.unwrap();

    let (from_begin, begin_seen) = recorder(&stream, "from-begin");
    let (from_new, new_seen) = recorder(&stream, "from-new");
    let (from_id, id_seen) = recorder(&stream, "from-id");
    let id_text: &'static str = Box::leak(before[2].to_string().into_boxed_str());
    let runtime = Runtime::builder()
        .redis_url(server.url())
        .registered_consumers(false)
        .consumer(from_begin.start(StartFrom::Beginning))
        .consumer(from_new.start(StartFrom::New))
        .consumer(from_id.start(StartFrom::Id(id_text)))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let after = producer.publish_batch(&stream, &(5..8).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(20), "all three groups caught up", || async {
        len(&begin_seen) >= 8 && len(&new_seen) >= 3 && len(&id_seen) >= 5
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();

    let ids = |seen: &Seen| seen.lock().unwrap().iter().map(|(id, _)| *id).collect::<Vec<_>>();
    let all: Vec<_> = before.iter().chain(after.iter()).copied().collect();
    assert_eq!(ids(&begin_seen).into_iter().collect::<HashSet<_>>(), all.iter().copied().collect());
    assert_eq!(ids(&new_seen).into_iter().collect::<HashSet<_>>(), after.iter().copied().collect());
    assert_eq!(ids(&id_seen).into_iter().collect::<HashSet<_>>(), all[3..].iter().copied().collect());
}

async fn history_reads_ranges_page_by_page(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let stream = unique_name("history");
    let producer = Producer::connect(&server.url()).await.unwrap();
    let ids = producer.publish_batch(&stream, &(0..100).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    let history = History::connect(&server.url()).await.unwrap();

    let all: Vec<Message<Job>> = history.read_paged(&stream, .., 7).try_collect().await.unwrap();
    assert_eq!(all.iter().map(|m| m.id()).collect::<Vec<_>>(), ids);
    assert_eq!(all.iter().map(|m| m.payload().n).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());

    let inclusive: Vec<Message<Job>> = history.read_paged(&stream, ids[10]..=ids[29], 7).try_collect().await.unwrap();
    assert_eq!(inclusive.iter().map(|m| m.id()).collect::<Vec<_>>(), ids[10..=29]);

    let half_open: Vec<Message<Job>> = history.read(&stream, ids[90]..ids[95]).try_collect().await.unwrap();
    assert_eq!(half_open.iter().map(|m| m.id()).collect::<Vec<_>>(), ids[90..95]);

    let after: Vec<Message<Job>> = history
        .read(&stream, (std::ops::Bound::Excluded(ids[97]), std::ops::Bound::Unbounded))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(after.iter().map(|m| m.id()).collect::<Vec<_>>(), ids[98..]);

    let missing: Vec<Message<Job>> = history.read(&unique_name("nothing"), ..).try_collect().await.unwrap();
    assert!(missing.is_empty());
}

async fn entries_written_by_hand_are_consumed_and_ours_read_by_hand(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let stream = unique_name("interop");
    // Another language (here redis-cli) writes the documented wire format.
    let id = server.cli(&["XADD", &stream, "*", "data", r#"{"n":1,"action":"ok"}"#, "h:source", "cli"]).unwrap();
    type SeenWithSource = Arc<Mutex<Vec<(MessageId, u64, Option<String>)>>>;
    let seen: SeenWithSource = Arc::default();
    let s = seen.clone();
    let consumer = Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Job>| {
        let s = s.clone();
        async move {
            let source = msg.headers().get("source").map(str::to_string);
            s.lock().unwrap().push((msg.id(), msg.payload().n, source));
        }
    });
    let runtime = start_runtime(server.url(), vec![consumer]).await;
    wait_until(Duration::from_secs(10), "hand-written entry handled", || async { !seen.lock().unwrap().is_empty() })
        .await
        .unwrap();
    runtime.shutdown().await.unwrap();
    let got = seen.lock().unwrap().clone();
    assert_eq!(got, vec![(id.trim().parse().unwrap(), 1, Some("cli".to_string()))]);

    // What streamx writes is plain fields anyone can read.
    let producer = Producer::connect(&server.url()).await.unwrap();
    let id = producer
        .publish_with(
            &stream,
            &Job::ok(7),
            &streamx::PublishOptions::new().headers(streamx::Headers::new().with("k", "v")),
        )
        .await
        .unwrap();
    let raw = server.cli(&["XRANGE", &stream, &id.to_string(), &id.to_string()]).unwrap();
    let lines: Vec<&str> = raw.lines().collect();
    assert_eq!(lines, vec![id.to_string().as_str(), "data", r#"{"n":7,"action":"ok"}"#, "h:k", "v"]);
}

/// Runs `consumer` (of `stream`, group `g`) until `done` counts `n` handled, shuts it down,
/// and returns the most messages it held at once (fetched and not yet handled).
async fn most_held_until_handled(url: &str, consumer: Consumer, stream: &str, done: &AtomicUsize, n: usize) -> u64 {
    let runtime = start_runtime(url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).expect("stats of the consumer");
    let mut max_held = 0;
    wait_until(Duration::from_secs(60), &format!("{n} handled"), || {
        let held = streamx::ConsumerStats::get(&stats.delivered) - streamx::ConsumerStats::get(&stats.succeeded);
        max_held = max_held.max(held);
        async move { done.load(Ordering::SeqCst) >= n }
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    max_held
}

async fn concurrency_is_a_hard_bound(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let stream = unique_name("bound");
    let producer = Producer::connect(&server.url()).await.unwrap();
    producer.publish_batch(&stream, &(0..300).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (r, m, d) = (running.clone(), max_seen.clone(), done.clone());
    let consumer = Consumer::new(stream.clone(), "g".to_string(), move |_msg: Message<Job>| {
        let (r, m, d) = (r.clone(), m.clone(), d.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(3)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            d.fetch_add(1, Ordering::SeqCst);
        }
    })
    .concurrency(5)
    .batch_size(50);
    // Messages held in memory (fetched, not yet finished) stay within concurrency + two
    // batches, however deep the backlog.
    let max_held = most_held_until_handled(&server.url(), consumer, &stream, &done, 300).await;
    assert_eq!(max_seen.load(Ordering::SeqCst), 5, "never more than 5 at once, and the bound is reached");
    assert!(max_held > 5 && max_held <= 5 + 2 * 50, "held at most {max_held} messages");
}

/// With the default batch size, reads grow while handlers keep up and stay at the loop's
/// share of `8 x concurrency` when they do not: quick handlers drain a backlog in a few
/// large reads, slow ones never hold more than two shares per read loop (others in the
/// group could be running those entries).
/// An explicit `batch_size` is the COUNT of each read of each read loop, not a batch the
/// loops share (issue 26: 8 loops sharing 100 read ~12 entries per XREADGROUP); the memory
/// bound is restated in its terms: `concurrency + 2 × readers × batch_size`.
async fn an_explicit_batch_size_is_each_reads_count(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let producer = Producer::connect(&server.url()).await.unwrap();
    let stream = unique_name("count");
    producer.publish_batch(&stream, &(0..20_000).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    let reads_before = server.calls_served("xreadgroup").unwrap();
    let (consumer, seen) = recorder(&stream, "g");
    let runtime = start_runtime(server.url(), vec![consumer.concurrency(8).readers(8).batch_size(100)]).await;
    wait_until(Duration::from_secs(60), "20,000 handled", || async { len(&seen) >= 20_000 }).await.unwrap();
    runtime.shutdown().await.unwrap();
    let reads = server.calls_served("xreadgroup").unwrap() - reads_before;
    // 200 reads of 100, plus the reads that came back short at the end and the blocking
    // ones; a shared batch (13 per read) would take more than 1,500.
    assert!((200..400).contains(&reads), "{reads} reads of 20,000 entries at COUNT 100");

    // Slow handlers: never more than concurrency + 2 reads of 100 per loop held.
    let slow = unique_name("slow-count");
    producer.publish_batch(&slow, &(0..3_000).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let consumer = Consumer::new(slow.clone(), "g".to_string(), move |_msg: Message<Job>| {
        let d = d.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            d.fetch_add(1, Ordering::SeqCst);
        }
    })
    .concurrency(8)
    .readers(2)
    .batch_size(100);
    let max_held = most_held_until_handled(&server.url(), consumer, &slow, &done, 3_000).await;
    assert!(max_held > 100 && max_held <= 8 + 2 * 2 * 100, "held at most {max_held} messages");
}

async fn reads_grow_only_while_handlers_keep_up(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let producer = Producer::connect(&server.url()).await.unwrap();
    // Quick handlers, concurrency 8: 4 loops, each starting at 32 entries per read.
    let quick = unique_name("quick");
    producer.publish_batch(&quick, &(0..20_000).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    let reads_before = server.calls_served("xreadgroup").unwrap();
    let (consumer, seen) = recorder(&quick, "g");
    let runtime = start_runtime(server.url(), vec![consumer.concurrency(8)]).await;
    wait_until(Duration::from_secs(60), "20,000 handled", || async { len(&seen) >= 20_000 }).await.unwrap();
    runtime.shutdown().await.unwrap();
    let reads = server.calls_served("xreadgroup").unwrap() - reads_before;
    // Fixed reads of 32 would take at least 625 (20,000 / 32); growing to 512 takes about
    // 40 plus the ramp of each loop and the blocking reads at the end.
    assert!(reads < 200, "{reads} reads for 20,000 quick messages");

    // Slow handlers, same concurrency: never more than 4 loops x 2 reads x 32 held.
    let slow = unique_name("slow");
    producer.publish_batch(&slow, &(0..1_000).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let consumer = Consumer::new(slow.clone(), "g".to_string(), move |_msg: Message<Job>| {
        let d = d.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            d.fetch_add(1, Ordering::SeqCst);
        }
    })
    .concurrency(8);
    let max_held = most_held_until_handled(&server.url(), consumer, &slow, &done, 1_000).await;
    assert!(max_held > 8 && max_held <= 4 * 2 * 32, "held at most {max_held} messages");
}

/// Large entries: what is fetched and not finished stays within the byte budget (not two
/// batches of entries, whatever they weigh), and everything is still handled exactly once.
async fn large_entries_stay_within_the_byte_budget(topology: Topology) {
    const ENTRY: usize = 256 * 1024;
    const BUDGET: usize = 8 * 1024 * 1024;
    let server = TestRedis::start(topology).unwrap();
    let stream = unique_name("large");
    let producer = Producer::connect(&server.url()).await.unwrap();
    let blob = "x".repeat(ENTRY);
    let big: Vec<serde_json::Value> = (0..200).map(|n| serde_json::json!({ "n": n, "blob": blob })).collect();
    producer.publish_batch(&stream, &big).await.unwrap();

    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<serde_json::Value>| {
        let (s, mut gate) = (s.clone(), gate_rx.clone());
        async move {
            let _ = gate.wait_for(|open| *open).await;
            s.lock().unwrap().push((msg.id(), msg.attempt()));
            Ok::<(), HandlerError>(())
        }
    })
    .concurrency(4)
    .max_buffered_bytes(BUDGET);
    let runtime = start_runtime(server.url(), vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).expect("stats of the consumer");
    let delivered = || streamx::ConsumerStats::get(&stats.delivered) as usize;
    // All four handlers are held at the gate; the reader keeps fetching while the budget
    // has room, then must stop. Without a byte budget it fetches two batches of 512: all
    // 200.
    wait_until(Duration::from_secs(30), "the budget filled", || async { delivered() >= BUDGET / (ENTRY + 1024) })
        .await
        .unwrap();
    let watch_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < watch_until {
        assert!(
            delivered() <= BUDGET / ENTRY,
            "fetched {} entries of {ENTRY} bytes with a budget of {BUDGET}",
            delivered()
        );
        tokio::task::yield_now().await;
    }
    gate_tx.send(true).unwrap();
    wait_until(Duration::from_secs(60), "200 handled", || async { len(&seen) >= 200 }).await.unwrap();
    runtime.shutdown().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 200, "no message handled twice");
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<HashSet<_>>().len(), 200);
}

async fn shutdown_is_prompt_and_lets_running_handlers_finish(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let stream = unique_name("shutdown");
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (s, f) = (started.clone(), finished.clone());
    let consumer = Consumer::new(stream.clone(), "g".to_string(), move |_msg: Message<Job>| {
        let (s, f) = (s.clone(), f.clone());
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            f.fetch_add(1, Ordering::SeqCst);
        }
    })
    .concurrency(2)
    .block(Duration::from_secs(5));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let runtime =
        Runtime::builder().redis_url(server.url()).registered_consumers(false).consumer(consumer).build().unwrap();
    let task = tokio::spawn(runtime.run_until(async move {
        let _ = stop_rx.await;
    }));
    let producer = Producer::connect(&server.url()).await.unwrap();
    producer.publish_batch(&stream, &(0..2).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(10), "both handlers started", || async { started.load(Ordering::SeqCst) == 2 })
        .await
        .unwrap();
    let t0 = Instant::now();
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    let took = t0.elapsed();
    assert_eq!(finished.load(Ordering::SeqCst), 2, "in-flight handlers ran to completion");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}: it must not wait out the 5 s BLOCK");
    let group = Inspector::connect(&server.url()).await.unwrap().group(&stream, "g").await.unwrap().unwrap();
    assert_eq!(group.pending, 0, "finished handlers were acknowledged before exit");

    // An idle runtime (blocked in XREADGROUP with nothing to read) stops promptly too.
    let runtime =
        start_runtime(server.url(), vec![recorder(&unique_name("idle"), "g").0.block(Duration::from_secs(5))]).await;
    wait_until(Duration::from_secs(10), "the reader blocked in XREADGROUP", || async {
        server.blocked_in("xreadgroup").unwrap() >= 1
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    runtime.shutdown().await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "idle shutdown took {:?}", t0.elapsed());
}

#[tokio::test]
async fn duplicate_names_are_a_startup_error_naming_both_places() {
    let (a, _) = recorder("s", "g");
    let (b, _) = recorder("s", "g");
    let err = Runtime::builder()
        .redis_url("redis://127.0.0.1:1")
        .registered_consumers(false)
        .consumer(a)
        .consumer(b)
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::DuplicateConsumer { .. }), "{text}");
    assert_eq!(text.matches("delivery.rs:").count(), 2, "{text}");
}

#[tokio::test]
async fn unreachable_redis_is_a_clear_error_without_the_password() {
    let (consumer, _) = recorder("s", "g");
    let err = start_error("redis://app:hunter2@127.0.0.1:1", consumer).await;
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(text.contains("redis://app:***@127.0.0.1:1"), "{text}");
    assert!(!format!("{text} {err:?}").contains("hunter2"), "{text}");
}

on_both_topologies!(
    ten_thousand_messages_are_each_handled_exactly_once,
    two_groups_on_one_stream_each_see_every_message,
    start_decides_where_a_new_group_begins,
    history_reads_ranges_page_by_page,
    entries_written_by_hand_are_consumed_and_ours_read_by_hand,
    concurrency_is_a_hard_bound,
    reads_grow_only_while_handlers_keep_up,
    an_explicit_batch_size_is_each_reads_count,
    large_entries_stay_within_the_byte_budget,
    shutdown_is_prompt_and_lets_running_handlers_finish,
);
