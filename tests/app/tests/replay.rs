//! Replaying dead letters: to the group that failed and no other, once however often it is
//! asked, whether the entry is still in the stream or was trimmed.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_both_topologies, start_runtime, wait_until, Job, TestRedis, Topology};
use streamx::dead_letters::{REPLAYED_FROM_HEADER, REPLAY_GROUP_FIELD};
use streamx::testing::unique_name;
use streamx::{Consumer, DeadLetters, HandlerError, Inspector, Message, MessageId, Producer, RunningRuntime};

fn dlq_of(stream: &str) -> String {
    streamx::keys::dead_letter_stream(stream, &streamx::DeadLetterTarget::Default).unwrap()
}

/// One handling: the group, the job's number, the entry id, the attempt, and the
/// replayed-from header.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    group: &'static str,
    n: u64,
    id: MessageId,
    attempt: u32,
    replayed_from: Option<String>,
}

type Runs = Arc<Mutex<Vec<Run>>>;

/// `billing` fails every message for good while `broken` is set; `shipping` handles
/// everything. Both run one message at a time, so a group that handled a later entry of the
/// stream has handled every earlier one.
struct Fixture {
    stream: String,
    broken: Arc<AtomicBool>,
    runs: Runs,
    runtime: RunningRuntime,
    producer: Producer,
    dlq: DeadLetters,
}

impl Fixture {
    async fn start(url: &str, name: &str) -> Fixture {
        let stream = unique_name(name);
        let broken = Arc::new(AtomicBool::new(true));
        let runs: Runs = Arc::default();
        let consumer = |group: &'static str, fails: Option<Arc<AtomicBool>>| {
            let runs = runs.clone();
            Consumer::new(stream.clone(), group.to_string(), move |msg: Message<Job>| {
                let (runs, fails) = (runs.clone(), fails.clone());
                async move {
                    runs.lock().unwrap().push(Run {
                        group,
                        n: msg.payload().n,
                        id: msg.id(),
                        attempt: msg.attempt(),
                        replayed_from: msg.headers().get(REPLAYED_FROM_HEADER).map(str::to_string),
                    });
                    if fails.is_some_and(|f| f.load(Ordering::SeqCst)) {
                        return Err(HandlerError::permanent("downstream rejects it"));
                    }
                    Ok(())
                }
            })
            .concurrency(1)
            .claim_idle(Duration::from_secs(30))
        };
        let runtime =
            start_runtime(url, vec![consumer("billing", Some(broken.clone())), consumer("shipping", None)]).await;
        let producer = Producer::connect(url).await.unwrap();
        let dlq = DeadLetters::connect(url, &dlq_of(&stream)).await.unwrap();
        Fixture { stream, broken, runs, runtime, producer, dlq }
    }

    fn runs_of(&self, group: &str) -> Vec<Run> {
        self.runs.lock().unwrap().iter().filter(|r| r.group == group).cloned().collect()
    }

    /// Publishes a last job and waits until both groups handled it: every entry before it
    /// in the stream has then been handled by both (one at a time, in order).
    async fn settle_both(&self, n: u64) {
        self.producer.publish(&self.stream, &Job::ok(n)).await.unwrap();
        wait_until(Duration::from_secs(30), "both groups handled the last job", || async {
            ["billing", "shipping"].iter().all(|g| self.runs_of(g).iter().any(|r| r.n == n))
        })
        .await
        .unwrap();
    }

    /// Waits until `group` has nothing pending (nothing scheduled either: scheduled retries
    /// are pending under the placeholder), so no delivery is still coming.
    async fn drained(&self, url: &str, group: &str) {
        let inspector = Inspector::connect(url).await.unwrap();
        wait_until(Duration::from_secs(30), "the group has nothing pending", || async {
            inspector.group(&self.stream, group).await.unwrap().is_some_and(|g| g.pending == 0)
        })
        .await
        .unwrap();
    }
}

async fn a_replay_goes_to_the_failed_group_only(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let f = Fixture::start(&url, "replay-one-group").await;
    f.producer.publish_batch(&f.stream, &(0..5).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(30), "5 dead letters", || async { f.dlq.count().await.unwrap() >= 5 })
        .await
        .unwrap();
    f.broken.store(false, Ordering::SeqCst);

    let replayed = f.dlq.replay_all().await.unwrap();

    assert_eq!(replayed, 5);
    assert_eq!(f.dlq.count().await.unwrap(), 0);
    f.settle_both(99).await;
    f.drained(&url, "billing").await;
    let shipping: Vec<u64> = f.runs_of("shipping").iter().map(|r| r.n).collect();
    assert_eq!(shipping, vec![0, 1, 2, 3, 4, 99], "the group that succeeded handled each job once");
    let billing = f.runs_of("billing");
    let again: Vec<&Run> = billing.iter().filter(|r| r.n < 5 && r.attempt == 1).skip(5).collect();
    assert_eq!(again.len(), 5, "billing ran each job again, from attempt 1: {billing:?}");
    let first_ids: Vec<MessageId> = billing.iter().take(5).map(|r| r.id).collect();
    let again_ids: Vec<MessageId> = again.iter().map(|r| r.id).collect();
    let mut sorted = again_ids.clone();
    sorted.sort();
    assert_eq!(sorted, first_ids, "the original entries came back (same ids): the stream did not grow");
    assert_eq!(Inspector::connect(&url).await.unwrap().stream_len(&f.stream).await.unwrap(), 6);
    f.runtime.shutdown().await.unwrap();
}

async fn a_letter_replayed_twice_is_delivered_once(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let f = Fixture::start(&url, "replay-twice").await;
    f.producer.publish(&f.stream, &Job::ok(1)).await.unwrap();
    wait_until(Duration::from_secs(30), "a dead letter", || async { f.dlq.count().await.unwrap() >= 1 }).await.unwrap();
    f.broken.store(false, Ordering::SeqCst);
    let letter = f.dlq.list(None, 1).await.unwrap().entries.remove(0);

    // Two operators at once, and a third with a stale copy of the letter.
    let (a, b) = tokio::join!(f.dlq.replay_letter(&letter), f.dlq.replay(letter.id));
    let c = f.dlq.replay_letter(&letter).await.unwrap();

    let answers = [a.unwrap(), b.unwrap(), c];
    assert_eq!(answers.iter().filter(|a| a.is_some()).count(), 1, "one replay did it: {answers:?}");
    f.drained(&url, "billing").await;
    f.settle_both(99).await;
    let billing: Vec<u64> = f.runs_of("billing").iter().map(|r| r.n).collect();
    assert_eq!(billing, vec![1, 1, 99], "the dead job ran once more, not twice");
    f.runtime.shutdown().await.unwrap();
}

async fn a_trimmed_entry_is_published_again_for_its_group_only(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let f = Fixture::start(&url, "replay-trimmed").await;
    let id = f.producer.publish(&f.stream, &Job::ok(7)).await.unwrap();
    wait_until(Duration::from_secs(30), "a dead letter", || async { f.dlq.count().await.unwrap() >= 1 }).await.unwrap();
    f.broken.store(false, Ordering::SeqCst);
    f.settle_both(98).await;
    assert_eq!(server.cli(&["XDEL", &f.stream, &id.to_string()]).unwrap().trim(), "1");
    let letter = f.dlq.list(None, 1).await.unwrap().entries.remove(0);

    let replayed = f.dlq.replay(letter.id).await.unwrap().unwrap();

    assert!(replayed > id, "a new entry: {replayed}");
    let entry = server.cli(&["XRANGE", &f.stream, &replayed.to_string(), &replayed.to_string()]).unwrap();
    assert!(entry.contains(REPLAY_GROUP_FIELD) && entry.contains("billing"), "{entry}");
    f.settle_both(99).await;
    f.drained(&url, "shipping").await;
    let shipping: Vec<u64> = f.runs_of("shipping").iter().map(|r| r.n).collect();
    assert_eq!(shipping, vec![7, 98, 99], "shipping did not run the entry meant for billing");
    let billing = f.runs_of("billing");
    let again: Vec<&Run> = billing.iter().filter(|r| r.n == 7).collect();
    assert_eq!(again.len(), 2, "{billing:?}");
    assert_eq!(again[1].replayed_from.as_deref(), Some(letter.id.to_string().as_str()));
    assert_eq!(f.dlq.count().await.unwrap(), 0);
    f.runtime.shutdown().await.unwrap();
}

async fn replaying_every_letter_of_an_undecodable_entry_reaches_each_group_once(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let f = Fixture::start(&url, "replay-undecodable").await;
    f.broken.store(false, Ordering::SeqCst);
    server.cli(&["XADD", &f.stream, "*", "data", "not json"]).unwrap();
    wait_until(Duration::from_secs(30), "a dead letter per group", || async { f.dlq.count().await.unwrap() >= 2 })
        .await
        .unwrap();

    assert_eq!(f.dlq.replay_all().await.unwrap(), 2);

    wait_until(Duration::from_secs(30), "each group dead-lettered it again", || async {
        f.dlq.count().await.unwrap() >= 2
    })
    .await
    .unwrap();
    f.settle_both(99).await;
    f.drained(&url, "billing").await;
    f.drained(&url, "shipping").await;
    let letters = f.dlq.list(None, 10).await.unwrap();
    let mut groups: Vec<&str> = letters.entries.iter().map(|l| l.group.as_str()).collect();
    groups.sort();
    assert_eq!(groups, vec!["billing", "shipping"], "one letter per group again, not one per group per letter");
    assert_eq!(Inspector::connect(&url).await.unwrap().stream_len(&f.stream).await.unwrap(), 2);
    f.runtime.shutdown().await.unwrap();
}

/// The routing of a re-published entry is a field, not a header: a header of that name (a
/// handler forwarding the headers it got, or a producer's) routes nothing.
async fn a_header_named_like_the_replay_field_routes_nothing(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let f = Fixture::start(&url, "replay-forged").await;
    f.broken.store(false, Ordering::SeqCst);
    let headers = streamx::Headers::new().with(REPLAY_GROUP_FIELD, "billing").with("streamx-replay-group", "billing");
    f.producer.publish_with(&f.stream, &Job::ok(5), &streamx::PublishOptions::new().headers(headers)).await.unwrap();
    f.settle_both(99).await;
    let shipping: Vec<u64> = f.runs_of("shipping").iter().map(|r| r.n).collect();
    assert_eq!(shipping, vec![5, 99], "shipping ran the entry: headers do not route");
    f.runtime.shutdown().await.unwrap();
}

on_both_topologies!(
    a_header_named_like_the_replay_field_routes_nothing,
    a_replay_goes_to_the_failed_group_only,
    a_letter_replayed_twice_is_delivered_once,
    a_trimmed_entry_is_published_again_for_its_group_only,
    replaying_every_letter_of_an_undecodable_entry_reaches_each_group_once,
);

/// A dead-letter stream in another hash slot than its origin (a shared one, written by hand
/// or another tool) cannot be in the replay's script: the replay marks stop a second
/// delivery when the letter survives its replay (a crash before the client deleted it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_in_another_slot_is_delivered_once_even_if_it_survives_its_replay() {
    let server = TestRedis::start(Topology::Cluster).unwrap();
    let url = server.url();
    let f = Fixture::start(&url, "replay-cross-slot").await;
    let id = f.producer.publish(&f.stream, &Job::ok(3)).await.unwrap();
    wait_until(Duration::from_secs(30), "a dead letter", || async { f.dlq.count().await.unwrap() >= 1 }).await.unwrap();
    f.broken.store(false, Ordering::SeqCst);
    let original = f.dlq.list(None, 1).await.unwrap().entries.remove(0);
    // The letter copied to a shared dead-letter stream in another slot, under the same id.
    let shared = unique_name("shared-dead-letters");
    assert_ne!(streamx::keys::slot(&shared), streamx::keys::slot(&f.stream));
    let fields = [
        "data",
        r#"{"n":3,"action":"ok"}"#,
        "dlq:stream",
        f.stream.as_str(),
        "dlq:id",
        &id.to_string(),
        "dlq:group",
        "billing",
        "dlq:kind",
        "permanent",
    ];
    let copy = |server: &TestRedis| {
        let mut args = vec!["XADD", shared.as_str(), "*"];
        args.extend(fields);
        server.cli(&args).unwrap()
    };
    let letter_id = copy(&server).trim().to_string();
    f.dlq.delete(&[original.id]).await.unwrap();
    let dlq = DeadLetters::connect(&url, &shared).await.unwrap();
    let letter = dlq.list(None, 1).await.unwrap().entries.remove(0);

    assert_eq!(dlq.replay_letter(&letter).await.unwrap(), Some(id));
    // As if the client died before deleting the letter: it is back, same id.
    server.cli(&["DEL", &shared]).unwrap();
    let mut args = vec!["XADD", shared.as_str(), letter_id.as_str()];
    args.extend(fields);
    server.cli(&args).unwrap();
    assert_eq!(dlq.replay_letter(&letter).await.unwrap(), None, "the second replay finds the mark");

    assert_eq!(dlq.count().await.unwrap(), 0, "and removes the letter");
    f.drained(&url, "billing").await;
    f.settle_both(99).await;
    let billing: Vec<u64> = f.runs_of("billing").iter().map(|r| r.n).collect();
    assert_eq!(billing, vec![3, 3, 99]);
    f.runtime.shutdown().await.unwrap();
}
