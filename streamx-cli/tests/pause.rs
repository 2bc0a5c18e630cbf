//! `streamx pause` / `streamx resume` against a real Redis with a real runtime consuming:
//! the consumer stops starting handlers, `info` and `top` show the pause, the resume drains.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{run_json, run_ok, start_runtime, wait_until, TestRedis, Topology};
use streamx_runtime::{Consumer, Message, Producer};
use streamx_testing::unique_name;

/// Fails with every violation when `value` does not match the schema `name` in docs/json.
fn assert_matches(name: &str, value: &serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/json").join(format!("{name}.json"));
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{value:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_a_group_from_the_command_line() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("paused");
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();
    let consumer = Consumer::new(stream.clone(), "billing".to_string(), move |_: Message<serde_json::Value>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let runtime = start_runtime(&url, vec![consumer]).await;
    let producer = Producer::connect(&url).await.unwrap();
    producer.publish(&stream, &serde_json::json!({"n": 0})).await.unwrap();
    wait_until(Duration::from_secs(10), "the first handled", || async { handled.load(Ordering::SeqCst) == 1 })
        .await
        .unwrap();

    let paused = run_json(&url, &["pause", &stream, "billing", "--by", "ops"]);
    assert_matches("pause", &paused);
    assert_eq!((paused["paused"].as_bool(), paused["was_paused"].as_bool()), (Some(true), Some(false)), "{paused}");
    assert_eq!(paused["group_exists"], true);
    let paused_at = Instant::now();
    assert_eq!(
        redis.cli(&["GET", &format!("{{{stream}}}:paused:billing")]).unwrap().trim().split_once(' ').unwrap().1,
        "ops"
    );
    let again = run_ok(&url, &["pause", &stream, "billing", "--by", "ops"]);
    assert!(again.contains("paused already"), "{again}");

    // A pause takes effect within a second.
    wait_until(Duration::from_secs(10), "1 s paused", || async { paused_at.elapsed() >= Duration::from_secs(1) })
        .await
        .unwrap();
    for n in 1..=5 {
        producer.publish(&stream, &serde_json::json!({"n": n})).await.unwrap();
    }
    wait_until(Duration::from_secs(10), "2.5 s paused", || async {
        paused_at.elapsed() >= Duration::from_millis(2500)
    })
    .await
    .unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 1, "nothing handled while paused");

    let info = run_ok(&url, &["info", &stream]);
    assert!(info.contains("billing (paused)"), "{info}");
    assert!(info.contains("group `billing` is paused by ops since "), "{info}");
    let info = run_json(&url, &["info", &stream]);
    assert_eq!(info["groups"][0]["paused"], true, "{info}");
    assert_eq!(info["groups"][0]["lag"], 5, "{info}");
    assert_matches("info", &info);
    let top = run_ok(&url, &["top", "--once"]);
    assert!(top.contains("billing (paused)"), "{top}");
    let top = run_ok(&url, &["--json", "top", "--once"]);
    let view: serde_json::Value = serde_json::from_str(top.lines().next().unwrap()).unwrap();
    assert_matches("top", &view);
    let row = view["groups"].as_array().unwrap().iter().find(|r| r["stream"] == stream.as_str()).unwrap();
    assert_eq!(row["paused"], true, "{row}");

    let resumed = run_json(&url, &["resume", &stream, "billing"]);
    assert_matches("pause", &resumed);
    assert_eq!((resumed["paused"].as_bool(), resumed["was_paused"].as_bool()), (Some(false), Some(true)));
    wait_until(Duration::from_secs(10), "the 5 handled after the resume", || async {
        handled.load(Ordering::SeqCst) == 6
    })
    .await
    .unwrap();
    assert!(!run_ok(&url, &["info", &stream]).contains("(paused)"));
    assert!(run_ok(&url, &["resume", &stream, "billing"]).contains("was not paused"));
    // A pause may come first: a group that does not exist yet.
    let early = run_json(&url, &["pause", &unique_name("later"), "g"]);
    assert_eq!(early["group_exists"], false);
    runtime.shutdown().await.unwrap();
}
