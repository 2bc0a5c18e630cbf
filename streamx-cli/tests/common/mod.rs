//! Shared by the CLI tests: throwaway Redis servers and clusters (streamx-testing), the real
//! `streamx` binary, redis-cli as the independent witness, waiting on conditions.
#![allow(dead_code, missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod browser;

use std::future::Future;
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use streamx_runtime::{Consumer, RunningRuntime, Runtime};
use streamx_testing::{RedisCluster, RedisServer};

/// Which kind of Redis a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Standalone,
    Cluster,
}

/// A throwaway Redis of either topology.
#[allow(clippy::large_enum_variant)]
pub enum TestRedis {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    pub fn start(topology: Topology) -> Self {
        match topology {
            Topology::Standalone => {
                TestRedis::Standalone(RedisServer::start().unwrap_or_else(|e| panic!("cannot start redis-server: {e}")))
            }
            Topology::Cluster => TestRedis::Cluster(
                RedisCluster::start(3, 0).unwrap_or_else(|e| panic!("cannot start a redis cluster: {e}")),
            ),
        }
    }

    pub fn url(&self) -> String {
        match self {
            TestRedis::Standalone(s) => s.url(),
            TestRedis::Cluster(c) => c.url(),
        }
    }

    /// The port redis-cli talks to (with -c on a cluster).
    fn cli_port(&self) -> (u16, bool) {
        match self {
            TestRedis::Standalone(s) => (s.port(), false),
            TestRedis::Cluster(c) => (c.nodes()[0].port(), true),
        }
    }

    /// `redis-cli args...`: its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let (port, cluster) = self.cli_port();
        redis_cli(port, cluster, false, args)
    }

    /// `redis-cli --json args...`, parsed.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let (port, cluster) = self.cli_port();
        let out = redis_cli(port, cluster, true, args);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("redis-cli {args:?} gave {out:?}: {e}"))
    }

    /// XLEN of `key`.
    pub fn xlen(&self, key: &str) -> u64 {
        self.cli(&["XLEN", key]).trim().parse().unwrap()
    }

    /// The master (by index) that holds `key`; 0 on a single server.
    pub fn master_of(&self, key: &str) -> usize {
        match self {
            TestRedis::Standalone(_) => 0,
            TestRedis::Cluster(c) => c.master_for_key(key).unwrap(),
        }
    }

    /// How many clients of any node are blocked in `command` (e.g. `xread`).
    pub fn blocked_in(&self, command: &str) -> usize {
        let ports: Vec<u16> = match self {
            TestRedis::Standalone(s) => vec![s.port()],
            TestRedis::Cluster(c) => c.nodes().iter().map(|n| n.port()).collect(),
        };
        ports
            .into_iter()
            .map(|port| {
                redis_cli(port, false, false, &["CLIENT", "LIST"])
                    .lines()
                    .filter(|l| l.contains(&format!("cmd={command}")) && l.contains("flags=b"))
                    .count()
            })
            .sum()
    }
}

fn redis_cli(port: u16, cluster: bool, json: bool, args: &[&str]) -> String {
    let mut cmd = StdCommand::new("redis-cli");
    if cluster {
        cmd.arg("-c");
    }
    if json {
        cmd.arg("--json");
    }
    let out = cmd.arg("-p").arg(port.to_string()).args(args).output().expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `streamx` binary of this crate, pointed at `url` (through the environment, as an
/// operator would set it), with no terminal on standard input.
pub fn streamx(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamx"));
    cmd.env("STREAMX_REDIS_URL", url).env_remove("STREAMX_REDIS_TLS_CA").timeout(Duration::from_secs(120));
    cmd
}

/// Runs `streamx args...` against `url`, expects success, returns standard output.
pub fn run_ok(url: &str, args: &[&str]) -> String {
    let out = streamx(url).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "streamx {args:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `streamx --json args...` and parses its output.
pub fn run_json(url: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run_ok(url, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("streamx {args:?} printed {out:?}: {e}"))
}

/// Runs `streamx args...`, expects failure with `code`; returns standard error.
pub fn run_fails(url: &str, args: &[&str], code: i32) -> String {
    let out = streamx(url).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "streamx {args:?}: stderr {stderr}");
    stderr
}

/// Starts a runtime running only `consumers` against `url`.
pub async fn start_runtime(url: &str, consumers: Vec<Consumer>) -> RunningRuntime {
    let mut builder = Runtime::builder().redis_url(url).registered_consumers(false);
    for c in consumers {
        builder = builder.consumer(c);
    }
    builder.build().unwrap().start().await.unwrap()
}

/// Polls `check` every 20 ms until it returns true; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Declares, for each `async fn NAME(topology: Topology)`, the tests `NAME::standalone` and
/// `NAME::cluster`.
#[macro_export]
macro_rules! on_both_topologies {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                super::$name(super::common::Topology::Standalone).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                super::$name(super::common::Topology::Cluster).await
            }
        }
    )*};
}
