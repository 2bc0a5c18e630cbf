//! `streamx dlq` against dead letters written by a real runtime: list, show, filters,
//! confirmation, purge, and a 10,000-letter replay whose messages a running consumer handles.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    on_both_topologies, run_fails, run_json, run_ok, start_runtime, streamx, wait_until, TestRedis, Topology,
};
use streamx_runtime::{Consumer, DeadLetters, HandlerError, Message, Producer};
use streamx_testing::unique_name;

/// What the consumer saw once it stopped failing.
#[derive(Default)]
struct Handled {
    count: AtomicU64,
    ids: Mutex<HashSet<String>>,
}

async fn replay_of_ten_thousand_letters(topology: Topology) {
    const N: u64 = 10_000;
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let stream = unique_name("replay");
    let dlq_key = format!("{{{stream}}}:dlq");
    let failing = Arc::new(AtomicBool::new(true));
    let handled = Arc::new(Handled::default());
    let consumer = {
        let (failing, handled) = (failing.clone(), handled.clone());
        Consumer::new(stream.clone(), "work", move |msg: Message<u64>| {
            let (failing, handled) = (failing.clone(), handled.clone());
            async move {
                if failing.load(Ordering::SeqCst) {
                    return Err(HandlerError::permanent("the payment provider is down"));
                }
                handled.ids.lock().unwrap().insert(msg.id().to_string());
                handled.count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .concurrency(32)
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let producer = Producer::connect(&url).await.unwrap();
    producer.publish_batch(&stream, &(0..N).collect::<Vec<u64>>()).await.unwrap();
    wait_until(Duration::from_secs(120), "every message is dead-lettered", || async {
        redis.xlen(&dlq_key).unwrap() == N
    })
    .await
    .unwrap();
    let dead_letters = DeadLetters::connect(&url, &dlq_key).await.unwrap();
    let origin_ids: HashSet<String> = {
        let page = dead_letters.list(None, N + 1).await.unwrap();
        page.entries.iter().filter_map(|l| l.origin_id).map(|id| id.to_string()).collect()
    };
    assert_eq!(origin_ids.len() as u64, N);

    // Without --yes and without a terminal: refused, exit 6, nothing replayed.
    let err = run_fails(&url, &["dlq", "replay", &stream, "--all"], 6);
    assert!(err.contains("refusing to replay 10000 dead letters") && err.contains("--yes"), "{err}");
    assert_eq!(redis.xlen(&dlq_key).unwrap(), N);

    failing.store(false, Ordering::SeqCst);
    let out = streamx(&url).args(["dlq", "replay", &stream, "--all", "--yes"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("replayed 10000 of 10000 dead letters; 0 left"), "{stdout}");
    // Progress on standard error (a line per tenth without a terminal), ending at the total.
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("replay: ")).collect();
    assert!(progress.len() >= 10, "{stderr}");
    assert_eq!(progress.last(), Some(&"replay: 10000/10000"));

    assert_eq!(redis.xlen(&dlq_key).unwrap(), 0, "the dead-letter stream is empty");
    wait_until(Duration::from_secs(120), "every replayed message is handled", || async {
        handled.count.load(Ordering::SeqCst) >= N
    })
    .await
    .unwrap();
    assert_eq!(*handled.ids.lock().unwrap(), origin_ids, "each entry came back to the group once, as itself");
    assert_eq!(redis.xlen(&stream).unwrap(), N, "nothing was published again");
    assert_eq!(handled.count.load(Ordering::SeqCst), N);
    runtime.shutdown().await.unwrap();
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 0);
}

on_both_topologies!(replay_of_ten_thousand_letters);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_filter_replay_one_and_purge() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("letters");
    let dlq_key = format!("{{{stream}}}:dlq");
    // Two groups give up on every message: `billing` permanently, `audit` after its only try.
    let billing = Consumer::new(stream.clone(), "billing", |msg: Message<serde_json::Value>| async move {
        Err::<(), _>(HandlerError::permanent(format!("card declined for {}", msg.payload()["n"])))
    });
    let audit = Consumer::new(stream.clone(), "audit", |_: Message<serde_json::Value>| async move {
        Err::<(), _>(HandlerError::from("audit store unavailable"))
    })
    .max_retries(0);
    let runtime = start_runtime(&url, vec![billing, audit]).await;
    for n in 0..5 {
        run_ok(&url, &["publish", &stream, &format!(r#"{{"n":{n}}}"#), "-H", "tenant=acme"]);
    }
    wait_until(Duration::from_secs(30), "10 dead letters", || async { redis.xlen(&dlq_key).unwrap() == 10 })
        .await
        .unwrap();
    runtime.shutdown().await.unwrap();

    let all = run_json(&url, &["dlq", "list", &stream, "--all"]);
    assert_eq!(all["total"], 10);
    assert_eq!(all["entries"].as_array().unwrap().len(), 10);
    let billing = run_json(&url, &["dlq", "list", &stream, "--group", "billing"]);
    let entries = billing["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5);
    assert!(entries.iter().all(|e| e["kind"] == "permanent" && e["error"].as_str().unwrap().contains("card declined")));
    assert!(entries.iter().all(|e| e["headers"]["tenant"] == "acme" && e["origin_stream"] == stream.as_str()));
    let errors = run_json(&url, &["dlq", "list", &stream, "--kind", "error"]);
    assert!(errors["entries"].as_array().unwrap().iter().all(|e| e["group"] == "audit"));
    assert_eq!(errors["entries"].as_array().unwrap().len(), 5);
    assert_eq!(run_json(&url, &["dlq", "list", &stream, "--limit", "3"])["entries"].as_array().unwrap().len(), 3);
    let human = run_ok(&url, &["dlq", "list", &stream]);
    assert!(human.contains("card declined") && human.contains("10 dead letters in"), "{human}");

    // show: one letter with its error and payload, as Redis holds it.
    let id = entries[0]["id"].as_str().unwrap().to_string();
    let shown = run_json(&url, &["dlq", "show", &stream, &id]);
    let raw = redis.cli_json(&["XRANGE", &dlq_key, &id, &id]).unwrap();
    let fields: Vec<&str> = raw[0][1].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let field = |name: &str| fields.iter().position(|f| *f == name).map(|i| fields[i + 1]).unwrap();
    // The payload is JSON, so it is given as JSON (docs/cli-json.md).
    assert_eq!(shown["payload"], serde_json::from_str::<serde_json::Value>(field("data")).unwrap());
    assert_eq!(shown["error"], field("dlq:error"));
    assert_eq!(shown["origin_id"], field("dlq:id"));
    let human = run_ok(&url, &["dlq", "show", &stream, &id]);
    assert!(human.contains("card declined") && human.contains(field("data")), "as published: {human}");

    // replay one by id: no question asked; back in billing's queue (its retry schedule, due
    // now), not on the stream, where audit would get it too.
    let before = redis.xlen(&stream).unwrap();
    let out = run_ok(&url, &["dlq", "replay", &stream, "--id", &id]);
    assert!(out.contains("replayed 1 of 1"), "{out}");
    assert_eq!(redis.xlen(&stream).unwrap(), before);
    let origin = field("dlq:id").to_string();
    let pending = redis.cli_json(&["XPENDING", &stream, "billing", "-", "+", "10"]).unwrap();
    assert_eq!(pending[0][0], origin.as_str(), "{pending}");
    assert_eq!(pending[0][1], streamx_runtime::SCHEDULED_CONSUMER);
    assert_eq!(redis.cli_json(&["XPENDING", &stream, "audit", "-", "+", "10"]).unwrap(), serde_json::json!([]));
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 9);

    // purge: a selection is required; many letters need --yes; filters delete only theirs.
    run_fails(&url, &["dlq", "purge", &stream, "--group", "audit"], 2);
    let err = run_fails(&url, &["dlq", "purge", &stream, "--group", "audit", "--all"], 6);
    assert!(err.contains("refusing to purge 5 dead letters"), "{err}");
    let purged = run_json(&url, &["dlq", "purge", &stream, "--group", "audit", "--all", "--yes"]);
    assert_eq!(purged["done"], 5);
    assert_eq!(purged["remaining"], 4);
    let left = run_json(&url, &["dlq", "list", &stream, "--all"]);
    assert!(left["entries"].as_array().unwrap().iter().all(|e| e["group"] == "billing"));
    run_fails(&url, &["dlq", "purge", &stream, "--all"], 6);
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 4);
    let out = run_ok(&url, &["dlq", "purge", &stream, "--all", "--yes"]);
    assert!(out.contains("purged 4 of 4"), "{out}");
    assert_eq!(redis.cli(&["EXISTS", &dlq_key]).unwrap().trim(), "0");
}
