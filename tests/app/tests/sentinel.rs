//! Redis Sentinel: consumers and a producer given a `redis-sentinel://` URL, through a
//! `SENTINEL FAILOVER` mid-run and through a crash of the master; ACL users on the data
//! nodes and on the sentinels; TLS; a wrong service name.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{redis_cli, start_runtime, wait_until, Job, REQUIRE_TLS_ENV};
use futures_util::TryStreamExt;
use streamx::testing::{unique_name, RedisSentinel, TestingError};
use streamx::{
    Consumer, Error, History, Inspector, Message, MessageId, Producer, PublishOptions, RedisUrl, RunningRuntime,
    Runtime,
};

/// Handled messages: id → how many times.
type Seen = Arc<Mutex<HashMap<MessageId, usize>>>;

async fn counting_consumer(url: &str, stream: &str) -> (RunningRuntime, Seen) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = Consumer::new(stream.to_string(), "g".to_string(), move |msg: Message<Job>| {
        let s = s.clone();
        async move {
            *s.lock().unwrap().entry(msg.id()).or_insert(0) += 1;
        }
    })
    .concurrency(8)
    .claim_idle(Duration::from_secs(2));
    let runtime = start_runtime(url, vec![consumer]).await;
    (runtime, seen)
}

/// Publishes job `n`, retrying an error (at most `max_failures` failures in all, counted in
/// `failures`); returns the id of the publish that returned `Ok`.
async fn publish_until_ok(
    producer: &Producer,
    stream: &str,
    n: u64,
    options: &PublishOptions,
    failures: &mut usize,
) -> MessageId {
    loop {
        match producer.publish_with(stream, &Job::ok(n), options).await {
            Ok(id) => return id,
            Err(e) => {
                *failures += 1;
                assert!(*failures < 2_000, "the producer never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn wait_all_handled(seen: &Seen, acked: &[MessageId], limit: Duration) {
    wait_until(limit, &format!("all {} acknowledged publishes handled", acked.len()), || async {
        let seen = seen.lock().unwrap();
        acked.iter().all(|id| seen.contains_key(id))
    })
    .await
    .unwrap_or_else(|e| {
        let seen = seen.lock().unwrap();
        let missing: Vec<_> = acked.iter().filter(|id| !seen.contains_key(id)).take(10).collect();
        panic!("{e}; first missing: {missing:?}")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_and_a_producer_work_through_the_sentinels() {
    let sentinel = RedisSentinel::start().unwrap();
    let url = sentinel.url();
    let stream = unique_name("sentinel");
    let (runtime, seen) = counting_consumer(&url, &stream).await;
    let producer = Producer::connect(&url).await.unwrap();

    let mut acked = Vec::new();
    for n in 0..200 {
        acked.push(producer.publish(&stream, &Job::ok(n)).await.unwrap());
    }
    wait_all_handled(&seen, &acked, Duration::from_secs(30)).await;
    // The entries are on the master the sentinels name, and nothing was handled twice.
    let master = &sentinel.nodes()[sentinel.master().unwrap()];
    assert_eq!(redis_cli(master, &["XLEN", &stream]).unwrap().trim(), "200");
    assert!(seen.lock().unwrap().values().all(|times| *times == 1));
    runtime.shutdown().await.unwrap();
    let group = Inspector::connect(&url).await.unwrap().group(&stream, "g").await.unwrap().unwrap();
    assert_eq!(group.pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_publishes_survive_a_sentinel_failover_mid_run() {
    let sentinel = Arc::new(RedisSentinel::start().unwrap());
    let url = sentinel.url();
    let stream = unique_name("sentinel-failover");
    let (runtime, seen) = counting_consumer(&url, &stream).await;
    let producer = Producer::connect(&url).await.unwrap();
    // With one replica, `WAIT 1` means the entry is on the replica the sentinels promote.
    let durable = PublishOptions::new().durable(1, Duration::from_millis(500));

    let mut acked = Vec::new();
    let mut failures = 0;
    let mut failover = None;
    let mut n = 0;
    // A steady flow of 2,000 publishes, the failover asked for after the first 1,000; the
    // flow goes on until the failover is over (the old master back as a replica), then 200
    // more show the consumers keep going on the new master.
    let started = Instant::now();
    while n < 2_000 || failover.as_ref().is_some_and(|f: &tokio::task::JoinHandle<_>| !f.is_finished()) {
        if n == 1_000 {
            let s = sentinel.clone();
            failover = Some(tokio::task::spawn_blocking(move || {
                let old = s.master().unwrap();
                let new = s.failover().unwrap();
                (old, new)
            }));
        }
        acked.push(publish_until_ok(&producer, &stream, n, &durable, &mut failures).await);
        n += 1;
    }
    let (old, new) = failover.unwrap().await.unwrap();
    assert_ne!(old, new);
    assert_eq!(sentinel.master().unwrap(), new);
    let during = n;
    for _ in 0..200 {
        acked.push(publish_until_ok(&producer, &stream, n, &durable, &mut failures).await);
        n += 1;
    }
    wait_all_handled(&seen, &acked, Duration::from_secs(90)).await;
    runtime.shutdown().await.unwrap();
    let group = Inspector::connect(&url).await.unwrap().group(&stream, "g").await.unwrap().unwrap();
    assert_eq!(group.pending, 0);
    // Every acknowledged publish is in the stream, read through the sentinels from the new
    // master: not only handled (a consumer may have read it from the old master before it
    // was demoted) but kept.
    let kept: HashSet<MessageId> =
        History::connect(&url).await.unwrap().read::<Job>(&stream, ..).map_ok(|m| m.id()).try_collect().await.unwrap();
    let lost: Vec<_> = acked.iter().filter(|id| !kept.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged publishes not in the stream, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let xlen: usize = redis_cli(&sentinel.nodes()[new], &["XLEN", &stream]).unwrap().trim().parse().unwrap();
    assert_eq!(xlen, kept.len());
    let twice = seen.lock().unwrap().values().filter(|times| **times > 1).count();
    eprintln!(
        "sentinel failover: node {old} demoted, node {new} promoted; {} durable publishes acknowledged \
         ({during} before the failover was over, in {:?}) and handled ({twice} handled twice), {failures} \
         publish attempts failed during the failover, {xlen} entries in the stream",
        acked.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_publishes_survive_a_crashed_master() {
    let sentinel = Arc::new(Mutex::new(RedisSentinel::start().unwrap()));
    let url = sentinel.lock().unwrap().url();
    let stream = unique_name("sentinel-crash");
    let (runtime, seen) = counting_consumer(&url, &stream).await;
    let producer = Producer::connect(&url).await.unwrap();
    let durable = PublishOptions::new().durable(1, Duration::from_millis(500));

    let mut acked = Vec::new();
    let mut failures = 0;
    let mut crash = None;
    let mut n = 0;
    // The master is killed after 500 publishes; the sentinels notice (down-after 1 s), agree
    // and promote the replica. The killed node comes back as a replica of the new master, so
    // durable publishes can be confirmed again.
    while n < 1_000 || crash.as_ref().is_some_and(|c: &tokio::task::JoinHandle<_>| !c.is_finished()) {
        if n == 500 {
            let s = sentinel.clone();
            crash = Some(tokio::task::spawn_blocking(move || {
                let mut s = s.lock().unwrap();
                let old = s.kill_master().unwrap();
                let new = s.wait_for_failover().unwrap();
                s.node(old).restart().unwrap();
                s.wait_until_healthy().unwrap();
                (old, new)
            }));
        }
        acked.push(publish_until_ok(&producer, &stream, n, &durable, &mut failures).await);
        n += 1;
    }
    let (old, new) = crash.unwrap().await.unwrap();
    assert_ne!(old, new);
    for _ in 0..200 {
        acked.push(publish_until_ok(&producer, &stream, n, &durable, &mut failures).await);
        n += 1;
    }
    wait_all_handled(&seen, &acked, Duration::from_secs(90)).await;
    runtime.shutdown().await.unwrap();
    let group = Inspector::connect(&url).await.unwrap().group(&stream, "g").await.unwrap().unwrap();
    assert_eq!(group.pending, 0);
    let kept: HashSet<MessageId> =
        History::connect(&url).await.unwrap().read::<Job>(&stream, ..).map_ok(|m| m.id()).try_collect().await.unwrap();
    assert!(acked.iter().all(|id| kept.contains(id)), "an acknowledged durable publish is missing");
    eprintln!(
        "sentinel crash: node {old} killed, node {new} promoted; {} durable publishes acknowledged and handled, \
         {failures} publish attempts failed meanwhile",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_on_the_data_nodes_and_on_the_sentinels() {
    let sentinel =
        RedisSentinel::builder().user("app", "app-secret").sentinel_user("watch", "watch-secret").start().unwrap();
    let url = format!("{}&sentinelUsername=watch&sentinelPassword=watch-secret", sentinel.url());
    let with_user = url.replacen("redis-sentinel://", "redis-sentinel://app:app-secret@", 1);
    let stream = unique_name("sentinel-acl");

    let (runtime, seen) = counting_consumer(&with_user, &stream).await;
    let producer = Producer::connect(&with_user).await.unwrap();
    let id = producer.publish(&stream, &Job::ok(1)).await.unwrap();
    wait_all_handled(&seen, &[id], Duration::from_secs(30)).await;
    // The data connections are the ACL user's.
    let master = &sentinel.nodes()[sentinel.master().unwrap()];
    let clients = redis_cli(master, &["CLIENT", "LIST"]).unwrap();
    assert!(clients.lines().any(|c| c.contains(" user=app ")), "{clients}");
    runtime.shutdown().await.unwrap();

    // A wrong password for the data nodes, or for the sentinels, is an error, not a hang.
    let wrong_data = url.replacen("redis-sentinel://", "redis-sentinel://app:wrong@", 1);
    let wrong_sentinel = with_user.replace("sentinelPassword=watch-secret", "sentinelPassword=wrong");
    let cases = [
        (wrong_data, "the master named by the sentinels refused the URL's user and password"),
        (wrong_sentinel, "sentinelUsername and sentinelPassword right?"),
    ];
    for (wrong, explained) in cases {
        let started = Instant::now();
        let err = Producer::connect(&wrong).await.err().unwrap();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        assert!(!err.to_string().contains("wrong"), "the password is shown: {err}");
        assert!(err.to_string().contains(explained), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_service_name_is_a_clear_error_not_a_hang() {
    let sentinel = RedisSentinel::start().unwrap();
    let url = sentinel.url().replace("sentinelServiceName=streamx", "sentinelServiceName=nope");
    let started = Instant::now();
    let err = Producer::connect(&url).await.err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(text.contains("the sentinels monitor no master named `nope`"), "{text}");
    // The runtime, which retries an unreachable Redis at startup (10 s by default), gives up
    // at once too: retrying cannot fix the name.
    let consumer = Consumer::new("s".to_string(), "g".to_string(), |_: Message<Job>| async {});
    let err = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(consumer)
        .build()
        .unwrap()
        .start()
        .await;
    let err = err.err().unwrap();
    assert!(err.to_string().contains("sentinelServiceName"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_sentinels_and_the_master_through_a_failover() {
    let sentinel = match RedisSentinel::builder().tls(true).start() {
        Ok(sentinel) => sentinel,
        Err(e @ TestingError::TlsUnsupported { .. }) if std::env::var_os(REQUIRE_TLS_ENV).is_none() => {
            eprintln!("SKIPPED, set {REQUIRE_TLS_ENV} to fail instead: {e}");
            return;
        }
        Err(e) => panic!("cannot start the sentinels with TLS: {e}"),
    };
    let url = sentinel.url();
    assert!(url.starts_with("rediss-sentinel://"), "{url}");
    let ca = sentinel.tls_files().unwrap().ca_cert.clone();
    let tls_url = RedisUrl::parse(&url).unwrap().with_tls_ca_file(&ca).unwrap();
    let stream = unique_name("sentinel-tls");
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Job>| {
        let s = s.clone();
        async move {
            *s.lock().unwrap().entry(msg.id()).or_insert(0) += 1;
        }
    });
    let runtime = Runtime::builder()
        .redis_url(url.clone())
        .tls_ca_file(&ca)
        .registered_consumers(false)
        .consumer(consumer)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let producer = Producer::connect_with(&tls_url).await.unwrap();
    let mut acked = Vec::new();
    for n in 0..50 {
        acked.push(producer.publish(&stream, &Job::ok(n)).await.unwrap());
    }
    wait_all_handled(&seen, &acked, Duration::from_secs(30)).await;
    // The client connections to the master are TLS ones (redis-server lists them with the
    // TLS port as their local address).
    let master = &sentinel.nodes()[sentinel.master().unwrap()];
    let tls_port = format!(":{} ", master.tls_port().unwrap());
    let clients = redis_cli(master, &["CLIENT", "LIST"]).unwrap();
    assert!(clients.lines().any(|c| c.contains("laddr=") && c.contains(&tls_port)), "{clients}");

    let s = Arc::new(sentinel);
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || s2.failover().unwrap()).await.unwrap();
    let durable = PublishOptions::new().durable(1, Duration::from_millis(500));
    let mut failures = 0;
    for n in 50..100 {
        acked.push(publish_until_ok(&producer, &stream, n, &durable, &mut failures).await);
    }
    wait_all_handled(&seen, &acked, Duration::from_secs(60)).await;
    runtime.shutdown().await.unwrap();

    // Without the CA, the sentinels' certificate is refused.
    let err = Producer::connect(&url).await.err().unwrap();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
}
