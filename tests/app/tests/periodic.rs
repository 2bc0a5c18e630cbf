//! Periodic jobs run by worker *processes* (the `worker` binary's `#[periodic]` jobs, and one
//! added with the builder): each tick is published once across processes, also when one is
//! killed; missed ticks are skipped or caught up as the job says; a failing fn publishes
//! nothing and leaves the tick to another process. Every wait is on a condition: a stream's
//! length, or the clock passing a tick's time.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::process::Child;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{on_both_topologies, sigterm, spawn_worker, wait_exit, wait_until, TestRedis, Topology};
use futures_util::TryStreamExt;
use streamx::testing::TestRuntime;
use streamx::{History, PeriodicJob, Tick, PERIODIC_TICK_HEADER};

/// One entry a periodic job published: the tick in its header, and the payload's.
#[derive(Debug, Clone, PartialEq)]
struct Published {
    header_tick: u64,
    payload_tick: u64,
    pid: u32,
}

async fn published(url: &str, stream: &str) -> Vec<Published> {
    let history = History::connect(url).await.unwrap();
    let messages: Vec<_> = history.read::<serde_json::Value>(stream, ..).try_collect().await.unwrap();
    messages
        .into_iter()
        .map(|m| Published {
            header_tick: m.headers().get(PERIODIC_TICK_HEADER).expect("the tick header").parse().unwrap(),
            payload_tick: m.payload()["tick_ms"].as_u64().unwrap(),
            pid: m.payload()["pid"].as_u64().unwrap() as u32,
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Waits until this machine's clock reads `ms` (Unix): a tick's time, not a guess.
async fn wait_for_time(ms: u64, what: &str) {
    let limit = Duration::from_millis(ms.saturating_sub(now_ms()) + 5_000);
    wait_until(limit, what, || async { now_ms() >= ms }).await.unwrap();
}

async fn wait_for_len(server: &TestRedis, stream: &str, len: u64, limit: Duration) {
    wait_until(limit, &format!("{len} entries in {stream}"), || async { server.xlen(stream).unwrap() >= len })
        .await
        .unwrap();
}

async fn stop(mut worker: Child) {
    sigterm(&worker);
    let status = wait_exit(&mut worker, Duration::from_secs(15)).await;
    assert!(status.success(), "graceful exit, got {status:?}");
}

/// Every entry's ticks agree (header and payload), and the ticks are whole seconds, each once.
fn ticks_of(entries: &[Published]) -> Vec<u64> {
    for e in entries {
        assert_eq!(e.header_tick, e.payload_tick, "{e:?}");
        assert_eq!(e.header_tick % 1000, 0, "a tick of `* * * * * *` is a whole second: {e:?}");
    }
    let ticks: Vec<u64> = entries.iter().map(|e| e.header_tick).collect();
    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "one entry per tick, in tick order: {ticks:?}");
    ticks
}

fn consecutive(ticks: &[u64]) -> bool {
    ticks.windows(2).all(|w| w[1] - w[0] == 1000)
}

/// The 10 seconds from about 6 s from now (time for the processes to start, on a loaded
/// machine too), within one minute: a cron expression firing at each of them once an hour
/// (so once within the test), and the first tick (Unix ms).
fn ten_ticks_soon() -> (String, u64) {
    let mut first = now_ms() / 1000 + 6;
    if first % 60 > 50 {
        first += 60 - first % 60;
    }
    let second = first % 60;
    let minute = (first / 60) % 60;
    (format!("{}-{} {minute} * * * *", second, second + 9), first * 1000)
}

async fn three_processes_publish_each_of_ten_ticks_once(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let (cron, first) = ten_ticks_soon();
    let env = [("WORKER_PERIODIC_CRON", cron.as_str())];
    let workers: Vec<Child> = (0..3).map(|_| spawn_worker(&url, "window", &env)).collect();
    let mut workers = workers.into_iter();
    let (a, b, mut c) = (workers.next().unwrap(), workers.next().unwrap(), workers.next().unwrap());

    // A process killed mid-run (no shutdown at all) changes nothing.
    wait_for_len(&server, "app.window", 4, Duration::from_secs(60)).await;
    c.kill().unwrap();
    let _ = c.wait();
    wait_for_len(&server, "app.window", 10, Duration::from_secs(60)).await;
    // Past the last tick's second: had any process published a tick twice (or late), it
    // would be in the stream by now.
    wait_for_time(first + 10_500, "a second past the last tick").await;
    stop(a).await;
    stop(b).await;

    let entries = published(&url, "app.window").await;
    let ticks = ticks_of(&entries);
    let expected: Vec<u64> = (0..10).map(|i| first + i * 1000).collect();
    assert_eq!(ticks, expected, "exactly the 10 ticks, once each: {entries:?}");
    let state_key = streamx::keys::periodic_state("app.window", "window");
    assert_eq!(streamx::keys::slot(&state_key), streamx::keys::slot("app.window"), "one slot for the script");
    let state = server.cli(&["GET", &state_key]).unwrap();
    assert_eq!(state.trim(), (first + 9000).to_string(), "the job's state is its last tick");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_are_skipped_without_catch_up() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let worker = spawn_worker(&url, "ticks", &[]);
    wait_for_len(&server, "app.ticks", 2, Duration::from_secs(60)).await;
    stop(worker).await;
    let before = ticks_of(&published(&url, "app.ticks").await);
    let last = *before.last().unwrap();

    // No process runs for three ticks.
    wait_for_time(last + 3_500, "three ticks without a process").await;
    let restarted_at = now_ms();
    let worker = spawn_worker(&url, "ticks", &[]);
    wait_for_len(&server, "app.ticks", before.len() as u64 + 3, Duration::from_secs(60)).await;
    stop(worker).await;

    let ticks = ticks_of(&published(&url, "app.ticks").await);
    assert_eq!(&ticks[..before.len()], &before[..]);
    let after = &ticks[before.len()..];
    assert!(
        after[0] > restarted_at,
        "the ticks missed before the restart are skipped: {ticks:?}, restart at {restarted_at}"
    );
    assert!(consecutive(after), "then every tick: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_are_caught_up_with_catch_up() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let worker = spawn_worker(&url, "ticks_caught_up", &[]);
    wait_for_len(&server, "app.ticks.caught_up", 2, Duration::from_secs(60)).await;
    stop(worker).await;
    let before = ticks_of(&published(&url, "app.ticks.caught_up").await);
    let last = *before.last().unwrap();

    wait_for_time(last + 3_500, "three ticks without a process").await;
    let restarted_at = now_ms();
    let worker = spawn_worker(&url, "ticks_caught_up", &[]);
    // The three missed ticks, then at least one more.
    wait_for_len(&server, "app.ticks.caught_up", before.len() as u64 + 4, Duration::from_secs(60)).await;
    stop(worker).await;

    let ticks = ticks_of(&published(&url, "app.ticks.caught_up").await);
    assert!(consecutive(&ticks), "every tick once, the gap filled: {ticks:?}");
    let caught_up = ticks.iter().filter(|&&t| t > last && t < restarted_at).count();
    assert!(caught_up >= 3, "the missed ticks were published after the restart: {ticks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fn_publishes_nothing_and_leaves_the_tick_to_another_process() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let failing = spawn_worker(&url, "ticks", &[("WORKER_PERIODIC_FAIL", "1")]);
    // Two ticks pass with only the failing process (its start takes well under a second, and
    // the ticks are counted from a second after the spawn).
    let spawned = now_ms();
    wait_for_time((spawned / 1000 + 3) * 1000 + 200, "two ticks with the failing process alone").await;
    assert_eq!(server.xlen("app.ticks").unwrap(), 0, "a failed fn publishes nothing");
    let state = server.cli(&["EXISTS", &streamx::keys::periodic_state("app.ticks", "ticks")]).unwrap();
    assert_eq!(state.trim(), "0", "nor marks the tick published");

    let healthy = spawn_worker(&url, "ticks", &[]);
    let healthy_pid = healthy.id();
    wait_for_len(&server, "app.ticks", 4, Duration::from_secs(60)).await;
    stop(failing).await;
    stop(healthy).await;

    let entries = published(&url, "app.ticks").await;
    let ticks = ticks_of(&entries);
    assert!(consecutive(&ticks), "every tick, published by the healthy process: {ticks:?}");
    let pids: HashSet<u32> = entries.iter().map(|e| e.pid).collect();
    assert_eq!(pids, HashSet::from([healthy_pid]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_runtime_runs_periodic_jobs_with_the_application_state() {
    let job = PeriodicJob::fallible("beat", "* * * * * *", "test.beats", |tick: Tick| async move {
        let label = tick.state::<&'static str>().ok_or("no label in the state")?;
        Ok::<_, String>(serde_json::json!({ "tick_ms": tick.unix_ms(), "pid": std::process::id(), "label": label }))
    });
    let app =
        TestRuntime::builder().registered_consumers(false).periodic(job).state("from the state").start().await.unwrap();
    let url = app.url().to_string();
    wait_until(Duration::from_secs(30), "two beats", || async { published(&url, "test.beats").await.len() >= 2 })
        .await
        .unwrap();
    let ticks = ticks_of(&published(&url, "test.beats").await);
    assert!(consecutive(&ticks), "{ticks:?}");
    let history = History::connect(&url).await.unwrap();
    let first: Vec<_> = history.read::<serde_json::Value>("test.beats", ..).try_collect().await.unwrap();
    assert_eq!(first[0].payload()["label"], "from the state");
    app.shutdown().await.unwrap(); // (the server goes with it)
}

on_both_topologies!(three_processes_publish_each_of_ten_ticks_once,);
