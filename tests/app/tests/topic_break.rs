//! Slice D of issue 25: interleavings that try to break the topic consumer (shard ownership,
//! fencing, per-key order across owners), against real redis-server processes and the
//! `worker` binary's `orders` consumer (the 16-shard topic `app.orders`, group `shipping`,
//! a 2 s lease, 10 s shutdown timeout).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Duration;

use common::{sigterm, spawn_worker_logged, wait_exit, wait_until, TestRedis, Topology};
use fred::interfaces::KeysInterface;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use streamx::testing::RedisServer;
use streamx::topic::TopicLayout;
use streamx::{History, Producer};

const TOPIC: &str = "app.orders";
const GROUP: &str = "shipping";
const SHARDS: u32 = 16;

/// What the test publishes (the worker's `Step`).
#[derive(Debug, Clone, Serialize)]
struct Step {
    key: String,
    seq: u64,
    sleep_ms: u64,
    fail: u32,
    permanent: bool,
}

impl Step {
    fn new(key: &str, seq: u64) -> Self {
        Step { key: key.to_string(), seq, sleep_ms: 0, fail: 0, permanent: false }
    }
}

/// One line of `app.topic.log`.
#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)]
struct StepRecord {
    key: String,
    seq: u64,
    id: String,
    stream: String,
    pid: u32,
    attempt: u32,
    phase: String,
    ok: bool,
}

async fn log(url: &str) -> Vec<StepRecord> {
    let Ok(history) = History::connect(url).await else { return Vec::new() };
    history.read::<StepRecord>("app.topic.log", ..).map_ok(|m| m.into_payload()).try_collect().await.unwrap_or_default()
}

fn layout() -> TopicLayout {
    TopicLayout::new(TOPIC, SHARDS).unwrap()
}

async fn publish(producer: &Producer, steps: &[Step]) {
    producer.topic(TOPIC, SHARDS).await.unwrap();
    let keyed: Vec<(String, Step)> = steps.iter().map(|s| (s.key.clone(), s.clone())).collect();
    producer.publish_batch_keyed(TOPIC, &keyed).await.unwrap();
}

/// The pid holding each shard's lease now.
async fn owners(producer: &Producer) -> Vec<Option<u32>> {
    let client = producer.client();
    let mut out = Vec::new();
    for shard in layout().shard_streams() {
        let value: Option<String> = client.get(streamx::keys::shard_lease(shard, GROUP)).await.unwrap_or(None);
        out.push(value.map(|v| pid_of(&v)));
    }
    out
}

/// The pid in a lease value `<epoch>:<host>-<pid>-<n>`.
fn pid_of(lease: &str) -> u32 {
    let member = lease.split_once(':').map_or(lease, |(_, m)| m);
    let mut parts = member.rsplit('-');
    parts.next();
    parts.next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

async fn all_owned_by(producer: &Producer, pids: Vec<u32>) -> bool {
    let owners = owners(producer).await;
    owners.iter().all(|o| o.is_some_and(|p| pids.contains(&p))) && pids.iter().all(|p| owners.contains(&Some(*p)))
}

fn worker(url: &str, log: &std::path::Path) -> Child {
    spawn_worker_logged(url, "orders", &[("RUST_LOG", "warn")], log)
}

fn tmp_log(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("streamx-break-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("worker.log");
    let _ = std::fs::remove_file(&path);
    path
}

/// For each (key, seq): the pids that started a run of it, in log order.
fn starts(records: &[StepRecord]) -> BTreeMap<(String, u64), Vec<u32>> {
    let mut out: BTreeMap<(String, u64), Vec<u32>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.phase == "start") {
        out.entry((r.key.clone(), r.seq)).or_default().push(r.pid);
    }
    out
}

/// A graceful stop (SIGTERM) of a process whose handlers run longer than the lease: the
/// stopping process lets its running handlers finish (the shutdown timeout is 10 s, each
/// handler 5 s) and acknowledges them, so nothing may run twice, and no other process may
/// start a message of a shard while the stopping one still runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_with_handlers_longer_than_the_lease_runs_nothing_twice() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let log_path = tmp_log("graceful");
    let mut a = worker(&url, &log_path);
    let mut b = worker(&url, &log_path);
    wait_until(Duration::from_secs(30), "A and B share the shards", || all_owned_by(&producer, vec![a.id(), b.id()]))
        .await
        .unwrap();
    // One 4 s step on each of 32 keys: both processes run some of them.
    let steps: Vec<Step> = (0..32).map(|k| Step { sleep_ms: 4000, ..Step::new(&format!("slow-{k}"), 0) }).collect();
    publish(&producer, &steps).await;
    wait_until(Duration::from_secs(30), "every step started", || async { starts(&log(&url).await).len() == 32 })
        .await
        .unwrap();
    let in_a = starts(&log(&url).await).values().filter(|p| p.contains(&a.id())).count();
    assert!(in_a > 0, "A runs some of the steps");
    sigterm(&a);
    assert!(wait_exit(&mut a, Duration::from_secs(30)).await.success(), "A stopped gracefully");
    wait_until(Duration::from_secs(30), "B owns every shard", || all_owned_by(&producer, vec![b.id()])).await.unwrap();
    wait_until(Duration::from_secs(30), "every step ended well", || async {
        log(&url)
            .await
            .iter()
            .filter(|r| r.phase == "end" && r.ok)
            .map(|r| r.key.clone())
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 32
    })
    .await
    .unwrap();
    let records = log(&url).await;
    let twice: Vec<_> = starts(&records).into_iter().filter(|(_, pids)| pids.len() > 1).collect();
    let a_ended_ok = records.iter().filter(|r| r.phase == "end" && r.ok && r.pid == a.id()).count();
    let errorstats = server.cli(&["INFO", "errorstats"]).unwrap_or_default();
    let fenced =
        errorstats.lines().find(|l| l.contains("STREAMX_FENCED")).unwrap_or("no STREAMX_FENCED").trim().to_string();
    sigterm(&b);
    assert!(wait_exit(&mut b, Duration::from_secs(30)).await.success());
    assert!(
        twice.is_empty(),
        "a graceful stop re-ran {} of A's {in_a} steps in B while A still ran them (A ended {a_ended_ok} well; \
         A's late calls refused: {fenced}): {twice:?}",
        twice.len()
    );
}

/// Redis is down for longer than the lease (2 s) while a process owns every shard and runs
/// handlers, then comes back with its data (AOF): the leases have lapsed. The process must
/// take its shards again and every message, old and new, must end well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_loses_redis_for_longer_than_the_lease_takes_its_shards_again() {
    let mut server = RedisServer::builder().appendonly(true).arg("appendfsync", "always").start().unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let log_path = tmp_log("outage");
    let mut a = worker(&url, &log_path);
    wait_until(Duration::from_secs(30), "A owns every shard", || all_owned_by(&producer, vec![a.id()])).await.unwrap();
    let before: Vec<Step> = (0..8).map(|k| Step { sleep_ms: 1500, ..Step::new(&format!("k{k}"), 0) }).collect();
    publish(&producer, &before).await;
    wait_until(Duration::from_secs(30), "A started the first steps", || async { starts(&log(&url).await).len() == 8 })
        .await
        .unwrap();
    server.stop().unwrap();
    // The outage itself (not a synchronisation): longer than the 2 s lease.
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.restart().unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    let after: Vec<Step> = (0..8).map(|k| Step::new(&format!("k{k}"), 1)).collect();
    publish(&producer, &after).await;
    let done = wait_until(Duration::from_secs(40), "every step of every key ended well", || async {
        let records = log(&url).await;
        let ok: std::collections::HashSet<(String, u64)> =
            records.iter().filter(|r| r.phase == "end" && r.ok).map(|r| (r.key.clone(), r.seq)).collect();
        ok.len() == 16
    })
    .await;
    let owners_now = owners(&producer).await;
    let records = log(&url).await;
    sigterm(&a);
    let exited = wait_exit(&mut a, Duration::from_secs(30)).await;
    let worker_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        done.is_ok(),
        "not every step ended well after the outage; owners {owners_now:?}; log {:?}\nworker log tail:\n{}",
        records.iter().map(|r| (&r.key, r.seq, &r.phase, r.ok, r.attempt)).collect::<Vec<_>>(),
        worker_log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(exited.success());
}

/// Redis restarts without its data (no persistence, or a failover to an empty replica) while
/// a process owns every shard: leases, epochs, groups and the topic's record are gone. The
/// process must notice (its renewals find no lease), take its shards again, recreate the
/// groups and handle what is published afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_that_loses_the_data_does_not_stop_the_topic_consumer() {
    let mut server = RedisServer::start().unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let log_path = tmp_log("amnesia");
    let mut a = worker(&url, &log_path);
    wait_until(Duration::from_secs(30), "A owns every shard", || all_owned_by(&producer, vec![a.id()])).await.unwrap();
    let first: Vec<Step> = (0..16).map(|k| Step::new(&format!("k{k}"), 0)).collect();
    publish(&producer, &first).await;
    wait_until(Duration::from_secs(30), "the first steps ran", || async {
        log(&url).await.iter().filter(|r| r.phase == "end" && r.ok).count() == 16
    })
    .await
    .unwrap();
    server.restart().unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    let after: Vec<Step> = (0..16).map(|k| Step::new(&format!("k{k}"), 1)).collect();
    publish(&producer, &after).await;
    let done = wait_until(Duration::from_secs(40), "every step published after the restart ended well", || async {
        log(&url).await.iter().filter(|r| r.phase == "end" && r.ok && r.seq == 1).count() == 16
    })
    .await;
    let owners_now = owners(&producer).await;
    let ran = log(&url).await.iter().filter(|r| r.phase == "end" && r.ok && r.seq == 1).count();
    let groups: Vec<String> =
        layout().shard_streams().iter().map(|s| server_cli(&server, &["XINFO", "GROUPS", s])).collect();
    let calls = server_cli(&server, &["INFO", "commandstats"]) + &server_cli(&server, &["INFO", "errorstats"]);
    sigterm(&a);
    let exited = wait_exit(&mut a, Duration::from_secs(30)).await;
    let worker_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        done.is_ok(),
        "{ran} of 16 steps published after the restart ran; owners {owners_now:?}\ngroups: {groups:?}\n\
         commands: {}\nworker log tail:\n{}",
        calls
            .lines()
            .filter(|l| l.contains("evalsha") || l.contains("xgroup") || l.contains("xread") || l.contains("errorstat"))
            .collect::<Vec<_>>()
            .join("\n"),
        worker_log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(exited.success());
}

fn server_cli(server: &RedisServer, args: &[&str]) -> String {
    streamx::testing::redis_cli(server, args).unwrap_or_else(|e| format!("{e}"))
}

/// A topic consumer with `ordered = false`, retries (some messages fail once, some for good)
/// and graceful hand-overs (a second runtime joins, then the first stops): every message
/// succeeds exactly once or is dead-lettered exactly once, and nothing else runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unordered_topic_with_retries_and_dead_letters_survives_graceful_hand_overs() {
    use std::sync::{Arc, Mutex};
    use streamx::{Consumer, HandlerError, Message};
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let topic = "break.unordered";
    let shards = 4u32;
    // (n, attempt, ok) of every run.
    let runs: Arc<Mutex<Vec<(u64, u32, bool)>>> = Arc::default();
    let consumer = |runs: Arc<Mutex<Vec<(u64, u32, bool)>>>| {
        Consumer::topic(topic, "g", move |msg: Message<u64>| {
            let runs = runs.clone();
            async move {
                let n = *msg.payload();
                tokio::time::sleep(Duration::from_millis(15)).await;
                let permanent = n % 50 == 7;
                let fails = permanent || (n.is_multiple_of(3) && msg.attempt() == 1);
                runs.lock().unwrap().push((n, msg.attempt(), !fails));
                if permanent {
                    return Err(HandlerError::permanent("for good"));
                }
                if fails {
                    return Err(HandlerError::from("once"));
                }
                Ok(())
            }
        })
        .shards(shards)
        .ordered(false)
        .concurrency(8)
        .claim_idle(Duration::from_secs(1))
        .max_retries(3)
        .backoff(streamx::Backoff::new(Duration::from_millis(200), 2.0, Duration::from_millis(400)))
    };
    let first = common::start_runtime(&url, vec![consumer(runs.clone())]).await;
    let producer = Producer::connect(&url).await.unwrap();
    let total = 400u64;
    let entries: Vec<(String, u64)> = (0..total).map(|n| (format!("k{}", n % 37), n)).collect();
    producer.publish_batch_keyed(topic, &entries[..200]).await.unwrap();
    wait_until(Duration::from_secs(30), "some ran", || async { runs.lock().unwrap().len() > 50 }).await.unwrap();
    let second = common::start_runtime(&url, vec![consumer(runs.clone())]).await;
    producer.publish_batch_keyed(topic, &entries[200..]).await.unwrap();
    wait_until(Duration::from_secs(30), "more ran", || async { runs.lock().unwrap().len() > 250 }).await.unwrap();
    first.shutdown().await.unwrap();
    let layout = TopicLayout::new(topic, shards).unwrap();
    let client = producer.client();
    let dead = |client: fred::clients::Client| {
        let layout = layout.clone();
        async move {
            let mut n = 0u64;
            for shard in layout.shard_streams() {
                let dlq = streamx::keys::derived_key(shard, streamx::keys::KeyKind::DeadLetters);
                let len: u64 = fred::interfaces::StreamsInterface::xlen(&client, dlq.as_str()).await.unwrap_or(0);
                n += len;
            }
            n
        }
    };
    let permanent = (0..total).filter(|n| n % 50 == 7).count() as u64;
    let done = wait_until(Duration::from_secs(40), "every message settled", || {
        let (runs, client) = (runs.clone(), client.clone());
        async move {
            let ok: std::collections::HashSet<u64> = runs.lock().unwrap().iter().filter(|r| r.2).map(|r| r.0).collect();
            ok.len() as u64 == total - permanent && dead(client).await == permanent
        }
    })
    .await;
    let runs_now = runs.lock().unwrap().clone();
    let dead_now = dead(client.clone()).await;
    second.shutdown().await.unwrap();
    let mut oks: BTreeMap<u64, usize> = BTreeMap::new();
    let mut attempts: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (n, attempt, ok) in &runs_now {
        if *ok {
            *oks.entry(*n).or_default() += 1;
        }
        attempts.entry(*n).or_default().push(*attempt);
    }
    let missing: Vec<u64> = (0..total).filter(|n| n % 50 != 7 && !oks.contains_key(n)).collect();
    assert!(done.is_ok(), "not settled: missing {missing:?}, dead letters {dead_now} of {permanent}");
    let twice: Vec<_> = oks.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "succeeded more than once: {twice:?}");
    let odd: Vec<_> = attempts
        .iter()
        .filter(|(n, a)| {
            let expected: Vec<u32> = if *n % 50 == 7 {
                vec![1]
            } else if *n % 3 == 0 {
                vec![1, 2]
            } else {
                vec![1]
            };
            let mut a = (*a).clone();
            a.sort_unstable();
            a != expected
        })
        .collect();
    assert!(odd.is_empty(), "unexpected attempts (n, attempts): {odd:?}");
    assert_eq!(dead_now, permanent, "each permanent failure dead-lettered once");
}

/// After a Redis restart that lost the data, the running topic consumer declares its topic
/// again: until it does, a producer started meanwhile finds no record and publishes to the
/// plain stream `app.orders` (for its lifetime), which no topic consumer reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_that_lost_the_data_the_consumer_declares_its_topic_again() {
    let mut server = RedisServer::start().unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let log_path = tmp_log("record");
    let mut a = worker(&url, &log_path);
    wait_until(Duration::from_secs(30), "A owns every shard", || all_owned_by(&producer, vec![a.id()])).await.unwrap();
    server.restart().unwrap();
    let record = streamx::keys::topic_record(TOPIC);
    let declared = wait_until(Duration::from_secs(20), "the topic's record is back", || async {
        server_cli(&server, &["HGET", &record, "shards"]).trim() == "16"
    })
    .await;
    let fresh = Producer::connect(&url).await.unwrap();
    fresh.publish_keyed(TOPIC, "k", &Step::new("k", 0)).await.unwrap();
    let plain = server_cli(&server, &["XLEN", TOPIC]);
    sigterm(&a);
    let _ = wait_exit(&mut a, Duration::from_secs(30)).await;
    assert!(declared.is_ok(), "the record {record} was not declared again within 20 s");
    assert_eq!(plain.trim(), "0", "a fresh producer published to the plain stream {TOPIC}");
}
