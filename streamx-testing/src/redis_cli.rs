//! `redis-cli` as the independent witness of what a test wrote to Redis: the official
//! client, not the one under test nor the test support's own RESP code. Also the errors of
//! running it, shared with cluster creation.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::cluster::REDIS_CLI_ENV;
use crate::error::TestingError;
use crate::process::{describe_status, resolve_binary};
use crate::resp;
use crate::server::RedisServer;

/// Runs `redis-cli -p PORT args...` against `server` and returns what it printed.
///
/// The binary is `$STREAMX_REDIS_CLI` if set, else `redis-cli` from `PATH`. Its output is
/// returned as printed, error replies included: `redis-cli` prints a command's error
/// (`WRONGTYPE ...`) and still succeeds.
///
/// ```no_run
/// use streamx_testing::{redis_cli, RedisServer};
///
/// # fn main() -> Result<(), streamx_testing::TestingError> {
/// let server = RedisServer::start()?;
/// assert_eq!(redis_cli(&server, &["SET", "k", "v"])?.trim(), "OK");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`TestingError::RedisCliNotFound`] without the binary;
/// [`TestingError::RedisCliFailed`] when it fails (cannot connect, bad arguments).
pub fn redis_cli(server: &RedisServer, args: &[&str]) -> Result<String, TestingError> {
    run(server.port(), Mode::default(), args)
}

/// How to run `redis-cli`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mode {
    /// `-c`: cluster mode, following `MOVED` and `ASK` redirects.
    pub(crate) cluster: bool,
    /// `--json`: replies printed as JSON.
    pub(crate) json: bool,
}

/// Runs `redis-cli [-c] [--json] -p PORT args...` and returns its standard output.
pub(crate) fn run(port: u16, mode: Mode, args: &[&str]) -> Result<String, TestingError> {
    let binary = resolve_binary(None, REDIS_CLI_ENV, "redis-cli");
    let mut command = Command::new(&binary);
    if mode.cluster {
        command.arg("-c");
    }
    if mode.json {
        command.arg("--json");
    }
    let output = command
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| spawn_error(&binary, source))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(TestingError::RedisCliFailed {
            port,
            command: resp::describe(args),
            status: describe_status(output.status),
            output: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(stdout)
}

/// The error for a `redis-cli` that could not be started: missing, or another OS error.
pub(crate) fn spawn_error(binary: &Path, source: std::io::Error) -> TestingError {
    match source.kind() {
        std::io::ErrorKind::NotFound => TestingError::RedisCliNotFound { binary: binary.to_path_buf() },
        _ => TestingError::Spawn { binary: binary.to_path_buf(), source },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn runs_commands_and_returns_their_output_error_replies_included() {
        let server = RedisServer::start().unwrap();
        assert_eq!(redis_cli(&server, &["SET", "k", "v"]).unwrap().trim(), "OK");
        assert_eq!(redis_cli(&server, &["GET", "k"]).unwrap().trim(), "v");
        assert!(redis_cli(&server, &["XLEN", "k"]).unwrap().starts_with("WRONGTYPE"));
        let json = run(server.port(), Mode { cluster: false, json: true }, &["GET", "k"]).unwrap();
        assert_eq!(json.trim(), "\"v\"");
    }

    #[test]
    fn a_server_that_is_gone_is_a_failure_with_the_port_and_command() {
        let mut server = RedisServer::start().unwrap();
        let port = server.port();
        server.kill().unwrap();
        match redis_cli(&server, &["PING"]) {
            Err(TestingError::RedisCliFailed { port: p, command, output, .. }) => {
                assert_eq!((p, command.as_str()), (port, "PING"));
                assert!(output.contains("Could not connect"), "{output}");
            }
            other => panic!("expected RedisCliFailed, got {other:?}"),
        }
    }
}
