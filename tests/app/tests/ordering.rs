//! Per-key ordering (`ordered = true`): messages of one key run one at a time, in stream
//! order, through retries, dead letters, a hot key and a stop mid-run; different keys run in
//! parallel.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{on_both_topologies, start_runtime, start_runtime_with, wait_until, TestRedis, Topology};
use serde::{Deserialize, Serialize};
use streamx::testing::unique_name;
use streamx::{Backoff, Consumer, HandlerError, Inspector, Message, Producer, PublishOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    key: String,
    seq: u64,
    /// Bytes of padding (the hot-key test's ~1 KiB messages).
    #[serde(default)]
    pad: String,
}

fn key_of(msg: &Message<Item>) -> String {
    msg.key().unwrap_or_default().to_string()
}

fn keyed(key: &str) -> PublishOptions {
    PublishOptions::new().key(key)
}

/// A stable pseudo-random number from a key and a sequence number (FNV-1a).
fn noise(key: &str, seq: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(seq.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One handler run: key, sequence number, attempt, outcome, when it ended.
type Event = (String, u64, u32, &'static str, Instant);

/// What the handlers saw: per key the sequence numbers of successful runs, in order; every
/// run (success or not) as an event; overlapping runs of one key.
#[derive(Default)]
struct Log {
    handled: Mutex<HashMap<String, Vec<u64>>>,
    events: Mutex<Vec<Event>>,
    running: Mutex<HashSet<String>>,
    overlaps: AtomicU64,
    failed_once: Mutex<HashSet<(String, u64)>>,
}

/// A run of a key, ended when dropped (also when the run is cancelled).
struct Running(Arc<Log>, String);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.lock().unwrap().remove(&self.1);
    }
}

impl Log {
    /// Marks a run of `key` started until the guard drops; counts an overlap if one was
    /// running.
    fn enter(self: &Arc<Self>, key: &str) -> Running {
        if !self.running.lock().unwrap().insert(key.to_string()) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        Running(self.clone(), key.to_string())
    }

    fn succeeded(&self, key: &str, seq: u64) {
        self.handled.lock().unwrap().entry(key.to_string()).or_default().push(seq);
    }

    fn event(&self, key: &str, seq: u64, attempt: u32, what: &'static str) {
        self.events.lock().unwrap().push((key.to_string(), seq, attempt, what, Instant::now()));
    }

    fn total(&self) -> usize {
        self.handled.lock().unwrap().values().map(Vec::len).sum()
    }
}

/// How a test's handler treats one message.
#[derive(Clone, Copy)]
struct Behaviour {
    /// Random delays of 0..=max_delay_ms.
    max_delay_ms: u64,
    /// Out of 100, how many messages fail once.
    fail_percent: u64,
}

fn ordered_consumer(stream: &str, log: &Arc<Log>, behaviour: Behaviour) -> Consumer {
    let log = log.clone();
    Consumer::new(stream.to_string(), "g".to_string(), move |msg: Message<Item>| {
        let log = log.clone();
        let key = key_of(&msg);
        let (seq, attempt) = (msg.payload().seq, msg.attempt());
        async move {
            let running = log.enter(&key);
            let r = noise(&key, seq);
            let delay = if behaviour.max_delay_ms == 0 { 0 } else { r % (behaviour.max_delay_ms + 1) };
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            } else {
                tokio::task::yield_now().await;
            }
            let fail =
                (r >> 32) % 100 < behaviour.fail_percent && log.failed_once.lock().unwrap().insert((key.clone(), seq));
            log.event(&key, seq, attempt, if fail { "failed" } else { "ok" });
            if !fail {
                log.succeeded(&key, seq);
            }
            drop(running);
            if fail {
                Err(HandlerError::from("fails once on purpose"))
            } else {
                Ok(())
            }
        }
    })
    .ordered(true)
    .backoff(Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(100)))
    .max_retries(3)
}

async fn pending(url: &str, stream: &str) -> u64 {
    Inspector::connect(url).await.unwrap().group(stream, "g").await.unwrap().map_or(0, |g| g.pending)
}

/// Publishes `keys` × `per_key` messages, interleaved (every key's sequence in order: one
/// task per key, publishing its own in sequence).
async fn publish_interleaved(producer: &Producer, stream: &str, keys: usize, per_key: u64) {
    let mut tasks = Vec::new();
    for k in 0..keys {
        let (producer, stream) = (producer.clone(), stream.to_string());
        tasks.push(tokio::spawn(async move {
            let key = format!("k{k}");
            for seq in 0..per_key {
                let item = Item { key: key.clone(), seq, pad: String::new() };
                producer.publish_keyed(&stream, &key, &item).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// For every key: the successful runs in order are exactly 0..per_key (strictly increasing,
/// no gap, none twice).
fn assert_in_order(log: &Log, keys: usize, per_key: u64) {
    let handled = log.handled.lock().unwrap();
    assert_eq!(handled.len(), keys, "every key handled");
    for (key, seqs) in handled.iter() {
        let expected: Vec<u64> = (0..per_key).collect();
        assert_eq!(seqs, &expected, "key {key}: handled out of order, twice or not at all");
    }
}

/// 200 keys × 100 sequence numbers interleaved in one stream, concurrency 32, random handler
/// delays (0–3 ms), ~5% of the messages failing once (10 ms backoff): every key's successful
/// runs are 0..100 in order, each once, and no two runs of a key ever overlapped; keys ran
/// in parallel.
async fn every_key_runs_in_order_with_retries(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("ordered");
    let log = Arc::new(Log::default());
    let consumer = ordered_consumer(&stream, &log, Behaviour { max_delay_ms: 3, fail_percent: 5 }).concurrency(32);
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    publish_interleaved(&producer, &stream, 200, 100).await;
    wait_until(Duration::from_secs(120), "all 20,000 handled and acknowledged", || async {
        log.total() >= 20_000 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    assert_in_order(&log, 200, 100);
    assert_eq!(log.overlaps.load(Ordering::SeqCst), 0, "two runs of one key overlapped");
    let failed = log.failed_once.lock().unwrap().len() as u64;
    assert!(failed > 500, "about 5% failed once: {failed}");
    let s = stats.snapshot();
    assert_eq!((s.succeeded, s.retried, s.dead_lettered), (20_000, failed, 0), "{s:?}");
}

/// A message that fails on every delivery holds its key back through its retries, then is
/// dead-lettered, which releases the key: the later messages of the key run, after it, in
/// order; another key is never held back.
async fn a_dead_letter_releases_its_key(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("ordered.dlq");
    let log = Arc::new(Log::default());
    let consumer = {
        let log = log.clone();
        Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Item>| {
            let log = log.clone();
            let (key, seq, attempt) = (key_of(&msg), msg.payload().seq, msg.attempt());
            async move {
                let running = log.enter(&key);
                tokio::time::sleep(Duration::from_millis(1)).await;
                let fail = key == "poisoned" && seq == 1;
                log.event(&key, seq, attempt, if fail { "failed" } else { "ok" });
                if !fail {
                    log.succeeded(&key, seq);
                }
                drop(running);
                if fail {
                    Err(HandlerError::from("always fails"))
                } else {
                    Ok(())
                }
            }
        })
        .ordered(true)
        .concurrency(4)
        .max_retries(2)
        .backoff(Backoff::new(Duration::from_millis(200), 1.0, Duration::from_millis(200)))
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    for seq in 0..5 {
        for key in ["poisoned", "other"] {
            producer.publish_keyed(&stream, key, &Item { key: key.into(), seq, pad: String::new() }).await.unwrap();
        }
    }
    wait_until(Duration::from_secs(30), "the dead letter and the rest", || async {
        stats.snapshot().dead_lettered == 1 && log.total() == 9 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let handled = log.handled.lock().unwrap().clone();
    assert_eq!(handled["poisoned"], vec![0, 2, 3, 4], "the dead-lettered message released its key");
    assert_eq!(handled["other"], vec![0, 1, 2, 3, 4]);
    let events = log.events.lock().unwrap().clone();
    let poisoned: Vec<(u64, u32, &str)> =
        events.iter().filter(|e| e.0 == "poisoned").map(|e| (e.1, e.2, e.3)).collect();
    assert_eq!(
        poisoned,
        vec![
            (0, 1, "ok"),
            (1, 1, "failed"),
            (1, 2, "failed"),
            (1, 3, "failed"),
            (2, 1, "ok"),
            (3, 1, "ok"),
            (4, 1, "ok")
        ],
        "seq 1 held the key through its 3 deliveries"
    );
    // The other key never waited for the poisoned one's retries (400 ms of backoff).
    let last_other = events.iter().filter(|e| e.0 == "other").map(|e| e.4).max().unwrap();
    let last_failure = events.iter().filter(|e| e.3 == "failed").map(|e| e.4).max().unwrap();
    assert!(last_other < last_failure, "the other key finished while the poisoned one retried");
    assert_eq!(log.overlaps.load(Ordering::SeqCst), 0);
}

on_both_topologies!(every_key_runs_in_order_with_retries, a_dead_letter_releases_its_key);

/// One hot key: 20,000 messages of ~1 KiB, a byte budget of 256 KiB, a handler that is
/// slow now and then, and the first message failing once with a long backoff. The bytes of
/// fetched, unfinished entries stay within the budget all along (the gauge's peak), the hot
/// key's messages run in order, and a second key's messages keep being handled while the
/// hot key's first message waits for its retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_stays_within_the_byte_budget_and_other_keys_flow() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("ordered.hot");
    const BUDGET: usize = 256 * 1024;
    let log = Arc::new(Log::default());
    let consumer = {
        let log = log.clone();
        Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Item>| {
            let log = log.clone();
            let (key, seq, attempt) = (key_of(&msg), msg.payload().seq, msg.attempt());
            async move {
                let running = log.enter(&key);
                if key == "hot" && seq % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                let fail = key == "hot" && seq == 0 && attempt == 1;
                log.event(&key, seq, attempt, if fail { "failed" } else { "ok" });
                if !fail {
                    log.succeeded(&key, seq);
                }
                drop(running);
                if fail {
                    Err(HandlerError::from("the hot key's first message fails once"))
                } else {
                    Ok(())
                }
            }
        })
        .ordered(true)
        .concurrency(8)
        .max_buffered_bytes(BUDGET)
        .backoff(Backoff::new(Duration::from_secs(2), 1.0, Duration::from_secs(2)))
    };
    // Published first, consumed after: the whole stream waits in Redis.
    let producer = Producer::connect(&url).await.unwrap();
    let pad = "x".repeat(1000);
    let (mut hot, mut cold) = (0u64, 0u64);
    for _ in 0..20 {
        let items: Vec<Item> = (0..1000)
            .map(|_| {
                hot += 1;
                Item { key: "hot".into(), seq: hot - 1, pad: pad.clone() }
            })
            .collect();
        producer.publish_batch_with(&stream, &items, &keyed("hot")).await.unwrap();
        let items: Vec<Item> = (0..100)
            .map(|_| {
                cold += 1;
                Item { key: "cold".into(), seq: cold - 1, pad: pad.clone() }
            })
            .collect();
        producer.publish_batch_with(&stream, &items, &keyed("cold")).await.unwrap();
    }
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    wait_until(Duration::from_secs(180), "all 22,000 handled and acknowledged", || async {
        log.total() >= 22_000 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();

    let handled = log.handled.lock().unwrap().clone();
    assert_eq!(handled["hot"], (0..20_000).collect::<Vec<u64>>(), "the hot key in order");
    assert_eq!(handled["cold"], (0..2_000).collect::<Vec<u64>>(), "the cold key in order");
    assert_eq!(log.overlaps.load(Ordering::SeqCst), 0);
    let s = stats.snapshot();
    eprintln!("peak buffered bytes: {} of a {BUDGET}-byte budget (the stream holds ~22 MB)", s.buffered_bytes_peak);
    assert!(s.buffered_bytes_peak > 0);
    assert!(
        s.buffered_bytes_peak <= BUDGET as u64 + 16 * 1024,
        "fetched, unfinished bytes beyond the budget: {} > {BUDGET}",
        s.buffered_bytes_peak
    );
    assert_eq!(s.buffered_bytes, 0, "nothing left charged");
    // While the hot key's first message waited 2 s for its retry, the cold key flowed.
    let events = log.events.lock().unwrap().clone();
    let failed_at = events.iter().find(|e| e.0 == "hot" && e.3 == "failed").unwrap().4;
    let retried_at = events.iter().find(|e| e.0 == "hot" && e.1 == 0 && e.3 == "ok").unwrap().4;
    let cold_meanwhile = events.iter().filter(|e| e.0 == "cold" && e.4 > failed_at && e.4 < retried_at).count();
    let hot_meanwhile = events.iter().filter(|e| e.0 == "hot" && e.4 > failed_at && e.4 < retried_at).count();
    eprintln!("during the hot key's retry wait: {cold_meanwhile} cold messages handled, {hot_meanwhile} hot");
    assert_eq!(hot_meanwhile, 0, "the hot key was held back by its retry");
    assert!(cold_meanwhile >= 100, "the other key kept flowing during the retry: {cold_meanwhile}");
}

/// A consumer stopped mid-run, its handlers cancelled at once (shutdown timeout zero: as if
/// killed), then started again under the same member name: what it held (running, queued,
/// waiting for a retry) is taken up first, before new reads, and every key's successful
/// runs stay in order; the only repeat is the documented re-delivery of a message whose run
/// was cut off (or whose acknowledgement was lost), at most one per key, right at the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_restarted_under_its_name_keeps_the_order() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("ordered.restart");
    let log = Arc::new(Log::default());
    let make = |log: &Arc<Log>| {
        ordered_consumer(&stream, log, Behaviour { max_delay_ms: 3, fail_percent: 5 })
            .concurrency(16)
            .consumer_name("fixed-member")
    };
    let producer = Producer::connect(&url).await.unwrap();
    publish_interleaved(&producer, &stream, 50, 100).await;
    let first = start_runtime_with(&url, vec![make(&log)], |b| b.shutdown_timeout(Duration::ZERO)).await;
    wait_until(Duration::from_secs(60), "a third handled", || async { log.total() >= 1_700 }).await.unwrap();
    first.shutdown().await.unwrap();
    let at_stop = log.total();
    assert!(at_stop < 5_000, "stopped mid-run: {at_stop}");
    assert!(pending(&url, &stream).await > 0, "it left entries pending under its name");
    let second = start_runtime(&url, vec![make(&log)]).await;
    wait_until(Duration::from_secs(120), "all handled and acknowledged", || async {
        let done = log.handled.lock().unwrap().values().map(|s| s.iter().collect::<HashSet<_>>().len()).sum::<usize>();
        done == 5_000 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    second.shutdown().await.unwrap();
    let handled = log.handled.lock().unwrap().clone();
    let mut repeats = 0;
    for (key, seqs) in &handled {
        // Successful runs in order; a repeat only of the message just before it (re-delivered).
        let mut deduped: Vec<u64> = Vec::new();
        for s in seqs {
            match deduped.last() {
                Some(last) if s == last => repeats += 1,
                Some(last) => assert!(s == &(last + 1), "key {key}: {s} after {last}: {seqs:?}"),
                None => assert_eq!(*s, 0, "key {key} started at {s}"),
            }
            if deduped.last() != Some(s) {
                deduped.push(*s);
            }
        }
        assert_eq!(deduped, (0..100).collect::<Vec<u64>>(), "key {key}");
        assert!(seqs.len() <= 101, "key {key}: more than one re-delivery: {seqs:?}");
    }
    eprintln!("{repeats} re-deliveries of messages in flight at the stop");
    assert!(repeats <= 16, "at most the messages in flight (concurrency 16) ran twice: {repeats}");
    assert_eq!(log.overlaps.load(Ordering::SeqCst), 0);
}

/// `ordered` with a batch handler is refused when the runtime is built, with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_batch_consumers_are_refused() {
    let consumer = Consumer::batch("s".to_string(), "g".to_string(), |_msgs: Vec<Message<Item>>| async {
        Ok::<(), HandlerError>(())
    })
    .ordered(true);
    let built = streamx::Runtime::builder()
        .redis_url("redis://127.0.0.1:1")
        .registered_consumers(false)
        .consumer(consumer)
        .build();
    let Err(err) = built else { panic!("an ordered batch consumer was accepted") };
    assert!(err.to_string().contains("ordered = true is for one-message handlers only"), "{err}");
}

/// A run cut off by the consumer's `timeout` is retried in place, holding its key: the key's
/// later messages wait for it and then run in order. With `dedupe`, a duplicate of a handled
/// message is acknowledged unrun and releases its key like a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_run_holds_its_key_and_a_deduplicated_one_releases_it() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("ordered.timeout");
    let log = Arc::new(Log::default());
    let consumer = {
        let log = log.clone();
        Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Item>| {
            let log = log.clone();
            let (key, seq, attempt) = (key_of(&msg), msg.payload().seq, msg.attempt());
            async move {
                let running = log.enter(&key);
                if key == "slow" && seq == 0 && attempt == 1 {
                    log.event(&key, seq, attempt, "timed out");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                log.event(&key, seq, attempt, "ok");
                log.succeeded(&key, seq);
                drop(running);
                Ok::<(), HandlerError>(())
            }
        })
        .ordered(true)
        .concurrency(4)
        .timeout(Duration::from_millis(300))
        .dedupe(Duration::from_secs(3600))
        .backoff(Backoff::new(Duration::from_millis(50), 1.0, Duration::from_millis(50)))
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    for seq in 0..4 {
        let item = Item { key: "slow".into(), seq, pad: String::new() };
        producer.publish_keyed(&stream, "slow", &item).await.unwrap();
    }
    // "dup" seq 1 is published twice with one idempotency key: the second copy is
    // acknowledged unrun, and "dup" seq 2 runs after it.
    for (seq, copy) in [(0, 'a'), (1, 'a'), (1, 'b'), (2, 'a')] {
        let item = Item { key: "dup".into(), seq, pad: String::new() };
        // (`headers` replaces every header: the key is set after it.)
        let headers = streamx::Headers::new()
            .with(streamx::IDEMPOTENCY_KEY_HEADER, format!("dup-{seq}"))
            .with("copy", copy.to_string());
        let options = PublishOptions::new().headers(headers).key("dup");
        producer.publish_with(&stream, &item, &options).await.unwrap();
    }
    wait_until(Duration::from_secs(30), "all handled", || async {
        log.total() == 7 && stats.snapshot().deduplicated == 1 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let handled = log.handled.lock().unwrap().clone();
    assert_eq!(handled["slow"], vec![0, 1, 2, 3], "the timed-out message held its key until its retry ran");
    assert_eq!(handled["dup"], vec![0, 1, 2], "the duplicate ran once and released its key");
    let s = stats.snapshot();
    assert_eq!((s.timed_out, s.retried, s.deduplicated), (1, 1, 1), "{s:?}");
    let events = log.events.lock().unwrap().clone();
    let slow: Vec<(u64, u32, &str)> = events.iter().filter(|e| e.0 == "slow").map(|e| (e.1, e.2, e.3)).collect();
    assert_eq!(slow, vec![(0, 1, "timed out"), (0, 2, "ok"), (1, 1, "ok"), (2, 1, "ok"), (3, 1, "ok")]);
    assert_eq!(log.overlaps.load(Ordering::SeqCst), 0);
}
