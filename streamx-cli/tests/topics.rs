//! `streamx topics`, `streamx info <topic>` and `streamx topics delete` against real servers:
//! the figures per shard checked against what redis-cli reads, and the drain-then-recreate
//! procedure for changing a topic's shard count.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;

use common::{on_both_topologies, run_fails, run_json, run_ok, TestRedis, Topology};
use serde_json::Value;
use streamx_runtime::keys::{default_dead_letter_stream, shard_lease};
use streamx_runtime::Producer;
use streamx_testing::unique_name;

/// Fails with every violation when `value` does not match the schema `name` in docs/json.
fn assert_matches(name: &str, value: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/json").join(format!("{name}.json"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{value:#}");
}

async fn topics_and_info_show_every_shard(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let topic = unique_name("clitopic");
    let producer = Producer::connect(&url).await.unwrap();
    let layout = producer.topic(&topic, 4).await.unwrap();
    let entries: Vec<(String, u64)> = (0..30u64).map(|n| (format!("k{}", n % 9), n)).collect();
    producer.publish_batch_keyed(&topic, &entries).await.unwrap();
    for stream in layout.shard_streams() {
        redis.cli(&["XGROUP", "CREATE", stream, "billing", "0"]).unwrap();
    }
    let first = layout.shard_stream(0);
    redis.cli(&["XREADGROUP", "GROUP", "billing", "w", "COUNT", "2", "STREAMS", first, ">"]).unwrap();
    redis.cli(&["SET", &shard_lease(first, "billing"), "3:proc-a"]).unwrap();
    redis.cli(&["XADD", &default_dead_letter_stream(layout.shard_stream(1)), "*", "data", "1"]).unwrap();
    let lengths: Vec<u64> = layout.shard_streams().iter().map(|s| redis.xlen(s).unwrap()).collect();

    let listed = run_json(&url, &["topics"]);
    assert_matches("topics", &listed);
    let row = listed.as_array().unwrap().iter().find(|t| t["topic"] == topic.as_str()).unwrap().clone();
    assert_eq!(row["shards"], 4);
    assert_eq!(row["length"], 30);
    assert_eq!(row["dead_letters"], 1);
    assert_eq!(row["groups"][0]["name"], "billing");
    assert_eq!(row["groups"][0]["pending"], lengths[0].min(2));
    assert_eq!(row["groups"][0]["lag"], 30 - lengths[0].min(2));
    assert_eq!(row["groups"][0]["owned_shards"], 1);
    assert_eq!(row["groups"][0]["owners"], serde_json::json!(["proc-a"]));

    let info = run_json(&url, &["info", &topic]);
    assert_matches("topic-info", &info);
    let shards = info["shard_figures"].as_array().unwrap();
    assert_eq!(shards.len(), 4);
    for (i, shard) in shards.iter().enumerate() {
        assert_eq!(shard["stream"], layout.shard_stream(i as u32));
        assert_eq!(shard["length"], lengths[i], "shard {i} as XLEN says");
    }
    assert_eq!(shards[0]["groups"][0]["owner"], "proc-a");
    assert_eq!(shards[0]["groups"][0]["epoch"], 3);
    assert_eq!(shards[1]["groups"][0]["owner"], Value::Null);
    assert_eq!(shards[1]["dead_letters"], 1);

    let table = run_ok(&url, &["info", &topic]);
    assert!(table.contains("SHARD") && table.contains("proc-a (epoch 3)"), "{table}");
    assert!(table.contains(layout.shard_stream(3)), "{table}");
    let list = run_ok(&url, &["topics"]);
    assert!(list.contains(&topic) && list.contains("billing"), "{list}");
}

async fn a_topic_is_deleted_only_when_drained(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let topic = unique_name("clidelete");
    let producer = Producer::connect(&url).await.unwrap();
    let layout = producer.topic(&topic, 3).await.unwrap();
    producer.publish_batch(&topic, &[1u64, 2, 3, 4, 5, 6]).await.unwrap();
    for stream in layout.shard_streams() {
        redis.cli(&["XGROUP", "CREATE", stream, "billing", "0"]).unwrap();
    }

    let refused = run_fails(&url, &["topics", "delete", &topic, "--yes"], 6);
    assert!(refused.contains("not drained") && refused.contains("unread"), "{refused}");
    assert_eq!(redis.cli(&["EXISTS", layout.shard_stream(0)]).unwrap().trim(), "1");
    run_fails(&url, &["topics", "delete", "no-such-topic", "--yes"], 4);

    // Drain: every group reads and acknowledges everything.
    for stream in layout.shard_streams() {
        redis.cli(&["XGROUP", "SETID", stream, "billing", "$"]).unwrap();
    }
    // A consumer holding a lease still blocks it.
    redis.cli(&["SET", &shard_lease(layout.shard_stream(2), "billing"), "1:proc-b"]).unwrap();
    let refused = run_fails(&url, &["topics", "delete", &topic, "--yes"], 6);
    assert!(refused.contains("lease"), "{refused}");
    redis.cli(&["DEL", &shard_lease(layout.shard_stream(2), "billing")]).unwrap();

    let deleted = run_json(&url, &["topics", "delete", &topic, "--yes"]);
    assert_matches("topics-delete", &deleted);
    assert_eq!(deleted["shards"], 3);
    for stream in layout.shard_streams() {
        assert_eq!(redis.cli(&["EXISTS", stream]).unwrap().trim(), "0", "{stream}");
    }
    let listed = run_json(&url, &["topics"]);
    assert!(listed.as_array().unwrap().iter().all(|t| t["topic"] != topic.as_str()));
    // Created again with another count, from the command line.
    let created = run_json(&url, &["topics", "create", &topic, "--shards", "8"]);
    assert_matches("topics-create", &created);
    assert_eq!(created["streams"].as_array().unwrap().len(), 8);
    let again = Producer::connect(&url).await.unwrap();
    assert_eq!(again.topic(&topic, 8).await.unwrap().shards(), 8);
    let refused = run_fails(&url, &["topics", "create", &topic, "--shards", "3"], 2);
    assert!(refused.contains("has 8 shards, not the 3"), "{refused}");
}

async fn publish_routes_to_the_shards(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let topic = unique_name("clipublish");
    let layout = Producer::connect(&url).await.unwrap().topic(&topic, 8).await.unwrap();
    // With a key: its shard, with the key header.
    for n in 0..3 {
        run_ok(&url, &["publish", &topic, &format!("{{\"n\":{n}}}"), "--key", "order-7"]);
    }
    let shard = layout.shard_stream(layout.shard_of_key("order-7"));
    assert_eq!(redis.xlen(shard).unwrap(), 3);
    let entry = redis.cli(&["XRANGE", shard, "-", "+", "COUNT", "1"]).unwrap();
    assert!(entry.contains("h:streamx-key") && entry.contains("order-7"), "{entry}");
    // Without one, a file spreads over the shards in turn.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for n in 0..16 {
        writeln!(file, "{{\"n\":{n}}}").unwrap();
    }
    run_ok(&url, &["publish", &topic, "--file", file.path().to_str().unwrap()]);
    let total: u64 = layout.shard_streams().iter().map(|s| redis.xlen(s).unwrap()).sum();
    assert_eq!(total, 19);
    assert!(layout.shard_streams().iter().all(|s| redis.xlen(s).unwrap() >= 2), "every shard got two");
    assert_eq!(redis.cli(&["EXISTS", &topic]).unwrap().trim(), "0", "no stream of the topic's own name");
}

on_both_topologies!(
    topics_and_info_show_every_shard,
    a_topic_is_deleted_only_when_drained,
    publish_routes_to_the_shards
);
