//! Trying to break the publish path of issue 26 (batches as one append script per round trip,
//! single publishes coalesced by a writer task): order under concurrency, runtimes that come
//! and go, a cluster, per-caller headers, trimming, payloads around the 1 MiB round-trip
//! bound, ACL refusals, a restarted server, cancelled publishes. Every test checks what landed
//! with redis-cli (`XRANGE`), not with the client under test.
//!
//! Each order test once failed: tokio's cooperative budget spent before a publish was queued,
//! a round grouped per option, the first publishes to a new stream each awaiting the registry
//! and the topic look-up, rounds sent while the server's answer on scripts was unknown. What
//! is not ordered, and documented (README, "Publishing"): a publish sent on its own (an
//! explicit id, `durable`, an idempotency key, `max_len_acked`) against un-awaited queued ones.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use common::{TestRedis, Topology};
use futures_util::future::join_all;
use streamx::testing::{unique_name, RedisServer};
use streamx::{Error, Headers, MessageId, Producer, PublishOptions};

/// One entry as redis-cli shows it: its id and its field/value pairs.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    fields: Vec<(String, String)>,
}

impl Entry {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The `data` field as a number (the tests publish numbers).
    fn n(&self) -> u64 {
        self.field("data").unwrap().parse().unwrap()
    }
}

/// Every entry of `stream`, oldest first, read with `redis-cli --json XRANGE`.
fn xrange(redis: &TestRedis, stream: &str) -> Vec<Entry> {
    let json = redis.cli_json(&["XRANGE", stream, "-", "+"]).unwrap();
    let Some(entries) = json.as_array() else { return Vec::new() };
    entries
        .iter()
        .map(|entry| {
            let id = entry[0].as_str().unwrap().to_string();
            let flat: Vec<String> =
                entry[1].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
            let fields = flat.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
            Entry { id, fields }
        })
        .collect()
}

/// The `data` of every entry of `stream`, as numbers, oldest first.
fn stored_numbers(redis: &TestRedis, stream: &str) -> Vec<u64> {
    xrange(redis, stream).iter().map(Entry::n).collect()
}

fn id_strings(ids: &[MessageId]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

/// The first index where `values` is not `0, 1, 2, ...`, with a window around it, for messages.
fn first_disorder(values: &[u64]) -> Option<String> {
    let at = values.iter().enumerate().position(|(i, v)| *v != i as u64)?;
    let from = at.saturating_sub(3);
    let to = (at + 6).min(values.len());
    Some(format!("at position {at}: {:?} (of {})", &values[from..to], values.len()))
}

/// `publish` of an owned number (the future borrows nothing made in a closure).
async fn publish_n(producer: &Producer, stream: &str, n: u64) -> Result<MessageId, Error> {
    producer.publish(stream, &n).await
}

async fn publish_n_with(
    producer: &Producer,
    stream: &str,
    n: u64,
    options: &PublishOptions,
) -> Result<MessageId, Error> {
    producer.publish_with(stream, &n, options).await
}

async fn publish_keyed_n(
    producer: &Producer,
    stream: &str,
    key: String,
    n: u64,
    options: &PublishOptions,
) -> Result<MessageId, Error> {
    producer.publish_keyed_with(stream, &key, &n, options).await
}

fn standalone() -> TestRedis {
    TestRedis::start(Topology::Standalone).unwrap()
}

/// Fails with `what` if `fut` takes more than `limit`: a hang is a failure, not a stuck run.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still pending after {limit:?} (hangs)"),
    }
}

// ---------------------------------------------------------------------------------------------
// Order
// ---------------------------------------------------------------------------------------------

/// `join_all` of publishes created in order, on a stream the producer has published to before.
///
/// Once failed at about the 65th publish: a publish's first poll took the queue's byte
/// semaphore and sent on the bounded queue, both of which spend tokio's cooperative budget;
/// once it was spent, the next publish yielded before it was queued and `join_all` re-polled it
/// after later ones. The queueing now runs outside the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_all_of_publishes_to_a_known_stream_lands_in_creation_order() {
    join_all_to_a_known_stream().await;
}

/// The same without tokio's cooperative budget: the order holds, which shows the budget is
/// what reorders the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_all_of_publishes_to_a_known_stream_lands_in_creation_order_when_unconstrained() {
    tokio::task::unconstrained(join_all_to_a_known_stream()).await;
}

async fn join_all_to_a_known_stream() {
    let redis = standalone();
    let stream = unique_name("order-known");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    producer.publish(&stream, &0u64).await.unwrap();

    let publishes: Vec<_> = (1..3_000u64).map(|n| publish_n(&producer, &stream, n)).collect();
    let ids: Vec<MessageId> = within(Duration::from_secs(60), "3,000 publishes", join_all(publishes))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let stored = xrange(&redis, &stream);
    let values: Vec<u64> = stored.iter().map(Entry::n).collect();
    assert_eq!(first_disorder(&values), None, "creation order");
    assert_eq!(values.len(), 3_000);
    let stored_ids: Vec<String> = stored[1..].iter().map(|e| e.id.clone()).collect();
    assert_eq!(stored_ids, id_strings(&ids), "each caller got its own entry's id");
}

/// The same on a stream the producer has never published to: each of the first publishes to a
/// new name looks the name up as a topic (`EVALSHA`, reloading the script on `NOSCRIPT`: several
/// awaits, one lookup per publish until one answers), and the first to pass registers the name
/// (`SADD`, awaited up to 1 s) while those behind it queue at once: the first publish lands
/// after later ones (6 of 10 attempts here, always at position 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_all_of_publishes_to_a_new_stream_lands_in_creation_order() {
    let redis = standalone();
    let producer = Producer::connect(&redis.url()).await.unwrap();
    producer.publish(&unique_name("warm"), &0u64).await.unwrap(); // the writer runs already
    let mut disorders = Vec::new();
    for attempt in 0..10 {
        let stream = unique_name("order-new");
        let publishes: Vec<_> = (0..50u64).map(|n| publish_n(&producer, &stream, n)).collect();
        // Unconstrained: tokio's budget reorders on its own (see the test above).
        let joined = tokio::task::unconstrained(join_all(publishes));
        for result in within(Duration::from_secs(60), "50 publishes", joined).await {
            result.unwrap();
        }
        let values = stored_numbers(&redis, &stream);
        assert_eq!(values.len(), 50);
        if let Some(at) = first_disorder(&values) {
            disorders.push(format!("attempt {attempt}: {at}"));
        }
    }
    assert!(disorders.is_empty(), "creation order: {disorders:#?}");
}

/// A `FuturesOrdered` of publishes (polled in order), several streams interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_ordered_publishes_to_interleaved_streams_keep_each_streams_order() {
    use futures_util::stream::{FuturesOrdered, StreamExt};
    let redis = standalone();
    let streams: Vec<String> = (0..3).map(|i| unique_name(&format!("ordered-{i}"))).collect();
    let producer = Producer::connect(&redis.url()).await.unwrap();
    for stream in &streams {
        producer.publish(stream, &0u64).await.unwrap();
    }

    let mut ordered = FuturesOrdered::new();
    let producer = &producer;
    for n in 1..2_000u64 {
        let stream = &streams[(n % 3) as usize];
        ordered.push_back(async move { (n, producer.publish(stream, &n).await) });
    }
    let mut answered = 0;
    while let Some((_, result)) = within(Duration::from_secs(60), "2,000 publishes", ordered.next()).await {
        result.unwrap();
        answered += 1;
    }
    assert_eq!(answered, 1_999);

    for (i, stream) in streams.iter().enumerate() {
        let values = stored_numbers(&redis, stream);
        let expected: Vec<u64> = std::iter::once(0).chain((1..2_000u64).filter(|n| (n % 3) as usize == i)).collect();
        assert_eq!(values, expected, "stream {i} in creation order");
    }
}

/// Publishes to one stream with different trims/NOMKSTREAM, created in order and not awaited
/// each: the writer groups a round's entries per (stream, NOMKSTREAM, cap), which reorders
/// entries of one stream whose options differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_to_one_stream_with_alternating_options_land_in_creation_order() {
    let redis = standalone();
    let stream = unique_name("order-options");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    producer.publish(&stream, &0u64).await.unwrap();
    let capped = PublishOptions::new().max_len_approx(1_000_000);
    let plain = PublishOptions::new();
    let nomk = PublishOptions::new().no_mkstream();

    let publishes: Vec<_> = (1..1_500u64)
        .map(|n| {
            let options = match n % 3 {
                0 => &capped,
                1 => &plain,
                _ => &nomk,
            };
            publish_n_with(&producer, &stream, n, options)
        })
        .collect();
    // Unconstrained: tokio's budget reorders on its own (see above).
    let joined = tokio::task::unconstrained(join_all(publishes));
    for result in within(Duration::from_secs(60), "publishes", joined).await {
        result.unwrap();
    }

    let values = stored_numbers(&redis, &stream);
    assert_eq!(values.len(), 1_500);
    assert_eq!(first_disorder(&values), None, "creation order");
}

/// One task: single publishes and batches (small and of many round trips) awaited in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_and_batches_awaited_in_turn_keep_their_order() {
    let redis = standalone();
    let stream = unique_name("order-mixed");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let mut next = 0u64;
    let mut expected_ids = Vec::new();
    for round in 0..6u64 {
        for _ in 0..3 {
            expected_ids.push(producer.publish(&stream, &next).await.unwrap());
            next += 1;
        }
        let size = [2, 499, 501, 1_700, 1, 3_001][round as usize];
        let batch: Vec<u64> = (next..next + size).collect();
        expected_ids.extend(producer.publish_batch(&stream, &batch).await.unwrap());
        next += size;
        expected_ids
            .push(producer.publish_with(&stream, &next, &PublishOptions::new().max_len_approx(1 << 30)).await.unwrap());
        next += 1;
    }
    let stored = xrange(&redis, &stream);
    let values: Vec<u64> = stored.iter().map(Entry::n).collect();
    assert_eq!(first_disorder(&values), None, "awaited in turn, landed in turn");
    assert_eq!(values.len() as u64, next);
    let stored_ids: Vec<String> = stored.iter().map(|e| e.id.clone()).collect();
    assert_eq!(stored_ids, id_strings(&expected_ids));
}

// ---------------------------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------------------------

fn runtime(multi_thread: bool) -> tokio::runtime::Runtime {
    if multi_thread {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }
}

/// A producer made (and first used) in one runtime, that runtime dropped, then used in a second:
/// what every publish of the second runtime answers, within a deadline.
fn publish_after_first_runtime_dropped(multi_thread: bool) -> (TestRedis, String, Vec<Result<MessageId, String>>) {
    let redis = standalone();
    let stream = unique_name("runtimes");
    let first = runtime(multi_thread);
    let producer = first.block_on(async {
        let producer = Producer::connect(&redis.url()).await.unwrap();
        producer.publish(&stream, &0u64).await.unwrap();
        producer
    });
    drop(first);
    let second = runtime(multi_thread);
    let outcomes = second.block_on(async {
        let mut outcomes = Vec::new();
        for n in 1..=5u64 {
            let started = Instant::now();
            let result =
                within(Duration::from_secs(45), "a publish in the second runtime", publish_n(&producer, &stream, n))
                    .await;
            eprintln!("publish {n} in the second runtime: {result:?} after {:?}", started.elapsed());
            outcomes.push(result.map_err(|e| e.to_string()));
        }
        // Concurrent ones too, through the new writer.
        let publishes: Vec<_> = (6..=105u64).map(|n| publish_n(&producer, &stream, n)).collect();
        for result in within(Duration::from_secs(45), "100 concurrent publishes", join_all(publishes)).await {
            outcomes.push(result.map_err(|e| e.to_string()));
        }
        outcomes
    });
    drop(second);
    (redis, stream, outcomes)
}

#[test]
fn a_producer_outlives_the_multi_thread_runtime_it_was_made_in() {
    let (redis, stream, outcomes) = publish_after_first_runtime_dropped(true);
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failed.is_empty(), "every publish of the second runtime succeeds: {failed:?}");
    assert_eq!(stored_numbers(&redis, &stream), (0..=105).collect::<Vec<_>>());
}

#[test]
fn a_producer_outlives_the_current_thread_runtime_it_was_made_in() {
    let (redis, stream, outcomes) = publish_after_first_runtime_dropped(false);
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failed.is_empty(), "every publish of the second runtime succeeds: {failed:?}");
    assert_eq!(stored_numbers(&redis, &stream), (0..=105).collect::<Vec<_>>());
}

/// Two runtimes alive at once, both publishing through one producer (clones): the writer runs
/// on the first one's runtime; publishes from the second are answered while the first is busy.
#[test]
fn clones_publish_from_two_live_runtimes() {
    let redis = standalone();
    let stream = unique_name("two-runtimes");
    let first = runtime(true);
    let producer = first.block_on(Producer::connect(&redis.url())).unwrap();
    let second = runtime(true);
    let (a, b) = (producer.clone(), producer.clone());
    let (sa, sb) = (stream.clone(), stream.clone());
    let ta = first.spawn(async move {
        for n in 0..500u64 {
            a.publish(&sa, &n).await.unwrap();
        }
    });
    let tb = second.spawn(async move {
        for n in 500..1_000u64 {
            b.publish(&sb, &n).await.unwrap();
        }
    });
    first.block_on(async { within(Duration::from_secs(60), "runtime one's publishes", ta).await.unwrap() });
    second.block_on(async { within(Duration::from_secs(60), "runtime two's publishes", tb).await.unwrap() });
    let values = stored_numbers(&redis, &stream);
    let a: Vec<u64> = values.iter().copied().filter(|n| *n < 500).collect();
    let b: Vec<u64> = values.iter().copied().filter(|n| *n >= 500).collect();
    assert_eq!(a, (0..500).collect::<Vec<_>>());
    assert_eq!(b, (500..1_000).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_tasks_publish_to_streams_in_many_slots_of_a_cluster() {
    let redis = TestRedis::start(Topology::Cluster).unwrap();
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let streams: Vec<String> = (0..40).map(|i| unique_name(&format!("slots-{i}"))).collect();
    let slots: std::collections::HashSet<u16> = streams.iter().map(streamx::testing::key_slot).collect();
    assert!(slots.len() > 30, "streams spread over slots");

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..500u64 {
        let (producer, streams) = (producer.clone(), streams.clone());
        tasks.spawn(async move {
            let mut mine = Vec::new();
            for seq in 0..10u64 {
                let stream = &streams[((task + seq) % 40) as usize];
                let n = task * 1_000 + seq;
                let id = producer.publish(stream, &n).await.unwrap();
                mine.push((stream.clone(), n, id));
            }
            mine
        });
    }
    let mut published: HashMap<String, Vec<(u64, MessageId)>> = HashMap::new();
    while let Some(done) = within(Duration::from_secs(120), "500 tasks", tasks.join_next()).await {
        for (stream, n, id) in done.unwrap() {
            published.entry(stream).or_default().push((n, id));
        }
    }
    let mut total = 0;
    for stream in &streams {
        let stored = xrange(&redis, stream);
        total += stored.len();
        let stored: HashMap<u64, String> = stored.iter().map(|e| (e.n(), e.id.clone())).collect();
        for (n, id) in &published[stream] {
            assert_eq!(stored.get(n), Some(&id.to_string()), "{stream}: message {n} under the id its caller got");
        }
        assert_eq!(stored.len(), published[stream].len(), "{stream}: nothing extra");
        // Each task's messages of this stream are in its order.
        let entries = xrange(&redis, stream);
        let mut last_seq: HashMap<u64, u64> = HashMap::new();
        for e in entries {
            let (task, seq) = (e.n() / 1_000, e.n() % 1_000);
            if let Some(prev) = last_seq.insert(task, seq) {
                assert!(prev < seq, "{stream}: task {task} out of order");
            }
        }
    }
    assert_eq!(total, 5_000, "nothing lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_concurrent_publishes_on_a_cluster() {
    let redis = TestRedis::start(Topology::Cluster).unwrap();
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let streams: Vec<String> = (0..6).map(|i| unique_name(&format!("cbatch-{i}"))).collect();
    // Batches of several round trips to several streams at once, keyed and with headers.
    let options = PublishOptions::new().headers(Headers::new().with("origin", "cluster-test"));
    let sends = streams.iter().enumerate().map(|(i, stream)| {
        let producer = &producer;
        let options = &options;
        async move {
            let values: Vec<u64> = (0..1_750u64).collect();
            let ids = if i % 2 == 0 {
                producer.publish_batch_with(stream, &values, options).await.unwrap()
            } else {
                let keyed: Vec<(String, u64)> = values.iter().map(|n| (format!("k{}", n % 7), *n)).collect();
                producer.publish_batch_keyed_with(stream, &keyed, options).await.unwrap()
            };
            (stream, ids)
        }
    });
    for (stream, ids) in within(Duration::from_secs(120), "cluster batches", join_all(sends)).await {
        let stored = xrange(&redis, stream);
        assert_eq!(stored.iter().map(Entry::n).collect::<Vec<_>>(), (0..1_750).collect::<Vec<_>>(), "{stream}");
        assert_eq!(stored.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), id_strings(&ids));
        assert!(stored.iter().all(|e| e.field("h:origin") == Some("cluster-test")));
    }
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

/// Callers with different headers (none, one, several, a key, an empty value, one with more
/// than the script's limit) whose publishes share rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_keeps_its_own_headers_in_a_coalesced_round() {
    let redis = standalone();
    let stream = unique_name("headers");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    producer.publish(&stream, &0u64).await.unwrap();

    let options: Vec<PublishOptions> =
        (1..600u64)
            .map(|n| match n % 6 {
                0 => PublishOptions::new(),
                1 => PublishOptions::new().headers(Headers::new().with("caller", n.to_string())),
                2 => PublishOptions::new()
                    .headers(Headers::new().with("caller", n.to_string()).with("a", "1").with("b", "")),
                3 => PublishOptions::new().key(format!("key-{n}")),
                4 => PublishOptions::new().headers(Headers::new().with("caller", "x".repeat(n as usize))),
                _ => PublishOptions::new()
                    .headers((0..3_001).map(|h| (format!("h{h}"), n.to_string())).collect::<Headers>()),
            })
            .collect();
    let publishes: Vec<_> =
        (1..600u64).zip(&options).map(|(n, options)| publish_n_with(&producer, &stream, n, options)).collect();
    for result in within(Duration::from_secs(60), "publishes", join_all(publishes)).await {
        result.unwrap();
    }

    let stored = xrange(&redis, &stream);
    assert_eq!(stored.len(), 600);
    for entry in &stored[1..] {
        let n = entry.n();
        let mut expected: Vec<(String, String)> = vec![("data".into(), n.to_string())];
        match n % 6 {
            0 => {}
            1 => expected.push(("h:caller".into(), n.to_string())),
            2 => expected.extend([
                ("h:caller".into(), n.to_string()),
                ("h:a".into(), "1".into()),
                ("h:b".into(), String::new()),
            ]),
            3 => expected.push(("h:streamx-key".into(), format!("key-{n}"))),
            4 => expected.push(("h:caller".into(), "x".repeat(n as usize))),
            _ => expected.extend((0..3_001).map(|h| (format!("h:h{h}"), n.to_string()))),
        }
        let mut got = entry.fields.clone();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "entry {n}'s fields");
    }
}

/// `publish_batch_keyed_with` whose common headers also set the key: every entry has its own
/// key (once) and the other common headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_batch_replaces_the_common_key_of_its_headers() {
    let redis = standalone();
    let stream = unique_name("keyed");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let options = PublishOptions::new()
        .headers(Headers::new().with("tenant", "t1").with("streamx-key", "common"))
        .key("common-too");
    for size in [1usize, 2, 500, 1_234] {
        let entries: Vec<(String, u64)> = (0..size as u64).map(|n| (format!("k{n}"), n)).collect();
        producer.publish_batch_keyed_with(&stream, &entries, &options).await.unwrap();
    }
    // And single keyed publishes that share rounds.
    let publishes: Vec<_> =
        (0..50u64).map(|n| publish_keyed_n(&producer, &stream, format!("s{n}"), n, &options)).collect();
    for result in join_all(publishes).await {
        result.unwrap();
    }

    let stored = xrange(&redis, &stream);
    assert_eq!(stored.len(), 1 + 2 + 500 + 1_234 + 50);
    let (batches, singles) = stored.split_at(stored.len() - 50);
    let mut expected_keys: Vec<String> = Vec::new();
    for size in [1usize, 2, 500, 1_234] {
        expected_keys.extend((0..size).map(|n| format!("k{n}")));
    }
    expected_keys.extend((0..50).map(|n| format!("s{n}")));
    for (entry, key) in batches.iter().chain(singles).zip(&expected_keys) {
        let keys: Vec<&str> =
            entry.fields.iter().filter(|(name, _)| name == "h:streamx-key").map(|(_, v)| v.as_str()).collect();
        assert_eq!(keys, [key.as_str()], "one key, the entry's own: {entry:?}");
        assert_eq!(entry.field("h:tenant"), Some("t1"));
        assert_eq!(entry.fields.len(), 3, "data, tenant, key: {entry:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Trimming
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_len_approx_keeps_the_stream_near_its_cap_for_coalesced_publishes_and_batches() {
    let redis = standalone();
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let options = PublishOptions::new().max_len_approx(1_000);

    let singles = unique_name("cap-singles");
    // A known name: the first publishes to a new one are not ordered (see
    // join_all_of_publishes_to_a_new_stream_lands_in_creation_order).
    producer.publish_with(&singles, &0u64, &options).await.unwrap();
    let publishes: Vec<_> = (1..10_000u64).map(|n| publish_n_with(&producer, &singles, n, &options)).collect();
    let joined = tokio::task::unconstrained(join_all(publishes));
    for result in within(Duration::from_secs(60), "publishes", joined).await {
        result.unwrap();
    }
    let len = redis.xlen(&singles).unwrap();
    // MAXLEN ~ trims whole nodes (100 entries each by default).
    assert!((1_000..=1_200).contains(&len), "coalesced publishes: XLEN {len}");
    let values = stored_numbers(&redis, &singles);
    assert_eq!(*values.last().unwrap(), 9_999, "the newest are kept");
    assert!(values.windows(2).all(|w| w[0] + 1 == w[1]), "a contiguous tail");

    let batched = unique_name("cap-batch");
    for _ in 0..5 {
        producer.publish_batch_with(&batched, &(0..3_000u64).collect::<Vec<_>>(), &options).await.unwrap();
    }
    let len = redis.xlen(&batched).unwrap();
    assert!((1_000..=1_200).contains(&len), "batches: XLEN {len}");
}

// ---------------------------------------------------------------------------------------------
// Payload sizes around the round trip's 1 MiB
// ---------------------------------------------------------------------------------------------

/// A JSON string payload of exactly `bytes` encoded bytes (the quotes included), tagged `n`.
fn blob(n: u64, bytes: usize) -> String {
    let tag = format!("{n}:");
    format!("{tag}{}", "x".repeat(bytes - 2 - tag.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_around_the_round_trip_bound_all_land_in_order() {
    let redis = standalone();
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let stream = unique_name("big");
    let kib = 1 << 10;
    let mib = 1 << 20;

    // Batches: 3 x 600 KiB; entries at and around the bound; a 5 MiB entry among small ones.
    let batches: Vec<Vec<usize>> = vec![
        vec![600 * kib; 3],
        vec![mib, 16, mib - 1, 17, mib + 1],
        vec![512 * kib, 512 * kib, 512 * kib],
        vec![16, 5 * mib, 16, 16],
        std::iter::repeat_n(3 * kib, 800).collect(),
    ];
    let mut expected: Vec<(u64, usize)> = Vec::new();
    let mut next = 0u64;
    for sizes in &batches {
        let payloads: Vec<String> = sizes.iter().enumerate().map(|(i, size)| blob(next + i as u64, *size)).collect();
        let ids = within(Duration::from_secs(60), "a batch", producer.publish_batch(&stream, &payloads)).await.unwrap();
        assert_eq!(ids.len(), sizes.len());
        expected.extend(sizes.iter().enumerate().map(|(i, size)| (next + i as u64, *size)));
        next += sizes.len() as u64;
    }
    // Single publishes: a 5 MiB one alone, then 12 of 600 KiB at once (rounds over the bound).
    producer.publish(&stream, &blob(next, 5 * mib)).await.unwrap();
    expected.push((next, 5 * mib));
    next += 1;
    let payloads: Vec<String> = (0..12).map(|i| blob(next + i, 600 * kib)).collect();
    let publishes: Vec<_> = payloads.iter().map(|p| producer.publish(&stream, p)).collect();
    let joined = tokio::task::unconstrained(join_all(publishes));
    for result in within(Duration::from_secs(60), "large publishes", joined).await {
        result.unwrap();
    }
    expected.extend((0..12).map(|i| (next + i, 600 * kib)));

    let stored = xrange(&redis, &stream);
    let got: Vec<(u64, usize)> = stored
        .iter()
        .map(|e| {
            let data = e.field("data").unwrap();
            let n = data.trim_start_matches('"').split(':').next().unwrap().parse().unwrap();
            (n, data.len())
        })
        .collect();
    assert_eq!(got, expected, "every payload whole, in order");
}

/// Concurrent publishes whose payloads add up to more than the 32 MiB queue bound: they wait for
/// room instead of failing, and all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_the_queue_bound_in_flight_waits_and_lands() {
    let redis = standalone();
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let stream = unique_name("queue-bound");
    let payloads: Vec<String> = (0..48).map(|n| blob(n, 1 << 20)).collect();
    let publishes: Vec<_> = payloads.iter().map(|p| producer.publish(&stream, p)).collect();
    for result in within(Duration::from_secs(120), "48 MiB of publishes", join_all(publishes)).await {
        result.unwrap();
    }
    assert_eq!(redis.xlen(&stream).unwrap(), 48);
    // And one entry bigger than the whole queue bound.
    let huge = blob(99, 40 << 20);
    within(Duration::from_secs(60), "a 40 MiB publish", producer.publish(&stream, &huge)).await.unwrap();
    assert_eq!(redis.xlen(&stream).unwrap(), 49);
}

// ---------------------------------------------------------------------------------------------
// ACL
// ---------------------------------------------------------------------------------------------

fn set_user(redis: &TestRedis, name: &str, rules: &[&str]) -> String {
    let mut args = vec!["ACL", "SETUSER", name, "on", ">pw"];
    args.extend_from_slice(rules);
    assert_eq!(redis.cli(&args).unwrap().trim(), "OK");
    redis.url().replacen("redis://", &format!("redis://{name}:pw@"), 1)
}

/// The server's message inside a publish's error.
fn server_message(e: &Error) -> String {
    match e {
        Error::Redis { source, .. } => source.details().to_string(),
        other => other.to_string(),
    }
}

/// What every publish of a user allowed EVAL but not XADD answers: a lone publish, 300 at once
/// (coalesced into the append script), a batch.
async fn publishes_of_a_user_without_xadd() -> (TestRedis, String, Error, Vec<Error>, Error) {
    let redis = standalone();
    let url = set_user(&redis, "noxadd", &["resetkeys", "~*", "+@all", "-xadd"]);
    let producer = Producer::connect(&url).await.unwrap();
    let stream = unique_name("noxadd");
    let lone = within(Duration::from_secs(30), "a lone publish", publish_n(&producer, &stream, 0)).await.unwrap_err();
    let publishes: Vec<_> = (0..300u64).map(|n| publish_n(&producer, &stream, n)).collect();
    let results = within(Duration::from_secs(30), "concurrent publishes", join_all(publishes)).await;
    let concurrent = results.into_iter().map(Result::unwrap_err).collect();
    let batch =
        within(Duration::from_secs(30), "a batch", producer.publish_batch(&stream, &(0..1_200u64).collect::<Vec<_>>()))
            .await
            .unwrap_err();
    (redis, stream, lone, concurrent, batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_allowed_eval_but_not_xadd_fails_every_publish_without_hanging() {
    let (redis, stream, lone, concurrent, batch) = publishes_of_a_user_without_xadd().await;
    assert!(server_message(&lone).contains("NOPERM"), "{lone}");
    assert_eq!(concurrent.len(), 300);
    assert!(batch.written().is_empty(), "{batch}");
    assert_eq!(redis.xlen(&stream).unwrap(), 0);
}

/// The same, each error checked: a publish that went through the append script (coalesced, or
/// a batch) gets what the server answers a script's refused call (Redis 7.0: `ERR The user
/// executing the script can't run this command or subcommand`; Redis 8.2 and Valkey 8.1: `ERR
/// ACL failure in script: User noxadd has no permissions to run the 'xadd' command`), while a
/// lone publish (a plain XADD) gets `NOPERM ... 'xadd'`: whether a caller sees NOPERM depends on
/// whether its publish happened to share a round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_allowed_eval_but_not_xadd_gets_noperm_on_every_publish() {
    let (_redis, _stream, lone, concurrent, batch) = publishes_of_a_user_without_xadd().await;
    for e in concurrent.iter().chain([&batch]) {
        let message = server_message(e);
        assert!(
            message.contains("NOPERM") && message.to_lowercase().contains("xadd"),
            "a clear NOPERM like the lone publish's ({lone}): {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_denied_some_keys_gets_its_own_answer_per_publish_with_and_without_eval() {
    for (user, rules) in [
        ("keys-eval", vec!["resetkeys", "~ok-*", "~streamx:*", "+@all"]),
        ("keys-noeval", vec!["resetkeys", "~ok-*", "~streamx:*", "+@all", "-eval", "-evalsha"]),
    ] {
        let redis = standalone();
        let url = set_user(&redis, user, &rules);
        let producer = Producer::connect(&url).await.unwrap();
        let (ok, denied) = (unique_name("ok"), unique_name("denied"));
        // Each stream's first publish registers its name first (see
        // join_all_of_publishes_to_a_new_stream_lands_in_creation_order): not what this tests.
        producer.publish(&ok, &u64::MAX).await.unwrap();
        let _ = producer.publish(&denied, &u64::MAX).await.unwrap_err();

        let publishes: Vec<_> =
            (0..400u64).map(|n| publish_n(&producer, if n % 4 == 0 { &denied } else { &ok }, n)).collect();
        let joined = tokio::task::unconstrained(join_all(publishes));
        let results = within(Duration::from_secs(30), "mixed publishes", joined).await;
        let mut expected_ok = Vec::new();
        for (n, result) in (0..400u64).zip(&results) {
            if n % 4 == 0 {
                let e = result.as_ref().unwrap_err();
                assert!(server_message(e).contains("NOPERM"), "{user}: {n}: {e}");
            } else {
                expected_ok.push((n, result.as_ref().unwrap().to_string()));
            }
        }
        let stored: Vec<(u64, String)> = xrange(&redis, &ok)[1..].iter().map(|e| (e.n(), e.id.clone())).collect();
        assert_eq!(stored, expected_ok, "{user}: the allowed stream, in order, under the ids answered");
        assert_eq!(redis.xlen(&denied).unwrap(), 0);

        // A batch to the denied stream fails as a whole, nothing written; to the allowed one works.
        let err = producer.publish_batch(&denied, &(0..700u64).collect::<Vec<_>>()).await.unwrap_err();
        assert!(err.written().is_empty(), "{user}: {err}");
        assert!(server_message(&err).contains("NOPERM"), "{user}: {err}");
        producer.publish_batch(&ok, &(0..700u64).collect::<Vec<_>>()).await.unwrap();
    }
}

/// A user refused EVAL: while the writer's first round of several entries waits for the refusal
/// of its `EVAL` (to fall back to `XADD`s), a publish queued meanwhile goes out as the next
/// round, a lone `XADD`, and lands before them. (`publish_batch` guards against the same thing
/// by sending its first round trip alone while the answer is unknown; the writer does not.) On a
/// current-thread runtime (as `#[tokio::test]`) the interleaving is reproducible: the test's
/// task queues 1 and 2, lets the writer run (it sends them as one `EVAL`), queues 3 (the writer
/// sends it as an `XADD` before the `EVAL`'s refusal is read).
#[tokio::test]
async fn a_user_without_eval_keeps_the_creation_order_of_concurrent_publishes() {
    use futures_util::FutureExt;
    let redis = standalone();
    let url = set_user(&redis, "noeval", &["resetkeys", "~*", "+@all", "-eval", "-evalsha"]);
    let mut disorders = Vec::new();
    for attempt in 0..10 {
        // A new producer each time: whether EVAL runs is not known yet.
        let producer = Producer::connect(&url).await.unwrap();
        let stream = unique_name("noeval-order");
        producer.publish(&stream, &0u64).await.unwrap(); // a lone XADD: EVAL not tried yet
        let mut first_two = Box::pin(join_all([publish_n(&producer, &stream, 1), publish_n(&producer, &stream, 2)]));
        assert!((&mut first_two).now_or_never().is_none(), "both queued, unanswered");
        // Lets the writer run (it sends them as one EVAL) without polling the I/O driver
        // (`yield_now` would, and the refusal would be read before 3 is queued).
        tokio::spawn(async {}).await.unwrap();
        let third = publish_n(&producer, &stream, 3);
        let (two, three) =
            within(Duration::from_secs(30), "publishes", futures_util::future::join(first_two, third)).await;
        for result in two.into_iter().chain([three]) {
            result.unwrap();
        }
        let values = stored_numbers(&redis, &stream);
        if values != [0, 1, 2, 3] {
            disorders.push(format!("attempt {attempt}: {values:?}"));
        }
    }
    assert!(disorders.is_empty(), "creation order: {disorders:#?}");
}

// ---------------------------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_during_an_outage_fail_and_work_again_after_a_restart() {
    let mut server = RedisServer::builder().appendonly(true).start().unwrap();
    let producer = Producer::connect(&server.url()).await.unwrap();
    let stream = unique_name("outage");
    let before: Vec<_> = (0..100u64).map(|n| publish_n(&producer, &stream, n)).collect();
    for r in join_all(before).await {
        r.unwrap();
    }
    producer.publish_batch(&stream, &(100..1_100u64).collect::<Vec<_>>()).await.unwrap();

    server.kill().unwrap();
    let started = Instant::now();
    let during: Vec<_> = (0..50u64).map(|n| publish_n(&producer, &stream, 10_000 + n)).collect();
    let during = within(Duration::from_secs(45), "publishes during the outage", join_all(during)).await;
    let singles_failed_after = started.elapsed();
    let lone_started = Instant::now();
    let lone =
        within(Duration::from_secs(45), "a lone publish during the outage", publish_n(&producer, &stream, 9_999)).await;
    eprintln!("a lone publish during the outage: {lone:?} after {:?}", lone_started.elapsed());
    assert!(lone.is_err());
    let batch_started = Instant::now();
    let batch = within(
        Duration::from_secs(45),
        "a batch during the outage",
        producer.publish_batch(&stream, &(20_000..21_000u64).collect::<Vec<_>>()),
    )
    .await;
    eprintln!(
        "during the outage, after {singles_failed_after:?}: {} of 50 publishes failed, first: {:?}; batch after {:?}: {:?}",
        during.iter().filter(|r| r.is_err()).count(),
        during.iter().find(|r| r.is_err()),
        batch_started.elapsed(),
        batch.as_ref().map(Vec::len)
    );
    assert!(during.iter().all(Result::is_err), "the server is down: every publish fails");
    assert!(batch.is_err());

    server.restart().unwrap();
    // Working again within a few seconds (the client reconnects by itself, ≤ 1 s apart).
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match within(Duration::from_secs(40), "a publish after the restart", publish_n(&producer, &stream, 30_000u64))
            .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                last = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("publishing does not work again after the restart: {e} (before: {last:?})"),
        }
    }
    let after: Vec<_> = (0..200u64).map(|n| publish_n(&producer, &stream, 40_000 + n)).collect();
    for r in within(Duration::from_secs(30), "publishes after the restart", join_all(after)).await {
        r.unwrap();
    }
    producer.publish_batch(&stream, &(50_000..51_000u64).collect::<Vec<_>>()).await.unwrap();
    let redis_len = common::redis_cli(&server, &["XLEN", &stream]).unwrap();
    assert_eq!(redis_len.trim(), (1_100 + 1 + 200 + 1_000).to_string(), "what was acknowledged survived; nothing else");
}

// ---------------------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_cancelled_while_queued_disturb_nothing() {
    let redis = standalone();
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let stream = unique_name("cancel");
    producer.publish(&stream, &0u64).await.unwrap();

    // Odd ones are given no time at all (polled once, so queued, then dropped); even ones are
    // awaited, all created in order.
    let publishes: Vec<_> = (1..2_000u64)
        .map(|n| {
            let producer = &producer;
            let stream = &stream;
            async move {
                if n % 2 == 1 {
                    (n, tokio::time::timeout(Duration::ZERO, publish_n(producer, stream, n)).await.ok())
                } else {
                    (n, Some(producer.publish(stream, &n).await))
                }
            }
        })
        .collect();
    let joined = tokio::task::unconstrained(join_all(publishes));
    let results = within(Duration::from_secs(60), "publishes", joined).await;
    let mut kept = vec![0u64];
    for (n, result) in results {
        match result {
            Some(Ok(_)) => kept.push(n),
            Some(Err(e)) => panic!("publish {n} failed: {e}"),
            None => assert_eq!(n % 2, 1),
        }
    }
    // The producer keeps working, and the stream holds every awaited publish in order; a
    // cancelled one may or may not be there.
    producer.publish(&stream, &5_000u64).await.unwrap();
    let values = stored_numbers(&redis, &stream);
    let awaited: Vec<u64> = values.iter().copied().filter(|n| n % 2 == 0 || *n == 5_000).collect();
    let mut expected: Vec<u64> = kept.into_iter().filter(|n| n % 2 == 0).collect();
    expected.push(5_000);
    assert_eq!(awaited, expected);
    assert!(values.windows(2).all(|w| w[0] < w[1]), "in creation order, cancelled ones included");
    eprintln!("{} of 1,000 cancelled publishes were written anyway", values.len() - 1_001);

    // Cancelled while waiting for room in the queue (more than 32 MiB at once).
    let big: Vec<String> = (0..60).map(|n| blob(n, 1 << 20)).collect();
    let publishes: Vec<_> = big
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let producer = &producer;
            let stream = &stream;
            async move {
                if i % 3 == 0 {
                    let _ = tokio::time::timeout(Duration::from_millis(1), producer.publish(stream, p)).await;
                    None
                } else {
                    Some(producer.publish(stream, p).await)
                }
            }
        })
        .collect();
    for result in within(Duration::from_secs(60), "large publishes", join_all(publishes)).await.into_iter().flatten() {
        result.unwrap();
    }
    within(Duration::from_secs(10), "a publish after", publish_n(&producer, &stream, 6_000u64)).await.unwrap();
}

/// Dropping every clone of a producer with publishes still queued: no panic, and the ones
/// awaited before were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_producer_with_publishes_queued_panics_nothing() {
    let redis = standalone();
    let stream = unique_name("drop");
    {
        let producer = Producer::connect(&redis.url()).await.unwrap();
        producer.publish(&stream, &0u64).await.unwrap();
        let publishes: Vec<_> = (1..500u64).map(|n| publish_n(&producer, &stream, n)).collect();
        let _ = tokio::time::timeout(Duration::from_millis(1), join_all(publishes)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let values = stored_numbers(&redis, &stream);
    assert_eq!(values[0], 0);
    assert!(values.windows(2).all(|w| w[0] < w[1]));
    let producer = Producer::connect(&redis.url()).await.unwrap();
    producer.publish(&stream, &1_000u64).await.unwrap();
}

/// During an outage a publish fails after the client's command timeout (30 s). One that is
/// queued while two rounds are already stuck waits for one of them to fail first, then for its
/// own timeout: what does each caller wait, from its own call?
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_queued_behind_stuck_rounds_fails_within_the_command_timeout() {
    let mut server = RedisServer::builder().start().unwrap();
    let producer = Producer::connect(&server.url()).await.unwrap();
    let stream = unique_name("stuck");
    producer.publish(&stream, &0u64).await.unwrap();
    server.kill().unwrap();

    let mut waits = tokio::task::JoinSet::new();
    for n in 1..=3u64 {
        let (producer, stream) = (producer.clone(), stream.clone());
        waits.spawn(async move {
            let started = Instant::now();
            let result = producer.publish(&stream, &n).await;
            (n, started.elapsed(), result.map_err(|e| e.to_string()))
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut outcomes = Vec::new();
    while let Some(done) = within(Duration::from_secs(120), "publishes during the outage", waits.join_next()).await {
        outcomes.push(done.unwrap());
    }
    outcomes.sort_by_key(|(n, _, _)| *n);
    eprintln!("{outcomes:#?}");
    assert!(outcomes.iter().all(|(_, _, r)| r.is_err()), "the server is down");
    for (n, waited, _) in &outcomes {
        assert!(*waited < Duration::from_secs(35), "publish {n} failed after {waited:?}, beyond the 30 s timeout");
    }
}
