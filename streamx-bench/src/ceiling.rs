//! The produce phase's ceiling: `redis-benchmark` sending the same XADD (an entry with a
//! `data` field holding a typical event's JSON) pipelined, from C, with no client library
//! in the way. Found through `STREAMX_REDIS_BENCHMARK` or on PATH; skipped with a note when
//! absent.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use fred::prelude::{Config, ServerConfig};
use serde::Serialize;

use crate::raw::DATA_FIELD;
use crate::workload::Event;

/// Names the `redis-benchmark` binary to use instead of the one on PATH.
pub const BINARY_ENV: &str = "STREAMX_REDIS_BENCHMARK";

/// One `redis-benchmark` shape: requests per pipeline and parallel connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub pipeline: u32,
    pub clients: u32,
}

impl Shape {
    /// The shapes the produce phase runs: `-P 128` (with the tool's default 50 clients)
    /// and `-P 32 -c 4`.
    pub const ALL: [Shape; 2] = [Shape { pipeline: 128, clients: 50 }, Shape { pipeline: 32, clients: 4 }];

    /// How the shape reads in the report.
    pub fn label(self) -> String {
        if self.clients == 50 {
            format!("-P {}", self.pipeline)
        } else {
            format!("-P {} -c {}", self.pipeline, self.clients)
        }
    }
}

/// The `redis-benchmark` binary, or why there is none.
pub fn binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(format!("{BINARY_ENV}={} is not a file", path.display())) };
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("redis-benchmark"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("redis-benchmark is not on PATH (or set {BINARY_ENV})"))
}

/// The arguments that reach the server at `url`: host, port, and the credentials and
/// database the URL names. TLS is not supported (redis-benchmark needs a TLS build).
fn server_args(url: &str) -> Result<Vec<String>> {
    let config = Config::from_url(url).with_context(|| format!("invalid Redis URL {}", streamx::redact(url)))?;
    if url.starts_with("rediss://") {
        bail!("redis-benchmark is not run against a TLS server");
    }
    let ServerConfig::Centralized { server } = &config.server else {
        bail!("redis-benchmark is only run against a single server");
    };
    let mut args = vec!["-h".to_string(), server.host.to_string(), "-p".to_string(), server.port.to_string()];
    if let Some(user) = &config.username {
        args.extend(["--user".to_string(), user.clone()]);
    }
    if let Some(password) = &config.password {
        args.extend(["-a".to_string(), password.clone()]);
    }
    if let Some(db) = config.database {
        args.extend(["--dbnum".to_string(), db.to_string()]);
    }
    Ok(args)
}

/// Runs `binary` sending `messages` XADDs to `stream` with `shape`; requests per second as
/// it reports them. The caller deletes the stream.
pub async fn run(binary: &Path, url: &str, stream: &str, messages: u64, shape: Shape) -> Result<f64> {
    let payload = serde_json::to_string(&Event { sent_ns: 1_234_567_890, ..Event::new(123_456) })?;
    let output = tokio::process::Command::new(binary)
        .args(server_args(url)?)
        .args(["-n", &messages.to_string(), "-P", &shape.pipeline.to_string(), "-c", &shape.clients.to_string()])
        .args(["--csv", "XADD", stream, "*", DATA_FIELD, &payload])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("{} exited with {}: {}", binary.display(), output.status, stderr.trim());
    }
    parse_csv_rps(&stdout).with_context(|| format!("unexpected redis-benchmark output {:?}", stdout.trim()))
}

/// The requests per second of `redis-benchmark --csv` output with one test: the line after
/// the header, whose last seven fields are rps, avg, min, p50, p95, p99, max. The test name
/// (first field) holds the command line, JSON commas and quotes unescaped, so the fields
/// are counted from the right.
fn parse_csv_rps(output: &str) -> Result<f64> {
    let line = output
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("\"test\""))
        .context("no result line")?;
    let fields: Vec<&str> = line.rsplitn(8, ',').collect();
    let rps = fields.get(6).context("too few fields")?.trim_matches('"');
    let rps: f64 = rps.parse().with_context(|| format!("requests per second {rps:?}"))?;
    anyhow::ensure!(rps > 0.0, "requests per second {rps}");
    Ok(rps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rps_of_a_csv_line_whose_test_name_holds_json() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\
                   \"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"XADD k * data {\"seq\":1,\"kind\":\"a,b\"}\",\"772923.06\",\"6.218\",\"0.168\",\"6.447\",\
                   \"7.271\",\"7.367\",\"7.383\"\n";
        assert_eq!(parse_csv_rps(out).unwrap(), 772_923.06);
        assert!(parse_csv_rps("\"test\",\"rps\"\n").is_err());
        assert!(parse_csv_rps("").is_err());
    }

    #[test]
    fn server_args_carry_host_port_credentials_and_database() {
        assert_eq!(server_args("redis://127.0.0.1:6393").unwrap(), ["-h", "127.0.0.1", "-p", "6393"]);
        assert_eq!(
            server_args("redis://:secret@localhost:7000/2").unwrap(),
            ["-h", "localhost", "-p", "7000", "-a", "secret", "--dbnum", "2"]
        );
        assert!(server_args("rediss://localhost:7000").is_err());
    }
}
