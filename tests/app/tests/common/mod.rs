//! Helpers shared by the integration tests: servers, worker processes, reading what
//! handlers recorded; from `streamx::testing`, Redis of either topology with redis-cli as
//! the witness, and waiting on conditions.
#![allow(dead_code, missing_docs)]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use streamx::testing::{RedisServer, TestingError};
// Each test binary uses some of these, as of the helpers below.
#[allow(unused_imports)]
pub use streamx::testing::{on_both_topologies, redis_cli, wait_until, TestRedis, Topology};
use streamx::{Consumer, History, MessageId, RunningRuntime, Runtime};

/// The job payload the worker binary understands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub n: u64,
    pub action: serde_json::Value,
}

impl Job {
    pub fn ok(n: u64) -> Self {
        Job { n, action: serde_json::json!("ok") }
    }
    pub fn sleep(n: u64, ms: u64) -> Self {
        Job { n, action: serde_json::json!({ "sleep": ms }) }
    }
    pub fn fail_times(n: u64, times: u32) -> Self {
        Job { n, action: serde_json::json!({ "fail_times": times }) }
    }
    pub fn abort(n: u64) -> Self {
        Job { n, action: serde_json::json!("abort") }
    }
}

/// What the worker binary's handlers record in `app.handled`.
#[derive(Debug, Clone, Deserialize)]
pub struct Handled {
    pub consumer: String,
    pub id: String,
    pub n: u64,
    pub attempt: u32,
    pub pid: u32,
}

pub fn start_server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("cannot start redis-server: {e}"))
}

/// Set to make a TLS test fail instead of skip where the server binary has no TLS (CI sets
/// it: Debian's redis-server has TLS).
pub const REQUIRE_TLS_ENV: &str = "STREAMX_REQUIRE_TLS";

/// The server a TLS test `started`; `None`, with a notice, when the binary was built without
/// TLS (a Valkey or Redis source build) and `STREAMX_REQUIRE_TLS` is unset: the test then
/// has nothing to test and returns.
pub fn tls_or_skip(started: Result<RedisServer, TestingError>) -> Option<RedisServer> {
    match started {
        Ok(server) => Some(server),
        Err(e @ TestingError::TlsUnsupported { .. }) if std::env::var_os(REQUIRE_TLS_ENV).is_none() => {
            eprintln!("SKIPPED, set {REQUIRE_TLS_ENV} to fail instead: {e}");
            None
        }
        Err(e) => panic!("cannot start redis-server with TLS: {e}"),
    }
}

/// Starts a runtime running only `consumers` (none from the registry) against `url`.
pub async fn start_runtime(url: impl Into<String>, consumers: Vec<Consumer>) -> RunningRuntime {
    let mut builder = Runtime::builder().redis_url(url).registered_consumers(false);
    for c in consumers {
        builder = builder.consumer(c);
    }
    builder.build().unwrap().start().await.unwrap()
}

/// Starts a runtime running only `consumers` against `url`, with more settings made by
/// `configure` (e.g. the HTTP endpoint).
pub async fn start_runtime_with(
    url: impl Into<String>,
    consumers: Vec<Consumer>,
    configure: impl FnOnce(streamx::RuntimeBuilder) -> streamx::RuntimeBuilder,
) -> RunningRuntime {
    let mut builder = Runtime::builder().redis_url(url).registered_consumers(false);
    for c in consumers {
        builder = builder.consumer(c);
    }
    configure(builder).build().unwrap().start().await.unwrap()
}

/// `GET path` on a local HTTP server, with a raw HTTP/1.1 request (no client library): the
/// status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        (status, if chunked { dechunk(body) } else { body.to_string() })
    })
    .await
    .unwrap()
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the sample `name{labels...}` in a Prometheus text exposition, if present:
/// the line whose labels include every one of `labels`.
pub fn prometheus_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name || !labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))) {
            return None;
        }
        value.parse().ok()
    })
}

/// Starting a runtime with `consumer` against `url` (one connection attempt) fails: the error.
pub async fn start_error(url: impl Into<String>, consumer: Consumer) -> streamx::Error {
    match Runtime::builder()
        .redis_url(url)
        .registered_consumers(false)
        .consumer(consumer)
        .connect_timeout(Duration::ZERO)
        .build()
        .unwrap()
        .start()
        .await
    {
        Ok(_) => panic!("the runtime started"),
        Err(e) => e,
    }
}

/// Every record in `app.handled`.
pub async fn handled(url: &str) -> Vec<Handled> {
    let history = History::connect(url).await.expect("connect for history");
    history
        .read::<Handled>("app.handled", ..)
        .map_ok(|m| m.into_payload())
        .try_collect()
        .await
        .expect("read app.handled")
}

/// Counts how many times each id appears.
pub fn counts<'a>(ids: impl IntoIterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id.to_string()).or_insert(0) += 1;
    }
    m
}

pub fn id_strings(ids: &[MessageId]) -> Vec<String> {
    ids.iter().map(|i| i.to_string()).collect()
}

/// Starts the worker binary against `url`, running only the consumers in `only`.
pub fn spawn_worker(url: &str, only: &str, extra_env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.env("STREAMX_REDIS_URL", url)
        .env("WORKER_ONLY", only)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn worker binary")
}

/// Starts the worker binary like [`spawn_worker`], with its stderr appended to the file
/// `log` instead of a pipe (a busy worker that writes more than a pipe holds, and nobody
/// reads it, would block).
pub fn spawn_worker_logged(url: &str, only: &str, extra_env: &[(&str, &str)], log: &Path) -> Child {
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the worker log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.env("STREAMX_REDIS_URL", url).env("WORKER_ONLY", only).stdout(Stdio::null()).stderr(stderr);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn worker binary")
}

/// Sends SIGTERM to a child process.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -TERM failed");
}

/// Waits for a child to exit, up to `limit`.
pub async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("worker did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
