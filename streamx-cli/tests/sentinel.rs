//! The `streamx` binary given a `redis-sentinel://` URL: publish, streams and info reach the
//! master the sentinels name, before and after a `SENTINEL FAILOVER`; a wrong service name
//! is a connection error that says so.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use common::{run_fails, run_json, run_ok};
use streamx_testing::{redis_cli, unique_name, RedisSentinel};

fn xlen(sentinel: &RedisSentinel, node: usize, stream: &str) -> u64 {
    redis_cli(&sentinel.nodes()[node], &["XLEN", stream]).unwrap().trim().parse().unwrap()
}

#[test]
fn the_cli_follows_the_sentinels_through_a_failover() {
    let sentinel = RedisSentinel::start().unwrap();
    let url = sentinel.url();
    let stream = unique_name("cli-sentinel");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for n in 0..5 {
        writeln!(file, "{{\"n\":{n}}}").unwrap();
    }
    run_ok(&url, &["publish", &stream, "--file", file.path().to_str().unwrap()]);
    let first = sentinel.master().unwrap();
    assert_eq!(xlen(&sentinel, first, &stream), 5);
    assert_eq!(run_json(&url, &["info", &stream])["length"], 5);
    let listed = run_json(&url, &["streams"]);
    let row = listed.as_array().unwrap().iter().find(|r| r["stream"] == stream.as_str()).unwrap();
    assert_eq!(row["length"], 5, "{listed}");

    let promoted = sentinel.failover().unwrap();
    assert_ne!(promoted, first);
    run_ok(&url, &["publish", &stream, "{\"n\":5}"]);
    assert_eq!(xlen(&sentinel, promoted, &stream), 6);
    assert_eq!(run_json(&url, &["info", &stream])["length"], 6);

    // A service the sentinels do not monitor: exit 3 (cannot connect), saying what is wrong.
    let wrong = url.replace("sentinelServiceName=streamx", "sentinelServiceName=nope");
    let err = run_fails(&wrong, &["streams"], 3);
    assert!(err.contains("the sentinels monitor no master named `nope`"), "{err}");
}
