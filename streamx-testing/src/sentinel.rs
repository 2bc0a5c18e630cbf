//! A throwaway Redis Sentinel deployment: a master, its replicas and the sentinels that
//! watch them, with helpers to fail over and to crash the master.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::TestingError;
use crate::resp::{self, Reply};
use crate::server::RedisServer;
use crate::tls::TlsFiles;

/// Deadline for the deployment to settle, and for a failover to complete.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two polls of the deployment's state.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Default `down-after-milliseconds`: how long the master may not answer before a
/// sentinel considers it down.
const DEFAULT_DOWN_AFTER: Duration = Duration::from_millis(1000);
/// Default `failover-timeout`.
const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default name of the monitored service.
const DEFAULT_SERVICE_NAME: &str = "streamx";

/// A local Redis Sentinel deployment: one master, its replicas (1 by default) and three
/// sentinels, each a [`RedisServer`] on its own free loopback port, in its own temporary
/// directory, killed when the value is dropped.
///
/// The sentinels monitor the master under [`service_name`](Self::service_name) with a
/// quorum of a majority, `down-after-milliseconds 1000` and `failover-timeout 5000`, so a
/// failover takes a few seconds. Starting waits until every sentinel agrees on the master
/// and sees every replica in sync and the other sentinels.
///
/// The data nodes are addressed by their index in [`nodes`](Self::nodes): node 0 is the
/// first master; which node is the master changes on failover, so ask
/// [`master`](Self::master) rather than assuming.
///
/// ```no_run
/// use streamx_testing::RedisSentinel;
///
/// # fn main() -> Result<(), streamx_testing::TestingError> {
/// let mut sentinel = RedisSentinel::start()?;
/// // "redis-sentinel://127.0.0.1:S1?sentinelServiceName=streamx&node=127.0.0.1:S2&node=..."
/// let url = sentinel.url();
/// # let _ = url;
/// let old = sentinel.master_addr()?;
/// let new = sentinel.failover()?; // SENTINEL FAILOVER, waits until it is done
/// assert_ne!(old, sentinel.nodes()[new].addr());
/// sentinel.kill_master()?; // a crash: the sentinels elect the replica
/// sentinel.wait_for_failover()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisSentinel {
    service: String,
    nodes: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    // Declared last so it is removed after the servers are gone.
    tls: Option<(TlsFiles, TempDir)>,
}

/// Configures a [`RedisSentinel`]; from [`RedisSentinel::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct RedisSentinelBuilder {
    replicas: usize,
    sentinels: usize,
    service: String,
    down_after: Duration,
    failover_timeout: Duration,
    binary: Option<PathBuf>,
    node_args: Vec<(String, String)>,
    user: Option<(String, String)>,
    sentinel_user: Option<(String, String)>,
    tls: bool,
}

impl Default for RedisSentinelBuilder {
    fn default() -> Self {
        RedisSentinelBuilder {
            replicas: 1,
            sentinels: 3,
            service: DEFAULT_SERVICE_NAME.to_owned(),
            down_after: DEFAULT_DOWN_AFTER,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            binary: None,
            node_args: Vec::new(),
            user: None,
            sentinel_user: None,
            tls: false,
        }
    }
}

impl RedisSentinelBuilder {
    /// Replicas of the master; at least 1 (a failover needs one). Default: 1.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Number of sentinels; at least 1. The quorum is a majority of them. Default: 3.
    pub fn sentinels(mut self, sentinels: usize) -> Self {
        self.sentinels = sentinels;
        self
    }

    /// The name the sentinels monitor the master under (`sentinelServiceName` in the URL).
    /// Default: `streamx`.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service = name.into();
        self
    }

    /// `down-after-milliseconds`: how long the master may not answer before it is
    /// considered down. Default: 1 s.
    pub fn down_after(mut self, after: Duration) -> Self {
        self.down_after = after;
        self
    }

    /// `failover-timeout`. Default: 5 s.
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.failover_timeout = timeout;
        self
    }

    /// Runs this `redis-server` binary for every node and sentinel; see
    /// [`RedisServerBuilder::binary`](super::RedisServerBuilder::binary).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Adds a configuration option to every data node (not the sentinels); see
    /// [`RedisServerBuilder::arg`](super::RedisServerBuilder::arg).
    pub fn arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        let name = name.strip_prefix("--").unwrap_or(&name).to_owned();
        self.node_args.push((name, value.into()));
        self
    }

    /// Creates the ACL user `username` with every permission on each data node; the
    /// replicas (`masteruser`, `masterauth`) and the sentinels (`sentinel auth-user`,
    /// `auth-pass`) authenticate with it. The `default` user stays open, for the test
    /// support's own probes. Default: none.
    pub fn user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((username.into(), password.into()));
        self
    }

    /// Creates the ACL user `username` with every permission on each sentinel, and the
    /// sentinels authenticate to each other with it (`sentinel sentinel-user`,
    /// `sentinel-pass`); clients give it as `sentinelUsername` and `sentinelPassword`. The
    /// `default` user stays open, for the test support's own probes. Default: none.
    pub fn sentinel_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.sentinel_user = Some((username.into(), password.into()));
        self
    }

    /// Every node and sentinel also listens for TLS, with certificates of one CA made at
    /// test time ([`RedisSentinel::tls_files`]), and they talk to each other over TLS
    /// (`tls-replication yes`): the sentinels name the TLS ports, and
    /// [`RedisSentinel::url`] is a `rediss-sentinel://` URL of the sentinels' TLS ports.
    /// Clients must trust [`TlsFiles::ca_cert`]. The plain ports stay open on loopback for
    /// the test support's probes. Needs a `redis-server` built with TLS. Default: off.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Starts the master, the replicas and the sentinels, and waits (at most 60 s) until
    /// [`wait_until_healthy`](RedisSentinel::wait_until_healthy) holds.
    ///
    /// # Errors
    ///
    /// [`TestingError::InvalidTopology`] for no replica or no sentinel;
    /// [`TestingError::TlsUnsupported`] if TLS was asked for and the binary has none; any
    /// error of
    /// [`RedisServerBuilder::start`](super::RedisServerBuilder::start);
    /// [`TestingError::Timeout`] if the deployment does not settle.
    pub fn start(self) -> Result<RedisSentinel, TestingError> {
        if self.replicas == 0 || self.sentinels == 0 || self.replicas > 16 || self.sentinels > 16 {
            return Err(TestingError::InvalidTopology(format!(
                "{} replicas and {} sentinels requested; 1 to 16 of each are possible",
                self.replicas, self.sentinels
            )));
        }
        let tls = match self.tls {
            true => {
                let dir = tempfile::Builder::new().prefix("streamx-sentinel-tls-").tempdir().map_err(|source| {
                    TestingError::Setup { what: "creating a temporary directory for certificates".into(), source }
                })?;
                Some((TlsFiles::generate(dir.path())?, dir))
            }
            false => None,
        };
        let with_tls = |builder: crate::RedisServerBuilder| match &tls {
            Some((files, _)) => builder.tls_with(files.clone()).arg("tls-replication", "yes"),
            None => builder,
        };
        let node = |replica_of: Option<u16>| {
            let mut builder = with_tls(RedisServer::builder());
            if let Some(binary) = &self.binary {
                builder = builder.binary(binary.clone());
            }
            if let Some((user, password)) = &self.user {
                builder = builder.arg("masteruser", user.as_str()).arg("masterauth", password.as_str());
            }
            if let Some(port) = replica_of {
                builder = builder.arg("replicaof", format!("127.0.0.1 {port}"));
            }
            for (name, value) in &self.node_args {
                builder = builder.arg(name.as_str(), value.as_str());
            }
            let server = builder.start()?;
            // Before the next node starts: a replica authenticates to its master with it.
            if let Some((user, password)) = &self.user {
                create_user(&server, user, password, &["~*", "&*", "+@all"])?;
            }
            Ok::<_, TestingError>(server)
        };
        let master = node(None)?;
        let master_port = announced_port(&master);
        let mut nodes = vec![master];
        for _ in 0..self.replicas {
            nodes.push(node(Some(master_port))?);
        }
        let config = self.sentinel_config(master_port);
        let mut sentinels = Vec::with_capacity(self.sentinels);
        for _ in 0..self.sentinels {
            let mut builder = with_tls(RedisServer::builder().sentinel(config.clone()));
            if let Some(binary) = &self.binary {
                builder = builder.binary(binary.clone());
            }
            let sentinel = builder.start()?;
            if let Some((user, password)) = &self.sentinel_user {
                create_user(&sentinel, user, password, &["&*", "+@all"])?;
            }
            sentinels.push(sentinel);
        }
        let deployment = RedisSentinel { service: self.service, nodes, sentinels, tls };
        deployment.wait_until_healthy()?;
        Ok(deployment)
    }

    /// The text of each sentinel's `sentinel.conf`.
    fn sentinel_config(&self, master_port: u16) -> String {
        let service = &self.service;
        let quorum = self.sentinels / 2 + 1;
        let mut lines = vec![
            format!("sentinel monitor {service} 127.0.0.1 {master_port} {quorum}"),
            format!("sentinel down-after-milliseconds {service} {}", self.down_after.as_millis().max(1)),
            format!("sentinel failover-timeout {service} {}", self.failover_timeout.as_millis().max(1)),
            format!("sentinel parallel-syncs {service} {}", self.replicas),
        ];
        if let Some((user, password)) = &self.user {
            lines.push(format!("sentinel auth-user {service} {user}"));
            lines.push(format!("sentinel auth-pass {service} {password}"));
        }
        if let Some((user, password)) = &self.sentinel_user {
            lines.push(format!("sentinel sentinel-user {user}"));
            lines.push(format!("sentinel sentinel-pass {password}"));
        }
        lines.join("\n") + "\n"
    }
}

impl RedisSentinel {
    /// Starts a master with one replica and three sentinels; see
    /// [`RedisSentinelBuilder::start`].
    ///
    /// # Errors
    ///
    /// As for [`RedisSentinelBuilder::start`].
    pub fn start() -> Result<RedisSentinel, TestingError> {
        RedisSentinel::builder().start()
    }

    /// A builder for a deployment with non-default options.
    pub fn builder() -> RedisSentinelBuilder {
        RedisSentinelBuilder::default()
    }

    /// The URL clients connect with: every sentinel, and the service name,
    /// `redis-sentinel://127.0.0.1:S1?sentinelServiceName=NAME&node=127.0.0.1:S2&...`; with
    /// [`tls`](RedisSentinelBuilder::tls), `rediss-sentinel://` and the TLS ports.
    pub fn url(&self) -> String {
        let mut sentinels = self.sentinels.iter().map(announced_port);
        let first = sentinels.next().unwrap_or_default();
        let scheme = if self.tls.is_some() { "rediss-sentinel" } else { "redis-sentinel" };
        let mut url = format!("{scheme}://127.0.0.1:{first}?sentinelServiceName={}", self.service);
        for port in sentinels {
            url.push_str(&format!("&node=127.0.0.1:{port}"));
        }
        url
    }

    /// For a deployment started with [`tls`](RedisSentinelBuilder::tls): the CA (shared by
    /// every node and sentinel), server and client certificates.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|(files, _)| files)
    }

    /// The name the sentinels monitor the master under.
    pub fn service_name(&self) -> &str {
        &self.service
    }

    /// The data nodes (master and replicas), in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Data node `index`, mutably, e.g. to kill or restart it.
    ///
    /// # Panics
    ///
    /// If `index` is out of range.
    pub fn node(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// The sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// Sentinel `index`, mutably, e.g. to kill it.
    ///
    /// # Panics
    ///
    /// If `index` is out of range.
    pub fn sentinel(&mut self, index: usize) -> &mut RedisServer {
        &mut self.sentinels[index]
    }

    /// The master's address as the running sentinels report it (`SENTINEL
    /// GET-MASTER-ADDR-BY-NAME`), when they all agree: with
    /// [`tls`](RedisSentinelBuilder::tls), its TLS port.
    ///
    /// # Errors
    ///
    /// [`TestingError::NotRunning`] if no sentinel runs; [`TestingError::UnexpectedReply`]
    /// if they disagree (a failover is under way) or a reply cannot be read; errors of the
    /// commands.
    pub fn master_addr(&self) -> Result<SocketAddr, TestingError> {
        let mut agreed: Option<SocketAddr> = None;
        for sentinel in self.running_sentinels() {
            let addr = self.master_addr_of(sentinel)?;
            match agreed {
                Some(previous) if previous != addr => {
                    return Err(TestingError::UnexpectedReply {
                        port: sentinel.port(),
                        command: format!("SENTINEL GET-MASTER-ADDR-BY-NAME {}", self.service),
                        reply: format!("{addr}, while another sentinel reports {previous}"),
                    })
                }
                _ => agreed = Some(addr),
            }
        }
        agreed.ok_or(TestingError::NotRunning { port: self.sentinels.first().map_or(0, RedisServer::port) })
    }

    /// The index in [`nodes`](Self::nodes) of the master the sentinels agree on.
    ///
    /// # Errors
    ///
    /// As for [`master_addr`](Self::master_addr); [`TestingError::BadNode`] if the address
    /// is not one of the nodes.
    pub fn master(&self) -> Result<usize, TestingError> {
        let addr = self.master_addr()?;
        self.nodes
            .iter()
            .position(|n| announced_port(n) == addr.port())
            .ok_or_else(|| TestingError::BadNode { index: usize::MAX, detail: format!("{addr} is not a data node") })
    }

    /// Asks a sentinel for a failover (`SENTINEL FAILOVER`: the master is demoted without
    /// the agreement of the others, even though it is up) and waits (at most 60 s) until
    /// the sentinels report a new master and the deployment is healthy again, the old
    /// master a replica of the new one. Returns the new master's index. Waits for
    /// [`wait_until_healthy`](Self::wait_until_healthy) first.
    ///
    /// # Errors
    ///
    /// [`TestingError::Redis`] if the sentinel refuses for a reason other than a replica
    /// not yet good enough; [`TestingError::Timeout`].
    pub fn failover(&self) -> Result<usize, TestingError> {
        self.wait_until_healthy()?;
        let old = self.master()?;
        let service = self.service.clone();
        // A sentinel refuses (-NOGOODSLAVE) while its view of the replicas is not fresh
        // enough, and (-INPROG) while an earlier failover runs: ask again.
        self.wait_for("a sentinel to accept SENTINEL FAILOVER", || {
            let sentinel = self.running_sentinels().next().ok_or("no sentinel runs")?;
            match resp::send(sentinel.addr(), &["SENTINEL", "FAILOVER", service.as_str()]) {
                Ok(Reply::Simple(_)) => Ok(()),
                Ok(Reply::Error(e)) if e.starts_with("NOGOODSLAVE") || e.starts_with("INPROG") => Err(e),
                Ok(Reply::Error(e)) => Err(format!("fatal: {e}")),
                Ok(other) => Err(format!("fatal: unexpected reply {other}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .map_err(|err| match err {
            TestingError::Timeout { last, .. } if last.starts_with("fatal: ") => TestingError::Redis {
                port: self.sentinels[0].port(),
                command: format!("SENTINEL FAILOVER {service}"),
                message: last["fatal: ".len()..].to_owned(),
            },
            other => other,
        })?;
        self.wait_for_new_master(old)
    }

    /// Kills the master with `SIGKILL`, like a crash, and returns its index. The sentinels
    /// notice after `down-after-milliseconds` and elect a replica: wait for it with
    /// [`wait_for_failover`](Self::wait_for_failover).
    ///
    /// # Errors
    ///
    /// As for [`master`](Self::master); [`TestingError::Setup`] if killing fails.
    pub fn kill_master(&mut self) -> Result<usize, TestingError> {
        let master = self.master()?;
        self.nodes[master].kill()?;
        Ok(master)
    }

    /// After the master was killed ([`kill_master`](Self::kill_master)): waits (at most
    /// 60 s) until the sentinels agree on a running master and its running replicas are in
    /// sync. Returns the new master's index.
    ///
    /// # Errors
    ///
    /// [`TestingError::Timeout`] with the last observed state.
    pub fn wait_for_failover(&self) -> Result<usize, TestingError> {
        self.wait_for("the sentinels to agree on a running master", || {
            let master = self.master().map_err(|e| e.to_string())?;
            match self.nodes[master].is_running() {
                true => self.check_healthy(),
                false => Err(format!("the sentinels still report the stopped node {master}")),
            }
        })?;
        self.master()
    }

    /// Waits (at most 60 s) until every running sentinel reports the same master, flagged
    /// neither down nor failing over, knows the other running sentinels and sees every
    /// other running data node as a replica in sync; and the master reports those replicas
    /// connected. Use it after restarting nodes.
    ///
    /// # Errors
    ///
    /// [`TestingError::Timeout`] with the last observed state.
    pub fn wait_until_healthy(&self) -> Result<(), TestingError> {
        self.wait_for("the sentinels to agree on the master and see its replicas", || self.check_healthy())
    }

    fn wait_for_new_master(&self, old: usize) -> Result<usize, TestingError> {
        let old_port = self.nodes[old].port();
        self.wait_for("the sentinels to report a new master", || {
            let master = self.master().map_err(|e| e.to_string())?;
            if master == old {
                return Err(format!("the sentinels still report node {old} (port {old_port})"));
            }
            self.check_healthy()?;
            Ok(())
        })?;
        self.master()
    }

    /// `Ok` when the deployment is healthy (see [`wait_until_healthy`]); else what is not.
    fn check_healthy(&self) -> Result<(), String> {
        let master = self.master().map_err(|e| e.to_string())?;
        let master_node = &self.nodes[master];
        if !master_node.is_running() {
            return Err(format!("master node {master} is not running"));
        }
        let master_port = announced_port(master_node);
        let replicas: Vec<&RedisServer> =
            self.nodes.iter().filter(|n| n.is_running() && n.port() != master_node.port()).collect();
        let sentinels = self.running_sentinels().count();
        for sentinel in self.running_sentinels() {
            let port = sentinel.port();
            let fields =
                map_reply(&sentinel.call(&["SENTINEL", "MASTER", self.service.as_str()]).map_err(|e| e.to_string())?);
            let flags = fields.get("flags").map(String::as_str).unwrap_or("?");
            if flags != "master" {
                return Err(format!("sentinel {port} flags the master {flags}"));
            }
            let others = fields.get("num-other-sentinels").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
            if others + 1 < sentinels {
                return Err(format!("sentinel {port} knows {others} other sentinels"));
            }
            let listed = sentinel.call(&["SENTINEL", "REPLICAS", self.service.as_str()]).map_err(|e| e.to_string())?;
            let listed: Vec<HashMap<String, String>> = match &listed {
                Reply::Array(Some(items)) => items.iter().map(map_reply).collect(),
                other => return Err(format!("sentinel {port}: SENTINEL REPLICAS answered {other}")),
            };
            for replica in &replicas {
                let replica = announced_port(replica);
                let seen = listed.iter().any(|r| {
                    r.get("port").and_then(|p| p.parse::<u16>().ok()) == Some(replica)
                        && r.get("flags").is_some_and(|f| f == "slave")
                        && r.get("master-link-status").is_some_and(|s| s == "ok")
                        && r.get("master-port").and_then(|p| p.parse::<u16>().ok()) == Some(master_port)
                });
                if !seen {
                    return Err(format!("sentinel {port} does not see replica {replica} in sync yet"));
                }
            }
        }
        let info = master_node.call_text(&["INFO", "replication"]).map_err(|e| e.to_string())?;
        if resp::info_field(&info, "role") != Some("master") {
            return Err(format!("node on port {} is not a master yet", master_node.port()));
        }
        for replica in &replicas {
            let info = replica.call_text(&["INFO", "replication"]).map_err(|e| e.to_string())?;
            let following = resp::info_field(&info, "master_port").and_then(|p| p.parse::<u16>().ok());
            if following != Some(master_port) || resp::info_field(&info, "master_link_status") != Some("up") {
                return Err(format!("node on port {} is not in sync with port {master_port}", replica.port()));
            }
        }
        Ok(())
    }

    fn master_addr_of(&self, sentinel: &RedisServer) -> Result<SocketAddr, TestingError> {
        let command = ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service.as_str()];
        let reply = sentinel.call(&command)?;
        let unexpected = || TestingError::UnexpectedReply {
            port: sentinel.port(),
            command: resp::describe(&command),
            reply: reply.to_string(),
        };
        let Reply::Array(Some(items)) = &reply else { return Err(unexpected()) };
        let (Some(ip), Some(port)) = (items.first().and_then(Reply::as_text), items.get(1).and_then(Reply::as_text))
        else {
            return Err(unexpected());
        };
        let ip: Ipv4Addr = ip.parse().map_err(|_| unexpected())?;
        let port: u16 = port.parse().map_err(|_| unexpected())?;
        Ok(SocketAddr::from((ip, port)))
    }

    fn running_sentinels(&self) -> impl Iterator<Item = &RedisServer> {
        self.sentinels.iter().filter(|s| s.is_running())
    }

    fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Result<T, String>) -> Result<T, TestingError> {
        let started = Instant::now();
        loop {
            match check() {
                Ok(value) => return Ok(value),
                Err(last) if started.elapsed() > SENTINEL_TIMEOUT || last.starts_with("fatal: ") => {
                    return Err(TestingError::Timeout { what: what.to_owned(), waited: started.elapsed(), last })
                }
                Err(_) => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }
}

/// The port a server is known by to the others: its TLS port if it has one.
fn announced_port(server: &RedisServer) -> u16 {
    server.tls_port().unwrap_or(server.port())
}

/// `ACL SETUSER user on >password rules...` (a user with spaces in its name or password
/// cannot be given on the command line).
fn create_user(server: &RedisServer, user: &str, password: &str, rules: &[&str]) -> Result<(), TestingError> {
    let password = format!(">{password}");
    let mut command = vec!["ACL", "SETUSER", user, "on", password.as_str()];
    command.extend_from_slice(rules);
    server.call(&command).map(drop)
}

/// A flat `[name, value, name, value, ...]` reply (`SENTINEL MASTER`) as a map.
fn map_reply(reply: &Reply) -> HashMap<String, String> {
    let Reply::Array(Some(items)) = reply else { return HashMap::new() };
    items.chunks(2).filter_map(|pair| Some((pair.first()?.as_text()?, pair.get(1)?.as_text()?))).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn starts_fails_over_and_survives_a_crashed_master() {
        let mut sentinel = RedisSentinel::start().unwrap();
        assert_eq!(sentinel.master().unwrap(), 0);
        assert_eq!(sentinel.master_addr().unwrap(), sentinel.nodes()[0].addr());
        let url = sentinel.url();
        assert!(url.starts_with("redis-sentinel://127.0.0.1:") && url.contains("sentinelServiceName=streamx"), "{url}");
        assert_eq!(url.matches("&node=127.0.0.1:").count(), 2, "{url}");

        sentinel.nodes()[0].call(&["SET", "k", "before"]).unwrap();
        let promoted = sentinel.failover().unwrap();
        assert_eq!(promoted, 1);
        assert_eq!(sentinel.master_addr().unwrap(), sentinel.nodes()[1].addr());
        // The old master follows the new one, with the data.
        let info = sentinel.nodes()[0].call_text(&["INFO", "replication"]).unwrap();
        assert_eq!(resp::info_field(&info, "role"), Some("slave"), "{info}");
        assert_eq!(sentinel.nodes()[1].call_text(&["GET", "k"]).unwrap(), "before");

        let killed = sentinel.kill_master().unwrap();
        assert_eq!(killed, 1);
        assert_eq!(sentinel.wait_for_failover().unwrap(), 0);
        sentinel.node(1).restart().unwrap();
        sentinel.wait_until_healthy().unwrap();
    }

    #[test]
    fn a_deployment_without_replicas_is_refused() {
        let err = RedisSentinel::builder().replicas(0).start().unwrap_err();
        assert!(matches!(err, TestingError::InvalidTopology(_)), "{err:?}");
    }
}
