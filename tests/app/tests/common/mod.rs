//! Helpers shared by the integration tests: servers, waiting on conditions, worker
//! processes, reading what handlers recorded.
#![allow(dead_code, missing_docs)]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use streamx::testing::{RedisCluster, RedisServer};
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

/// Which kind of Redis a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One redis-server.
    Standalone,
    /// A local Redis Cluster of 3 masters.
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
            Topology::Standalone => TestRedis::Standalone(start_server()),
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

    /// How many clients are blocked in XREADGROUP, over every node.
    pub fn blocked_readers(&self) -> usize {
        let ports: Vec<u16> = match self {
            TestRedis::Standalone(s) => vec![s.port()],
            TestRedis::Cluster(c) => c.nodes().iter().map(|n| n.port()).collect(),
        };
        ports
            .into_iter()
            .map(|port| {
                redis_cli_at(port, false, &["CLIENT", "LIST"])
                    .lines()
                    .filter(|l| l.contains("cmd=xreadgroup") && l.contains("flags=b"))
                    .count()
            })
            .sum()
    }

    /// Runs `redis-cli` (in cluster mode, following redirects) and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        match self {
            TestRedis::Standalone(s) => redis_cli_at(s.port(), false, args),
            TestRedis::Cluster(c) => redis_cli_at(c.nodes()[0].port(), true, args),
        }
    }

    /// Runs `redis-cli args...` against every node (e.g. `CLIENT KILL`); their outputs.
    pub fn cli_all(&self, args: &[&str]) -> Vec<String> {
        match self {
            TestRedis::Standalone(s) => vec![redis_cli_at(s.port(), false, args)],
            TestRedis::Cluster(c) => c.nodes().iter().map(|n| redis_cli_at(n.port(), false, args)).collect(),
        }
    }
}

/// Declares, for each `async fn NAME(topology: Topology)` in the test file, a module
/// `NAME` with the tests `NAME::standalone` and `NAME::cluster`.
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

/// Runs `redis-cli -p PORT args...` and returns its stdout.
pub fn redis_cli(server: &RedisServer, args: &[&str]) -> String {
    redis_cli_at(server.port(), false, args)
}

fn redis_cli_at(port: u16, cluster: bool, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    if cluster {
        cmd.arg("-c");
    }
    let out = cmd.arg("-p").arg(port.to_string()).args(args).output().expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
