//! Delayed messages: `publish_after` / `publish_at`, promoted by running runtimes, listed and
//! cancelled with `Scheduled`, against spawned servers of both topologies.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    http_get, on_both_topologies, prometheus_value, start_runtime, start_runtime_with, wait_until, TestRedis, Topology,
};
use futures_util::TryStreamExt;
use streamx::testing::{unique_name, RedisServer};
use streamx::{
    Consumer, Error, Headers, History, Message, MessageId, Producer, PublishOptions, ScheduleId, Scheduled,
    SCHEDULED_AT_HEADER,
};

/// What a handler saw of one message: its payload, the due time in its header, and when it
/// arrived (this machine's clock, Unix ms).
#[derive(Debug, Clone, Copy)]
struct Arrival {
    n: u64,
    due: u64,
    arrived: u64,
}

type Arrivals = Arc<Mutex<Vec<Arrival>>>;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A consumer of `stream` (group `group`) that records every arrival.
fn recording(stream: &str, group: &str, arrivals: &Arrivals) -> Consumer {
    let arrivals = arrivals.clone();
    Consumer::new(stream.to_string(), group.to_string(), move |msg: Message<u64>| {
        let arrived = now_ms();
        let arrivals = arrivals.clone();
        async move {
            let due = msg.headers().get(SCHEDULED_AT_HEADER).and_then(|d| d.parse().ok()).unwrap_or(0);
            arrivals.lock().unwrap().push(Arrival { n: *msg.payload(), due, arrived });
        }
    })
    .concurrency(32)
}

/// How many times each payload arrived.
fn counts(arrivals: &Arrivals) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for a in arrivals.lock().unwrap().iter() {
        *counts.entry(a.n).or_insert(0) += 1;
    }
    counts
}

/// The payloads of every entry of `stream`, oldest first.
async fn stored(url: &str, stream: &str) -> Vec<u64> {
    let history = History::connect(url).await.unwrap();
    history.read::<u64>(stream, ..).map_ok(|m| m.into_payload()).try_collect().await.unwrap()
}

/// A small deterministic generator (the test app depends on no random crate).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn a_thousand_delayed_messages_arrive_no_earlier_than_due_and_on_time(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let stream = unique_name("delayed");
    let arrivals: Arrivals = Arc::default();
    let runtime = start_runtime(&url, vec![recording(&stream, "g", &arrivals)]).await;
    let producer = Producer::connect(&url).await.unwrap();
    let mut rng = Lcg(24);

    for n in 0..1_000u64 {
        let delay = Duration::from_millis(rng.below(3_001));
        producer.publish_after(&stream, &n, delay).await.unwrap();
    }
    wait_until(Duration::from_secs(30), "every delayed message handled", || async {
        arrivals.lock().unwrap().len() >= 1_000
    })
    .await
    .unwrap();

    let seen = arrivals.lock().unwrap().clone();
    assert!(counts(&arrivals).values().all(|c| *c == 1), "each message exactly once");
    assert_eq!(counts(&arrivals).len(), 1_000);
    let early: Vec<&Arrival> = seen.iter().filter(|a| a.arrived < a.due).collect();
    assert!(early.is_empty(), "no message arrives before it is due: {early:?}");
    let mut late: Vec<u64> = seen.iter().map(|a| a.arrived - a.due).collect();
    late.sort_unstable();
    let (p50, p90, p99, max) =
        (percentile(&late, 0.5), percentile(&late, 0.9), percentile(&late, 0.99), *late.last().unwrap());
    eprintln!("{topology:?}: 1,000 messages delayed 0-3 s arrived after due by p50 {p50} ms, p90 {p90} ms, p99 {p99} ms, max {max} ms");
    assert!(p99 <= 200, "p99 {p99} ms late");
    let scheduled = Scheduled::connect(&url).await.unwrap();
    assert_eq!(scheduled.count(&stream).await.unwrap(), 0, "nothing left in the schedule");
    runtime.shutdown().await.unwrap();
}

async fn three_runtimes_promoting_at_once_deliver_each_message_exactly_once(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let stream = unique_name("contended");
    // One group per runtime: a message promoted twice would be two entries, each group
    // getting both.
    let arrivals: Vec<Arrivals> = (0..3).map(|_| Arrivals::default()).collect();
    let mut runtimes = Vec::new();
    for (i, a) in arrivals.iter().enumerate() {
        runtimes.push(start_runtime(&url, vec![recording(&stream, &format!("g{i}"), a)]).await);
    }
    let producer = Producer::connect(&url).await.unwrap();
    let mut rng = Lcg(3);
    let total = 3_000u64;
    for n in 0..total {
        producer.publish_after(&stream, &n, Duration::from_millis(200 + rng.below(1_000))).await.unwrap();
    }
    wait_until(Duration::from_secs(30), "every group handled every message", || async {
        arrivals.iter().all(|a| a.lock().unwrap().len() as u64 >= total)
    })
    .await
    .unwrap();
    for rt in runtimes {
        rt.shutdown().await.unwrap();
    }

    let entries = stored(&url, &stream).await;
    assert_eq!(entries.len() as u64, total, "one entry per message");
    assert_eq!(entries.iter().copied().collect::<HashSet<_>>().len() as u64, total);
    for (i, a) in arrivals.iter().enumerate() {
        let counts = counts(a);
        assert_eq!(counts.len() as u64, total, "group g{i} got every message");
        assert!(counts.values().all(|c| *c == 1), "group g{i} got each message once");
    }
}

async fn cancelled_messages_never_arrive_and_the_others_do(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let stream = unique_name("cancel");
    let producer = Producer::connect(&url).await.unwrap();
    let scheduled = Scheduled::connect(&url).await.unwrap();
    let mut ids: Vec<ScheduleId> = Vec::new();
    for n in 0..200u64 {
        let headers = Headers::new().with("n", n.to_string());
        let options = PublishOptions::new().headers(headers);
        ids.push(producer.publish_after_with(&stream, &n, Duration::from_millis(1_500 + n), &options).await.unwrap());
    }
    assert_eq!(scheduled.count(&stream).await.unwrap(), 200);

    // Listing: in due order, with payload and headers, paged without gaps or repeats.
    let first = scheduled.list(&stream, 3).await.unwrap();
    let shown: Vec<(String, String)> = first
        .iter()
        .map(|m| (String::from_utf8_lossy(&m.data).into_owned(), m.headers.get("n").unwrap().to_string()))
        .collect();
    assert_eq!(shown, [("0".into(), "0".into()), ("1".into(), "1".into()), ("2".into(), "2".into())]);
    assert_eq!(first[0].id, ids[0]);
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = scheduled.list_page(&stream, after, 7).await.unwrap();
        listed.extend(page.entries.iter().map(|m| m.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, ids, "every page in due order");
    let got = scheduled.get(&stream, &ids[5]).await.unwrap().unwrap();
    assert_eq!(&got.data[..], b"5");

    for id in ids.iter().step_by(2) {
        assert!(scheduled.cancel(&stream, id).await.unwrap(), "{id} was scheduled");
    }
    assert!(!scheduled.cancel(&stream, &ids[0]).await.unwrap(), "a second cancel finds nothing");
    assert!(scheduled.get(&stream, &ids[0]).await.unwrap().is_none());
    assert_eq!(scheduled.count(&stream).await.unwrap(), 100);

    let arrivals: Arrivals = Arc::default();
    let runtime = start_runtime(&url, vec![recording(&stream, "g", &arrivals)]).await;
    wait_until(Duration::from_secs(20), "the schedule emptied", || async {
        scheduled.count(&stream).await.unwrap() == 0
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(10), "the 100 kept messages handled", || async {
        arrivals.lock().unwrap().len() >= 100
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let mut entries = stored(&url, &stream).await;
    entries.sort_unstable();
    assert_eq!(entries, (1..200).step_by(2).collect::<Vec<u64>>(), "only the messages not cancelled were added");
    let counts = counts(&arrivals);
    assert!(counts.keys().all(|n| n % 2 == 1) && counts.values().all(|c| *c == 1), "{counts:?}");
    assert!(!scheduled.cancel(&stream, &ids[1]).await.unwrap(), "a promoted message cannot be cancelled");
}

async fn a_cancel_racing_the_promotion_either_cancels_or_delivers(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let stream = unique_name("race");
    let arrivals: Arrivals = Arc::default();
    let runtime = start_runtime(&url, vec![recording(&stream, "g", &arrivals)]).await;
    let producer = Producer::connect(&url).await.unwrap();
    let scheduled = Scheduled::connect(&url).await.unwrap();
    let mut ids = Vec::new();
    // Due one a millisecond from 300 ms on, cancelled latest first once the first has
    // arrived: the cancels of the latest come before they are due, those of the earliest
    // after, and some in between race the promotion.
    let base = SystemTime::now() + Duration::from_millis(300);
    for n in 0..1_000u64 {
        ids.push((n, producer.publish_at(&stream, &n, base + Duration::from_millis(n)).await.unwrap()));
    }
    wait_until(Duration::from_secs(10), "the first message handled", || async { !arrivals.lock().unwrap().is_empty() })
        .await
        .unwrap();
    let mut cancelled = HashSet::new();
    for (n, id) in ids.iter().rev() {
        if scheduled.cancel(&stream, id).await.unwrap() {
            cancelled.insert(*n);
        }
    }
    wait_until(Duration::from_secs(10), "the schedule emptied", || async {
        scheduled.count(&stream).await.unwrap() == 0
    })
    .await
    .unwrap();
    let delivered: HashSet<u64> = stored(&url, &stream).await.into_iter().collect();
    wait_until(Duration::from_secs(10), "every added message handled", || async {
        arrivals.lock().unwrap().len() >= delivered.len()
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    eprintln!("{topology:?}: {} cancelled, {} delivered", cancelled.len(), delivered.len());
    assert!(cancelled.is_disjoint(&delivered), "never both cancelled and delivered");
    assert_eq!(cancelled.len() + delivered.len(), 1_000, "each message either cancelled or delivered");
    assert!(!cancelled.is_empty() && !delivered.is_empty(), "some of each");
}

async fn braced_stream_names_and_times_in_the_past(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let tag = unique_name("shop");
    let streams = [format!("{{{tag}}}.orders"), format!("{tag}}}x")];
    let arrivals: Arrivals = Arc::default();
    let consumers = streams.iter().map(|s| recording(s, "g", &arrivals)).collect();
    let runtime = start_runtime(&url, consumers).await;
    let producer = Producer::connect(&url).await.unwrap();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3_600);
    let past_ms = an_hour_ago.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;

    let started = Instant::now();
    for (n, stream) in streams.iter().enumerate() {
        producer.publish_at(stream, &(n as u64), an_hour_ago).await.unwrap();
    }
    wait_until(Duration::from_secs(5), "both handled", || async { arrivals.lock().unwrap().len() >= 2 }).await.unwrap();
    let took = started.elapsed();
    runtime.shutdown().await.unwrap();
    eprintln!("{topology:?}: publish_at an hour ago delivered in {took:?}");
    assert!(took < Duration::from_millis(500), "delivered promptly: {took:?}");
    let seen = arrivals.lock().unwrap().clone();
    assert!(seen.iter().all(|a| a.due == past_ms), "the header carries the time asked for: {seen:?}");
    for (n, stream) in streams.iter().enumerate() {
        assert_eq!(stored(&url, stream).await, [n as u64], "`{stream}` got its message");
    }
}

on_both_topologies!(
    a_thousand_delayed_messages_arrive_no_earlier_than_due_and_on_time,
    three_runtimes_promoting_at_once_deliver_each_message_exactly_once,
    cancelled_messages_never_arrive_and_the_others_do,
    a_cancel_racing_the_promotion_either_cancels_or_delivers,
    braced_stream_names_and_times_in_the_past,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_aof_loses_no_scheduled_message() {
    let mut server = RedisServer::builder().appendonly(true).start().unwrap();
    let url = server.url();
    let stream = unique_name("aof");
    let arrivals: Arrivals = Arc::default();
    let runtime = start_runtime(&url, vec![recording(&stream, "g", &arrivals)]).await;
    let producer = Producer::connect(&url).await.unwrap();
    let mut rng = Lcg(7);
    // Some come due while Redis is down (after 300-1,000 ms), the rest after it is back.
    for n in 0..600u64 {
        producer.publish_after(&stream, &n, Duration::from_millis(300 + rng.below(2_700))).await.unwrap();
    }
    let before = arrivals.lock().unwrap().len();

    server.kill().unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await; // an outage, not a wait on state
    server.restart().unwrap();

    wait_until(Duration::from_secs(30), "every scheduled message handled", || async {
        arrivals.lock().unwrap().len() >= 600
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let counts = counts(&arrivals);
    eprintln!("AOF restart: {before} handled before the kill, 600 after the restart");
    assert_eq!(counts.len(), 600, "no scheduled message lost");
    assert!(counts.values().all(|c| *c == 1), "each once");
    assert!(arrivals.lock().unwrap().iter().all(|a| a.arrived >= a.due), "none early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_schedule_entry_never_holds_up_or_loses_the_rest() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("broken");
    let producer = Producer::connect(&url).await.unwrap();
    let scheduled = Scheduled::connect(&url).await.unwrap();
    // A payload deleted by hand: dropped at promotion; the others are delivered.
    let lost = producer.publish_after(&stream, &0u64, Duration::ZERO).await.unwrap();
    for n in 1..=3u64 {
        producer.publish_after(&stream, &n, Duration::from_millis(n)).await.unwrap();
    }
    let payloads = streamx::keys::scheduled_payloads(&stream);
    assert_eq!(redis.cli(&["HDEL", &payloads, &lost.to_string()]).unwrap().trim(), "1");
    let arrivals: Arrivals = Arc::default();
    let runtime = start_runtime(&url, vec![recording(&stream, "g", &arrivals)]).await;
    wait_until(Duration::from_secs(5), "the three others handled", || async { arrivals.lock().unwrap().len() >= 3 })
        .await
        .unwrap();
    assert_eq!(scheduled.count(&stream).await.unwrap(), 0, "the broken one is dropped from the schedule");

    // The stream's key turns into a string: every XADD fails; nothing is lost meanwhile.
    let other = unique_name("wrongtype");
    let arrivals_other: Arrivals = Arc::default();
    let runtime_other = start_runtime(&url, vec![recording(&other, "g", &arrivals_other)]).await;
    redis.cli(&["DEL", &other]).unwrap();
    redis.cli(&["SET", &other, "not a stream"]).unwrap();
    for n in 10..15u64 {
        producer.publish_after(&other, &n, Duration::ZERO).await.unwrap();
    }
    // Promotion is attempted (and backs off): Redis counts the XADDs that failed.
    wait_until(Duration::from_secs(5), "three failed promotion attempts", || async { failed_xadds(&redis) >= 3 })
        .await
        .unwrap();
    assert_eq!(scheduled.count(&other).await.unwrap(), 5, "kept while the XADD fails");
    redis.cli(&["DEL", &other]).unwrap();
    wait_until(Duration::from_secs(10), "promoted once the key is a stream again", || async {
        scheduled.count(&other).await.unwrap() == 0
    })
    .await
    .unwrap();
    let mut entries = stored(&url, &other).await;
    entries.sort_unstable();
    assert_eq!(entries, [10, 11, 12, 13, 14]);
    runtime.shutdown().await.unwrap();
    runtime_other.shutdown().await.unwrap();
}

/// How many XADDs failed on the server (`INFO commandstats`, Redis 7.0+ and Valkey).
fn failed_xadds(redis: &TestRedis) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]).unwrap();
    info.lines()
        .find(|l| l.starts_with("cmdstat_xadd:"))
        .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("failed_calls=")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_that_cannot_apply_later_are_refused_and_durable_waits() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("options");
    let producer = Producer::connect(&url).await.unwrap();
    let scheduled = Scheduled::connect(&url).await.unwrap();
    let delay = Duration::from_secs(60);
    for (options, option) in [
        (PublishOptions::new().id(MessageId::new(1, 0)), "an explicit id"),
        (PublishOptions::new().no_mkstream(), "no_mkstream"),
        (PublishOptions::new().max_len_approx(10), "max_len_approx"),
        (PublishOptions::new().max_len_acked(10), "max_len_acked"),
        (PublishOptions::new().idempotency_key("k"), "an idempotency key"),
    ] {
        let err = producer.publish_after_with(&stream, &1u64, delay, &options).await.unwrap_err();
        assert!(matches!(&err, Error::Unschedulable { option: o, .. } if *o == option), "{err:?}");
    }
    assert_eq!(scheduled.count(&stream).await.unwrap(), 0, "nothing scheduled");
    // No replica: the schedule is written, and WAIT says it is not replicated.
    let durable = PublishOptions::new().durable(1, Duration::from_millis(20));
    let err = producer.publish_after_with(&stream, &1u64, delay, &durable).await.unwrap_err();
    assert!(matches!(err, Error::NotReplicated { wanted: 1, acked: 0, .. }), "{err:?}");
    assert_eq!(scheduled.count(&stream).await.unwrap(), 1);
    assert_eq!(scheduled.cancel_all(&stream).await.unwrap(), 1);
    assert_eq!(scheduled.count(&stream).await.unwrap(), 0);
    // The time asked for is the due time (publish_at), a delay is added to the Redis clock.
    let when = SystemTime::now() + Duration::from_secs(3_600);
    producer.publish_at(&stream, &2u64, when).await.unwrap();
    let listed = scheduled.list(&stream, 10).await.unwrap();
    let want = when.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    assert_eq!(listed[0].due_ms(), want);
    let by_id: BTreeMap<String, u64> = listed.iter().map(|m| (m.id.to_string(), m.due_ms())).collect();
    assert_eq!(by_id.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_are_counted_in_the_metrics() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("metrics");
    let producer = Producer::connect(&url).await.unwrap();
    for n in 0..5u64 {
        producer.publish_after(&stream, &n, Duration::ZERO).await.unwrap();
    }
    producer.publish_after(&stream, &9u64, Duration::from_secs(3_600)).await.unwrap();
    let arrivals: Arrivals = Arc::default();
    let runtime = start_runtime_with(&url, vec![recording(&stream, "g", &arrivals)], |b| b.http("127.0.0.1:0")).await;
    let addr = runtime.http_addr().unwrap();
    let labels = [("stream", stream.as_str())];
    wait_until(Duration::from_secs(10), "5 promoted, 1 left, in /metrics", || async {
        let text = http_get(addr, "/metrics").await.1;
        prometheus_value(&text, "streamx_scheduled_promoted_total", &labels) == Some(5.0)
            && prometheus_value(&text, "streamx_scheduled_messages", &labels) == Some(1.0)
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
}

/// Promotion throughput: 100,000 messages all due at once, promoted by one runtime (no
/// consumer work beyond counting). Run with
/// `cargo test --release -p streamx-test-app --test scheduled promotion_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn promotion_throughput() {
    const N: u64 = 100_000;
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("throughput");
    let producer = Producer::connect(&url).await.unwrap();
    let due = SystemTime::now() + Duration::from_secs(3_600);
    let started = Instant::now();
    for chunk in (0..N).collect::<Vec<_>>().chunks(1_000) {
        let calls = chunk.iter().map(|n| producer.publish_at(&stream, n, due));
        for r in futures_util::future::join_all(calls).await {
            r.unwrap();
        }
    }
    let scheduling = started.elapsed();
    // Make them all due now: every score to 0 (one ZUNIONSTORE with weight 0).
    let key = streamx::keys::scheduled(&stream);
    redis.cli(&["ZUNIONSTORE", &key, "1", &key, "WEIGHTS", "0"]).unwrap();
    let scheduled = Scheduled::connect(&url).await.unwrap();
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = counted.clone();
    let consumer = Consumer::new(stream.clone(), "g".to_string(), move |_: Message<u64>| {
        let c = c.clone();
        async move {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .concurrency(64);
    let started = Instant::now();
    let runtime = start_runtime(&url, vec![consumer]).await;
    wait_until(Duration::from_secs(120), "all promoted", || async { scheduled.count(&stream).await.unwrap() == 0 })
        .await
        .unwrap();
    let promoting = started.elapsed();
    wait_until(Duration::from_secs(120), "all handled", || async {
        counted.load(std::sync::atomic::Ordering::Relaxed) >= N
    })
    .await
    .unwrap();
    let handling = started.elapsed();
    runtime.shutdown().await.unwrap();
    eprintln!(
        "scheduled {N} in {scheduling:?} ({:.0}/s); promoted in {promoting:?} ({:.0}/s); all handled after {handling:?}",
        N as f64 / scheduling.as_secs_f64(),
        N as f64 / promoting.as_secs_f64()
    );
    assert_eq!(redis.xlen(&stream).unwrap(), N);
}

/// One runtime at a time polls a stream's schedule (a lease): three runtimes cost Redis about
/// what one does (before the lease, every runtime ran the promotion script every tick, so a
/// fleet of N cost N times as much), and when the holder stops another takes over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runtime_polls_the_schedule_and_another_takes_over_when_it_stops() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("leased");
    let lease = streamx::keys::promoter_lease(&stream);
    let arrivals = Arrivals::default();
    let first = start_runtime(&url, vec![recording(&stream, "g", &arrivals)]).await;
    wait_until(Duration::from_secs(5), "the first runtime holds the lease", || async {
        !redis.cli(&["GET", &lease]).unwrap().trim().is_empty()
    })
    .await
    .unwrap();
    let holder = redis.cli(&["GET", &lease]).unwrap();
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(start_runtime(&url, vec![recording(&stream, "g", &arrivals)]).await);
    }
    // Only the holder's script reaches `ZCARD` (the others return at the lease): count the
    // promotion scripts over a window of two seconds. One poller makes about 27 (a tick of
    // 75 ms ±20%), three would make about 80.
    let before = redis.calls_served("zcard").unwrap();
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let polls = redis.calls_served("zcard").unwrap() - before;
    let secs = window.elapsed().as_secs_f64();
    assert!(
        polls as f64 <= 2.0 * secs * 1000.0 / 75.0,
        "{polls} promotion scripts in {secs:.1} s: more than one poller"
    );
    assert!(polls > 0, "nobody polls the schedule");
    assert_eq!(redis.cli(&["GET", &lease]).unwrap(), holder, "the lease stays with its holder");

    // The holder stops and releases the lease: another runtime promotes what comes due next.
    first.shutdown().await.unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    let scheduled_at = now_ms();
    producer.publish_after(&stream, &7u64, Duration::from_millis(100)).await.unwrap();
    wait_until(Duration::from_secs(5), "the message arrived through another runtime", || async {
        counts(&arrivals).get(&7) == Some(&1)
    })
    .await
    .unwrap();
    let arrival = arrivals.lock().unwrap().iter().find(|a| a.n == 7).copied().unwrap();
    assert!(arrival.arrived >= arrival.due && arrival.due >= scheduled_at, "{arrival:?}");
    // The standby asks again within its poll (500 ms ±20%), then promotes on its next tick.
    assert!(arrival.arrived - arrival.due < 1_500, "handed over slowly: {arrival:?}");
    assert_ne!(redis.cli(&["GET", &lease]).unwrap(), holder, "the lease moved");
    for rt in others {
        rt.shutdown().await.unwrap();
    }
    assert_eq!(redis.cli(&["EXISTS", &lease]).unwrap().trim(), "0", "a stopping holder releases the lease");
}
