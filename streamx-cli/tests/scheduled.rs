//! `streamx scheduled list|cancel` against delayed messages written by a real producer.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{on_both_topologies, run_fails, run_json, run_ok, TestRedis, Topology};
use streamx_runtime::{Headers, Producer, PublishOptions, Scheduled};
use streamx_testing::unique_name;

/// Fails with every violation when `value` does not match the schema `name` in docs/json.
fn assert_matches(name: &str, value: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/json").join(format!("{name}.json"));
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{value:#}");
}

async fn list_and_cancel(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    // A braced name: its schedule is under `{shop}#{shop}.orders-...:scheduled`.
    let stream = format!("{{shop}}.{}", unique_name("orders"));
    let producer = Producer::connect(&url).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5u64 {
        let options = PublishOptions::new().headers(Headers::new().with("n", n.to_string()));
        let delay = Duration::from_secs(3_600 + n);
        ids.push(producer.publish_after_with(&stream, &serde_json::json!({ "n": n }), delay, &options).await.unwrap());
    }

    let listed = run_json(&url, &["scheduled", "list", &stream, "--limit", "3"]);
    assert_matches("scheduled-list", &listed);
    assert_eq!(listed["total"], 5);
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for (n, entry) in entries.iter().enumerate() {
        assert_eq!(entry["id"], ids[n].to_string(), "soonest first");
        assert_eq!(entry["payload"], serde_json::json!({ "n": n }));
        assert_eq!(entry["headers"]["n"], n.to_string());
        let due_in = entry["due_in_ms"].as_i64().unwrap();
        assert!(due_in > 3_500_000 && due_in <= 3_605_000, "{due_in}");
    }
    let table = run_ok(&url, &["scheduled", "list", &stream]);
    assert!(table.contains(&ids[4].to_string()) && table.contains("5 shown; 5 scheduled"), "{table}");

    // Two at once without --yes and without a terminal: refused, nothing cancelled.
    let (a, b) = (ids[0].to_string(), ids[1].to_string());
    let refused = run_fails(&url, &["scheduled", "cancel", &stream, &a, &b], 6);
    assert!(refused.contains("--yes"), "{refused}");
    let scheduled = Scheduled::connect(&url).await.unwrap();
    assert_eq!(scheduled.count(&stream).await.unwrap(), 5);

    let cancelled = run_json(&url, &["scheduled", "cancel", &stream, &a, &b, "--yes"]);
    assert_matches("scheduled-cancel", &cancelled);
    assert_eq!(cancelled["cancelled"], serde_json::json!([a, b]));
    assert_eq!(scheduled.count(&stream).await.unwrap(), 3);
    // Cancelled already: not found (exit 4); not an id: usage (exit 2).
    let again = run_fails(&url, &["scheduled", "cancel", &stream, &a, "--yes"], 4);
    assert!(again.contains("not scheduled") || again.contains("is scheduled"), "{again}");
    run_fails(&url, &["scheduled", "cancel", &stream, "nope", "--yes"], 2);
    let out = run_ok(&url, &["scheduled", "cancel", &stream, &ids[2].to_string(), "--yes"]);
    assert!(out.contains(&format!("cancelled {}", ids[2])), "{out}");
    let left = run_json(&url, &["scheduled", "list", &stream, "--limit", "0"]);
    assert_matches("scheduled-list", &left);
    // `info` (and the dashboard) show the count of a stream that exists.
    producer.publish(&stream, &serde_json::json!({ "now": true })).await.unwrap();
    let info = run_json(&url, &["info", &stream]);
    assert_eq!(info["scheduled"], 2, "{info}");
    assert_eq!(left["total"], 2);
    assert_eq!(left["entries"], serde_json::json!([]));
}

on_both_topologies!(list_and_cancel);
