//! Pausing and resuming a consumer group (`Inspector::pause` / `resume`): three worker
//! processes stop starting handlers within a second of the pause and hold what they read;
//! the resume drains everything, each message once; the pause outlives a Redis restart
//! (AOF); a runtime started on a paused group starts nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{counts, handled, id_strings, sigterm, spawn_worker, start_runtime, wait_exit, wait_until, Handled, Job};
use futures_util::TryStreamExt;
use streamx::testing::{unique_name, RedisServer};
use streamx::{Consumer, History, Inspector, Message, MessageId, Producer};

const STREAM: &str = "app.pausable";
const GROUP: &str = "pausers";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The handler starts the `pausable` consumer recorded, with the Redis time (ms) of each
/// record's entry id: just after the start it records.
async fn starts(url: &str) -> Vec<(u64, Handled)> {
    let history = History::connect(url).await.unwrap();
    history
        .read::<Handled>("app.pause.starts", ..)
        .map_ok(|m| (m.id().millis(), m.into_payload()))
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_stop_starting_handlers_within_a_second_and_resume_drains_the_rest() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut workers: Vec<_> = (0..3).map(|_| spawn_worker(&url, "pausable", &[])).collect();
    let pids: HashSet<u32> = workers.iter().map(|w| w.id()).collect();

    // A steady flow: 10 jobs of 20 ms every 50 ms (about 200 a second).
    let published: Arc<Mutex<Vec<MessageId>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // (On a thread of its own: the publish future is not `Send`.)
    let producing = std::thread::spawn({
        let (url, published, stop) = (url.clone(), published.clone(), stop.clone());
        move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let producer = Producer::connect(&url).await.unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let jobs: Vec<Job> = (n..n + 10).map(|n| Job::sleep(n, 20)).collect();
                    let ids = producer.publish_batch(STREAM, &jobs).await.unwrap();
                    published.lock().unwrap().extend(ids);
                    n += 10;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        }
    });
    wait_until(Duration::from_secs(60), "each of the 3 processes started handlers", || async {
        starts(&url).await.iter().map(|(_, s)| s.pid).collect::<HashSet<_>>() == pids
    })
    .await
    .unwrap();

    let inspector = Inspector::connect(&url).await.unwrap();
    inspector.pause(STREAM, GROUP).await.unwrap();
    let paused_at = now_ms();
    let paused_since = Instant::now();
    assert!(inspector.is_paused(STREAM, GROUP).await.unwrap());
    let before = published.lock().unwrap().len();
    // Paused for more than twice `claim_idle` (1 s), while the flow goes on.
    wait_until(Duration::from_secs(30), "3 s paused and 300 more published", || async {
        paused_since.elapsed() >= Duration::from_secs(3) && published.lock().unwrap().len() >= before + 300
    })
    .await
    .unwrap();

    let late: Vec<u64> = starts(&url).await.into_iter().map(|(at, _)| at).filter(|at| *at > paused_at + 1000).collect();
    assert!(
        late.is_empty(),
        "{} handlers started more than 1 s after the pause: {late:?} (paused at {paused_at})",
        late.len()
    );
    let group = inspector.group(STREAM, GROUP).await.unwrap().unwrap();
    assert!(group.paused, "info shows the pause");
    assert!(group.lag.unwrap() >= 300, "the backlog grows while paused: lag {:?}", group.lag);
    // What the members hold stays theirs: never claimed by another (one delivery each).
    let pending = inspector.pending(STREAM, GROUP, None).await.unwrap();
    assert!(pending.iter().all(|p| p.deliveries == 1), "nothing held was taken over: {pending:?}");

    inspector.resume(STREAM, GROUP).await.unwrap();
    assert!(!inspector.is_paused(STREAM, GROUP).await.unwrap());
    stop.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || producing.join().unwrap()).await.unwrap();
    let published: HashSet<String> = id_strings(&published.lock().unwrap()).into_iter().collect();
    wait_until(Duration::from_secs(60), "every published job handled after the resume", || async {
        handled(&url).await.iter().map(|r| r.id.clone()).collect::<HashSet<_>>() == published
    })
    .await
    .unwrap();
    for w in &workers {
        sigterm(w);
    }
    for w in &mut workers {
        assert!(wait_exit(w, Duration::from_secs(15)).await.success());
    }
    let records = handled(&url).await;
    let twice: Vec<_> = counts(records.iter().map(|r| r.id.as_str())).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "each handled once: {twice:?}");
    assert_eq!(inspector.group(STREAM, GROUP).await.unwrap().unwrap().pending, 0);
    eprintln!(
        "paused: {} published, {} handled once each, {} held pending during the pause",
        published.len(),
        records.len(),
        pending.len()
    );
}

/// A consumer of `stream` whose handler counts its starts by job number.
fn counting(stream: &str, seen: &Arc<Mutex<HashMap<u64, usize>>>) -> Consumer {
    let seen = seen.clone();
    Consumer::new(stream.to_string(), "g".to_string(), move |msg: Message<Job>| {
        let seen = seen.clone();
        async move {
            *seen.lock().unwrap().entry(msg.payload().n).or_insert(0) += 1;
        }
    })
    .concurrency(4)
    .claim_idle(Duration::from_secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_a_redis_restart() {
    let mut server = RedisServer::builder().appendonly(true).start().unwrap();
    let url = server.url();
    let stream = unique_name("pause-restart");
    let seen: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let runtime = start_runtime(&url, vec![counting(&stream, &seen)]).await;
    let producer = Producer::connect(&url).await.unwrap();
    producer.publish(&stream, &Job::ok(0)).await.unwrap();
    wait_until(Duration::from_secs(10), "the first job handled", || async { seen.lock().unwrap().len() == 1 })
        .await
        .unwrap();

    let inspector = Inspector::connect(&url).await.unwrap();
    inspector.pause_as(&stream, "g", "the test").await.unwrap();
    let paused_since = Instant::now();
    server.kill().unwrap();
    server.restart().unwrap();
    let inspector = Inspector::connect(&url).await.unwrap();
    let info = inspector.pause_info(&stream, "g").await.unwrap().expect("the pause is in the AOF");
    assert_eq!(info.by, "the test");
    assert!(info.at_ms.is_some());
    let producer2 = Producer::connect(&url).await.unwrap();
    for n in 1..=20 {
        producer2.publish(&stream, &Job::ok(n)).await.unwrap();
    }
    wait_until(Duration::from_secs(30), "3 s paused across the restart, 20 waiting", || async {
        let group = inspector.group(&stream, "g").await;
        let lag = group.ok().flatten().and_then(|g| g.lag);
        paused_since.elapsed() >= Duration::from_secs(3) && lag == Some(20)
    })
    .await
    .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing started while paused, across the restart");

    assert!(inspector.resume(&stream, "g").await.unwrap());
    wait_until(Duration::from_secs(30), "the 20 handled after the resume", || async {
        seen.lock().unwrap().len() == 21
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
    drop(producer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_started_on_a_paused_group_starts_nothing_and_shuts_down() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let stream = unique_name("pause-first");
    let inspector = Inspector::connect(&url).await.unwrap();
    inspector.pause(&stream, "g").await.unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    for n in 0..10 {
        producer.publish(&stream, &Job::ok(n)).await.unwrap();
    }
    let seen: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let started = Instant::now();
    let runtime = start_runtime(&url, vec![counting(&stream, &seen)]).await;
    wait_until(Duration::from_secs(10), "1.5 s running", || async { started.elapsed() >= Duration::from_millis(1500) })
        .await
        .unwrap();
    assert!(seen.lock().unwrap().is_empty(), "nothing started on the paused group");
    let group = inspector.group(&stream, "g").await.unwrap().unwrap();
    assert!(group.paused);
    assert_eq!((group.lag, group.pending), (Some(10), 0), "nothing was even read");

    // Resumed: all 10 run; paused again then shut down: the shutdown does not wait on the
    // pause.
    inspector.resume(&stream, "g").await.unwrap();
    wait_until(Duration::from_secs(10), "10 handled", || async { seen.lock().unwrap().len() == 10 }).await.unwrap();
    inspector.pause(&stream, "g").await.unwrap();
    let stopping = Instant::now();
    runtime.shutdown().await.unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(5), "shutdown while paused took {:?}", stopping.elapsed());
    assert_eq!(inspector.group(&stream, "g").await.unwrap().unwrap().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_paused_no_due_retry_is_promoted_and_no_stopped_member_is_taken_over() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let stream = unique_name("pause-claims");
    // Every job fails its first run (retry in 2 s), then succeeds; each run is recorded.
    let runs: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let recorded = runs.clone();
    let consumer = Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Job>| {
        let recorded = recorded.clone();
        async move {
            recorded.lock().unwrap().push((msg.payload().n, msg.attempt()));
            if msg.attempt() == 1 {
                return Err(streamx::HandlerError::retry_after("first run fails", Duration::from_secs(2)));
            }
            Ok(())
        }
    })
    .concurrency(4)
    .claim_idle(Duration::from_secs(1));
    let runtime = start_runtime(&url, vec![consumer]).await;
    let producer = Producer::connect(&url).await.unwrap();
    for n in 0..3 {
        producer.publish(&stream, &Job::ok(n)).await.unwrap();
    }
    wait_until(Duration::from_secs(10), "3 first runs", || async { runs.lock().unwrap().len() == 3 }).await.unwrap();

    let inspector = Inspector::connect(&url).await.unwrap();
    inspector.pause(&stream, "g").await.unwrap();
    let paused_since = Instant::now();
    // Once the pause is in effect (within a second), a member reads 5 new entries and stops
    // (it never beats): its entries are orphans.
    wait_until(Duration::from_secs(10), "1 s paused", || async { paused_since.elapsed() >= Duration::from_secs(1) })
        .await
        .unwrap();
    for n in 3..8 {
        producer.publish(&stream, &Job::ok(n)).await.unwrap();
    }
    let args = ["XREADGROUP", "GROUP", "g", "ghost", "COUNT", "5", "STREAMS", &stream, ">"];
    streamx::testing::redis_cli(&server, &args).unwrap();
    // The retries fall due 2 s after the first runs, the ghost's entries idle past claim_idle.
    wait_until(Duration::from_secs(20), "4 s paused", || async { paused_since.elapsed() >= Duration::from_secs(4) })
        .await
        .unwrap();
    let so_far = runs.lock().unwrap().clone();
    assert_eq!(so_far.len(), 3, "no retry ran and nothing was taken over while paused: {so_far:?}");
    let summary = inspector.pending_summary(&stream, "g").await.unwrap();
    let held_by = |name: &str| summary.consumers.iter().find(|(c, _)| c == name).map_or(0, |(_, n)| *n);
    assert_eq!(held_by("ghost"), 5, "the stopped member's entries stay where they are: {summary:?}");
    assert_eq!(held_by(streamx::SCHEDULED_CONSUMER), 3, "the retries stay scheduled: {summary:?}");

    inspector.resume(&stream, "g").await.unwrap();
    wait_until(Duration::from_secs(30), "all 8 succeeded after the resume", || async {
        let runs = runs.lock().unwrap();
        (0..8).all(|n| runs.iter().any(|(m, attempt)| *m == n && (*attempt >= 2 || (n >= 3 && *attempt >= 1))))
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), "nothing pending", || async {
        inspector.group(&stream, "g").await.unwrap().unwrap().pending == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
}
