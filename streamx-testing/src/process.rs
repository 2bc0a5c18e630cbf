//! Supervision of one child process (a `redis-server`): spawning it with a watchdog,
//! noticing that it exited, asking it to stop, killing and reaping it; and finding the
//! binaries to run.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Pause between two checks whether the child has exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The running child, if any, and the watchdog that kills it if this process dies.
///
/// The child is reaped as soon as it is seen to have exited, and the watchdog goes with
/// it: a reaped child's pid may be reused, and nothing may kill the new owner.
#[derive(Debug, Default)]
pub(crate) struct Process {
    child: Option<Child>,
    watchdog: Option<Child>,
}

impl Process {
    /// Spawns `command` and a watchdog that kills it if this process dies without cleaning
    /// up (killed by a timeout or `SIGKILL`). A missing watchdog (no `sh`) is tolerated:
    /// dropping the owner of the process still kills it.
    pub(crate) fn spawn(command: &mut Command) -> io::Result<Process> {
        let child = command.spawn()?;
        let watchdog = spawn_watchdog(child.id());
        Ok(Process { child: Some(child), watchdog })
    }

    /// The child's pid while it runs; `None` once it has exited (or was never started).
    pub(crate) fn pid(&mut self) -> Option<u32> {
        match self.exit_status() {
            None => self.child.as_ref().map(Child::id),
            Some(_) => None,
        }
    }

    /// Whether the child is alive. One that exited on its own is noticed here.
    pub(crate) fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// `None` while the child runs; once it has exited (or if there is none), how it ended,
    /// for error messages. An exited child is reaped and forgotten.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        let status = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => return None,
            Some(Ok(Some(status))) => describe_status(status),
            Some(Err(err)) => format!("unknown: {err}"),
            None => "not started".to_owned(),
        };
        self.forget();
        Some(status)
    }

    /// Asks the child to stop with `SIGTERM`. Best effort: if the `kill` command is
    /// missing, nothing happens, and the caller's deadline falls back to [`kill`](Self::kill).
    pub(crate) fn terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Waits up to `timeout` for the child to exit; `true` if it has (or none was running).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(EXIT_POLL_INTERVAL);
        }
    }

    /// `SIGKILL` and reap. Does nothing if no child runs. The watchdog goes first: once the
    /// child is reaped its pid may be reused, and the watchdog must not be around to kill it.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        self.stop_watchdog();
        if let Some(mut child) = self.child.take() {
            if let Err(err) = child.kill() {
                // InvalidInput: it had already exited; waiting below reaps it.
                if err.kind() != io::ErrorKind::InvalidInput {
                    self.child = Some(child);
                    return Err(err);
                }
            }
            if let Err(err) = child.wait() {
                self.child = Some(child);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Drops an exited (reaped) child, and its watchdog so it cannot kill a reused pid.
    fn forget(&mut self) {
        self.child = None;
        self.stop_watchdog();
    }

    fn stop_watchdog(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// Starts `sh` waiting on a pipe from this process: when this process dies without
/// cleaning up, the pipe closes, `read` returns and the child `pid` is killed.
fn spawn_watchdog(pid: u32) -> Option<Child> {
    Command::new("sh")
        .args(["-c", r#"read _line; kill -KILL "$1" 2>/dev/null"#, "streamx-redis-watchdog"])
        .arg(pid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// The binary to run: explicit choice, else the environment variable `env` if set and
/// not empty, else `default` from `PATH`.
pub(crate) fn resolve_binary(explicit: Option<PathBuf>, env: &str, default: &str) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os(env).filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(default))
}

/// How a process ended, for error messages: `exit status: 1`, `killed by signal 9`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn sleeper() -> Process {
        Process::spawn(Command::new("sleep").arg("60").stdin(Stdio::null())).unwrap()
    }

    fn process_exists(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn kill_ends_and_reaps_the_child_and_its_watchdog() {
        let mut process = sleeper();
        let pid = process.pid().unwrap();
        let watchdog = process.watchdog.as_ref().map(Child::id).unwrap();
        assert!(process.is_running());
        process.kill().unwrap();
        assert!(!process.is_running());
        assert_eq!(process.pid(), None);
        // Reaped, so no zombie is left behind either.
        assert!(!process_exists(pid), "child {pid} survived kill");
        assert!(!process_exists(watchdog), "watchdog {watchdog} survived kill");
        // Killing again is a no-op.
        process.kill().unwrap();
    }

    #[test]
    fn a_child_that_exits_on_its_own_is_noticed_with_its_status() {
        let mut process = Process::spawn(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = process.exit_status() {
                break status;
            }
            assert!(Instant::now() < deadline, "the child did not exit");
            std::thread::sleep(EXIT_POLL_INTERVAL);
        };
        assert_eq!(status, "exit status: 3");
        assert!(!process.is_running());
        assert_eq!(process.pid(), None);
        assert!(process.wait_exit(Duration::ZERO));
        assert_eq!(Process::default().exit_status().as_deref(), Some("not started"));
    }

    #[test]
    fn terminate_asks_the_child_to_stop() {
        let mut process = sleeper();
        process.terminate();
        assert!(process.wait_exit(DEADLINE), "SIGTERM did not stop the child");
    }

    #[test]
    fn the_watchdog_kills_the_child_when_its_pipe_closes() {
        // What happens when the test process dies: its end of the pipe closes.
        let mut process = sleeper();
        let watchdog_stdin = process.watchdog.as_mut().and_then(|w| w.stdin.take());
        drop(watchdog_stdin.unwrap());
        assert!(process.wait_exit(DEADLINE), "the watchdog did not kill the child");
    }

    #[test]
    fn binaries_come_from_the_explicit_choice_then_the_environment_then_path() {
        let unset = "STREAMX_TESTING_TEST_SURELY_UNSET";
        assert_eq!(resolve_binary(None, unset, "redis-server"), PathBuf::from("redis-server"));
        assert_eq!(resolve_binary(Some("/x/redis".into()), unset, "redis-server"), PathBuf::from("/x/redis"));
        // PATH is set in any test environment.
        let path = std::env::var_os("PATH").unwrap();
        assert_eq!(resolve_binary(None, "PATH", "redis-server"), PathBuf::from(path));
    }
}
