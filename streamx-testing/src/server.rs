//! One throwaway `redis-server`: its port, directory, options and readiness, and its
//! lifecycle (start, kill, stop, restart) on top of the process supervision in `process`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::TestingError;
use crate::process::{resolve_binary, Process};
use crate::resp::{self, Reply};
use crate::tls::TlsFiles;

/// Environment variable naming the `redis-server` binary to run.
pub const REDIS_SERVER_ENV: &str = "STREAMX_REDIS_SERVER";

/// How long a server may take to answer `PING` (and finish loading its AOF).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Start attempts on fresh ports when the chosen port turns out to be taken.
const PORT_ATTEMPTS: usize = 5;
/// Offset of the cluster bus port from the client port (fixed by Redis).
const CLUSTER_BUS_OFFSET: u16 = 10000;
/// Name of the server log inside the server directory.
const LOG_FILE: &str = "redis.log";
/// Name of a sentinel's configuration file inside its directory.
const SENTINEL_CONFIG_FILE: &str = "sentinel.conf";
/// Lines of log quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// A `redis-server` child process on a free loopback port, in its own temporary directory.
///
/// The process is killed when the value is dropped, including when a test panics, so no
/// server outlives its test. A small watchdog process also kills it if the test process
/// itself dies without unwinding (killed by a timeout or `SIGKILL`).
///
/// All methods block: starting waits until the server answers `PING` (at most 10 s). They
/// can be called from async tests too; the waits are short.
///
/// Defaults: `bind 127.0.0.1`, no RDB snapshots (`save ""`), no AOF unless
/// [`RedisServerBuilder::appendonly`] is set, `enable-debug-command local` (for `DEBUG
/// SLEEP` and friends), `repl-diskless-sync-delay 0` (replicas sync at once), log written
/// to `redis.log` in [`dir`](Self::dir).
///
/// ```no_run
/// use streamx_testing::RedisServer;
///
/// # fn main() -> Result<(), streamx_testing::TestingError> {
/// let mut server = RedisServer::builder().appendonly(true).start()?;
/// let url = server.url(); // "redis://127.0.0.1:PORT", give it to the client under test
/// # let _ = url;
/// server.kill()?; // crash it
/// server.restart()?; // same port, same data directory: the AOF is replayed
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    appendonly: bool,
    extra_args: Vec<(String, String)>,
    /// The TLS port and certificates, for a server started with `tls(true)`.
    tls: Option<(u16, TlsFiles)>,
    /// For a sentinel: its configuration file (written at start, rewritten by the sentinel).
    sentinel_config: Option<PathBuf>,
    log_path: PathBuf,
    process: Mutex<Process>,
    // Declared last so it is removed after the process is gone.
    dir: TempDir,
}

/// Configures a [`RedisServer`] before starting it; from [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct RedisServerBuilder {
    binary: Option<PathBuf>,
    port: Option<u16>,
    appendonly: bool,
    cluster_bus: bool,
    extra_args: Vec<(String, String)>,
    tls: bool,
    tls_files: Option<TlsFiles>,
    sentinel_config: Option<String>,
}

impl RedisServerBuilder {
    /// Turns on the append-only file with `appendfsync always`, so every acknowledged
    /// write survives [`RedisServer::kill`] and comes back on [`RedisServer::restart`].
    /// Default: off (no persistence at all).
    pub fn appendonly(mut self, on: bool) -> Self {
        self.appendonly = on;
        self
    }

    /// Adds a configuration option, e.g. `.arg("--maxmemory", "64mb")`; the leading `--`
    /// is optional. Options are passed after the defaults, so they override them.
    pub fn arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        let name = name.strip_prefix("--").unwrap_or(&name).to_owned();
        self.extra_args.push((name, value.into()));
        self
    }

    /// Listens on this port instead of a free one picked at random. With a fixed port a
    /// collision is an error instead of a retry on another port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Runs this `redis-server` binary. Default: `$STREAMX_REDIS_SERVER` if set, else
    /// `redis-server` from `PATH`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Also listens for TLS on a second free port ([`RedisServer::tls_port`],
    /// [`RedisServer::tls_url`]), with a CA, server and client certificate made for this
    /// server ([`RedisServer::tls_files`]): `tls-port`, `tls-cert-file`, `tls-key-file`,
    /// `tls-ca-cert-file` and `tls-auth-clients no` (override with
    /// `.arg("tls-auth-clients", "yes")` to require the client certificate). The plain port
    /// stays open on loopback for the test support itself (readiness checks, `SHUTDOWN`) and
    /// for admin commands of the test. Needs a `redis-server` built with TLS (Debian's is).
    /// Default: off.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Like [`tls`](Self::tls), with these certificates instead of new ones: servers that
    /// talk TLS to each other (replication, sentinels) share one CA.
    pub(crate) fn tls_with(mut self, files: TlsFiles) -> Self {
        self.tls = true;
        self.tls_files = Some(files);
        self
    }

    /// Runs the server as a sentinel (`redis-server sentinel.conf --sentinel`) with this
    /// configuration file text, written to `sentinel.conf` in its directory.
    pub(crate) fn sentinel(mut self, config: String) -> Self {
        self.sentinel_config = Some(config);
        self
    }

    /// Picks a port whose cluster bus port (port + 10000) is free too.
    pub(crate) fn cluster_bus(mut self, on: bool) -> Self {
        self.cluster_bus = on;
        self
    }

    /// Starts the server and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// [`TestingError::RedisServerNotFound`] if the binary is missing;
    /// [`TestingError::TlsUnsupported`] if TLS was asked for and the binary has none;
    /// [`TestingError::Exited`] or [`TestingError::NotReady`] (with the log tail) if the
    /// server does not come up; [`TestingError::Setup`] if the temporary directory or a
    /// free port cannot be had.
    pub fn start(self) -> Result<RedisServer, TestingError> {
        let binary = resolve_binary(self.binary, REDIS_SERVER_ENV, "redis-server");
        let dir = tempfile::Builder::new().prefix("streamx-redis-").tempdir().map_err(|source| {
            TestingError::Setup { what: "creating a temporary directory for redis-server".into(), source }
        })?;
        let log_path = dir.path().join(LOG_FILE);
        let tls = match (self.tls, self.tls_files) {
            (true, Some(files)) => Some((0, files)),
            (true, None) => Some((0, TlsFiles::generate(dir.path())?)),
            (false, _) => None,
        };
        let sentinel_config = match self.sentinel_config {
            Some(text) => {
                let path = dir.path().join(SENTINEL_CONFIG_FILE);
                fs::write(&path, text)
                    .map_err(|source| TestingError::Setup { what: format!("writing {}", path.display()), source })?;
                Some(path)
            }
            None => None,
        };
        let mut server = RedisServer {
            binary,
            port: 0,
            appendonly: self.appendonly,
            extra_args: self.extra_args,
            tls,
            sentinel_config,
            log_path,
            process: Mutex::new(Process::default()),
            dir,
        };
        let attempts = if self.port.is_some() { 1 } else { PORT_ATTEMPTS };
        let mut attempt = 1;
        loop {
            server.port = match self.port {
                Some(port) => port,
                None => free_port(self.cluster_bus)?,
            };
            if let Some((tls_port, _)) = server.tls.as_mut() {
                *tls_port = loop {
                    let port = free_port(false)?;
                    if port != server.port {
                        break port;
                    }
                };
            }
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(err) if attempt < attempts && is_addr_in_use(&err) => attempt += 1,
                Err(err) if server.tls.is_some() && is_tls_unsupported(&err) => {
                    return Err(TestingError::TlsUnsupported { binary: server.binary.clone() })
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl RedisServer {
    /// Starts a server with the defaults; see [`RedisServerBuilder::start`].
    ///
    /// # Errors
    ///
    /// As for [`RedisServerBuilder::start`].
    pub fn start() -> Result<RedisServer, TestingError> {
        RedisServer::builder().start()
    }

    /// A builder for a server with non-default options.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The URL clients connect to: `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// For a server started with [`RedisServerBuilder::tls`]: the URL of its TLS port,
    /// `rediss://127.0.0.1:TLS_PORT`. Clients must trust [`TlsFiles::ca_cert`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port().map(|port| format!("rediss://127.0.0.1:{port}"))
    }

    /// For a server started with [`RedisServerBuilder::tls`]: its TLS port. It stays the
    /// same across [`restart`](Self::restart).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|(port, _)| *port)
    }

    /// For a server started with [`RedisServerBuilder::tls`]: its CA, server and client
    /// certificates (PEM files in [`dir`](Self::dir)).
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|(_, files)| files)
    }

    /// The TCP port. It stays the same across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's working directory (AOF, `nodes.conf`, log). Removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log (stdout and stderr of every run, appended).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The process id, or `None` when the server is not running.
    pub fn pid(&self) -> Option<u32> {
        self.lock().pid()
    }

    /// Whether the process is alive. A server that crashed on its own reports `false`.
    pub fn is_running(&self) -> bool {
        self.lock().is_running()
    }

    /// Kills the server with `SIGKILL`, like a crash, and waits for it to exit. Writes not
    /// yet in the AOF are lost. Does nothing if it is not running.
    ///
    /// # Errors
    ///
    /// [`TestingError::Setup`] if waiting for the process fails.
    pub fn kill(&mut self) -> Result<(), TestingError> {
        let port = self.port;
        self.process_mut()
            .kill()
            .map_err(|source| TestingError::Setup { what: format!("killing redis-server on port {port}"), source })
    }

    /// Stops the server gracefully (`SHUTDOWN NOSAVE`, else `SIGTERM`) and waits for it to
    /// exit; kills it if it takes longer than 10 s. Does nothing if it is not running.
    ///
    /// # Errors
    ///
    /// [`TestingError::Setup`] if waiting for the process fails.
    pub fn stop(&mut self) -> Result<(), TestingError> {
        if !self.is_running() {
            return Ok(());
        }
        let addr = self.addr();
        // `NOW` skips waiting for lagging replicas (Redis 7+); older servers reject it.
        // A successful SHUTDOWN closes the connection without replying.
        let shutdown = |args: &[&str]| match resp::send(addr, args) {
            Ok(Reply::Error(_)) => false,
            Ok(_) => true,
            Err(err) => matches!(err.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset),
        };
        let asked = shutdown(&["SHUTDOWN", "NOSAVE", "NOW"]) || shutdown(&["SHUTDOWN", "NOSAVE"]);
        if !asked {
            self.process_mut().terminate();
        }
        if self.process_mut().wait_exit(STOP_TIMEOUT) {
            return Ok(());
        }
        self.kill()
    }

    /// Starts the server again on the same port, with the same directory and options, and
    /// waits until it answers `PING` and has finished loading its data (with AOF, the
    /// writes made before a [`kill`](Self::kill) are back). A running server is stopped
    /// first.
    ///
    /// # Errors
    ///
    /// As for [`RedisServerBuilder::start`]; a port taken by another process in the
    /// meantime gives [`TestingError::Exited`] after a few retries.
    pub fn restart(&mut self) -> Result<(), TestingError> {
        self.stop()?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.launch() {
                Err(err) if is_addr_in_use(&err) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                result => return result,
            }
        }
    }

    /// Sends one command over a fresh connection; error replies become
    /// [`TestingError::Redis`].
    pub(crate) fn call<S: AsRef<[u8]>>(&self, args: &[S]) -> Result<Reply, TestingError> {
        resp::call(self.addr(), args)
    }

    /// Sends `commands` in order over one connection, e.g. a write followed by `WAIT`
    /// (which only counts acknowledgements of its own connection's writes); the first
    /// error reply becomes [`TestingError::Redis`].
    #[cfg(test)]
    pub(crate) fn call_all<S: AsRef<[u8]>>(&self, commands: &[&[S]]) -> Result<Vec<Reply>, TestingError> {
        resp::call_all(self.addr(), commands)
    }

    /// Like [`call`](Self::call), for commands that answer with text.
    pub(crate) fn call_text<S: AsRef<[u8]>>(&self, args: &[S]) -> Result<String, TestingError> {
        resp::call_text(self.addr(), args)
    }

    fn lock(&self) -> MutexGuard<'_, Process> {
        self.process.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn process_mut(&mut self) -> &mut Process {
        self.process.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// The full argument list for `redis-server`.
    fn command_line(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(config) = &self.sentinel_config {
            // The configuration file comes first; the sentinel rewrites it as it learns.
            args.push(config.as_os_str().to_owned());
            args.push("--sentinel".into());
        }
        let mut push = |name: &str, value: OsString| {
            args.push(format!("--{name}").into());
            args.push(value);
        };
        push("port", self.port.to_string().into());
        push("bind", "127.0.0.1".into());
        push("dir", self.dir.path().as_os_str().to_owned());
        push("daemonize", "no".into());
        push("logfile", "".into());
        push("save", "".into());
        push("enable-debug-command", "local".into());
        // Replicas (cluster replicas included) sync at once instead of after 5 s.
        push("repl-diskless-sync-delay", "0".into());
        if self.appendonly {
            push("appendonly", "yes".into());
            push("appendfsync", "always".into());
        } else {
            push("appendonly", "no".into());
        }
        if let Some((tls_port, files)) = &self.tls {
            push("tls-port", tls_port.to_string().into());
            push("tls-cert-file", files.server_cert.as_os_str().to_owned());
            push("tls-key-file", files.server_key.as_os_str().to_owned());
            push("tls-ca-cert-file", files.ca_cert.as_os_str().to_owned());
            push("tls-auth-clients", "no".into());
        }
        for (name, value) in &self.extra_args {
            push(name, value.into());
        }
        args
    }

    /// Spawns the process and waits until it is ready; on failure nothing is left running.
    fn launch(&mut self) -> Result<(), TestingError> {
        let port = self.port;
        let setup = |what: &str| {
            let what = format!("{what} for redis-server on port {port}");
            move |source: io::Error| TestingError::Setup { what, source }
        };
        let mut log =
            OpenOptions::new().create(true).append(true).open(&self.log_path).map_err(setup("opening the log file"))?;
        let log_start = log.seek(SeekFrom::End(0)).map_err(setup("opening the log file"))?;
        let args = self.command_line();
        writeln!(
            log,
            "### streamx::testing: starting {} {}",
            self.binary.display(),
            args.iter().map(|a| format!("{:?}", a.to_string_lossy())).collect::<Vec<_>>().join(" ")
        )
        .map_err(setup("writing the log file"))?;
        let stderr = log.try_clone().map_err(setup("opening the log file"))?;
        let process = Process::spawn(
            Command::new(&self.binary)
                .args(&args)
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(stderr),
        )
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => TestingError::RedisServerNotFound { binary: self.binary.clone() },
            _ => TestingError::Spawn { binary: self.binary.clone(), source },
        })?;
        *self.process_mut() = process;
        let result = self.wait_ready(log_start);
        if result.is_err() {
            // Already failing: the readiness error is the one worth reporting.
            let _ = self.process_mut().kill();
        }
        result
    }

    /// Polls until the server we spawned answers `PONG` and is not loading.
    fn wait_ready(&mut self, log_start: u64) -> Result<(), TestingError> {
        let started = Instant::now();
        loop {
            let process = self.process_mut();
            if let Some(status) = process.exit_status() {
                return Err(TestingError::Exited {
                    port: self.port,
                    status,
                    log_tail: log_tail(&self.log_path, log_start),
                });
            }
            let pid = process.pid();
            let last = match self.probe(pid) {
                Ok(()) => return Ok(()),
                Err(answer) => answer,
            };
            if started.elapsed() > READY_TIMEOUT {
                return Err(TestingError::NotReady {
                    port: self.port,
                    waited: started.elapsed(),
                    last,
                    log_tail: log_tail(&self.log_path, log_start),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// One readiness probe: `Ok` when the server on our port is ours, answers `PONG` and
    /// is not loading; otherwise what it answered.
    fn probe(&self, pid: Option<u32>) -> Result<(), String> {
        match resp::send(self.addr(), &["PING"]) {
            Ok(Reply::Simple(pong)) if pong == "PONG" => {}
            Ok(other) => return Err(other.to_string()),
            Err(err) => return Err(err.to_string()),
        }
        // Another process may own the port if ours failed to bind: check the pid.
        let info = match resp::send(self.addr(), &["INFO", "server"]) {
            Ok(reply) => reply.as_text().unwrap_or_default(),
            Err(err) => return Err(err.to_string()),
        };
        let their_pid = resp::info_field(&info, "process_id").and_then(|p| p.parse().ok());
        if their_pid != pid {
            return Err(format!("port {} answered by another process (pid {their_pid:?})", self.port));
        }
        if self.sentinel_config.is_some() {
            return Ok(()); // a sentinel loads no data
        }
        let persistence = match resp::send(self.addr(), &["INFO", "persistence"]) {
            Ok(reply) => reply.as_text().unwrap_or_default(),
            Err(err) => return Err(err.to_string()),
        };
        match resp::info_field(&persistence, "loading") {
            Some("0") => Ok(()),
            other => Err(format!("loading:{}", other.unwrap_or("?"))),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Nothing useful to do with an error while dropping; the watchdog is the backstop.
        let _ = self.process_mut().kill();
    }
}

/// A loopback port nobody listens on right now (and, for cluster nodes, whose bus port
/// `port + 10000` is free too). Another process may take it before the server binds it;
/// the caller retries on that rare collision.
fn free_port(cluster_bus: bool) -> Result<u16, TestingError> {
    let mut last_error = None;
    for _ in 0..100 {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(listener) => listener,
            Err(err) => {
                last_error = Some(err);
                continue;
            }
        };
        let port = match listener.local_addr() {
            Ok(addr) => addr.port(),
            Err(err) => {
                last_error = Some(err);
                continue;
            }
        };
        if !cluster_bus {
            return Ok(port);
        }
        let bus_free = port
            .checked_add(CLUSTER_BUS_OFFSET)
            .is_some_and(|bus| TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_ok());
        if bus_free {
            return Ok(port);
        }
    }
    Err(TestingError::Setup {
        what: "finding a free loopback port".into(),
        source: last_error
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no port with a free cluster bus port")),
    })
}

/// Whether a start with TLS failed because the binary has no TLS: Redis 7.2+ and Valkey
/// log "Failed finding TLS support."; older builds refuse the `tls-port` option.
fn is_tls_unsupported(err: &TestingError) -> bool {
    matches!(err, TestingError::Exited { log_tail, .. }
        if log_tail.contains("Failed finding TLS support")
            || (log_tail.contains("tls-port") && (log_tail.contains("Bad directive") || log_tail.contains("nrecognized"))))
}

/// Whether a start failed because the port (or the cluster bus port) was taken.
fn is_addr_in_use(err: &TestingError) -> bool {
    matches!(err, TestingError::Exited { log_tail, .. } if log_tail.contains("Address already in use"))
}

/// The last lines the server wrote since `from` (a byte offset in the log).
fn log_tail(path: &Path, from: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = fs::metadata(path)?.len();
        // Enough for the last lines; Redis log lines are short.
        let start = from.max(len.saturating_sub(16 * 1024));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            if tail.is_empty() {
                "(empty log)".to_owned()
            } else {
                tail.join("\n")
            }
        }
        Err(err) => format!("(log {} unreadable: {err})", path.display()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn a_binary_without_tls_is_told_from_other_start_failures() {
        let exited = |log_tail: &str| TestingError::Exited {
            port: 1,
            status: "exit status: 1".into(),
            log_tail: log_tail.into(),
        };
        let valkey = "# Missing implement of connection type tls\n# Failed finding TLS support.\n";
        assert!(is_tls_unsupported(&exited(valkey)));
        let old =
            "*** FATAL CONFIG FILE ERROR ***\n>>> 'tls-port \"6380\"'\nBad directive or wrong number of arguments\n";
        assert!(is_tls_unsupported(&exited(old)));
        assert!(!is_tls_unsupported(&exited(
            "# Could not create server TCP listening socket *:6379: bind: Address already in use"
        )));
        assert!(!is_tls_unsupported(&exited("# Failed to configure TLS. Check logs for more info.")));
    }
    use super::*;

    fn text(server: &RedisServer, args: &[&str]) -> Option<String> {
        server.call(args).unwrap().as_text()
    }

    fn process_exists(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn handles_can_move_into_async_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<RedisServer>();
        assert_send_sync::<crate::RedisCluster>();
        assert_send_sync::<TestingError>();
    }

    #[test]
    fn starts_and_answers_ping() {
        let server = RedisServer::start().unwrap();
        assert_eq!(text(&server, &["PING"]).as_deref(), Some("PONG"));
        assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
        assert_eq!(server.addr().to_string(), format!("127.0.0.1:{}", server.port()));
        assert!(server.is_running());
        assert!(server.dir().is_dir());
        assert!(server.log_path().starts_with(server.dir()));
        let config = server.call(&["CONFIG", "GET", "dir"]).unwrap().to_string();
        assert!(config.contains("streamx-redis-"), "{config}");
    }

    #[test]
    fn drop_kills_the_server_and_removes_its_directory() {
        let server = RedisServer::start().unwrap();
        let pid = server.pid().unwrap();
        let dir = server.dir().to_owned();
        assert!(process_exists(pid));
        drop(server);
        assert!(!process_exists(pid), "redis-server {pid} survived drop");
        assert!(!dir.exists());
    }

    #[test]
    fn aof_keeps_writes_across_kill_and_restart() {
        let mut server = RedisServer::builder().appendonly(true).start().unwrap();
        let port = server.port();
        server.call(&["SET", "survivor", "still here"]).unwrap();
        server.kill().unwrap();
        assert!(!server.is_running());
        assert_eq!(server.pid(), None);
        assert!(matches!(
            server.call(&["PING"]),
            Err(TestingError::Io { port: p, .. }) if p == port
        ));
        server.restart().unwrap();
        assert_eq!(server.port(), port);
        assert_eq!(text(&server, &["GET", "survivor"]).as_deref(), Some("still here"));
    }

    #[test]
    fn stop_is_graceful_and_without_aof_data_is_gone_after_restart() {
        let mut server = RedisServer::start().unwrap();
        server.call(&["SET", "ephemeral", "1"]).unwrap();
        server.stop().unwrap();
        assert!(!server.is_running());
        server.restart().unwrap();
        assert_eq!(server.call(&["GET", "ephemeral"]).unwrap(), Reply::Bulk(None));
        // Restarting a running server stops it first.
        let before = server.pid().unwrap();
        server.restart().unwrap();
        assert_ne!(server.pid().unwrap(), before);
    }

    #[test]
    fn call_all_sends_in_order_over_one_connection() {
        let server = RedisServer::start().unwrap();
        let replies = server.call_all(&[&["CLIENT", "ID"][..], &["SET", "k", "v"][..], &["CLIENT", "ID"][..]]).unwrap();
        assert_eq!(replies[1], Reply::Simple("OK".into()));
        assert_eq!(replies[0], replies[2], "the commands went over different connections");
        let err = server.call_all(&[&["GET", "k"][..], &["INCR", "k"][..]]).unwrap_err();
        assert!(matches!(&err, TestingError::Redis { command, .. } if command == "INCR k"), "{err:?}");
    }

    #[test]
    fn missing_binary_is_reported_with_install_hint() {
        let err = RedisServer::builder().binary("/nonexistent/redis-server").start().unwrap_err();
        assert!(matches!(err, TestingError::RedisServerNotFound { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("/nonexistent/redis-server"), "{message}");
        assert!(message.contains("apt-get install redis-server"), "{message}");
        assert!(message.contains(REDIS_SERVER_ENV), "{message}");
    }

    #[test]
    fn taken_fixed_port_fails_with_the_log_tail() {
        let first = RedisServer::start().unwrap();
        let err = RedisServer::builder().port(first.port()).start().unwrap_err();
        match &err {
            TestingError::Exited { port, log_tail, .. } => {
                assert_eq!(*port, first.port());
                assert!(log_tail.contains("Address already in use"), "{log_tail}");
            }
            other => panic!("unexpected error: {other:?}"),
        }
        // The first server is untouched.
        assert_eq!(text(&first, &["PING"]).as_deref(), Some("PONG"));
    }

    #[test]
    fn bad_option_fails_with_the_log_tail() {
        let err = RedisServer::builder().arg("--no-such-option", "1").start().unwrap_err();
        match &err {
            TestingError::Exited { log_tail, .. } => {
                assert!(log_tail.contains("no-such-option"), "{log_tail}");
            }
            other => panic!("unexpected error: {other:?}"),
        }
    }

    #[test]
    fn extra_args_override_defaults() {
        let server = RedisServer::builder().arg("maxmemory", "12mb").arg("--save", "3600 1").start().unwrap();
        let maxmemory = server.call(&["CONFIG", "GET", "maxmemory"]).unwrap().to_string();
        assert!(maxmemory.contains("12582912"), "{maxmemory}");
        let save = server.call(&["CONFIG", "GET", "save"]).unwrap().to_string();
        assert!(save.contains("3600 1"), "{save}");
    }
}
