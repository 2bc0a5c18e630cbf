//! Distributed rate limits (`rate_limit = "100/s"`): two worker processes of one group drain a
//! backlog at the limit, never more than the limit in any window of handler starts (retries
//! included), with the backlog left unread in Redis; the limiter works on a 3-master cluster
//! for a stream whose name has braces; consumers that cannot be limited are refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{sigterm, spawn_worker, start_runtime, wait_exit, Job};
use futures_util::TryStreamExt;
use serde::Deserialize;
use streamx::testing::{key_slot, wait_until, RedisCluster, TestRedis, Topology};
use streamx::{Consumer, History, Inspector, Message, Producer, RateLimit, Runtime};

const STREAM: &str = "app.limited";
const GROUP: &str = "limiters";

/// A start the `limited` consumer recorded (see the test app).
#[derive(Debug, Clone, Deserialize)]
struct Started {
    id: String,
    attempt: u32,
    pid: u32,
    at_us: u64,
}

async fn starts(url: &str) -> Vec<Started> {
    let history = History::connect(url).await.unwrap();
    history.read::<Started>("app.limited.starts", ..).map_ok(|m| m.into_payload()).try_collect().await.unwrap()
}

/// The most starts in any window of `window_us` (sliding over every start).
fn most_in_any_window(mut at_us: Vec<u64>, window_us: u64) -> usize {
    at_us.sort_unstable();
    let mut most = 0;
    let mut first = 0;
    for (last, &t) in at_us.iter().enumerate() {
        while at_us[first] + window_us <= t {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

/// Runs two `limited` worker processes until `expected` starts are recorded, sampling the
/// group's pending count meanwhile; returns the starts and the most pending seen.
async fn run_two_workers(server: &TestRedis, expected: usize) -> (Vec<Started>, u64) {
    let url = server.url();
    let mut workers: Vec<_> = (0..2).map(|_| spawn_worker(&url, "limited", &[])).collect();
    let inspector = Inspector::connect(&url).await.unwrap();
    let mut most_pending = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(group)) = inspector.group(STREAM, GROUP).await {
            most_pending = most_pending.max(group.pending);
        }
        if server.xlen("app.limited.starts").unwrap() >= expected as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{expected} starts within 60 s, saw {}; group {:?}; retries {:?}",
            server.xlen("app.limited.starts").unwrap(),
            inspector.group(STREAM, GROUP).await,
            server.cli(&["ZCARD", &streamx::keys::retry_schedule(STREAM, GROUP)]),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in &workers {
        sigterm(w);
    }
    for w in &mut workers {
        assert!(wait_exit(w, Duration::from_secs(15)).await.success());
    }
    (starts(&url).await, most_pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_drain_500_at_100_a_second_never_exceeding_it_in_any_second() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let producer = Producer::connect(&server.url()).await.unwrap();
    let jobs: Vec<Job> = (0..500).map(Job::ok).collect();
    producer.publish_batch(STREAM, &jobs).await.unwrap();

    let (starts, most_pending) = run_two_workers(&server, 500).await;

    let ids: HashSet<&str> = starts.iter().map(|s| s.id.as_str()).collect();
    assert_eq!((starts.len(), ids.len()), (500, 500), "each message started once");
    let pids: HashSet<u32> = starts.iter().map(|s| s.pid).collect();
    assert_eq!(pids.len(), 2, "both processes did work");
    let at: Vec<u64> = starts.iter().map(|s| s.at_us).collect();
    let (first, last) = (*at.iter().min().unwrap(), *at.iter().max().unwrap());
    let took = Duration::from_micros(last - first);
    let most = most_in_any_window(at, 1_000_000);
    let by_pid = starts.iter().fold(HashMap::<u32, usize>::new(), |mut m, s| {
        *m.entry(s.pid).or_default() += 1;
        m
    });
    eprintln!(
        "500 starts in {took:?}; at most {most} in any second; at most {most_pending} pending; by process {by_pid:?}"
    );
    assert!(most <= 100, "at most 100 starts in any 1 s window, saw {most}");
    assert!(
        took >= Duration::from_millis(4250) && took <= Duration::from_millis(5750),
        "500 messages at 100/s drain in 5 s ± 15 %, took {took:?}"
    );
    // Messages wait unread in Redis: never more pending than the two processes' reads of
    // one grant each (at most 8, their concurrency) and what awaits its XACK.
    assert!(most_pending <= 40, "the backlog stays unread in Redis, but {most_pending} were pending at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_count_against_the_limit() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let producer = Producer::connect(&server.url()).await.unwrap();
    // 150 jobs failing once: 300 starts, half of them retries.
    let jobs: Vec<Job> = (0..150).map(|n| Job::fail_times(n, 1)).collect();
    producer.publish_batch(STREAM, &jobs).await.unwrap();

    let (starts, _) = run_two_workers(&server, 300).await;

    let retries = starts.iter().filter(|s| s.attempt == 2).count();
    assert_eq!((starts.len(), retries), (300, 150), "every job started twice");
    let most = most_in_any_window(starts.iter().map(|s| s.at_us).collect(), 1_000_000);
    eprintln!("300 starts (150 retries); at most {most} in any second");
    assert!(most <= 100, "at most 100 starts (retries included) in any 1 s window, saw {most}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_overs_of_a_killed_process_count_against_the_limit() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    // Handlers of 50 ms: the killed process holds several started, unacknowledged, and the
    // two processes could start 320 a second (8 at a time each) without the limit.
    let jobs: Vec<Job> = (0..300).map(|n| Job::sleep(n, 50)).collect();
    producer.publish_batch(STREAM, &jobs).await.unwrap();
    let mut doomed = spawn_worker(&url, "limited", &[]);
    let mut survivor = spawn_worker(&url, "limited", &[]);
    // Killed while it holds entries: some of its starts are still pending (a consumer is
    // named `<host>-<pid>-<n>`), so the survivor has something to take over.
    let holding = format!("-{}-", doomed.id());
    wait_until(Duration::from_secs(30), "the doomed process started handlers and holds some", || async {
        let started = starts(&url).await.iter().filter(|s| s.pid == doomed.id()).count();
        let pending = server.cli(&["XPENDING", STREAM, GROUP]).unwrap_or_default();
        let lines: Vec<&str> = pending.lines().collect();
        let held = lines.windows(2).any(|w| w[0].contains(&holding) && w[1].trim().parse::<u64>().is_ok_and(|n| n > 0));
        started >= 20 && held
    })
    .await
    .unwrap();
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let inspector = Inspector::connect(&url).await.unwrap();
    wait_until(Duration::from_secs(60), "every message handled, nothing pending", || async {
        let started: HashSet<String> = starts(&url).await.into_iter().map(|s| s.id).collect();
        let pending = inspector.group(STREAM, GROUP).await.ok().flatten().map(|g| g.pending);
        started.len() == 300 && pending == Some(0)
    })
    .await
    .unwrap();
    sigterm(&survivor);
    assert!(wait_exit(&mut survivor, Duration::from_secs(15)).await.success());

    let starts = starts(&url).await;
    let again = starts.len() - 300;
    let most = most_in_any_window(starts.iter().map(|s| s.at_us).collect(), 1_000_000);
    eprintln!(
        "take-over: {} starts ({again} taken over and started again); at most {most} in any second",
        starts.len()
    );
    assert!(again > 0, "the survivor took over what the killed process held");
    assert!(most <= 100, "at most 100 starts (take-overs included) in any 1 s window, saw {most}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_a_stream_with_braces_on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let url = cluster.url();
    let stream = "{shop}.limited";
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let consumer = |name: &'static str| {
        let starts = starts.clone();
        Consumer::new(stream, "g", move |_msg: Message<u64>| {
            let starts = starts.clone();
            async move { starts.lock().unwrap().push(Instant::now()) }
        })
        .name_as(name)
        .concurrency(4)
        .rate_limit(RateLimit::new(20, Duration::from_millis(500)))
    };
    // Two runtimes: two members of the group sharing the one log.
    let a = start_runtime(&url, vec![consumer("a")]).await;
    let b = start_runtime(&url, vec![consumer("b")]).await;
    let producer = Producer::connect(&url).await.unwrap();
    producer.publish_batch(stream, &(0..100u64).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(30), "100 handled", || async { starts.lock().unwrap().len() >= 100 }).await.unwrap();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    let starts = starts.lock().unwrap().clone();
    let zero = *starts.iter().min().unwrap();
    let at: Vec<u64> = starts.iter().map(|t| t.duration_since(zero).as_micros() as u64).collect();
    let took = Duration::from_micros(*at.iter().max().unwrap());
    let most = most_in_any_window(at, 500_000);
    eprintln!("cluster: 100 starts in {took:?}, at most {most} in any 500 ms");
    assert!(most <= 20, "at most 20 starts in any 500 ms window, saw {most}");
    // 100 at 20 per 500 ms: four windows at least between the first and the last.
    assert!(took >= Duration::from_millis(2000), "throttled: took {took:?}");
    let log = streamx::keys::rate_limit(stream, "g");
    assert_eq!(key_slot(&log), key_slot(stream), "the grant log lives in the stream's slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_that_cannot_be_limited_are_refused_at_start() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let limit = RateLimit::per_second(10);
    let batch = Consumer::batch("s", "g", |_msgs: Vec<Message<u64>>| async {}).rate_limit(limit);
    let ordered = Consumer::new("s", "g", |_msg: Message<u64>| async {}).ordered(true).rate_limit(limit);
    let topic = Consumer::topic("t", "g", |_msg: Message<u64>| async {}).rate_limit(limit);
    let zero = Consumer::new("s", "g", |_msg: Message<u64>| async {}).rate_limit(RateLimit::per_second(0));
    for (what, consumer, needle) in [
        ("batch", batch, "rate_limit applies to one-message, unordered stream consumers only"),
        ("ordered", ordered, "rate_limit applies to one-message, unordered stream consumers only"),
        ("topic", topic, "rate_limit applies to one-message, unordered stream consumers only"),
        ("zero", zero, "the count must be at least 1"),
    ] {
        let built = Runtime::builder().redis_url(server.url()).registered_consumers(false).consumer(consumer).build();
        let error = match built {
            Err(e) => e.to_string(),
            Ok(runtime) => match runtime.start().await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("a {what} consumer with a rate limit started"),
            },
        };
        assert!(error.contains(needle), "{what}: {error}");
    }
}
