//! What the server offers beyond Redis 7.0 (issue 24): detected from the commands the server
//! runs, turned off by `STREAMX_DISABLE_CAPABILITIES`, and never an error where the user may
//! not ask. `.ci/run` runs this file again on Redis 8.2 with `STREAMX_REQUIRE_REDIS_82=1`, which
//! makes sure that run really had a server with XACKDEL.

#![allow(clippy::unwrap_used)]

mod common;

use common::{on_both_topologies, start_server, TestRedis, Topology};
use streamx::{Capabilities, Producer};

/// The server's name and version as `INFO server` gives them: `("redis", [8, 2, 3])`,
/// `("valkey", [8, 1, 8])` (Valkey also reports a Redis-compatible `redis_version`).
fn server_version(info: &str) -> (String, Vec<u32>) {
    let field = |name: &str| {
        info.lines().find_map(|l| l.trim().strip_prefix(name).and_then(|v| v.strip_prefix(':')).map(str::to_string))
    };
    let (name, version) = match field("valkey_version") {
        Some(v) => ("valkey".to_string(), v),
        None => ("redis".to_string(), field("redis_version").unwrap()),
    };
    (name, version.split('.').map(|p| p.parse().unwrap_or(0)).collect())
}

/// What the server's release notes promise: XACKDEL and ACKED trimming from Redis 8.2 and
/// Valkey 9.2, XADD IDMP from Redis 8.6.
fn expected(name: &str, version: &[u32]) -> Capabilities {
    let at_least = |want: &[u32]| version >= want;
    let xackdel = if name == "valkey" { at_least(&[9, 2]) } else { at_least(&[8, 2]) };
    let idmp = name == "redis" && at_least(&[8, 6]);
    Capabilities::BASELINE.with_xackdel(xackdel).with_xadd_idmp(idmp)
}

async fn detected_from_the_commands_the_server_runs(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let (name, version) = server_version(&redis.cli(&["INFO", "server"]).unwrap());
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let found = Capabilities::detect(&producer.client()).await;
    let disabled = std::env::var(streamx::DISABLE_CAPABILITIES_ENV).unwrap_or_default();
    assert_eq!(found, expected(&name, &version).without(&disabled), "{name} {version:?}");
    if std::env::var_os("STREAMX_REQUIRE_REDIS_82").is_some() {
        assert!(found.xackdel, "STREAMX_REQUIRE_REDIS_82 is set but {name} {version:?} has no XACKDEL");
    }
}

on_both_topologies!(detected_from_the_commands_the_server_runs);

/// A user that may not run COMMAND gets Redis 7.0's paths, which work on every server, and
/// no error.
#[tokio::test]
async fn a_user_that_may_not_ask_gets_the_baseline() {
    let server = start_server();
    let rule = ["ACL", "SETUSER", "limited", "on", ">secret", "~*", "+@all", "-command"];
    assert_eq!(streamx::testing::redis_cli(&server, &rule).unwrap().trim(), "OK");
    let url = server.url().replacen("redis://", "redis://limited:secret@", 1);
    let producer = Producer::connect(&url).await.unwrap();
    assert_eq!(Capabilities::detect(&producer.client()).await, Capabilities::BASELINE);
}

#[test]
fn versions_are_read_from_info() {
    let valkey = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n";
    assert_eq!(server_version(valkey), ("valkey".to_string(), vec![8, 1, 8]));
    assert_eq!(server_version("redis_version:8.2.3\n"), ("redis".to_string(), vec![8, 2, 3]));
    assert!(expected("redis", &[8, 2, 3]).xackdel && !expected("redis", &[8, 2, 3]).xadd_idmp);
    assert!(!expected("valkey", &[8, 1, 8]).xackdel && !expected("redis", &[7, 0, 15]).xackdel);
}
