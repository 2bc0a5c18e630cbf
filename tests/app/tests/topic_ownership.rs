//! Topic shard ownership across worker *processes* (the `worker` binary's `orders` consumer:
//! the 16-shard topic `app.orders`, a 2 s lease): rebalancing as processes come and go, per-key
//! order through a SIGKILL, and fencing of a process paused past its lease.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{sigterm, spawn_worker_logged, wait_exit, wait_until, TestRedis, Topology};
use fred::interfaces::{KeysInterface, StreamsInterface};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
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
    let history = History::connect(url).await.unwrap();
    history.read::<StepRecord>("app.topic.log", ..).map_ok(|m| m.into_payload()).try_collect().await.unwrap()
}

fn layout() -> TopicLayout {
    TopicLayout::new(TOPIC, SHARDS).unwrap()
}

/// Publishes the steps to the topic (each to its key's shard), in the order given: keyed
/// batches keep each key's order.
async fn publish(producer: &Producer, steps: &[Step]) {
    producer.topic(TOPIC, SHARDS).await.unwrap();
    let keyed: Vec<(String, Step)> = steps.iter().map(|s| (s.key.clone(), s.clone())).collect();
    producer.publish_batch_keyed(TOPIC, &keyed).await.unwrap();
}

/// The member (and its pid) holding each shard's lease now.
async fn owners(producer: &Producer) -> Vec<Option<u32>> {
    let layout = layout();
    let client = producer.client();
    let mut out = Vec::new();
    for shard in layout.shard_streams() {
        let value: Option<String> = client.get(streamx::keys::shard_lease(shard, GROUP)).await.unwrap();
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

fn worker(url: &str, log: &std::path::Path) -> Child {
    spawn_worker_logged(url, "orders", &[("RUST_LOG", "warn")], log)
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {sig}");
}

/// For each key, the sequence numbers of its successful runs, in log order.
fn ok_runs(records: &[StepRecord]) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.phase == "end" && r.ok) {
        by_key.entry(r.key.clone()).or_default().push(r.seq);
    }
    by_key
}

/// Checks per-key order: every key's steps `0..steps` ran, never one ahead of the next
/// unhandled one (no gap, no reorder); a step runs again only as part of a re-delivery
/// (the sequence steps back to a step already run, then goes on in order). Returns how many
/// times some key stepped back.
fn assert_per_key_order(records: &[StepRecord], keys: usize, steps: u64) -> usize {
    let runs = ok_runs(records);
    assert_eq!(runs.len(), keys, "every key ran");
    let mut rewinds = 0;
    for (key, seqs) in &runs {
        let mut seen = HashSet::new();
        let mut last: Option<u64> = None;
        for &s in seqs {
            match last {
                None => assert_eq!(s, 0, "key {key} starts at 0: {seqs:?}"),
                Some(l) if s == l + 1 => {}
                Some(l) if s <= l => {
                    assert!(seen.contains(&s), "key {key}: {s} after {l} was never run before: {seqs:?}");
                    rewinds += 1;
                }
                Some(l) => panic!("key {key}: {s} ran right after {l}, skipping: {seqs:?}"),
            }
            seen.insert(s);
            last = Some(s);
        }
        assert_eq!(seen.len() as u64, steps, "key {key} ran every step: {seqs:?}");
    }
    rewinds
}

/// Samples the leases every 50 ms until stopped: for each sample, the pids holding shards.
fn sample_leases(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Vec<Option<u32>>>> {
    tokio::spawn(async move {
        let producer = Producer::connect(&url).await.unwrap();
        let mut samples = Vec::new();
        while !stop.load(Ordering::Acquire) {
            samples.push(owners(&producer).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        samples
    })
}

/// How many script calls Redis refused with `STREAMX_FENCED` (its `INFO errorstats`).
async fn fenced_refusals(producer: &Producer) -> u64 {
    let cmd = fred::types::CustomCommand::new_static("INFO", fred::types::ClusterHash::Random, false);
    let info: String = fred::interfaces::ClientLike::custom(&producer.client(), cmd, vec!["errorstats"]).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("errorstat_STREAMX_FENCED:count="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn tmp_log(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("streamx-topic-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir.join("worker.log")
}

async fn all_owned_by(producer: &Producer, pids: Vec<u32>) -> bool {
    let owners = owners(producer).await;
    owners.iter().all(|o| o.is_some_and(|p| pids.contains(&p))) && pids.iter().all(|p| owners.contains(&Some(*p)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_rebalance_as_processes_come_and_go_and_every_message_is_handled() {
    for topology in [Topology::Standalone, Topology::Cluster] {
        rebalance(topology).await;
    }
}

async fn rebalance(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let log_path = tmp_log(&format!("rebalance-{topology:?}"));
    let mut a = worker(&url, &log_path);
    wait_until(Duration::from_secs(30), "one process owns every shard", || all_owned_by(&producer, vec![a.id()]))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_leases(url.clone(), stop.clone());
    let live: Arc<Mutex<HashSet<u32>>> = Arc::new(Mutex::new(HashSet::from([a.id()])));

    let keys: Vec<String> = (0..48).map(|k| format!("k{k}")).collect();
    let mut steps = Vec::new();
    for seq in 0..60 {
        for key in &keys {
            steps.push(Step { sleep_ms: 3, ..Step::new(key, seq) });
        }
    }
    publish(&producer, &steps[..1000]).await;

    let mut b = worker(&url, &log_path);
    let mut c = worker(&url, &log_path);
    live.lock().unwrap().extend([b.id(), c.id()]);
    wait_until(Duration::from_secs(30), "three processes share the shards", || {
        all_owned_by(&producer, vec![a.id(), b.id(), c.id()])
    })
    .await
    .unwrap();
    let spread = owners(&producer).await;
    for pid in [a.id(), b.id(), c.id()] {
        let n = spread.iter().filter(|o| **o == Some(pid)).count();
        assert!((5..=6).contains(&n), "a fair share is 5 or 6 of 16, {pid} owns {n}: {spread:?}");
    }
    publish(&producer, &steps[1000..2000]).await;
    sigterm(&b);
    sigterm(&c);
    assert!(wait_exit(&mut b, Duration::from_secs(30)).await.success());
    assert!(wait_exit(&mut c, Duration::from_secs(30)).await.success());
    publish(&producer, &steps[2000..]).await;
    wait_until(Duration::from_secs(30), "the last process owns every shard again", || {
        all_owned_by(&producer, vec![a.id()])
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(60), "every step ran", || async {
        ok_runs(&log(&url).await).values().map(Vec::len).sum::<usize>() >= steps.len()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Release);
    let samples = sampler.await.unwrap();
    sigterm(&a);
    assert!(wait_exit(&mut a, Duration::from_secs(30)).await.success());

    // Graceful stops: nothing re-delivered, every step once, in order per key.
    let records = log(&url).await;
    assert_eq!(assert_per_key_order(&records, keys.len(), 60), 0, "no step ran twice");
    let live = live.lock().unwrap().clone();
    // Every sample: each shard held by one of the processes started (a lease holds one
    // value), and a shard is without owner only briefly during a hand-over.
    let mut longest_gap: HashMap<usize, usize> = HashMap::new();
    let mut gap: HashMap<usize, usize> = HashMap::new();
    for sample in &samples {
        for (shard, owner) in sample.iter().enumerate() {
            match owner {
                Some(pid) => {
                    assert!(live.contains(pid), "shard {shard} held by {pid}, not a process of this test");
                    gap.insert(shard, 0);
                }
                None => {
                    let g = gap.entry(shard).or_default();
                    *g += 1;
                    let longest = longest_gap.entry(shard).or_default();
                    *longest = (*longest).max(*g);
                }
            }
        }
    }
    let worst = longest_gap.values().copied().max().unwrap_or(0);
    // A hand-over takes at most one beat of the taker (2 s / 3) after the release: ~14
    // samples of 50 ms; allow twice that on a loaded machine.
    assert!(worst <= 30, "a shard stayed without owner for {worst} samples of 50 ms: {longest_gap:?}");
    assert!(samples.len() > 20, "the leases were sampled throughout ({} samples)", samples.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_across_three_processes_through_a_sigkill() {
    for topology in [Topology::Standalone, Topology::Cluster] {
        sigkill(topology).await;
    }
}

async fn sigkill(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let log_path = tmp_log(&format!("sigkill-{topology:?}"));
    let mut workers: Vec<Child> = (0..3).map(|_| worker(&url, &log_path)).collect();

    // 200 keys × 100 steps, interleaved; some steps sleep, ~5% fail once.
    let keys: Vec<String> = (0..200).map(|k| format!("order-{k}")).collect();
    let mut steps = Vec::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for seq in 0..100 {
        for key in &keys {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut step = Step::new(key, seq);
            step.sleep_ms = x % 4;
            step.fail = u32::from(x.is_multiple_of(20));
            steps.push(step);
        }
    }
    publish(&producer, &steps).await;
    wait_until(Duration::from_secs(120), "a third of the steps ran", || async {
        ok_runs(&log(&url).await).values().map(Vec::len).sum::<usize>() >= steps.len() / 3
    })
    .await
    .unwrap();
    let victim = workers.remove(0);
    let killed_pid = victim.id();
    signal(&victim, "-KILL");
    let mut victim = victim;
    let _ = victim.wait();
    workers.push(worker(&url, &log_path));
    wait_until(Duration::from_secs(240), "every step ran", || async {
        let runs = ok_runs(&log(&url).await);
        runs.len() == keys.len() && runs.values().all(|s| s.iter().copied().collect::<HashSet<_>>().len() == 100)
    })
    .await
    .unwrap();
    for w in &workers {
        sigterm(w);
    }
    for w in &mut workers {
        assert!(wait_exit(w, Duration::from_secs(30)).await.success());
    }
    let records = log(&url).await;
    let rewinds = assert_per_key_order(&records, keys.len(), 100);
    // Re-deliveries happen only to keys whose last run before the kill was the killed
    // process's: a message in flight there (or run and not yet acknowledged).
    let killed_keys: HashSet<&str> = records.iter().filter(|r| r.pid == killed_pid).map(|r| r.key.as_str()).collect();
    for (key, seqs) in ok_runs(&records) {
        let stepped_back = seqs.windows(2).any(|w| w[1] <= w[0]);
        assert!(!stepped_back || killed_keys.contains(key.as_str()), "key {key} re-ran without the kill: {seqs:?}");
    }
    eprintln!("re-deliveries after the SIGKILL: {rewinds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_paused_past_its_lease_cannot_ack_claim_or_dead_letter() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let log_path = tmp_log("sigstop");
    let _ = std::fs::remove_file(&log_path);
    let a = worker(&url, &log_path);
    wait_until(Duration::from_secs(30), "A owns every shard", || all_owned_by(&producer, vec![a.id()])).await.unwrap();
    let a_member = {
        let client = producer.client();
        let value: String = client.get(streamx::keys::shard_lease(layout().shard_stream(0), GROUP)).await.unwrap();
        value.split_once(':').unwrap().1.to_string()
    };
    // 12 slow steps on different keys, and one that fails for good: all in flight in A.
    let mut steps: Vec<Step> = (0..12).map(|k| Step { sleep_ms: 5000, ..Step::new(&format!("slow-{k}"), 0) }).collect();
    steps.push(Step { sleep_ms: 5000, permanent: true, ..Step::new("doomed", 0) });
    publish(&producer, &steps).await;
    let started_in = |pid: u32| {
        let url = url.clone();
        async move { log(&url).await.iter().filter(|r| r.phase == "start" && r.pid == pid).count() >= 13 }
    };
    wait_until(Duration::from_secs(30), "A started all", || started_in(a.id())).await.unwrap();

    signal(&a, "-STOP");
    // B runs its copies three times as long (15 s): A's late calls, right after it resumes,
    // all come while B still runs every copy. (A rejoins, so B gives half the shards back:
    // its drain waits for those runs to end.)
    let env = [("RUST_LOG", "warn"), ("WORKER_SLEEP_FACTOR", "3"), ("WORKER_SHUTDOWN_TIMEOUT_MS", "30000")];
    let b = spawn_worker_logged(&url, "orders", &env, &log_path);
    wait_until(Duration::from_secs(30), "B took the shards and started all again", || started_in(b.id()))
        .await
        .unwrap();
    let b_member = {
        let client = producer.client();
        let value: String = client.get(streamx::keys::shard_lease(layout().shard_stream(0), GROUP)).await.unwrap();
        value.split_once(':').unwrap().1.to_string()
    };
    assert_ne!(a_member, b_member);
    signal(&a, "-CONT");
    // A's handlers finish at once (their sleep ran out while it was stopped); each then
    // tries to acknowledge (or dead-letter) what B now runs.
    wait_until(Duration::from_secs(30), "A's runs ended", || async {
        log(&url).await.iter().filter(|r| r.phase == "end" && r.pid == a.id()).count() >= 13
    })
    .await
    .unwrap();
    // Each late call of A is refused by its script with STREAMX_FENCED, which Redis counts
    // (`INFO errorstats`): 12 acknowledgements and one dead letter.
    wait_until(Duration::from_secs(15), "A's 13 late calls were refused", || async {
        fenced_refusals(&producer).await >= 13
    })
    .await
    .unwrap();
    // What A's late calls did: nothing. B's runs are still going (5 s each): every entry is
    // still pending, under B's name, none under A's; no dead letter yet.
    let b_ended = log(&url).await.iter().filter(|r| r.phase == "end" && r.pid == b.id()).count();
    let layout = layout();
    let client = producer.client();
    let mut pending_total = 0;
    let mut dead_letters = 0;
    for shard in layout.shard_streams() {
        let rows: Vec<(String, String, u64, u64)> =
            client.xpending(shard.as_str(), GROUP, ("-", "+", 100u64)).await.unwrap_or_default();
        for (_, owner, _, _) in &rows {
            assert_ne!(owner, &a_member, "A claimed back an entry of {shard} after it lost the shard");
        }
        pending_total += rows.len();
        let dlq = streamx::keys::derived_key(shard, streamx::keys::KeyKind::DeadLetters);
        let len: u64 = client.xlen(dlq.as_str()).await.unwrap();
        dead_letters += len;
    }
    if b_ended == 0 {
        assert_eq!(pending_total, 13, "A's acknowledgements were refused: all 13 still pending under B");
        assert_eq!(dead_letters, 0, "A's dead letter was refused");
    }
    wait_until(Duration::from_secs(60), "B finished", || async {
        log(&url).await.iter().filter(|r| r.phase == "end" && r.pid == b.id()).count() >= 13
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(15), "B acknowledged and dead-lettered", || async {
        let mut pending = 0;
        for shard in layout.shard_streams() {
            let rows: Vec<(String, String, u64, u64)> =
                client.xpending(shard.as_str(), GROUP, ("-", "+", 100u64)).await.unwrap_or_default();
            pending += rows.len();
        }
        pending == 0
    })
    .await
    .unwrap();
    // Exactly one dead letter, written by B.
    let mut letters = Vec::new();
    for shard in layout.shard_streams() {
        let dlq = streamx::keys::derived_key(shard, streamx::keys::KeyKind::DeadLetters);
        let entries: Vec<(String, HashMap<String, String>)> =
            client.xrange(dlq.as_str(), "-", "+", None).await.unwrap();
        letters.extend(entries.into_iter().map(|(_, f)| f.get("dlq:consumer").cloned().unwrap_or_default()));
    }
    assert_eq!(letters, vec![b_member.clone()], "one dead letter, by the new owner");
    assert!(b_ended == 0, "the check above ran while B was still running its copies (B's runs take 15 s)");
    for mut w in [a, b] {
        sigterm(&w);
        assert!(wait_exit(&mut w, Duration::from_secs(30)).await.success());
    }
}
