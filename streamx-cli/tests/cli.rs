//! The `streamx` binary against real servers (a single redis-server and a 3-master cluster):
//! every read command's `--json` checked against what redis-cli reads from Redis itself,
//! publish, tail, top, and the errors with their exit codes.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::time::Duration;

use common::{on_both_topologies, run_fails, run_json, run_ok, streamx, wait_until, TestRedis, Topology};
use serde_json::Value;
use streamx_testing::unique_name;

/// Three stream names; on a cluster each on a different master (so `streams` must scan
/// every master to list them all).
fn three_streams(redis: &TestRedis) -> Vec<String> {
    let prefix = unique_name("cli");
    let mut names: Vec<String> = Vec::new();
    let mut masters = BTreeSet::new();
    let spread = redis.topology() == Topology::Cluster;
    for i in 0.. {
        let name = format!("{prefix}-{i}");
        if !spread || masters.insert(redis.master_of(&name).unwrap()) {
            names.push(name);
        }
        if names.len() == 3 {
            break;
        }
    }
    names
}

/// Publishes `n` JSON lines with the CLI, creates groups that read some of them, and writes
/// `dead` dead letters. Returns nothing: the tests read Redis itself for the truth.
fn seed(redis: &TestRedis, stream: &str, n: usize, groups: &[(&str, usize)], dead: usize) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for i in 0..n {
        writeln!(file, "{{\"n\":{i}}}").unwrap();
    }
    run_ok(&redis.url(), &["publish", stream, "--file", file.path().to_str().unwrap()]);
    assert_eq!(redis.xlen(stream).unwrap(), n as u64);
    for (group, read) in groups {
        redis.cli(&["XGROUP", "CREATE", stream, group, "0"]).unwrap();
        if *read > 0 {
            redis
                .cli(&["XREADGROUP", "GROUP", group, "worker-1", "COUNT", &read.to_string(), "STREAMS", stream, ">"])
                .unwrap();
        }
    }
    let dlq = format!("{{{stream}}}:dlq");
    for i in 0..dead {
        redis
            .cli(&[
                "XADD",
                &dlq,
                "*",
                "data",
                &format!("{{\"n\":{i}}}"),
                "dlq:stream",
                stream,
                "dlq:group",
                "billing",
                "dlq:kind",
                "error",
                "dlq:error",
                "boom",
            ])
            .unwrap();
    }
}

async fn streams_info_and_pending_match_redis(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let names = three_streams(&redis);
    seed(&redis, &names[0], 50, &[("billing", 20), ("audit", 0)], 3);
    seed(&redis, &names[1], 7, &[("billing", 7)], 0);
    seed(&redis, &names[2], 1, &[], 1);

    // streams: every stream, with XLEN, its number of groups and its dead letters; the
    // dead-letter streams are not listed on their own.
    let listed = run_json(&url, &["streams"]);
    let rows: HashMap<String, &Value> =
        listed.as_array().unwrap().iter().map(|r| (r["stream"].as_str().unwrap().to_string(), r)).collect();
    let ours: BTreeSet<&String> = rows.keys().filter(|k| names.contains(k)).collect();
    assert_eq!(ours.len(), 3, "every stream is listed: {listed}");
    assert!(rows.keys().all(|k| !k.ends_with(":dlq")), "dead-letter streams are folded into their origin: {listed}");
    for name in &names {
        let row = rows[name];
        assert_eq!(row["length"].as_u64().unwrap(), redis.xlen(name).unwrap());
        let groups = redis.cli_json(&["XINFO", "GROUPS", name]).unwrap();
        assert_eq!(row["groups"].as_array().unwrap().len(), groups.as_array().unwrap().len());
        assert_eq!(row["dead_letters"].as_u64().unwrap(), redis.xlen(&format!("{{{name}}}:dlq")).unwrap());
    }
    let table = run_ok(&url, &["streams"]);
    assert!(names.iter().all(|n| table.contains(n.as_str())) && table.contains("DEAD LETTERS"), "{table}");

    // info: length, first and last entry, groups with lag, pending, last delivered id.
    let info = run_json(&url, &["info", &names[0]]);
    let xinfo = redis.cli_json(&["XINFO", "STREAM", &names[0]]).unwrap();
    assert_eq!(info["length"], xinfo["length"]);
    assert_eq!(info["entries_added"], xinfo["entries-added"]);
    assert_eq!(info["first_entry"]["id"], xinfo["first-entry"][0]);
    assert_eq!(info["last_entry"]["id"], xinfo["last-entry"][0]);
    assert_eq!(info["last_generated_id"], xinfo["last-generated-id"]);
    assert_eq!(info["dead_letters"].as_u64().unwrap(), 3);
    let xgroups = redis.cli_json(&["XINFO", "GROUPS", &names[0]]).unwrap();
    let groups = info["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for xg in xgroups.as_array().unwrap() {
        let g = groups.iter().find(|g| g["name"] == xg["name"]).unwrap();
        assert_eq!(g["lag"], xg["lag"]);
        assert_eq!(g["pending"], xg["pending"]);
        assert_eq!(g["consumers"], xg["consumers"]);
        assert_eq!(g["entries_read"], xg["entries-read"]);
        assert_eq!(g["last_delivered_id"], xg["last-delivered-id"]);
    }
    assert_eq!(groups.iter().find(|g| g["name"] == "billing").unwrap()["lag"], 30);
    assert_eq!(info["consumers"]["billing"][0]["name"], "worker-1");
    assert_eq!(info["consumers"]["billing"][0]["pending"], 20);
    let human = run_ok(&url, &["info", &names[0]]);
    assert!(human.contains("billing") && human.contains("audit") && human.contains("LAG"), "{human}");

    // pending: oldest first, as XPENDING lists them.
    let pending = run_json(&url, &["pending", &names[0], "billing"]);
    assert_eq!(pending["total"], 20);
    let xpending = redis.cli_json(&["XPENDING", &names[0], "billing", "-", "+", "1000"]).unwrap();
    let pending = pending["entries"].as_array().unwrap();
    assert_eq!(pending.len(), 20);
    for (ours, theirs) in pending.iter().zip(xpending.as_array().unwrap()) {
        assert_eq!(ours["id"], theirs[0]);
        assert_eq!(ours["consumer"], theirs[1]);
        assert_eq!(ours["deliveries"], theirs[3]);
    }
    let ids: Vec<&str> = pending.iter().map(|p| p["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| id.parse::<streamx_runtime::MessageId>().unwrap());
    assert_eq!(ids, sorted, "oldest first");
    let nobody = run_json(&url, &["pending", &names[0], "billing", "--consumer", "nobody"]);
    assert_eq!((nobody["total"].clone(), nobody["entries"].clone()), (serde_json::json!(0), serde_json::json!([])));
    let five = run_json(&url, &["pending", &names[0], "billing", "--limit", "5"]);
    assert_eq!((five["entries"].as_array().unwrap().len(), five["total"].clone()), (5, serde_json::json!(20)));
    let human = run_ok(&url, &["pending", &names[0], "billing", "--limit", "3"]);
    assert!(human.contains(ids[0]) && human.contains("worker-1") && human.contains("3 of 20"), "{human}");
}

async fn publish_and_tail(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let stream = unique_name("tail");

    // publish: the payload as written, headers as h:<name> fields (the runtime's wire format).
    let first = run_ok(&url, &["publish", &stream, r#"{"id": 1, "b": [true]}"#, "-H", "trace-id=abc", "-H", "x=1=2"]);
    let first = first.trim().to_string();
    let entry = redis.cli_json(&["XRANGE", &stream, "-", "+"]).unwrap();
    assert_eq!(entry[0][0], first.as_str());
    assert_eq!(
        entry[0][1],
        serde_json::json!(["data", r#"{"id": 1, "b": [true]}"#, "h:trace-id", "abc", "h:x", "1=2"])
    );
    let second = run_json(&url, &["publish", &stream, r#"{"id":2}"#]);
    let second = second["ids"][0].as_str().unwrap().to_string();
    run_ok(&url, &["publish", &stream, r#""just a string""#]);

    // Bad input publishes nothing: exit 2.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{{\"ok\":1}}\nnot json").unwrap();
    let err = run_fails(&url, &["publish", &stream, "--file", file.path().to_str().unwrap()], 2);
    assert!(err.contains("line 2 of"), "{err}");
    let err = run_fails(&url, &["publish", &stream, "{oops"], 2);
    assert!(err.contains("not JSON"), "{err}");
    assert_eq!(redis.xlen(&stream).unwrap(), 3);

    // tail --from: that entry and the ones after it, with headers and payload.
    let out = run_ok(&url, &["tail", &stream, "--from", &first, "--no-follow"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], format!(r#"{first} trace-id=abc x=1=2 {{"id": 1, "b": [true]}}"#));
    assert_eq!(lines[1], format!(r#"{second} {{"id":2}}"#));
    let out = run_ok(&url, &["--json", "tail", &stream, "--from", &second, "--no-follow"]);
    let parsed: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0]["id"], second.as_str());
    assert_eq!(parsed[0]["payload"]["id"], 2);
    assert_eq!(parsed[1]["payload"], "just a string");
    let out = run_ok(&url, &["tail", &stream, "--from", "0", "--count", "1"]);
    assert_eq!(out.lines().count(), 1);

    // tail without --from follows: only what is published after it started.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_streamx"))
        .args(["--url", &url, "--json", "tail", &stream, "--count", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "tail blocks in XREAD", || async { redis.blocked_in("xread").unwrap() == 1 })
        .await
        .unwrap();
    let new_one = run_ok(&url, &["publish", &stream, r#"{"id":3}"#, "-H", "k=v"]);
    run_ok(&url, &["publish", &stream, r#"{"id":4}"#]);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success());
    let parsed: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parsed.len(), 2, "{parsed:?}");
    assert_eq!(parsed[0]["id"], new_one.trim());
    assert_eq!(parsed[0]["headers"]["k"], "v");
    assert_eq!(parsed[1]["payload"]["id"], 4);
}

async fn top_shows_lag_pending_and_rates(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let stream = unique_name("top");
    seed(&redis, &stream, 40, &[("billing", 10)], 2);
    let out = run_ok(&url, &["--json", "top", "--iterations", "2", "--interval", "200ms"]);
    let views: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(views.len(), 2, "{out}");
    let row =
        |view: &Value| view["groups"].as_array().unwrap().iter().find(|r| r["stream"] == stream.as_str()).cloned();
    let first = row(&views[0]).unwrap();
    let xgroup = &redis.cli_json(&["XINFO", "GROUPS", &stream]).unwrap()[0];
    assert_eq!(first["group"], "billing");
    assert_eq!(first["lag"], xgroup["lag"]);
    assert_eq!(first["pending"], xgroup["pending"]);
    assert_eq!(first["dead_letters"], 2);
    assert!(first["consumed_per_sec"].is_null(), "no rate from one look");
    let second = row(&views[1]).unwrap();
    assert_eq!(second["consumed_per_sec"].as_f64(), Some(0.0), "nothing read between the looks");
    let human = run_ok(&url, &["top", "--once"]);
    assert!(human.contains(&stream) && human.contains("OUT/S"), "{human}");
}

on_both_topologies!(streams_info_and_pending_match_redis, publish_and_tail, top_shows_lag_pending_and_rates);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_what_is_wrong_with_documented_exit_codes() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("errors");
    seed(&redis, &stream, 3, &[("billing", 1)], 0);

    let err = run_fails(&url, &["info", "no-such-stream"], 4);
    assert!(err.contains("unknown stream `no-such-stream`"), "{err}");
    let err = run_fails(&url, &["pending", "no-such-stream", "g"], 4);
    assert!(err.contains("unknown stream"), "{err}");
    let err = run_fails(&url, &["pending", &stream, "nope"], 4);
    assert!(err.contains("unknown group `nope`") && err.contains("its groups: billing"), "{err}");
    let err = run_fails(&url, &["dlq", "list", "no-such-stream"], 4);
    assert!(err.contains("unknown stream"), "{err}");
    let err = run_fails(&url, &["dlq", "show", &stream, "1-1"], 4);
    assert!(err.contains("no dead letter 1-1"), "{err}");

    // Cannot connect: exit 3, the URL shown without its password.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = format!("redis://ops:hunter2@127.0.0.1:{port}");
    let err = run_fails(&unreachable, &["streams"], 3);
    assert!(err.contains(&format!("cannot connect to Redis at redis://ops:***@127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // A wrong password: exit 3 too, still redacted.
    redis.cli(&["ACL", "SETUSER", "ops", "on", ">right", "~*", "+@all"]).unwrap();
    let wrong = url.replace("redis://", "redis://ops:wrong@");
    let err = run_fails(&wrong, &["streams"], 3);
    assert!(err.contains("ops:***@") && !err.contains("wrong@"), "{err}");

    // NOPERM: exit 5, naming the command and the key.
    redis.cli(&["ACL", "SETUSER", "limited", "on", ">pw", "resetkeys", "~other*", "+@all"]).unwrap();
    let limited = url.replace("redis://", "redis://limited:pw@");
    let err = run_fails(&limited, &["pending", &stream, "billing"], 5);
    assert!(err.contains("NOPERM") && err.contains(&format!("EXISTS on `{stream}`")), "{err}");
    let err = run_fails(&limited, &["publish", &stream, "{}"], 5);
    assert!(err.contains("NOPERM") && err.contains(&format!("XADD on `{stream}`")), "{err}");

    // Usage errors: exit 2; and the exit codes are documented in --help.
    run_fails(&url, &["pending", &stream], 2);
    run_fails(&url, &["dlq", "list", &stream, "--kind", "bogus"], 2);
    let help = streamx(&url).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("Exit codes:") && help.contains("6  confirmation needed"), "{help}");
    assert!(!help.contains(&url), "the URL from the environment is not echoed: {help}");
}
