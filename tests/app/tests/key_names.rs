//! The keys streamx derives from a stream's name (issue 22, item 4): two streams never
//! share one (before, `x` and `{x}` shared their retry schedule and each promoter removed
//! the other's due ids, stranding their retries), every one is in the stream's hash slot
//! whatever the name (before, `orders}` got keys in another slot: CROSSSLOT on a cluster),
//! and the keys of a braced name at their old names move to the new ones at start.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_both_topologies, start_runtime, wait_until, Job, TestRedis, Topology};
use streamx::testing::unique_name;
use streamx::{Consumer, DeadLetters, HandlerError, Inspector, Message, MessageId, Producer};

fn dlq_of(stream: &str) -> String {
    streamx::keys::dead_letter_stream(stream, &streamx::DeadLetterTarget::Default).unwrap()
}

/// `(stream, id) -> attempts that ran`, over every consumer of a test.
type Runs = Arc<Mutex<BTreeMap<(String, MessageId), Vec<u32>>>>;

/// A consumer of `stream`/`g` that records each run, fails every first attempt (retry after
/// 50 ms) and fails the message with `n == 0` for good (a dead letter).
fn failing_once(stream: &str, runs: &Runs) -> Consumer {
    let (runs, name) = (runs.clone(), stream.to_string());
    Consumer::new(stream.to_string(), "g".to_string(), move |msg: Message<Job>| {
        runs.lock().unwrap().entry((name.clone(), msg.id())).or_default().push(msg.attempt());
        let (attempt, n) = (msg.attempt(), msg.payload().n);
        async move {
            if n == 0 {
                Err(HandlerError::permanent("poison"))
            } else if attempt == 1 {
                Err(HandlerError::retry_after("first attempt fails", Duration::from_millis(50)))
            } else {
                Ok(())
            }
        }
    })
    .claim_idle(Duration::from_millis(500))
}

async fn pending(url: &str, stream: &str) -> u64 {
    Inspector::connect(url).await.unwrap().group(stream, "g").await.unwrap().map_or(0, |g| g.pending)
}

/// How many of `ids` (of `stream`) ran their retry (attempt 2).
fn retried(runs: &Runs, stream: &str, ids: &[MessageId]) -> usize {
    let runs = runs.lock().unwrap();
    ids.iter().filter(|id| runs.get(&(stream.to_string(), **id)).is_some_and(|a| a.contains(&2))).count()
}

/// Streams `x` and `{x}` at once, 20 messages each failing their first attempt: every one
/// of the 40 retries runs, once. Before, both streams' schedules were `{x}:retries:g` and
/// each promoter dropped the other's due ids (25 of 40 retries never ran).
async fn streams_x_and_braced_x_keep_their_retries_apart(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let plain = unique_name("x");
    let braced = format!("{{{plain}}}");
    assert_ne!(streamx::keys::retry_schedule(&plain, "g"), streamx::keys::retry_schedule(&braced, "g"));
    let runs: Runs = Arc::default();
    let runtime = start_runtime(&url, vec![failing_once(&plain, &runs), failing_once(&braced, &runs)]).await;
    let producer = Producer::connect(&url).await.unwrap();
    let jobs: Vec<Job> = (1..=20).map(Job::ok).collect();
    let plain_ids = producer.publish_batch(&plain, &jobs).await.unwrap();
    let braced_ids = producer.publish_batch(&braced, &jobs).await.unwrap();
    let all_retried = wait_until(Duration::from_secs(20), "all 40 retries ran", || async {
        retried(&runs, &plain, &plain_ids) + retried(&runs, &braced, &braced_ids) == 40
            && pending(&url, &plain).await == 0
            && pending(&url, &braced).await == 0
    })
    .await;
    runtime.shutdown().await.unwrap();
    let ran = retried(&runs, &plain, &plain_ids) + retried(&runs, &braced, &braced_ids);
    assert!(all_retried.is_ok(), "{} of 40 retries never ran", 40 - ran);
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 40);
    for (key, attempts) in runs.iter() {
        assert_eq!(attempts, &[1, 2], "{key:?} ran its first attempt and its retry, once each");
    }
}

/// Names with a `}` but no valid hash tag (`orders}`, `a}b`, `x{}y`) and one whose tag
/// starts with `{` (`{{a}`): on a cluster every key streamx derives is in the stream's slot,
/// so the scripts run (no CROSSSLOT), retries run and dead letters are written.
async fn names_with_stray_braces_keep_their_keys_in_the_streams_slot(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let streams = [
        format!("{}}}", unique_name("orders")),
        format!("{}}}b", unique_name("a")),
        format!("{}{{}}y", unique_name("x")),
        format!("{{{{{}}}", unique_name("a")),
    ];
    for stream in &streams {
        let keys = [
            dlq_of(stream),
            streamx::keys::retry_schedule(stream, "g"),
            streamx::keys::heartbeats(stream, "g"),
            streamx::keys::takeover_marks(stream, "g"),
        ];
        for key in keys {
            assert_eq!(streamx::keys::slot(&key), streamx::keys::slot(stream), "{key} is in the slot of {stream}");
        }
    }
    let runs: Runs = Arc::default();
    let runtime = start_runtime(&url, streams.iter().map(|s| failing_once(s, &runs)).collect()).await;
    let producer = Producer::connect(&url).await.unwrap();
    let jobs: Vec<Job> = (0..=5).map(Job::ok).collect();
    let mut published = Vec::new();
    for stream in &streams {
        published.push(producer.publish_batch(stream, &jobs).await.unwrap());
    }
    let done =
        wait_until(Duration::from_secs(20), "every retry ran and every poison message dead-lettered", || async {
            let mut done = true;
            for (stream, ids) in streams.iter().zip(&published) {
                let letters = DeadLetters::connect(&url, &dlq_of(stream)).await.unwrap();
                done &= retried(&runs, stream, &ids[1..]) == 5
                    && letters.count().await.unwrap_or(0) == 1
                    && pending(&url, stream).await == 0;
            }
            done
        })
        .await;
    runtime.shutdown().await.unwrap();
    let retries: Vec<_> = streams.iter().zip(&published).map(|(s, ids)| (s, retried(&runs, s, &ids[1..]))).collect();
    assert!(done.is_ok(), "retries that ran, of 5 per stream: {retries:?}");
    for (stream, ids) in streams.iter().zip(&published) {
        let letters = DeadLetters::connect(&url, &dlq_of(stream)).await.unwrap().list(None, 10).await.unwrap();
        assert_eq!(letters.entries.len(), 1, "{stream}");
        assert_eq!(letters.entries[0].origin_id, Some(ids[0]), "{stream}");
    }
}

/// A deployment upgrading with a braced stream name (`{shop}.orders`) had its keys at the
/// old names (`{shop}.orders:retries:g`, `{shop}.orders:dlq`, ...). At start the consumer
/// moves them to the new names: the retry parked in the old schedule runs, the old dead
/// letter is in the new dead-letter stream, and no old key is left.
async fn a_braced_streams_old_keys_move_to_the_new_names_at_start(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = format!("{{{}}}.orders", unique_name("shop"));
    let old_schedule = format!("{stream}:retries:g");
    let old_dlq = format!("{stream}:dlq");
    let old_marks = format!("{stream}:takeovers:g");
    assert_ne!(streamx::keys::retry_schedule(&stream, "g"), old_schedule, "the schedule's name changed");
    assert_ne!(dlq_of(&stream), old_dlq, "the dead-letter stream's name changed");
    let producer = Producer::connect(&url).await.unwrap();
    let parked = producer.publish(&stream, &Job::ok(1)).await.unwrap();
    // Parked as the old version left it: pending under the placeholder consumer, its id in
    // the old schedule (due long ago).
    server.cli(&["XGROUP", "CREATE", &stream, "g", "0"]).unwrap();
    server
        .cli(&["XREADGROUP", "GROUP", "g", streamx::SCHEDULED_CONSUMER, "COUNT", "1", "STREAMS", &stream, ">"])
        .unwrap();
    server.cli(&["ZADD", &old_schedule, "1", &parked.to_string()]).unwrap();
    server.cli(&["XADD", &old_dlq, "*", "old", "letter"]).unwrap();
    // An empty marks set is no key; this one holds an id that is not pending (ignored).
    server.cli(&["SADD", &old_marks, "0-1"]).unwrap();
    let runs: Runs = Arc::default();
    let runtime = start_runtime(&url, vec![failing_once(&stream, &runs)]).await;
    let ran = wait_until(Duration::from_secs(10), "the parked retry ran", || async {
        retried(&runs, &stream, &[parked]) == 1 && pending(&url, &stream).await == 0
    })
    .await;
    runtime.shutdown().await.unwrap();
    assert!(ran.is_ok(), "the retry parked in the old schedule never ran: {:?}", runs.lock().unwrap());
    for old in [&old_schedule, &old_dlq, &old_marks] {
        assert_eq!(server.cli(&["EXISTS", old]).unwrap().trim(), "0", "{old} was moved");
    }
    assert_eq!(server.xlen(&dlq_of(&stream)).unwrap(), 1, "the old dead letter is in the new dead-letter stream");
}

/// During a rolling upgrade an old version may still write to the old names after a new
/// one made the new keys: at the next start the schedules are merged (both parked retries
/// run), and a dead-letter stream at both names is left as it is (streams do not merge).
async fn old_and_new_keys_both_present_are_merged_at_start(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = format!("{{{}}}.orders", unique_name("shop"));
    let old_schedule = format!("{stream}:retries:g");
    let old_dlq = format!("{stream}:dlq");
    let producer = Producer::connect(&url).await.unwrap();
    let parked = producer.publish_batch(&stream, &[Job::ok(1), Job::ok(2)]).await.unwrap();
    server.cli(&["XGROUP", "CREATE", &stream, "g", "0"]).unwrap();
    server
        .cli(&["XREADGROUP", "GROUP", "g", streamx::SCHEDULED_CONSUMER, "COUNT", "2", "STREAMS", &stream, ">"])
        .unwrap();
    server.cli(&["ZADD", &old_schedule, "1", &parked[0].to_string()]).unwrap();
    // The new schedule's entry is due in an hour: the merge keeps each entry's own score.
    let later = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 3_600_000)
        .to_string();
    server.cli(&["ZADD", &streamx::keys::retry_schedule(&stream, "g"), &later, &parked[1].to_string()]).unwrap();
    server.cli(&["XADD", &old_dlq, "*", "old", "letter"]).unwrap();
    server.cli(&["XADD", &dlq_of(&stream), "*", "new", "letter"]).unwrap();
    let runs: Runs = Arc::default();
    let runtime = start_runtime(&url, vec![failing_once(&stream, &runs)]).await;
    let ran = wait_until(Duration::from_secs(10), "the retry parked in the old schedule ran", || async {
        retried(&runs, &stream, &parked[..1]) == 1 && pending(&url, &stream).await == 1
    })
    .await;
    runtime.shutdown().await.unwrap();
    assert!(ran.is_ok(), "the retry parked in the old schedule never ran: {:?}", runs.lock().unwrap());
    assert_eq!(retried(&runs, &stream, &parked[1..]), 0, "the other keeps its due time, an hour away");
    assert_eq!(server.cli(&["EXISTS", &old_schedule]).unwrap().trim(), "0", "the old schedule was merged");
    let schedule = server.cli(&["ZRANGE", &streamx::keys::retry_schedule(&stream, "g"), "0", "-1"]).unwrap();
    assert_eq!(schedule.trim(), parked[1].to_string());
    assert_eq!(server.xlen(&old_dlq).unwrap(), 1, "a dead-letter stream at both names is left");
    assert_eq!(server.xlen(&dlq_of(&stream)).unwrap(), 1);
}

on_both_topologies!(
    streams_x_and_braced_x_keep_their_retries_apart,
    names_with_stray_braces_keep_their_keys_in_the_streams_slot,
    a_braced_streams_old_keys_move_to_the_new_names_at_start,
    old_and_new_keys_both_present_are_merged_at_start,
);
