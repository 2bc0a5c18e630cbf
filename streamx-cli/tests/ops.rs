//! The operations asynq, BullMQ and Kafka users expect, against a real Redis with a real
//! runtime consuming: the retry schedule (`retries list|run|delete`), group management
//! (`group create|delete|reset|remove-consumer`) and the dead-letter overview
//! (`dlq overview`).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_both_topologies, run_fails, run_json, run_ok, start_runtime, wait_until, TestRedis, Topology};
use streamx_runtime::{Backoff, Consumer, DeadLetterTarget, HandlerError, Message, Producer};
use streamx_testing::unique_name;

/// Retries an hour away: parked entries stay in the schedule until an operator acts.
const HOUR_BACKOFF: Backoff = Backoff::new(Duration::from_secs(3600), 2.0, Duration::from_secs(3600));

/// Every handled message: its id and its attempt number.
type Handled = Arc<Mutex<HashMap<String, u32>>>;

/// A consumer of `group` that fails (retryably) while `failing` is set and records what it
/// handled otherwise.
fn recording(stream: &str, group: &str, failing: Arc<AtomicBool>, handled: Handled) -> Consumer {
    Consumer::new(stream.to_string(), group.to_string(), move |msg: Message<serde_json::Value>| {
        let (failing, handled) = (failing.clone(), handled.clone());
        async move {
            if failing.load(Ordering::SeqCst) {
                return Err(HandlerError::from("the provider is down"));
            }
            handled.lock().unwrap().insert(msg.id().to_string(), msg.attempt());
            Ok(())
        }
    })
}

/// Fails with every violation when `value` does not match the schema `name` in docs/json
/// (documented in docs/cli-json.md).
fn assert_matches(name: &str, value: &serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/json").join(format!("{name}.json"));
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{value:#}");
}

fn zcard(redis: &TestRedis, key: &str) -> u64 {
    redis.cli(&["ZCARD", key]).unwrap().trim().parse().unwrap()
}

/// The `field` of group `group` in `XINFO GROUPS stream`, as redis-cli prints it.
fn group_field(redis: &TestRedis, stream: &str, group: &str, field: &str) -> String {
    let out = redis.cli(&["XINFO", "GROUPS", stream]).unwrap();
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let mut current = None;
    for pair in lines.chunks(2) {
        if let [k, v] = pair {
            if *k == "name" {
                current = Some(*v);
            }
            if *k == field && current == Some(group) {
                return v.to_string();
            }
        }
    }
    panic!("no {field} for {group} in {out}");
}

async fn retry_schedule_list_run_and_delete(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let stream = unique_name("retries");
    let schedule = format!("{{{stream}}}:retries:billing");
    let failing = Arc::new(AtomicBool::new(true));
    let handled: Handled = Arc::default();
    let consumer = recording(&stream, "billing", failing.clone(), handled.clone()).backoff(HOUR_BACKOFF);
    let runtime = start_runtime(&url, vec![consumer]).await;
    // Published as raw bytes, so the payload's key order is known.
    let mut ids = Vec::new();
    for n in 0..3 {
        let data = format!(r#"{{"order":{n},"b":1,"a":2}}"#);
        ids.push(redis.cli(&["XADD", &stream, "*", "data", &data]).unwrap().trim().to_string());
    }
    wait_until(Duration::from_secs(30), "three retries scheduled", || async { zcard(&redis, &schedule) == 3 })
        .await
        .unwrap();

    // list: every retry, soonest first, with its attempts and due time an hour away.
    let all = run_json(&url, &["retries", "list", &stream, "billing", "--payloads"]);
    assert_eq!(all["total"], 3, "{all}");
    assert_matches("retries-list", &all);
    assert_eq!(all["schedule"], schedule.as_str());
    let entries = all["entries"].as_array().unwrap();
    assert_eq!(entries.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect::<Vec<_>>(), ids);
    for e in entries {
        assert_eq!(e["attempts"], 1, "{e}");
        let due_in = e["due_in_ms"].as_i64().unwrap();
        assert!(due_in > 3_000_000 && due_in <= 3_600_000, "{e}");
        assert_eq!(e["exists"], true);
    }
    // The payload as published: keys in their order, not re-sorted.
    let text = run_ok(&url, &["--json", "retries", "list", &stream, "billing", "--payloads", "--limit", "1"]);
    assert!(text.contains(r#""payload": {"order":0,"b":1,"a":2}"#), "{text}");
    let page = run_json(&url, &["retries", "list", &stream, "billing", "--limit", "2"]);
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_offset"], 2);
    assert_matches("retries-list", &page);
    let rest = run_json(&url, &["retries", "list", &stream, "billing", "--offset", "2"]);
    assert_eq!(rest["entries"][0]["id"], ids[2].as_str());
    assert!(rest["next_offset"].is_null());
    let table = run_ok(&url, &["retries", "list", &stream, "billing"]);
    assert!(table.contains("in 59m") && table.contains("3 shown; 3 scheduled in"), "{table}");
    // The README's read-only user lists the schedule too (no TIME: this machine's clock).
    if topology == Topology::Standalone {
        let keys = [format!("~{stream}"), format!("~{{{stream}}}:*")];
        redis.cli(&["ACL", "SETUSER", "reader", "on", ">pw", "-@all", "+@read", &keys[0], &keys[1]]).unwrap();
        let reader = url.replace("redis://", "redis://reader:pw@");
        let read = run_json(&reader, &["retries", "list", &stream, "billing"]);
        assert_eq!(read["total"], 3, "{read}");
        assert!(read["entries"][0]["due_in_ms"].as_i64().unwrap() > 3_000_000, "{read}");
        let err = run_fails(&reader, &["retries", "run", &stream, "billing", &ids[0]], 5);
        assert!(err.contains("NOPERM"), "{err}");
    }

    // run: the first is delivered at once, as its second attempt; the others wait.
    failing.store(false, Ordering::SeqCst);
    let ran = run_json(&url, &["retries", "run", &stream, "billing", &ids[0]]);
    assert_eq!(ran["id"], ids[0].as_str());
    assert_matches("retries-run", &ran);
    wait_until(Duration::from_secs(30), "the retry run now is handled", || async {
        handled.lock().unwrap().contains_key(&ids[0])
    })
    .await
    .unwrap();
    assert_eq!(handled.lock().unwrap()[&ids[0]], 2, "its second attempt");
    wait_until(Duration::from_secs(10), "it left the schedule", || async { zcard(&redis, &schedule) == 2 })
        .await
        .unwrap();

    // delete: refused without --yes and a terminal; with it, the group never handles it.
    let err = run_fails(&url, &["retries", "delete", &stream, "billing", &ids[1]], 6);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(zcard(&redis, &schedule), 2);
    let deleted = run_json(&url, &["retries", "delete", &stream, "billing", &ids[1], "--yes"]);
    assert_eq!(deleted["deleted"], true);
    assert_matches("retries-delete", &deleted);
    assert_eq!(redis.cli(&["ZSCORE", &schedule, &ids[1]]).unwrap().trim(), "");
    let pending = redis.cli(&["XPENDING", &stream, "billing", &ids[1], &ids[1], "1"]).unwrap();
    assert_eq!(pending.trim(), "", "acknowledged: no longer pending");
    // The last one run now is handled; the deleted one never.
    run_ok(&url, &["retries", "run", &stream, "billing", &ids[2]]);
    wait_until(Duration::from_secs(30), "the third is handled", || async {
        handled.lock().unwrap().contains_key(&ids[2])
    })
    .await
    .unwrap();
    assert!(!handled.lock().unwrap().contains_key(&ids[1]));
    assert_eq!(zcard(&redis, &schedule), 0);

    // Not scheduled, unknown group: exit 4.
    let err = run_fails(&url, &["retries", "run", &stream, "billing", &ids[1]], 4);
    assert!(err.contains("no retry") && err.contains(&ids[1]), "{err}");
    run_fails(&url, &["retries", "delete", &stream, "billing", &ids[1], "--yes"], 4);
    run_fails(&url, &["retries", "list", &stream, "nosuch"], 4);
    runtime.shutdown().await.unwrap();
    assert!(!handled.lock().unwrap().contains_key(&ids[1]));
}

on_both_topologies!(retry_schedule_list_run_and_delete);

async fn groups_are_created_reset_and_deleted(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let stream = unique_name("groups");
    // Ten entries at 1 s, 2 s, ... 10 s after the epoch.
    for n in 1..=10 {
        redis.cli(&["XADD", &stream, &format!("{}-0", n * 1000), "n", &n.to_string()]).unwrap();
    }

    // create: from the beginning, at a time, twice (nothing changes), on a missing stream.
    assert_eq!(run_json(&url, &["group", "create", &stream, "all", "--from", "0"])["created"], true);
    assert_eq!(group_field(&redis, &stream, "all", "lag"), "10");
    let again = run_json(&url, &["group", "create", &stream, "all", "--from", "$"]);
    assert_eq!(again["created"], false);
    assert_matches("group-create", &again);
    run_ok(&url, &["group", "create", &stream, "late", "--from", "1970-01-01T00:00:05Z"]);
    assert_eq!(group_field(&redis, &stream, "late", "lag"), "6", "entries at 5 s and after");
    assert_eq!(group_field(&redis, &stream, "late", "entries-read"), "4");
    run_ok(&url, &["group", "create", &stream, "after", "--from", "7000-0"]);
    assert_eq!(group_field(&redis, &stream, "after", "lag"), "3");
    let missing = unique_name("missing");
    run_fails(&url, &["group", "create", &missing, "g"], 4);
    run_ok(&url, &["group", "create", &missing, "g", "--mkstream"]);
    assert_eq!(redis.cli(&["TYPE", &missing]).unwrap().trim(), "stream");
    run_fails(&url, &["group", "create", &stream, "g", "--from", "yesterday"], 2);
    let missing_at_id = unique_name("missing");
    run_ok(&url, &["group", "create", &missing_at_id, "g", "--from", "5-0", "--mkstream"]);
    assert_eq!(group_field(&redis, &missing_at_id, "g", "last-delivered-id"), "5-0");

    // reset: the group read everything; a dry run to 3 s counts 7 to deliver again.
    redis.cli(&["XREADGROUP", "GROUP", "all", "reader", "COUNT", "100", "STREAMS", &stream, ">"]).unwrap();
    assert_eq!(group_field(&redis, &stream, "all", "lag"), "0");
    let dry = run_json(&url, &["group", "reset", &stream, "all", "--to-id", "3000-0", "--dry-run"]);
    assert_eq!(dry["redelivered"]["count"], 7, "{dry}");
    assert_eq!(dry["redelivered"]["exact"], true);
    assert_eq!(dry["skipped"]["count"], 0);
    assert_eq!(dry["applied"], false);
    assert_matches("group-reset", &dry);
    assert_eq!(group_field(&redis, &stream, "all", "last-delivered-id"), "10000-0", "a dry run changes nothing");
    let text = run_ok(&url, &["group", "reset", &stream, "all", "--to-id", "3000-0", "--dry-run"]);
    assert!(text.contains("dry run") && text.contains("delivered again: 7"), "{text}");

    let moved = run_json(&url, &["group", "reset", &stream, "all", "--to-id", "3000-0"]);
    assert_eq!(moved["applied"], true);
    assert_eq!(group_field(&redis, &stream, "all", "last-delivered-id"), "3000-0");
    assert_eq!(group_field(&redis, &stream, "all", "lag"), "7", "ENTRIESREAD keeps the lag right");
    assert_eq!(group_field(&redis, &stream, "all", "entries-read"), "3");

    let latest = run_json(&url, &["group", "reset", &stream, "all", "--to-latest"]);
    assert_eq!(latest["skipped"]["count"], 7);
    assert_matches("group-reset", &latest);
    assert_eq!(group_field(&redis, &stream, "all", "lag"), "0");
    let earliest = run_json(&url, &["group", "reset", &stream, "all", "--to-earliest"]);
    assert_eq!(earliest["redelivered"]["count"], 10);
    assert_eq!(group_field(&redis, &stream, "all", "lag"), "10");
    let at = run_json(&url, &["group", "reset", &stream, "all", "--to-datetime", "1970-01-01T00:00:08Z"]);
    assert_eq!(at["skipped"]["count"], 7, "entries at 1 s to 7 s are skipped");
    assert_eq!(group_field(&redis, &stream, "all", "lag"), "3");
    // An hour ago is after every entry (1970): all skipped.
    let back = run_json(&url, &["group", "reset", &stream, "all", "--by-duration", "1h"]);
    assert_eq!(back["skipped"]["count"], 3);
    assert_eq!(group_field(&redis, &stream, "all", "lag"), "0");
    run_fails(&url, &["group", "reset", &stream, "all"], 2);
    run_fails(&url, &["group", "reset", &stream, "nosuch", "--to-latest"], 4);

    // delete: with its bookkeeping keys, not its dead letters.
    let tag = format!("{{{stream}}}");
    let bookkeeping = [
        format!("{tag}:retries:all"),
        format!("{tag}:consumers:all"),
        format!("{tag}:takeovers:all"),
        format!("{tag}:members:all"),
    ];
    for key in &bookkeeping[..2] {
        redis.cli(&["ZADD", key, "1", "x"]).unwrap();
    }
    redis.cli(&["SADD", &bookkeeping[2], "x"]).unwrap();
    redis.cli(&["ZADD", &bookkeeping[3], "1", "x"]).unwrap();
    redis.cli(&["ZADD", &format!("{tag}:retries:late"), "1", "x"]).unwrap();
    redis.cli(&["XADD", &format!("{tag}:dlq"), "*", "dlq:stream", &stream]).unwrap();
    let err = run_fails(&url, &["group", "delete", &stream, "all"], 6);
    assert!(err.contains("--yes"), "{err}");
    let deleted = run_json(&url, &["group", "delete", &stream, "all", "--yes"]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["keys_deleted"], 4);
    assert_matches("group-delete", &deleted);
    for key in &bookkeeping {
        assert_eq!(redis.cli(&["EXISTS", key]).unwrap().trim(), "0", "{key}");
    }
    assert_eq!(redis.cli(&["EXISTS", &format!("{tag}:retries:late")]).unwrap().trim(), "1", "other groups' keys stay");
    assert_eq!(redis.xlen(&format!("{tag}:dlq")).unwrap(), 1, "dead letters stay");
    assert!(!redis.cli(&["XINFO", "GROUPS", &stream]).unwrap().contains("\nall\n"));
    run_fails(&url, &["group", "delete", &stream, "all", "--yes"], 4);
}

on_both_topologies!(groups_are_created_reset_and_deleted);

async fn a_removed_consumer_hands_its_entries_to_the_group(topology: Topology) {
    const N: usize = 2500; // more than one hand-over page
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let stream = unique_name("handover");
    let producer = Producer::connect(&url).await.unwrap();
    let published: HashSet<String> = producer
        .publish_batch(&stream, &(0..N).map(|n| serde_json::json!({ "n": n })).collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    run_ok(&url, &["group", "create", &stream, "work", "--from", "0"]);
    // A consumer that read everything and stopped (a crashed process of another tool).
    redis.cli(&["XREADGROUP", "GROUP", "work", "ghost", "COUNT", &N.to_string(), "STREAMS", &stream, ">"]).unwrap();
    redis.cli(&["XCLAIM", &stream, "work", "ghost", "0", published.iter().next().unwrap()]).unwrap();

    // A running member that would take over only after an hour: the hand-over is what
    // delivers the ghost's entries.
    let handled: Handled = Arc::default();
    let consumer = recording(&stream, "work", Arc::new(AtomicBool::new(false)), handled.clone())
        .claim_idle(Duration::from_secs(3600))
        .concurrency(32);
    let runtime = start_runtime(&url, vec![consumer]).await;

    // Active a moment ago: refused, nothing changed.
    let err = run_fails(&url, &["group", "remove-consumer", &stream, "work", "ghost"], 6);
    assert!(err.contains("looks alive") && err.contains("--force"), "{err}");
    assert!(redis.cli(&["XINFO", "CONSUMERS", &stream, "work"]).unwrap().contains("ghost"));
    // The placeholder is not a member.
    run_fails(&url, &["group", "remove-consumer", &stream, "work", "streamx:scheduled"], 2);
    run_fails(&url, &["group", "remove-consumer", &stream, "work", "nobody"], 4);

    let removed = run_json(&url, &["group", "remove-consumer", &stream, "work", "ghost", "--alive-within", "0s"]);
    assert_eq!(removed["handed_over"], N, "{removed}");
    assert_eq!(removed["dead_lettered"], 0);
    assert_matches("group-remove-consumer", &removed);
    assert!(!redis.cli(&["XINFO", "CONSUMERS", &stream, "work"]).unwrap().contains("ghost"));
    wait_until(Duration::from_secs(60), "every handed-over entry is handled", || async {
        handled.lock().unwrap().len() == N
    })
    .await
    .unwrap();
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.keys().cloned().collect::<HashSet<_>>(), published);
    // The ghost's delivery counted (one entry twice: it was claimed again): each runs as its
    // next attempt.
    assert_eq!(handled.values().filter(|a| **a == 2).count(), N - 1);
    assert_eq!(handled.values().filter(|a| **a == 3).count(), 1);
    // The running member (a consumer of the group since it claimed) beats: refused too,
    // even with a short threshold.
    let member = wait_for_member(&redis, &stream).await;
    let err = run_fails(&url, &["group", "remove-consumer", &stream, "work", &member, "--alive-within", "1ms"], 6);
    assert!(err.contains("heartbeat") && err.contains("promised"), "{err}");
    wait_until(Duration::from_secs(30), "nothing pending", || async {
        group_field(&redis, &stream, "work", "pending") == "0"
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
}

/// The name of the runtime's member in the group `work` (not a placeholder, not `ghost`),
/// once it is a consumer of the group and has a deadline.
async fn wait_for_member(redis: &TestRedis, stream: &str) -> String {
    let key = format!("{{{stream}}}:members:work");
    let member = || {
        let deadlines = redis.cli(&["ZRANGE", &key, "0", "-1"]).unwrap();
        let consumers = redis.cli(&["XINFO", "CONSUMERS", stream, "work"]).unwrap();
        let consumers: HashSet<&str> = consumers.lines().map(str::trim).collect();
        deadlines
            .lines()
            .map(str::trim)
            .find(|m| !m.starts_with("streamx:") && consumers.contains(m))
            .map(str::to_string)
    };
    wait_until(Duration::from_secs(30), "the member reads and beats", || async { member().is_some() }).await.unwrap();
    member().unwrap()
}

on_both_topologies!(a_removed_consumer_hands_its_entries_to_the_group);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_overview_counts_every_stream_by_group_and_kind() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let (orders, payments) = (unique_name("orders"), unique_name("payments"));
    let custom: &'static str = Box::leak(unique_name("custom-dlq").into_boxed_str());
    let permanent = |stream: &str, group: &str| {
        Consumer::new(stream.to_string(), group.to_string(), |_: Message<serde_json::Value>| async {
            Err::<(), _>(HandlerError::permanent("declined"))
        })
    };
    let consumers = vec![
        permanent(&orders, "billing"),
        // Expects a number: the orders' objects are dead-lettered as `wrong_shape`.
        Consumer::new(orders.clone(), "shipping", |_: Message<u64>| async { Ok::<(), HandlerError>(()) }),
        permanent(&payments, "ledger").dlq(DeadLetterTarget::Stream(custom)),
    ];
    let runtime = start_runtime(&url, consumers).await;
    let producer = Producer::connect(&url).await.unwrap();
    for n in 0..3 {
        producer.publish(&orders, &serde_json::json!({ "n": n })).await.unwrap();
    }
    producer.publish(&payments, &serde_json::json!({ "n": 1 })).await.unwrap();
    producer.publish(&payments, &serde_json::json!({ "n": 2 })).await.unwrap();
    let orders_dlq = format!("{{{orders}}}:dlq");
    wait_until(Duration::from_secs(30), "every letter is written", || async {
        redis.xlen(&orders_dlq).unwrap() == 6 && redis.xlen(custom).unwrap() == 2
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    // An unrelated stream and key are not dead letters.
    redis.cli(&["XADD", &unique_name("plain"), "*", "data", "1"]).unwrap();

    let all = run_json(&url, &["dlq", "overview"]);
    let streams = all["dead_letter_streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{all}");
    let by_key: HashMap<&str, &serde_json::Value> =
        streams.iter().map(|s| (s["dead_letter_stream"].as_str().unwrap(), s)).collect();
    let o = by_key[orders_dlq.as_str()];
    assert_matches("dlq-overview", &all);
    assert_eq!(o["total"], 6);
    assert_eq!(o["complete"], true);
    let counts: HashSet<(String, String, String, u64)> = o["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["origin_stream"].as_str().unwrap().to_string(),
                c["group"].as_str().unwrap().to_string(),
                c["kind"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: HashSet<_> = [
        (orders.clone(), "billing".to_string(), "permanent".to_string(), 3),
        (orders.clone(), "shipping".to_string(), "wrong_shape".to_string(), 3),
    ]
    .into();
    assert_eq!(counts, expected);
    let c = by_key[custom];
    assert_eq!(c["counts"][0]["origin_stream"], payments.as_str());
    assert_eq!(c["counts"][0]["group"], "ledger");
    assert_eq!(c["counts"][0]["count"], 2);

    // --limit bounds the letters read per stream and says so.
    let limited = run_json(&url, &["dlq", "overview", "--limit", "4"]);
    let o = limited["dead_letter_streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["dead_letter_stream"] == orders_dlq.as_str())
        .unwrap()
        .clone();
    assert_eq!(o["scanned"], 4);
    assert_eq!(o["complete"], false);
    assert_matches("dlq-overview", &limited);
    assert_eq!(o["total"], 6);
    let text = run_ok(&url, &["dlq", "overview", "--limit", "4"]);
    assert!(text.contains("counted the oldest 4 of 6 letters") && text.contains("8 dead letters in 2"), "{text}");
}

/// A reset whose distance cannot be counted within 100,000 entries says "more than", and
/// leaves the lag to Redis rather than giving a wrong ENTRIESREAD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reset_is_counted_up_to_a_bound() {
    const N: usize = 120_000;
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("long");
    let producer = Producer::connect(&url).await.unwrap();
    let mut first = None;
    for chunk in (0..N as u64).collect::<Vec<_>>().chunks(10_000) {
        let ids = producer.publish_batch(&stream, chunk).await.unwrap();
        first = first.or(ids.first().copied());
    }
    run_ok(&url, &["group", "create", &stream, "g", "--from", "$"]);
    let first = first.unwrap().to_string();
    let dry = run_json(&url, &["group", "reset", &stream, "g", "--to-id", &first, "--dry-run"]);
    assert_eq!(dry["redelivered"]["exact"], false, "{dry}");
    assert_eq!(dry["redelivered"]["count"], 100_000);
    assert!(dry["entries_read"].is_null());
    let text = run_ok(&url, &["group", "reset", &stream, "g", "--to-id", &first]);
    assert!(text.contains("delivered again: more than 100000") && text.contains("Redis estimates"), "{text}");
    assert_eq!(group_field(&redis, &stream, "g", "last-delivered-id"), first);
    // Back to the start: counted from XINFO STREAM alone, exact at any length.
    let earliest = run_json(&url, &["group", "reset", &stream, "g", "--to-earliest", "--dry-run"]);
    assert_eq!(earliest["entries_read"], 0);
    let latest = run_json(&url, &["group", "reset", &stream, "g", "--to-latest"]);
    assert_eq!(latest["entries_read"], N);
    assert_eq!(group_field(&redis, &stream, "g", "lag"), "0");
}
