//! `streamx tail`'s starting points and formats against a real server: `--last`, `--since`,
//! `--format`, and `--group` (entries pending under the consumer unless `--ack`), with
//! redis-cli as the witness.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{binary, run_fails, run_ok, wait_until, TestRedis, Topology};
use streamx_testing::unique_name;

fn publish(url: &str, stream: &str, payload: &str) -> String {
    run_ok(url, &["publish", stream, payload]).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_since_and_format() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("tail-last");
    let ids: Vec<String> = (0..5).map(|i| publish(&url, &stream, &format!(r#"{{"n":{i}}}"#))).collect();

    // --last 2: the two newest, oldest first.
    let out = run_ok(&url, &["tail", &stream, "--last", "2", "--no-follow", "--format", "{id}"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), vec![ids[3].as_str(), ids[4].as_str()], "{out}");
    let out = run_ok(&url, &["tail", &stream, "--last", "50", "--no-follow", "--format", "{id}"]);
    assert_eq!(out.lines().count(), 5, "{out}");

    // --last then follow: the last entry, then what is published after.
    let child = std::process::Command::new(binary())
        .args(["--url", &url, "tail", &stream, "--last", "1", "--count", "2", "--format", "{payload}"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "tail blocks in XREAD", || async { redis.blocked_in("xread").unwrap() == 1 })
        .await
        .unwrap();
    publish(&url, &stream, r#"{"n":"new"}"#);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"n\":4}\n{\"n\":\"new\"}\n");

    // --since: an entry with an id from an hour ago is left out, the ones from now are in.
    let old_stream = unique_name("tail-since");
    let hour_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() - 3_600_000;
    redis.cli(&["XADD", &old_stream, &format!("{hour_ago}-0"), "data", r#"{"old":true}"#]).unwrap();
    let recent = publish(&url, &old_stream, r#"{"old":false}"#);
    let out = run_ok(&url, &["tail", &old_stream, "--since", "10m", "--no-follow", "--format", "{id}"]);
    assert_eq!(out.trim(), recent, "{out}");
    let out = run_ok(&url, &["tail", &old_stream, "--since", "2h", "--no-follow", "--format", "{id}"]);
    assert_eq!(out.lines().count(), 2, "{out}");

    // --format: every placeholder, braces, header values; a bad placeholder is a usage error.
    let with_headers = unique_name("tail-format");
    let id = run_ok(&url, &["publish", &with_headers, r#"{"a":1}"#, "-H", "trace=t-1", "-H", "tenant=acme"]);
    let out = run_ok(
        &url,
        &[
            "tail",
            &with_headers,
            "--from",
            "0",
            "--no-follow",
            "--format",
            "{{{id}}} {stream} {h:trace} [{h:missing}] {headers} {payload} {time}",
        ],
    );
    let time = out.trim().rsplit(' ').next().unwrap().to_string();
    assert!(time.ends_with('Z') && time.contains('T'), "{out}");
    assert_eq!(
        out.trim(),
        format!(r#"{{{}}} {with_headers} t-1 [] trace=t-1 tenant=acme {{"a":1}} {time}"#, id.trim())
    );
    let err = run_fails(&url, &["tail", &with_headers, "--format", "{nope}"], 2);
    assert!(err.contains("unknown placeholder `{nope}`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_reads_leave_entries_pending_unless_ack() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("tail-group");
    for i in 0..3 {
        publish(&url, &stream, &format!(r#"{{"n":{i}}}"#));
    }
    redis.cli(&["XGROUP", "CREATE", &stream, "billing", "0"]).unwrap();

    // Without --ack: delivered to the group, pending under the consumer.
    let out = run_ok(
        &url,
        &["tail", &stream, "--group", "billing", "--consumer", "peek", "--count", "2", "--format", "{id}"],
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    let pending = redis.cli_json(&["XPENDING", &stream, "billing", "-", "+", "10"]).unwrap();
    let pending = pending.as_array().unwrap();
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(pending.iter().all(|p| p[1] == "peek"));
    assert_eq!(pending[0][0], out.lines().next().unwrap());

    // With --ack: the rest is read and acknowledged: nothing more pending, lag 0.
    let out = run_ok(&url, &["tail", &stream, "--group", "billing", "--ack", "--no-follow", "--format", "{id}"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let pending = redis.cli_json(&["XPENDING", &stream, "billing"]).unwrap();
    assert_eq!(pending[0], 2, "only the two unacknowledged ones: {pending}");
    let group = &redis.cli_json(&["XINFO", "GROUPS", &stream]).unwrap()[0];
    assert_eq!(group["lag"], 0);

    // Unknown group: exit 4; --ack needs --group: exit 2.
    let err = run_fails(&url, &["tail", &stream, "--group", "nope", "--no-follow"], 4);
    assert!(err.contains("unknown group `nope`"), "{err}");
    run_fails(&url, &["tail", &stream, "--ack"], 2);
    run_fails(&url, &["tail", &stream, "--group", "billing", "--from", "0"], 2);
}
