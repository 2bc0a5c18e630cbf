//! Worker *processes* (the `worker` binary, built like a user's crate): load sharing in
//! one group, graceful SIGTERM, and a clear failure when Redis is unreachable.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{
    counts, handled, id_strings, on_both_topologies, sigterm, spawn_worker, wait_exit, wait_until, Job, TestRedis,
    Topology,
};
use streamx::{Inspector, Producer};

async fn two_worker_processes_share_one_group(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let mut a = spawn_worker(&url, "jobs", &[]);
    let mut b = spawn_worker(&url, "jobs", &[]);
    let producer = Producer::connect(&url).await.unwrap();
    let jobs: Vec<Job> = (0..2000).map(|n| Job::sleep(n, 2)).collect();
    let published = id_strings(&producer.publish_batch("app.jobs", &jobs).await.unwrap());

    wait_until(Duration::from_secs(60), "2000 handled", || async { handled(&url).await.len() >= 2000 }).await.unwrap();
    sigterm(&a);
    sigterm(&b);
    assert!(wait_exit(&mut a, Duration::from_secs(15)).await.success());
    assert!(wait_exit(&mut b, Duration::from_secs(15)).await.success());

    let records = handled(&url).await;
    let per_id = counts(records.iter().map(|r| r.id.as_str()));
    assert_eq!(records.len(), 2000, "no duplicates");
    assert_eq!(per_id.keys().cloned().collect::<HashSet<_>>(), published.into_iter().collect());
    let pids: HashSet<u32> = records.iter().map(|r| r.pid).collect();
    assert_eq!(pids, HashSet::from([a.id(), b.id()]), "both processes handled some");
    let group = Inspector::connect(&url).await.unwrap().group("app.jobs", "workers").await.unwrap().unwrap();
    assert_eq!(group.pending, 0);
}

async fn sigterm_mid_stream_loses_nothing(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let jobs: Vec<Job> = (0..600).map(|n| Job::sleep(n, 20)).collect();
    let published: HashSet<String> =
        id_strings(&producer.publish_batch("app.jobs", &jobs).await.unwrap()).into_iter().collect();

    let mut first = spawn_worker(&url, "jobs", &[]);
    wait_until(Duration::from_secs(30), "first worker handled 100", || async { handled(&url).await.len() >= 100 })
        .await
        .unwrap();
    sigterm(&first);
    let status = wait_exit(&mut first, Duration::from_secs(15)).await;
    assert!(status.success(), "graceful shutdown exits 0, got {status:?}");

    // Every id the first worker handled is acknowledged; nothing else is lost: it is
    // pending (handed back) or not yet delivered.
    let by_first: Vec<String> = handled(&url).await.into_iter().map(|r| r.id).collect();
    assert!(by_first.len() < 600, "the SIGTERM came mid-stream ({} handled)", by_first.len());
    let inspector = Inspector::connect(&url).await.unwrap();
    let group = inspector.group("app.jobs", "workers").await.unwrap().unwrap();
    let lag = group.lag.expect("lag is known");
    assert_eq!(
        by_first.len() as u64 + group.pending + lag,
        600,
        "handled {} + pending {} + undelivered {lag} must account for all 600",
        by_first.len(),
        group.pending
    );

    let mut second = spawn_worker(&url, "jobs", &[]);
    wait_until(Duration::from_secs(60), "all 600 handled", || async {
        handled(&url).await.iter().map(|r| r.id.clone()).collect::<HashSet<_>>().len() >= 600
    })
    .await
    .unwrap();
    sigterm(&second);
    assert!(wait_exit(&mut second, Duration::from_secs(15)).await.success());

    let records = handled(&url).await;
    let per_id = counts(records.iter().map(|r| r.id.as_str()));
    assert_eq!(per_id.keys().cloned().collect::<HashSet<_>>(), published);
    assert!(per_id.values().all(|n| *n == 1), "graceful shutdown acknowledged everything it handled: no duplicates");
    assert_eq!(inspector.group("app.jobs", "workers").await.unwrap().unwrap().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_exits_non_zero_with_a_redacted_error_when_redis_is_down() {
    let mut worker = spawn_worker("redis://app:hunter2@127.0.0.1:1", "", &[]);
    let status = wait_exit(&mut worker, Duration::from_secs(30)).await;
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("cannot connect to Redis at redis://app:***@127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

on_both_topologies!(two_worker_processes_share_one_group, sigterm_mid_stream_loses_nothing,);
