//! Publishing: nothing is written when a payload cannot be encoded, a batch that fails
//! part-way says exactly which entries it wrote, batches go as one append script per round
//! trip (pipelined XADDs for a user the ACL refuses scripts), and single publishes from many
//! tasks share round trips while each caller gets its own id or error, in its own order.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::start_server;
use futures_util::TryStreamExt;
use serde::ser::{Error as _, Serialize, Serializer};
use streamx::testing::unique_name;
use streamx::{Error, History, Inspector, MessageId, Producer, PublishOptions};

/// A payload whose encoding fails when `poisoned`.
struct Item {
    n: u64,
    poisoned: bool,
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.poisoned {
            return Err(S::Error::custom("this payload cannot be encoded"));
        }
        self.n.serialize(serializer)
    }
}

fn items(count: u64, poisoned_at: Option<u64>) -> Vec<Item> {
    (0..count).map(|n| Item { n, poisoned: Some(n) == poisoned_at }).collect()
}

/// The ids of every entry of `stream`, oldest first.
async fn stored_ids(url: &str, stream: &str) -> Vec<MessageId> {
    let history = History::connect(url).await.unwrap();
    history.read::<u64>(stream, ..).map_ok(|m| m.id()).try_collect().await.unwrap()
}

async fn stored_values(url: &str, stream: &str) -> Vec<u64> {
    let history = History::connect(url).await.unwrap();
    history.read::<u64>(stream, ..).map_ok(|m| m.into_payload()).try_collect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencodable_payload_fails_the_batch_before_anything_is_written() {
    let server = start_server();
    let stream = unique_name("encode");
    let producer = Producer::connect(&server.url()).await.unwrap();

    let err = producer.publish_batch(&stream, &items(1_500, Some(1_200))).await.unwrap_err();

    assert!(matches!(err, Error::Encode { .. }), "an encode error: {err:?}");
    let len = Inspector::connect(&server.url()).await.unwrap().stream_len(&stream).await.unwrap();
    assert_eq!(len, 0, "nothing is written when one payload of the batch cannot be encoded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_after_its_first_chunk_reports_the_written_ids() {
    let server = start_server();
    let stream = unique_name("partial");
    let producer = Producer::connect(&server.url()).await.unwrap();
    // No replicas: the first chunk of 500 is written, then WAIT confirms it on none.
    let options = PublishOptions::new().durable(1, Duration::from_millis(20));

    let err = producer.publish_batch_with(&stream, &items(1_500, None), &options).await.unwrap_err();

    let Error::PartialPublish { written, source, .. } = &err else { panic!("a partial publish: {err:?}") };
    assert!(matches!(**source, Error::NotReplicated { wanted: 1, acked: 0, .. }), "stopped by WAIT: {source:?}");
    assert_eq!(err.written(), &written[..]);
    let positions: Vec<usize> = written.iter().map(|(at, _)| *at).collect();
    assert_eq!(positions, (0..500).collect::<Vec<_>>(), "the first chunk, by position");
    let ids: Vec<MessageId> = written.iter().map(|(_, id)| *id).collect();
    assert_eq!(stored_ids(&server.url(), &stream).await, ids, "the stream holds exactly the ids reported as written");

    // Retrying the rest completes the batch without duplicates.
    let rest = &items(1_500, None)[500..];
    let more = producer.publish_batch(&stream, rest).await.unwrap();
    let all: Vec<MessageId> = ids.into_iter().chain(more).collect();
    let stored = stored_ids(&server.url(), &stream).await;
    assert_eq!(stored, all);
    let values = stored_values(&server.url(), &stream).await;
    assert_eq!(values, (0..1_500).collect::<Vec<_>>(), "each payload once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_writes_nothing_fails_with_the_error_itself() {
    let server = start_server();
    let stream = unique_name("absent");
    let producer = Producer::connect(&server.url()).await.unwrap();

    let err = producer.publish_batch_with(&stream, &items(10, None), &PublishOptions::new().no_mkstream()).await;

    let err = err.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "NOMKSTREAM on a missing stream: {err:?}");
    assert!(err.written().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_lands_in_order_with_round_trips_in_flight() {
    let server = start_server();
    let stream = unique_name("order");
    let producer = Producer::connect(&server.url()).await.unwrap();
    // 20 round trips of 500, 8 in flight at once: the stream still holds the batch's order,
    // and the returned ids are the stored ones, in the same order.
    let ids = producer.publish_batch(&stream, &(0..10_000u64).collect::<Vec<_>>()).await.unwrap();
    let stored = stored_ids(&server.url(), &stream).await;
    assert_eq!(stored, ids);
    let values = stored_values(&server.url(), &stream).await;
    assert_eq!(values, (0..10_000).collect::<Vec<_>>());
}

/// Client connections that last published (`cmd=xadd`, or `cmd=eval` for the append
/// script, in CLIENT LIST), and all the normal client connections but redis-cli's own.
fn connections(server: &streamx::testing::RedisServer) -> (usize, usize) {
    let list = common::redis_cli(server, &["CLIENT", "LIST", "TYPE", "normal"]).unwrap();
    let others: Vec<&str> = list.lines().filter(|l| !l.contains("cmd=client|list")).collect();
    (others.iter().filter(|l| l.contains(" cmd=xadd ") || l.contains(" cmd=eval ")).count(), others.len())
}

/// `calls` of `command` in the server's INFO commandstats (0 when never run).
fn command_calls(server: &streamx::testing::RedisServer, command: &str) -> u64 {
    let stats = common::redis_cli(server, &["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_publish_goes_out_at_once_as_one_xadd() {
    let server = start_server();
    let stream = unique_name("lone");
    let producer = Producer::connect(&server.url()).await.unwrap();
    common::redis_cli(&server, &["CONFIG", "RESETSTAT"]).unwrap();
    for n in 0..5u64 {
        producer.publish(&stream, &n).await.unwrap();
    }
    assert_eq!(command_calls(&server, "xadd"), 5, "each awaited publish is its own XADD");
    assert_eq!(command_calls(&server, "eval"), 0, "nothing waits to be coalesced with a lone publish");
    assert_eq!(stored_values(&server.url(), &stream).await, (0..5).collect::<Vec<_>>());
}

/// What one publishing task saw: its sequence numbers and the ids the calls returned.
type Published = Vec<(u64, MessageId)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_publishes_from_a_thousand_tasks_share_round_trips_each_with_its_own_id_in_order() {
    let server = start_server();
    let stream = unique_name("coalesced");
    let producer = Producer::connect(&server.url()).await.unwrap();
    common::redis_cli(&server, &["CONFIG", "RESETSTAT"]).unwrap();
    const TASKS: u64 = 1_000;
    const EACH: u64 = 20;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (producer, stream) = (producer.clone(), stream.clone());
        tasks.spawn(async move {
            let mut mine: Published = Vec::new();
            for seq in 0..EACH {
                let id = producer.publish(&stream, &(task * 1_000 + seq)).await.unwrap();
                mine.push((task * 1_000 + seq, id));
            }
            mine
        });
    }
    let mut returned = std::collections::HashMap::new();
    while let Some(mine) = tasks.join_next().await {
        returned.extend(mine.unwrap().into_iter().map(|(value, id)| (id, value)));
    }
    assert_eq!(returned.len() as u64, TASKS * EACH, "every call got an id of its own");

    let history = History::connect(&server.url()).await.unwrap();
    let stored: Vec<(MessageId, u64)> =
        history.read::<u64>(&stream, ..).map_ok(|m| (m.id(), *m.payload())).try_collect().await.unwrap();
    assert_eq!(stored.len() as u64, TASKS * EACH, "each publish added exactly one entry");
    let mut next_seq = vec![0u64; TASKS as usize];
    for (id, value) in &stored {
        assert_eq!(returned.get(id), Some(value), "the id returned to a caller is its own entry's");
        let (task, seq) = ((value / 1_000) as usize, value % 1_000);
        assert_eq!(seq, next_seq[task], "task {task}'s publishes land in the order it made them");
        next_seq[task] += 1;
    }
    let scripts = command_calls(&server, "eval");
    assert!(scripts > 0, "concurrent publishes were coalesced into append scripts");
    assert!(scripts * 10 < TASKS * EACH, "{scripts} round trips for {} publishes: not coalesced", TASKS * EACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_publishes_fail_each_on_their_own() {
    let server = start_server();
    let good = unique_name("good");
    let missing = unique_name("missing");
    let wrong = unique_name("wrongtype");
    common::redis_cli(&server, &["SET", &wrong, "not a stream"]).unwrap();
    let producer = Producer::connect(&server.url()).await.unwrap();
    let no_stream = PublishOptions::new().no_mkstream();
    // Publishes to three streams at once, many per round trip: to a missing stream with
    // NOMKSTREAM, to a key of another type, and to a good stream.
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..300u64 {
        let producer = producer.clone();
        let (target, options) = match n % 3 {
            0 => (good.clone(), PublishOptions::new()),
            1 => (missing.clone(), no_stream.clone()),
            _ => (wrong.clone(), PublishOptions::new()),
        };
        tasks.spawn(async move { (n, producer.publish_with(&target, &n, &options).await) });
    }
    let mut written = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (n, outcome) = done.unwrap();
        match n % 3 {
            0 => written.push((outcome.unwrap(), n)),
            1 => assert!(matches!(outcome, Err(Error::Decode { .. })), "NOMKSTREAM, no stream: {outcome:?}"),
            _ => assert!(
                matches!(&outcome, Err(Error::Redis { source, .. }) if source.details().contains("WRONGTYPE")),
                "{outcome:?}"
            ),
        }
    }
    written.sort();
    let stored: Vec<(MessageId, u64)> = History::connect(&server.url())
        .await
        .unwrap()
        .read::<u64>(&good, ..)
        .map_ok(|m| (m.id(), *m.payload()))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(stored, written, "the good stream holds exactly the publishes that succeeded, under their ids");
    assert_eq!(common::redis_cli(&server, &["EXISTS", &missing]).unwrap().trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_the_acl_refuses_scripts_publishes_with_pipelined_xadds() {
    let server = start_server();
    let stream = unique_name("noeval");
    let rule = [
        "ACL",
        "SETUSER",
        "pipes",
        "on",
        ">pw",
        "resetkeys",
        "~*",
        "-@all",
        "+xadd",
        "+sadd",
        "+hget",
        "+ping",
        "+info",
        "+client|id",
        "+xrange",
    ];
    assert_eq!(common::redis_cli(&server, &rule).unwrap().trim(), "OK");
    let url = server.url().replacen("redis://", "redis://pipes:pw@", 1);
    let producer = Producer::connect(&url).await.unwrap();
    let ids = producer.publish_batch(&stream, &(0..1_200u64).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(ids.len(), 1_200);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1_200..1_400u64 {
        let (producer, stream) = (producer.clone(), stream.clone());
        tasks.spawn(async move { producer.publish(&stream, &n).await.unwrap() });
    }
    while tasks.join_next().await.is_some() {}
    let mut values = stored_values(&server.url(), &stream).await;
    assert_eq!(&values[..1_200], &(0..1_200).collect::<Vec<_>>()[..], "the batch, in order");
    values.sort_unstable();
    assert_eq!(values, (0..1_400).collect::<Vec<_>>(), "every publish, once");
    // ACL LOG: one entry per denied (user, object), with a count of denials.
    let log = common::redis_cli(&server, &["ACL", "LOG"]).unwrap();
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let objects: Vec<&str> = lines.windows(2).filter(|w| w[0] == "object").map(|w| w[1]).collect();
    let counts: Vec<&str> = lines.windows(2).filter(|w| w[0] == "count").map(|w| w[1]).collect();
    let evals: Vec<(&str, &str)> = objects.into_iter().zip(counts).filter(|(object, _)| *object == "eval").collect();
    // (The other denial is the producer's look-up of a topic record, which it runs as a script.)
    assert_eq!(evals, [("eval", "1")], "one refusal, then pipelined XADDs: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_many_round_trips_go_over_a_second_connection_made_once() {
    let server = start_server();
    let stream = unique_name("bulk");
    let producer = Producer::connect(&server.url()).await.unwrap();

    // Single publishes and a batch of one round trip share the first connection.
    producer.publish(&stream, &0u64).await.unwrap();
    producer.publish_batch(&stream, &(1..=500u64).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(connections(&server), (1, 1), "one connection so far");

    // A batch of more than one round trip opens the bulk connection; later ones reuse it,
    // and what is awaited in turn lands in turn across the two connections.
    producer.publish_batch(&stream, &(501..=1_700u64).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(connections(&server), (2, 2), "the bulk connection");
    producer.publish(&stream, &1_701u64).await.unwrap();
    producer.clone().publish_batch(&stream, &(1_702..=3_000u64).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(connections(&server), (2, 2), "clones share both connections");
    assert_eq!(stored_values(&server.url(), &stream).await, (0..=3_000).collect::<Vec<_>>());

    // Closing closes both (what is left is the history reader's).
    producer.close().await;
    common::wait_until(Duration::from_secs(10), "both connections closed", || async { connections(&server).0 == 0 })
        .await
        .unwrap();
}
