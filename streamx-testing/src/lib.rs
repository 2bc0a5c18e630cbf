//! Throwaway Redis servers and clusters for tests of [streamx](https://docs.rs/streamx).
//!
//! Use it through the facade: enable the `testing` feature of `streamx` in
//! `[dev-dependencies]` (`streamx = { version = "0.1", features = ["testing"] }`) and
//! write `streamx::testing::RedisServer` and so on; everything here is re-exported there.
//!
//! Runtime tests run against real `redis-server` processes that this module spawns: each
//! test gets its own server on a free loopback port, in its own temporary directory, and
//! the process is killed when the handle is dropped, even when the test panics.
//!
//! - [`TestRuntime`]: your `#[stream_consumer]`s (all, or the ones you pick) running
//!   against a server of their own, with `publish`, `wait_until_handled(n)`, `wait_idle()`,
//!   `dead_letters(stream)` and `stats()`: an integration test of a consumer in five lines.
//! - [`RedisServer`]: one server; optional AOF; crash it with [`RedisServer::kill`] and
//!   bring it back on the same port with the same data with [`RedisServer::restart`].
//! - [`RedisServerBuilder::tls`]: a server that also listens for TLS, with a CA and
//!   certificates made at test time ([`TlsFiles`]).
//! - [`RedisCluster`]: a local Redis Cluster (e.g. 3 masters, 1 replica each), with helpers
//!   to find, kill and fail over the master of a key and to migrate a slot.
//! - [`RedisSentinel`]: a master, its replicas and three sentinels, with
//!   [`RedisSentinel::url`] (`redis-sentinel://...`), [`RedisSentinel::failover`] and
//!   [`RedisSentinel::kill_master`].
//! - [`TestRedis`]: a server or a cluster, by [`Topology`], so one test body runs against
//!   both ([`on_both_topologies!`]); what is in it read back with `redis-cli`
//!   ([`TestRedis::cli`], [`TestRedis::xlen`], [`redis_cli`] for one server), an
//!   independent witness.
//! - [`wait_until`]: waits for a condition with a deadline instead of sleeping.
//! - [`unique_name`]: key and stream names that tests sharing a server never share.
//! - [`key_slot`]: the cluster hash slot of a key.
//!
//! [`TestRuntime`] and [`wait_until`] are async (they run inside your `#[tokio::test]`).
//! The rest is synchronous (it talks RESP over a plain `TcpStream` or runs `redis-cli`, not
//! through a Redis client) and usable from async tests: calls block for at most a few
//! seconds while a server starts or a cluster settles, and every wait has a deadline.
//!
//! # Requirements
//!
//! `redis-server` (and `redis-cli`, for clusters and the witness helpers) on `PATH`
//! (`apt-get install redis-server`), or their paths in the environment variables
//! `STREAMX_REDIS_SERVER` and `STREAMX_REDIS_CLI`. Linux or another Unix: the watchdog
//! that kills orphaned servers uses `sh`.
//!
//! # Example
//!
//! ```no_run
//! use streamx_testing::{unique_name, RedisServer};
//!
//! # fn main() -> Result<(), streamx_testing::TestingError> {
//! let server = RedisServer::start()?;
//! let stream = unique_name("orders");
//! // Point the runtime under test at `server.url()` and use `stream` as its stream name.
//! # let _ = (server.url(), stream);
//! # Ok(())
//! # }
//! ```

mod cluster;
mod error;
mod name;
mod process;
mod redis_cli;
mod resp;
mod runtime;
mod sentinel;
mod server;
mod slot;
mod tls;
mod topology;
mod wait;

pub use cluster::{RedisCluster, RedisClusterBuilder, REDIS_CLI_ENV};
pub use error::TestingError;
pub use name::unique_name;
pub use redis_cli::redis_cli;
pub use runtime::{TestRuntime, TestRuntimeBuilder, DEFAULT_WAIT_LIMIT};
pub use sentinel::{RedisSentinel, RedisSentinelBuilder};
pub use server::{RedisServer, RedisServerBuilder, REDIS_SERVER_ENV};
pub use slot::{key_slot, SLOT_COUNT};
pub use tls::TlsFiles;
pub use topology::{TestRedis, Topology};
pub use wait::wait_until;
