//! [`TestRedis`]: a throwaway Redis of either [`Topology`], so that one test body runs
//! against a single server and against a cluster ([`on_both_topologies!`]), with
//! `redis-cli` as the witness of what is in it.

use crate::cluster::RedisCluster;
use crate::error::TestingError;
use crate::redis_cli::{self, Mode};
use crate::resp;
use crate::server::RedisServer;

/// Which kind of Redis a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topology {
    /// One `redis-server`.
    Standalone,
    /// A local Redis Cluster of 3 masters without replicas.
    Cluster,
}

/// A throwaway Redis of either [`Topology`]: one [`RedisServer`], or a [`RedisCluster`] of 3
/// masters. Dropping it stops every server.
///
/// What a test checks through it goes through `redis-cli` (`$STREAMX_REDIS_CLI`, else from
/// `PATH`), in cluster mode on a cluster, so a key is read from whichever master holds it.
///
/// ```no_run
/// use streamx_testing::{TestRedis, Topology};
///
/// # fn main() -> Result<(), streamx_testing::TestingError> {
/// let redis = TestRedis::start(Topology::Cluster)?;
/// let url = redis.url(); // give it to the client under test
/// # let _ = url;
/// redis.cli(&["XADD", "orders", "*", "n", "1"])?;
/// assert_eq!(redis.xlen("orders")?, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestRedis {
    redis: Redis,
}

#[derive(Debug)]
// A test holds one; boxing the server would only add a pointer to follow.
#[allow(clippy::large_enum_variant)]
enum Redis {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    /// Starts a server, or a cluster of 3 masters, and waits until it serves.
    ///
    /// # Errors
    ///
    /// As for [`RedisServer::start`] and [`RedisCluster::start`]: a missing binary (with
    /// how to install it), a server that does not come up, a cluster that does not form.
    pub fn start(topology: Topology) -> Result<TestRedis, TestingError> {
        let redis = match topology {
            Topology::Standalone => Redis::Standalone(RedisServer::start()?),
            Topology::Cluster => Redis::Cluster(RedisCluster::start(3, 0)?),
        };
        Ok(TestRedis { redis })
    }

    /// Which kind it is.
    pub fn topology(&self) -> Topology {
        match self.redis {
            Redis::Standalone(_) => Topology::Standalone,
            Redis::Cluster(_) => Topology::Cluster,
        }
    }

    /// The URL a client connects to: [`RedisServer::url`] or [`RedisCluster::url`].
    pub fn url(&self) -> String {
        match &self.redis {
            Redis::Standalone(server) => server.url(),
            Redis::Cluster(cluster) => cluster.url(),
        }
    }

    /// Runs `redis-cli args...` (on a cluster, `-c` against a running node, following
    /// redirects) and returns what it printed, error replies included (see
    /// [`redis_cli`](crate::redis_cli)).
    ///
    /// # Errors
    ///
    /// [`TestingError::RedisCliNotFound`] without the binary;
    /// [`TestingError::RedisCliFailed`] when it fails; [`TestingError::NotRunning`] when no
    /// node runs.
    pub fn cli(&self, args: &[&str]) -> Result<String, TestingError> {
        let (port, mode) = self.cli_target(false)?;
        redis_cli::run(port, mode, args)
    }

    /// Runs `redis-cli --json args...` like [`cli`](Self::cli) and parses what it printed.
    ///
    /// # Errors
    ///
    /// As for [`cli`](Self::cli); [`TestingError::UnexpectedReply`] when the output is not
    /// JSON.
    pub fn cli_json(&self, args: &[&str]) -> Result<serde_json::Value, TestingError> {
        let (port, mode) = self.cli_target(true)?;
        let output = redis_cli::run(port, mode, args)?;
        serde_json::from_str(output.trim()).map_err(|e| TestingError::UnexpectedReply {
            port,
            command: resp::describe(args),
            reply: format!("{output:?} ({e})"),
        })
    }

    /// Runs `redis-cli args...` against every running node on its own (no redirects), e.g.
    /// `CLIENT KILL`; their outputs, in node order.
    ///
    /// # Errors
    ///
    /// As for [`cli`](Self::cli), for the first node that fails.
    pub fn cli_all(&self, args: &[&str]) -> Result<Vec<String>, TestingError> {
        self.running_nodes().map(|node| redis_cli::redis_cli(node, args)).collect()
    }

    /// The length of the stream `key` (`XLEN`; 0 when it does not exist).
    ///
    /// # Errors
    ///
    /// As for [`cli`](Self::cli); [`TestingError::UnexpectedReply`] when `key` is not a
    /// stream.
    pub fn xlen(&self, key: &str) -> Result<u64, TestingError> {
        let args = ["XLEN", key];
        let (port, mode) = self.cli_target(false)?;
        let output = redis_cli::run(port, mode, &args)?;
        output.trim().parse().map_err(|_| TestingError::UnexpectedReply {
            port,
            command: resp::describe(&args),
            reply: output.trim().to_owned(),
        })
    }

    /// The index of the master that holds `key` (into [`RedisCluster::nodes`]); 0 on a
    /// single server.
    ///
    /// # Errors
    ///
    /// As for [`RedisCluster::master_for_key`].
    pub fn master_of(&self, key: &str) -> Result<usize, TestingError> {
        match &self.redis {
            Redis::Standalone(_) => Ok(0),
            Redis::Cluster(cluster) => cluster.master_for_key(key),
        }
    }

    /// How many clients, over every running node, are blocked in `command` (lower case, as
    /// `CLIENT LIST` names it: `xreadgroup`, `xread`, `blpop`): readers waiting for entries.
    ///
    /// # Errors
    ///
    /// [`TestingError::Io`] and friends when a node does not answer `CLIENT LIST`.
    pub fn blocked_in(&self, command: &str) -> Result<usize, TestingError> {
        let cmd = format!("cmd={command}");
        let mut blocked = 0;
        for node in self.running_nodes() {
            let clients = node.call_text(&["CLIENT", "LIST"])?;
            blocked += clients.lines().filter(|client| is_blocked_in(client, &cmd)).count();
        }
        Ok(blocked)
    }

    /// How many times the running nodes have served `command` (lower case, as `INFO
    /// commandstats` names it: `xreadgroup`, `xclaim`, `evalsha`), summed over every node:
    /// what a test asserts about the round trips an operation costs.
    ///
    /// # Errors
    ///
    /// [`TestingError::Io`] and friends when a node does not answer `INFO commandstats`.
    pub fn calls_served(&self, command: &str) -> Result<u64, TestingError> {
        let prefix = format!("cmdstat_{command}:calls=");
        let mut calls = 0;
        for node in self.running_nodes() {
            let stats = node.call_text(&["INFO", "commandstats"])?;
            calls += stats
                .lines()
                .filter_map(|line| line.strip_prefix(&prefix))
                .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(calls)
    }

    fn running_nodes(&self) -> impl Iterator<Item = &RedisServer> {
        let nodes = match &self.redis {
            Redis::Standalone(server) => std::slice::from_ref(server),
            Redis::Cluster(cluster) => cluster.nodes(),
        };
        nodes.iter().filter(|node| node.is_running())
    }

    /// The port `redis-cli` talks to and how: on a cluster, the first running node, `-c`.
    fn cli_target(&self, json: bool) -> Result<(u16, Mode), TestingError> {
        match &self.redis {
            Redis::Standalone(server) => Ok((server.port(), Mode { cluster: false, json })),
            Redis::Cluster(cluster) => {
                let node = self.running_nodes().next().ok_or_else(|| TestingError::NotRunning {
                    port: cluster.nodes().first().map(RedisServer::port).unwrap_or_default(),
                })?;
                Ok((node.port(), Mode { cluster: true, json }))
            }
        }
    }
}

/// Whether the `CLIENT LIST` line `client` is blocked (flag `b`) in the command `cmd=NAME`.
fn is_blocked_in(client: &str, cmd: &str) -> bool {
    let fields = || client.split(' ');
    fields().any(|field| field == cmd)
        && fields().any(|field| field.strip_prefix("flags=").is_some_and(|flags| flags.contains('b')))
}

/// Declares, for each `async fn NAME(topology: Topology)` given, a module `NAME` with two
/// tests: `NAME::standalone` and `NAME::cluster`, each running `NAME` on a multi-threaded
/// Tokio runtime (2 workers) with that [`Topology`].
///
/// Invoke it beside the functions (they are called as `super::NAME`). The test crate needs
/// `tokio` with the `macros` and `rt-multi-thread` features.
///
/// ```no_run
/// use streamx_testing::{on_both_topologies, TestRedis, Topology};
///
/// async fn entries_land_in_the_stream(topology: Topology) {
///     let redis = TestRedis::start(topology).expect("start redis");
///     redis.cli(&["XADD", "orders", "*", "n", "1"]).expect("XADD");
///     assert_eq!(redis.xlen("orders").expect("XLEN"), 1);
/// }
///
/// on_both_topologies!(entries_land_in_the_stream);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! on_both_topologies {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                super::$name($crate::Topology::Standalone).await
            }
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                super::$name($crate::Topology::Cluster).await
            }
        }
    )*};
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    /// Checks everything a test reads through a [`TestRedis`] of `topology`.
    fn witness_reads_what_was_written(topology: Topology) {
        let redis = TestRedis::start(topology).unwrap();
        assert_eq!(redis.topology(), topology);
        let prefix = match topology {
            Topology::Standalone => "redis://127.0.0.1:",
            Topology::Cluster => "redis-cluster://127.0.0.1:",
        };
        assert!(redis.url().starts_with(prefix), "{}", redis.url());

        // Keys on every master of a cluster: redis-cli follows the redirects.
        let keys = ["orders", "payments", "{user1000}.following", "streamx"];
        for (n, key) in keys.iter().enumerate() {
            for _ in 0..=n {
                assert!(redis.cli(&["XADD", key, "*", "n", "1"]).unwrap().contains('-'));
            }
            assert_eq!(redis.xlen(key).unwrap(), n as u64 + 1, "{key}");
        }
        assert_eq!(redis.xlen("nothing-here").unwrap(), 0);
        let masters: std::collections::BTreeSet<usize> = keys.iter().map(|k| redis.master_of(k).unwrap()).collect();
        match topology {
            Topology::Standalone => assert_eq!(masters, [0].into()),
            Topology::Cluster => assert!(masters.len() > 1, "the keys sit on several masters: {masters:?}"),
        }

        redis.cli(&["SET", "plain", "v"]).unwrap();
        assert!(
            matches!(redis.xlen("plain"), Err(TestingError::UnexpectedReply { reply, .. }) if reply.starts_with("WRONGTYPE"))
        );
        let entries = redis.cli_json(&["XRANGE", "orders", "-", "+"]).unwrap();
        assert_eq!(entries[0][1], serde_json::json!(["n", "1"]), "{entries}");
        assert_eq!(redis.cli_json(&["GET", "missing"]).unwrap(), serde_json::Value::Null);

        let nodes = match topology {
            Topology::Standalone => 1,
            Topology::Cluster => 3,
        };
        let pongs = redis.cli_all(&["PING"]).unwrap();
        assert_eq!(pongs.len(), nodes);
        assert!(pongs.iter().all(|p| p.trim() == "PONG"), "{pongs:?}");

        // A client blocked in XREAD on the master of `orders`, seen on exactly one node.
        assert_eq!(redis.blocked_in("xread").unwrap(), 0);
        let port = match &redis.redis {
            Redis::Standalone(server) => server.port(),
            Redis::Cluster(cluster) => cluster.nodes()[redis.master_of("orders").unwrap()].port(),
        };
        let mut reader = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let xread = resp_command(&["XREAD", "BLOCK", "0", "STREAMS", "orders", "$"]);
        reader.write_all(&xread).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.blocked_in("xread").unwrap() != 1 {
            assert!(Instant::now() < deadline, "the XREAD client never showed as blocked");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(redis.blocked_in("xreadgroup").unwrap(), 0, "another command is not counted");
        // Ten XADDs on `orders`..`streamx` (1 + 2 + 3 + 4), counted over every node.
        assert_eq!(redis.calls_served("xadd").unwrap(), 10);
        assert_eq!(redis.calls_served("xaddx").unwrap(), 0, "only the command named");
    }

    fn resp_command(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len());
        for arg in args {
            out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        out.into_bytes()
    }

    #[test]
    fn a_standalone_server_is_witnessed_through_redis_cli() {
        witness_reads_what_was_written(Topology::Standalone);
    }

    #[test]
    fn a_cluster_is_witnessed_through_redis_cli_following_redirects() {
        witness_reads_what_was_written(Topology::Cluster);
    }
}
