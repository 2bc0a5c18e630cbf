//! The error type of the test support.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why starting, stopping or driving a test Redis failed.
///
/// Messages carry the context needed to debug a red CI run without rerunning it: the port,
/// the command, and for servers that did not come up, the tail of their log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestingError {
    /// The `redis-server` binary could not be found.
    #[error(
        "redis-server not found (tried `{}`): install it (Debian/Ubuntu: `apt-get install \
         redis-server`, macOS: `brew install redis`) or set STREAMX_REDIS_SERVER to the path \
         of the binary",
        binary.display()
    )]
    RedisServerNotFound {
        /// The path or name that was tried.
        binary: PathBuf,
    },

    /// The `redis-cli` binary (needed to create a cluster) could not be found.
    #[error(
        "redis-cli not found (tried `{}`): install it (Debian/Ubuntu: `apt-get install \
         redis-server` or `redis-tools`, macOS: `brew install redis`) or set STREAMX_REDIS_CLI \
         to the path of the binary",
        binary.display()
    )]
    RedisCliNotFound {
        /// The path or name that was tried.
        binary: PathBuf,
    },

    /// `redis-cli`, run as a witness ([`redis_cli`](crate::redis_cli),
    /// [`TestRedis::cli`](crate::TestRedis::cli)), failed: it could not connect, or refused
    /// its arguments. (A command's error reply is not a failure: it is printed.)
    #[error("`redis-cli -p {port} {command}` failed ({status}): {output}")]
    RedisCliFailed {
        /// The port it was pointed at.
        port: u16,
        /// The command it was given.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },

    /// A binary was found but could not be started.
    #[error("could not start `{}`: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Creating the temporary directory or the log file failed, or no free port was found.
    #[error("{what}: {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A server with TLS was asked for, and the binary was built without TLS support
    /// (Valkey's and Redis's source builds leave it out unless asked; Debian's `redis-server`
    /// has it).
    #[error(
        "`{}` was built without TLS support: install a build with it (Debian/Ubuntu: \
         `apt-get install redis-server`) or set STREAMX_REDIS_SERVER to one",
        binary.display()
    )]
    TlsUnsupported {
        /// The server binary.
        binary: PathBuf,
    },

    /// The server process exited before it answered `PING`.
    #[error("redis-server on port {port} exited during startup ({status}); log tail:\n{log_tail}")]
    Exited {
        /// The port the server was told to listen on.
        port: u16,
        /// The exit status.
        status: String,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// The server did not become ready (answer `PONG`, finish loading) in time.
    #[error(
        "redis-server on port {port} not ready after {waited:?} (last answer: {last}); \
         log tail:\n{log_tail}"
    )]
    NotReady {
        /// The port.
        port: u16,
        /// How long we waited.
        waited: Duration,
        /// The last error or reply seen while polling.
        last: String,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// The server is not running (it was killed or stopped), so it cannot take commands.
    #[error("redis-server on port {port} is not running")]
    NotRunning {
        /// The port.
        port: u16,
    },

    /// Talking to a server failed at the network level.
    #[error("`{command}` on port {port} failed: {source}")]
    Io {
        /// The port.
        port: u16,
        /// The command.
        command: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// A server answered a command with an error reply.
    #[error("`{command}` on port {port} returned an error: {message}")]
    Redis {
        /// The port.
        port: u16,
        /// The command.
        command: String,
        /// The error reply, without the leading `-`.
        message: String,
    },

    /// A server answered a command with a reply of an unexpected shape.
    #[error("`{command}` on port {port} returned an unexpected reply: {reply}")]
    UnexpectedReply {
        /// The port.
        port: u16,
        /// The command.
        command: String,
        /// The reply, rendered for humans.
        reply: String,
    },

    /// The requested cluster shape is not possible.
    #[error("invalid cluster topology: {0}")]
    InvalidTopology(String),

    /// `redis-cli --cluster create` failed.
    #[error("`redis-cli --cluster create` failed ({status}); output:\n{output}")]
    ClusterCreate {
        /// The exit status (or "timed out").
        status: String,
        /// What redis-cli printed.
        output: String,
    },

    /// A condition (of a cluster, of a [`TestRuntime`](crate::TestRuntime) wait or of
    /// [`wait_until`](crate::wait_until)) was not reached in time.
    #[error("timed out after {waited:?} waiting for {what}; last state: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The last observed state.
        last: String,
    },

    /// The streamx runtime under test failed: it refused its configuration, could not
    /// start, or a publish or read through it failed.
    #[error("{what}: {source}")]
    Runtime {
        /// What the test runtime was doing.
        what: String,
        /// The runtime's error.
        #[source]
        source: streamx_runtime::Error,
    },

    /// The running cluster nodes do not agree on which master serves a slot, or none does.
    #[error("no agreed master for slot {slot}: {detail}")]
    NoMasterForSlot {
        /// The slot.
        slot: u16,
        /// What each node reported.
        detail: String,
    },

    /// A node index does not name a suitable node (out of range, or not a master).
    #[error("node {index}: {detail}")]
    BadNode {
        /// The index into [`RedisCluster::nodes`](super::RedisCluster::nodes).
        index: usize,
        /// What is wrong with it.
        detail: String,
    },
}

impl TestingError {
    pub(crate) fn runtime(what: &str, source: streamx_runtime::Error) -> Self {
        TestingError::Runtime { what: what.to_string(), source }
    }
}
