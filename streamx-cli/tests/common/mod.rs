//! Shared by the CLI tests: the real `streamx` binary and runtimes for it to watch; from
//! streamx-testing, Redis of either topology with redis-cli as the independent witness,
//! and waiting on conditions.
#![allow(dead_code, missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod browser;

use std::time::Duration;

use assert_cmd::Command;
use streamx_runtime::{Consumer, RunningRuntime, Runtime};
// Each test binary uses some of these, as of the helpers below.
#[allow(unused_imports)]
pub use streamx_testing::{on_both_topologies, wait_until, TestRedis, Topology};

/// The `streamx` binary under test: this crate's, or the one `STREAMX_TEST_BIN` names (to
/// show that a test fails with an older build).
pub fn binary() -> String {
    std::env::var("STREAMX_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_streamx").to_string())
}

/// The `streamx` binary, pointed at `url` (through the environment, as an operator would
/// set it), with no terminal on standard input.
pub fn streamx(url: &str) -> Command {
    let mut cmd = Command::new(binary());
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
