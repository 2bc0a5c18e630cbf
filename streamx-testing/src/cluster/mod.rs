//! A throwaway local Redis Cluster: nodes, topology queries, failover and resharding.
//!
//! What a node says about the cluster (`CLUSTER NODES`) is read by [`nodes`].

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod nodes;

use crate::error::TestingError;
use crate::process::resolve_binary;
use crate::redis_cli::spawn_error;
use crate::resp::{self, Reply};
use crate::server::RedisServer;
use crate::slot::{key_slot, SLOT_COUNT};
use nodes::{parse_cluster_nodes, roles, slot_map};

/// Environment variable naming the `redis-cli` binary used to create clusters.
pub const REDIS_CLI_ENV: &str = "STREAMX_REDIS_CLI";

/// Default `cluster-node-timeout`: small, so failures are detected within seconds.
const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Deadline for the cluster to form, fail over or settle after a migration.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for `redis-cli --cluster create`.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two polls of the cluster state.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Keys moved per `MIGRATE` while resharding.
const MIGRATE_BATCH: usize = 100;
/// `MIGRATE` timeout in milliseconds.
const MIGRATE_TIMEOUT_MS: &str = "10000";

/// A local Redis Cluster of [`RedisServer`] nodes, created with `redis-cli --cluster create`.
///
/// Every node runs with `cluster-enabled yes`, a `cluster-node-timeout` of 1 s (see
/// [`RedisClusterBuilder::node_timeout`]) and `cluster-replica-validity-factor 0` (a replica
/// may always take over), so failovers take a few seconds. Dropping the cluster kills every
/// node.
///
/// Nodes are addressed by their index in [`nodes`](Self::nodes). Which nodes are masters
/// is decided by `redis-cli` and changes on failover: ask
/// [`master_for_key`](Self::master_for_key) rather than assuming.
///
/// ```no_run
/// use streamx_testing::{key_slot, RedisCluster};
///
/// # fn main() -> Result<(), streamx_testing::TestingError> {
/// let mut cluster = RedisCluster::start(3, 1)?;
/// let url = cluster.url(); // "redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&..."
/// # let _ = url;
/// let old = cluster.kill_master_of("orders")?;
/// let new = cluster.wait_for_failover(key_slot("orders"))?;
/// assert_ne!(old, new);
/// cluster.node(old).restart()?; // comes back as a replica of `new`
/// cluster.wait_until_healthy()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// Configures a [`RedisCluster`]; from [`RedisCluster::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct RedisClusterBuilder {
    masters: usize,
    replicas_per_master: usize,
    appendonly: bool,
    node_timeout: Duration,
    binary: Option<PathBuf>,
    cli: Option<PathBuf>,
    extra_args: Vec<(String, String)>,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        RedisClusterBuilder {
            masters: 3,
            replicas_per_master: 0,
            appendonly: false,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            binary: None,
            cli: None,
            extra_args: Vec::new(),
        }
    }
}

impl RedisClusterBuilder {
    /// Number of masters; at least 3 (a `redis-cli` requirement). Default: 3.
    pub fn masters(mut self, masters: usize) -> Self {
        self.masters = masters;
        self
    }

    /// Replicas per master. Default: 0.
    pub fn replicas_per_master(mut self, replicas: usize) -> Self {
        self.replicas_per_master = replicas;
        self
    }

    /// AOF with `appendfsync always` on every node; see
    /// [`RedisServerBuilder::appendonly`](super::RedisServerBuilder::appendonly).
    /// Default: off.
    pub fn appendonly(mut self, on: bool) -> Self {
        self.appendonly = on;
        self
    }

    /// `cluster-node-timeout`: how long a node may be unreachable before it is considered
    /// failed. Default: 1 s.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Adds a configuration option to every node; see
    /// [`RedisServerBuilder::arg`](super::RedisServerBuilder::arg).
    pub fn arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_args.push((name.into(), value.into()));
        self
    }

    /// Runs this `redis-server` binary; see
    /// [`RedisServerBuilder::binary`](super::RedisServerBuilder::binary).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Runs this `redis-cli` binary to create the cluster. Default: `$STREAMX_REDIS_CLI` if
    /// set, else `redis-cli` from `PATH`.
    pub fn cli_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.cli = Some(path.into());
        self
    }

    /// Starts the nodes, creates the cluster and waits until every node reports
    /// `cluster_state:ok` with all 16384 slots assigned and every replica in sync.
    ///
    /// # Errors
    ///
    /// [`TestingError::InvalidTopology`] for fewer than 3 masters; any error of
    /// [`RedisServerBuilder::start`](super::RedisServerBuilder::start);
    /// [`TestingError::RedisCliNotFound`] or [`TestingError::ClusterCreate`] if
    /// `redis-cli` fails; [`TestingError::Timeout`] if the cluster does not form in 30 s.
    pub fn start(self) -> Result<RedisCluster, TestingError> {
        if self.masters < 3 {
            return Err(TestingError::InvalidTopology(format!(
                "{} masters requested; redis-cli needs at least 3",
                self.masters
            )));
        }
        let total = self.masters.checked_mul(self.replicas_per_master + 1).filter(|&n| n <= 100).ok_or_else(|| {
            TestingError::InvalidTopology(format!(
                "{} masters with {} replicas each is too many nodes",
                self.masters, self.replicas_per_master
            ))
        })?;
        // Fail fast, before starting nodes, if redis-cli is missing.
        let cli = resolve_binary(self.cli, REDIS_CLI_ENV, "redis-cli");
        Command::new(&cli)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| spawn_error(&cli, source))?;
        let node_timeout_ms = self.node_timeout.as_millis().max(1).to_string();
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            let mut builder = RedisServer::builder()
                .cluster_bus(true)
                .appendonly(self.appendonly)
                .arg("cluster-enabled", "yes")
                .arg("cluster-config-file", "nodes.conf")
                .arg("cluster-node-timeout", node_timeout_ms.as_str())
                .arg("cluster-replica-validity-factor", "0");
            if let Some(binary) = &self.binary {
                builder = builder.binary(binary.clone());
            }
            for (name, value) in &self.extra_args {
                builder = builder.arg(name.as_str(), value.as_str());
            }
            nodes.push(builder.start()?);
        }
        let cluster = RedisCluster { nodes };
        cluster.create(&cli, self.replicas_per_master)?;
        cluster.wait_healthy(Some(self.masters))?;
        Ok(cluster)
    }
}

impl RedisCluster {
    /// Starts a cluster of `masters` masters (at least 3) with `replicas_per_master`
    /// replicas each; see [`RedisClusterBuilder::start`].
    ///
    /// # Errors
    ///
    /// As for [`RedisClusterBuilder::start`].
    pub fn start(masters: usize, replicas_per_master: usize) -> Result<RedisCluster, TestingError> {
        RedisCluster::builder().masters(masters).replicas_per_master(replicas_per_master).start()
    }

    /// A builder for a cluster with non-default options.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// A URL for a cluster-mode client listing every node as a seed:
    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=127.0.0.1:P3...`, the form
    /// fred's `Config::from_url` reads.
    pub fn url(&self) -> String {
        let mut url = String::from("redis-cluster://");
        for (i, node) in self.nodes.iter().enumerate() {
            let sep = match i {
                0 => "",
                1 => "?node=",
                _ => "&node=",
            };
            let _ = write!(url, "{sep}127.0.0.1:{}", node.port());
        }
        url
    }

    /// All nodes, masters and replicas, in creation order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `index`, to kill, stop or restart it.
    ///
    /// # Panics
    ///
    /// If `index >= self.nodes().len()`, like slice indexing.
    pub fn node(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// The index of the master serving `slot`, as all running nodes agree.
    ///
    /// # Errors
    ///
    /// [`TestingError::NoMasterForSlot`] if running nodes disagree (the cluster is
    /// changing: use [`wait_for_failover`](Self::wait_for_failover) or
    /// [`wait_until_healthy`](Self::wait_until_healthy) first) or name no master;
    /// [`TestingError::Io`] and friends if a running node does not answer.
    pub fn master_for_slot(&self, slot: u16) -> Result<usize, TestingError> {
        let mut agreed: Option<Option<u16>> = None;
        let mut detail = String::new();
        let mut disagree = false;
        for node in self.running() {
            let view = parse_cluster_nodes(&node.call_text(&["CLUSTER", "NODES"])?);
            let owner = view.iter().find(|e| e.is_master() && e.serves(slot)).map(|e| e.port);
            let _ = write!(detail, "{}: {owner:?}; ", node.port());
            match agreed {
                None => agreed = Some(owner),
                Some(previous) if previous != owner => disagree = true,
                Some(_) => {}
            }
        }
        match agreed {
            Some(Some(port)) if !disagree => self.index_of_port(port).ok_or_else(|| TestingError::NoMasterForSlot {
                slot,
                detail: format!("master port {port} is not a node of this cluster"),
            }),
            None => Err(TestingError::NoMasterForSlot { slot, detail: "no node is running".into() }),
            _ => Err(TestingError::NoMasterForSlot {
                slot,
                detail: format!("views differ (node port: owner port): {detail}"),
            }),
        }
    }

    /// The index of the master serving `key` (its hash tag, if any); see
    /// [`master_for_slot`](Self::master_for_slot).
    ///
    /// # Errors
    ///
    /// As for [`master_for_slot`](Self::master_for_slot).
    pub fn master_for_key(&self, key: &str) -> Result<usize, TestingError> {
        self.master_for_slot(key_slot(key))
    }

    /// Indices of the masters serving at least one slot, in index order, as the first
    /// running node that answers sees them.
    ///
    /// # Errors
    ///
    /// The error of the last node asked if none answers.
    pub fn masters(&self) -> Result<Vec<usize>, TestingError> {
        let mut last_error = None;
        for node in self.running() {
            match node.call_text(&["CLUSTER", "NODES"]) {
                Ok(text) => {
                    let mut masters: Vec<usize> = parse_cluster_nodes(&text)
                        .iter()
                        .filter(|e| e.is_master() && !e.slots.is_empty())
                        .filter_map(|e| self.index_of_port(e.port))
                        .collect();
                    masters.sort_unstable();
                    return Ok(masters);
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or(TestingError::InvalidTopology("no node is running".into())))
    }

    /// Kills (`SIGKILL`) the master serving `key` and returns its index. Follow with
    /// [`wait_for_failover`](Self::wait_for_failover).
    ///
    /// # Errors
    ///
    /// As for [`master_for_key`](Self::master_for_key) and [`RedisServer::kill`].
    pub fn kill_master_of(&mut self, key: &str) -> Result<usize, TestingError> {
        let index = self.master_for_key(key)?;
        self.nodes[index].kill()?;
        Ok(index)
    }

    /// Waits (at most 30 s) until every running node agrees that `slot` is served by a
    /// running master and reports `cluster_state:ok`; returns that master's index.
    ///
    /// After the master of `slot` was killed, this is the moment a replica has taken over.
    /// With no replica to promote it times out.
    ///
    /// # Errors
    ///
    /// [`TestingError::Timeout`] with the last observed state.
    pub fn wait_for_failover(&self, slot: u16) -> Result<usize, TestingError> {
        self.wait_for(&format!("a running master for slot {slot}"), || {
            let owner = self.master_for_slot(slot).map_err(|e| e.to_string())?;
            if !self.nodes[owner].is_running() {
                return Err(format!("slot {slot} still served by stopped node {owner}"));
            }
            self.check_state_ok()?;
            Ok(owner)
        })
    }

    /// Waits (at most 30 s) until the running nodes report `cluster_state:ok` with all
    /// slots assigned, agree on who serves every slot, know every node, and every running
    /// replica is in sync with its master. Use it after restarting nodes.
    ///
    /// "In sync" means the replica's link is up and its full sync is done; new writes still
    /// reach it asynchronously (right after a diskless sync, the master holds them until
    /// the replica's next `REPLCONF ACK`, up to a second). To know that a write reached a
    /// replica, send `WAIT` on the connection that made the write.
    ///
    /// # Errors
    ///
    /// [`TestingError::Timeout`] with the last observed state.
    pub fn wait_until_healthy(&self) -> Result<(), TestingError> {
        self.wait_healthy(None)
    }

    /// Promotes replica `replica` with `CLUSTER FAILOVER` (a coordinated failover: its
    /// master must be running) and waits until all running nodes see it as a master.
    /// Waits for [`wait_until_healthy`](Self::wait_until_healthy) first.
    ///
    /// # Errors
    ///
    /// [`TestingError::BadNode`] if the node is not a running replica;
    /// [`TestingError::Redis`] if it refuses; [`TestingError::Timeout`].
    pub fn failover_to(&self, replica: usize) -> Result<(), TestingError> {
        let node = self.running_node(replica)?;
        // A master that does not know its replica yet would silently ignore the request.
        self.wait_until_healthy()?;
        let view = parse_cluster_nodes(&node.call_text(&["CLUSTER", "NODES"])?);
        let is_replica = view.iter().any(|e| e.has_flag("myself") && e.has_flag("slave"));
        if !is_replica {
            return Err(TestingError::BadNode { index: replica, detail: "not a replica".into() });
        }
        node.call(&["CLUSTER", "FAILOVER"])?;
        let port = node.port();
        self.wait_for(&format!("node {replica} to become a master"), || {
            for other in self.running() {
                let text = other.call_text(&["CLUSTER", "NODES"]).map_err(|e| e.to_string())?;
                let promoted =
                    parse_cluster_nodes(&text).iter().any(|e| e.port == port && e.is_master() && !e.slots.is_empty());
                if !promoted {
                    return Err(format!("node on port {} does not see it yet", other.port()));
                }
            }
            self.check_state_ok()
        })
    }

    /// Moves `slot`, with its keys, to master `to`, following the standard resharding
    /// steps: `CLUSTER SETSLOT IMPORTING` on the target, `MIGRATING` on the source,
    /// `CLUSTER GETKEYSINSLOT` + `MIGRATE` until the slot is empty, then
    /// `CLUSTER SETSLOT NODE` on the target, the source and every other master. Waits
    /// (at most 30 s) until all running nodes agree on the new owner.
    ///
    /// A failure midway leaves the slot in migrating/importing state, as a real
    /// interrupted resharding would.
    ///
    /// # Errors
    ///
    /// [`TestingError::BadNode`] if `to` is not a running master; errors of the commands
    /// involved; [`TestingError::Timeout`].
    pub fn migrate_slot(&self, slot: u16, to: usize) -> Result<(), TestingError> {
        if slot >= SLOT_COUNT {
            return Err(TestingError::InvalidTopology(format!("slot {slot} out of range 0..{SLOT_COUNT}")));
        }
        let target = self.running_node(to)?;
        let from = self.master_for_slot(slot)?;
        if from == to {
            return Ok(());
        }
        let target_view = parse_cluster_nodes(&target.call_text(&["CLUSTER", "NODES"])?);
        if !target_view.iter().any(|e| e.has_flag("myself") && e.is_master()) {
            return Err(TestingError::BadNode { index: to, detail: "not a master".into() });
        }
        let source = self.running_node(from)?;
        let source_id = source.call_text(&["CLUSTER", "MYID"])?;
        let target_id = target.call_text(&["CLUSTER", "MYID"])?;
        let slot_arg = slot.to_string();
        target.call(&["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &source_id])?;
        source.call(&["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target_id])?;
        let target_port = target.port().to_string();
        loop {
            let batch = MIGRATE_BATCH.to_string();
            let keys = match source.call(&["CLUSTER", "GETKEYSINSLOT", &slot_arg, &batch])? {
                Reply::Array(Some(items)) => items,
                other => {
                    return Err(TestingError::UnexpectedReply {
                        port: source.port(),
                        command: format!("CLUSTER GETKEYSINSLOT {slot} {batch}"),
                        reply: other.to_string(),
                    })
                }
            };
            if keys.is_empty() {
                break;
            }
            let mut migrate: Vec<Vec<u8>> = ["MIGRATE", "127.0.0.1", &target_port, "", "0", MIGRATE_TIMEOUT_MS, "KEYS"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect();
            for key in keys {
                match key {
                    Reply::Bulk(Some(key)) => migrate.push(key),
                    other => {
                        return Err(TestingError::UnexpectedReply {
                            port: source.port(),
                            command: format!("CLUSTER GETKEYSINSLOT {slot} {batch}"),
                            reply: other.to_string(),
                        })
                    }
                }
            }
            source.call(&migrate)?;
        }
        // Target first, so it owns the slot before the source starts redirecting there.
        target.call(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target_id])?;
        source.call(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target_id])?;
        for index in self.masters()? {
            if index != to && index != from {
                if let Some(node) = self.nodes.get(index).filter(|n| n.is_running()) {
                    node.call(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target_id])?;
                }
            }
        }
        self.wait_for(&format!("all nodes to see slot {slot} on node {to}"), || match self.master_for_slot(slot) {
            Ok(owner) if owner == to => Ok(()),
            Ok(owner) => Err(format!("slot {slot} still on node {owner}")),
            Err(err) => Err(err.to_string()),
        })
    }

    /// Runs `redis-cli --cluster create` over all nodes.
    fn create(&self, cli: &Path, replicas: usize) -> Result<(), TestingError> {
        let setup = |what: &str| {
            let what = what.to_owned();
            move |source: std::io::Error| TestingError::Setup { what, source }
        };
        let first = self.nodes.first().ok_or_else(|| TestingError::InvalidTopology("a cluster needs nodes".into()))?;
        let log_path = first.dir().join("cluster-create.log");
        let log = File::create(&log_path).map_err(setup("creating cluster-create.log"))?;
        let stderr = log.try_clone().map_err(setup("creating cluster-create.log"))?;
        let mut child = Command::new(cli)
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| spawn_error(cli, source))?;
        let deadline = Instant::now() + CREATE_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("timed out after {CREATE_TIMEOUT:?}"));
                }
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("wait failed: {err}"));
                }
            }
        };
        let output = read_to_string_lossy(&log_path);
        match status {
            Ok(status) if status.success() && !output.contains("[ERR]") => Ok(()),
            Ok(status) => Err(TestingError::ClusterCreate { status: status.to_string(), output }),
            Err(status) => Err(TestingError::ClusterCreate { status, output }),
        }
    }

    /// See [`wait_until_healthy`](Self::wait_until_healthy); `masters`, when given, is the
    /// expected `cluster_size`.
    fn wait_healthy(&self, masters: Option<usize>) -> Result<(), TestingError> {
        let total = self.nodes.len();
        self.wait_for("a healthy cluster", || {
            let running_ports: Vec<u16> = self.running().map(RedisServer::port).collect();
            let mut views = Vec::new();
            for node in self.running() {
                let port = node.port();
                let info = node.call_text(&["CLUSTER", "INFO"]).map_err(|e| e.to_string())?;
                let field = |name: &str| resp::info_field(&info, name).unwrap_or("?").to_owned();
                let expected = [
                    ("cluster_state", "ok".to_owned()),
                    ("cluster_slots_assigned", SLOT_COUNT.to_string()),
                    ("cluster_known_nodes", total.to_string()),
                ];
                for (name, want) in expected {
                    let got = field(name);
                    if got != want {
                        return Err(format!("node on port {port}: {name}:{got}"));
                    }
                }
                if let Some(masters) = masters {
                    let got = field("cluster_size");
                    if got != masters.to_string() {
                        return Err(format!("node on port {port}: cluster_size:{got}"));
                    }
                }
                let replication = node.call_text(&["INFO", "replication"]).map_err(|e| e.to_string())?;
                if resp::info_field(&replication, "role") == Some("slave") {
                    let link = resp::info_field(&replication, "master_link_status");
                    if link != Some("up") {
                        return Err(format!("replica on port {port}: master_link_status:{}", link.unwrap_or("?")));
                    }
                }
                let nodes = node.call_text(&["CLUSTER", "NODES"]).map_err(|e| e.to_string())?;
                let view = parse_cluster_nodes(&nodes);
                if let Some(failing) =
                    view.iter().find(|e| (e.has_flag("fail") || e.has_flag("fail?")) && running_ports.contains(&e.port))
                {
                    return Err(format!("node on port {port} flags running node {} as failing", failing.port));
                }
                views.push((port, slot_map(&view), roles(&view)));
            }
            // Every node must know who serves what and who replicates whom: a master that
            // does not yet know its replica ignores its CLUSTER FAILOVER, for one.
            if let Some((first_port, first_slots, first_roles)) = views.first() {
                let differs = |(_, s, r): &&(u16, _, _)| s != first_slots || r != first_roles;
                if let Some((port, ..)) = views.iter().find(differs) {
                    return Err(format!("nodes on ports {first_port} and {port} see different topologies"));
                }
            }
            Ok(())
        })
    }

    /// Checks that every running node reports `cluster_state:ok`.
    fn check_state_ok(&self) -> Result<(), String> {
        for node in self.running() {
            let info = node.call_text(&["CLUSTER", "INFO"]).map_err(|e| e.to_string())?;
            let state = resp::info_field(&info, "cluster_state").unwrap_or("?");
            if state != "ok" {
                return Err(format!("node on port {}: cluster_state:{state}", node.port()));
            }
        }
        Ok(())
    }

    /// Polls `check` until it succeeds or [`CLUSTER_TIMEOUT`] passes.
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Result<T, String>) -> Result<T, TestingError> {
        let started = Instant::now();
        loop {
            match check() {
                Ok(value) => return Ok(value),
                Err(last) if started.elapsed() > CLUSTER_TIMEOUT => {
                    return Err(TestingError::Timeout { what: what.to_owned(), waited: started.elapsed(), last })
                }
                Err(_) => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    fn running_node(&self, index: usize) -> Result<&RedisServer, TestingError> {
        match self.nodes.get(index) {
            Some(node) if node.is_running() => Ok(node),
            Some(_) => Err(TestingError::BadNode { index, detail: "not running".into() }),
            None => Err(TestingError::BadNode {
                index,
                detail: format!("out of range: the cluster has {} nodes", self.nodes.len()),
            }),
        }
    }

    fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }
}

fn read_to_string_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) => format!("({} unreadable: {err})", path.display()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn moved_port(reply: Result<Reply, TestingError>) -> u16 {
        match reply {
            Err(TestingError::Redis { message, .. }) if message.starts_with("MOVED ") => {
                message.rsplit(':').next().unwrap().parse().unwrap()
            }
            other => panic!("expected a MOVED error, got {other:?}"),
        }
    }

    #[test]
    fn three_masters_route_keys_and_migrate_a_slot() {
        let cluster = RedisCluster::start(3, 0).unwrap();
        assert_eq!(cluster.nodes().len(), 3);
        assert_eq!(cluster.masters().unwrap(), vec![0, 1, 2]);
        let ports: Vec<u16> = cluster.nodes().iter().map(RedisServer::port).collect();
        assert_eq!(
            cluster.url(),
            format!("redis-cluster://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}", ports[0], ports[1], ports[2])
        );

        let keys = ["foo", "bar", "{user1000}.following", "orders", "a{b}c", "x{}y", "streamx"];
        for key in keys {
            let server_slot = match cluster.nodes()[0].call(&["CLUSTER", "KEYSLOT", key]).unwrap() {
                Reply::Integer(n) => u16::try_from(n).unwrap(),
                other => panic!("{other:?}"),
            };
            assert_eq!(key_slot(key), server_slot, "{key}");
            let owner = cluster.master_for_key(key).unwrap();
            // The owner accepts the key; every other master redirects to the owner.
            cluster.nodes()[owner].call(&["SET", key, "v"]).unwrap();
            for (i, node) in cluster.nodes().iter().enumerate() {
                if i != owner {
                    assert_eq!(moved_port(node.call(&["GET", key])), ports[owner], "{key}");
                }
            }
        }

        // Resharding: move the slot of "foo" (and its key) to another master.
        let slot = key_slot("foo");
        let from = cluster.master_for_key("foo").unwrap();
        let to = (from + 1) % 3;
        cluster.nodes()[from].call(&["SET", "{foo}:second", "w"]).unwrap();
        cluster.migrate_slot(slot, to).unwrap();
        assert_eq!(cluster.master_for_slot(slot).unwrap(), to);
        let target = &cluster.nodes()[to];
        assert_eq!(target.call(&["GET", "foo"]).unwrap(), Reply::Bulk(Some(b"v".to_vec())));
        assert_eq!(target.call(&["GET", "{foo}:second"]).unwrap(), Reply::Bulk(Some(b"w".to_vec())));
        assert_eq!(moved_port(cluster.nodes()[from].call(&["GET", "foo"])), ports[to]);
        cluster.wait_until_healthy().unwrap();
        // Moving to the current owner is a no-op; a bad index is an error.
        cluster.migrate_slot(slot, to).unwrap();
        assert!(matches!(cluster.migrate_slot(slot, 7), Err(TestingError::BadNode { index: 7, .. })));
    }

    #[test]
    fn replica_takes_over_a_killed_master() {
        let mut cluster = RedisCluster::start(3, 1).unwrap();
        assert_eq!(cluster.nodes().len(), 6);
        assert_eq!(cluster.masters().unwrap().len(), 3);
        let key = "{failover}:key";
        let old = cluster.master_for_key(key).unwrap();
        // Make sure the replica has the write before the crash. WAIT must run on the
        // connection that wrote: it waits for the replicas to reach that connection's last
        // write offset, and a fresh connection has none, so there it returns 1 at once even
        // while the master still holds the write back (after a diskless full sync the
        // master may start streaming to a replica only at its next REPLCONF ACK, up to a
        // second later).
        let replies = cluster.nodes()[old].call_all(&[&["SET", key, "kept"][..], &["WAIT", "1", "5000"][..]]).unwrap();
        assert_eq!(replies, vec![Reply::Simple("OK".into()), Reply::Integer(1)]);

        assert_eq!(cluster.kill_master_of(key).unwrap(), old);
        let new = cluster.wait_for_failover(key_slot(key)).unwrap();
        assert_ne!(new, old);
        assert_eq!(cluster.nodes()[new].call(&["GET", key]).unwrap(), Reply::Bulk(Some(b"kept".to_vec())));

        // The old master comes back as a replica; a coordinated failover promotes it again.
        cluster.node(old).restart().unwrap();
        cluster.wait_until_healthy().unwrap();
        assert!(!cluster.masters().unwrap().contains(&old));
        cluster.failover_to(old).unwrap();
        assert_eq!(cluster.master_for_key(key).unwrap(), old);
        // Only replicas can be promoted.
        assert!(matches!(
            cluster.failover_to(old),
            Err(TestingError::BadNode { index, .. }) if index == old
        ));
    }

    #[test]
    fn missing_redis_cli_is_reported_before_starting_nodes() {
        let err = RedisCluster::builder().cli_binary("/nonexistent/redis-cli").start().unwrap_err();
        assert!(matches!(err, TestingError::RedisCliNotFound { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("/nonexistent/redis-cli"), "{message}");
        assert!(message.contains(REDIS_CLI_ENV), "{message}");
    }

    #[test]
    fn failing_redis_cli_is_reported_with_its_status() {
        // `false --version` and `false --cluster create ...` both exit 1.
        let err = RedisCluster::builder().cli_binary("false").start().unwrap_err();
        match err {
            TestingError::ClusterCreate { status, .. } => assert!(status.contains('1'), "{status}"),
            other => panic!("unexpected error: {other:?}"),
        }
    }

    #[test]
    fn rejects_too_few_masters() {
        let err = RedisCluster::start(2, 0).unwrap_err();
        assert!(matches!(err, TestingError::InvalidTopology(_)), "{err}");
    }
}
