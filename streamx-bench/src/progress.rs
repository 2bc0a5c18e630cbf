//! A progress line on stderr, redrawn with `\r` every 250 ms while a phase runs (only when
//! stderr is a terminal; otherwise each step prints one line when it ends).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Shows `label: done/total (rate/s)` until [`Progress::finish`].
pub struct Progress {
    label: String,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing the progress of `counter` towards `total`.
    pub fn start(label: impl Into<String>, total: u64, counter: Arc<AtomicU64>) -> Self {
        let label = label.into();
        let stop = Arc::new(AtomicBool::new(false));
        let task = std::io::stderr().is_terminal().then(|| {
            let (label, stop) = (label.clone(), stop.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let done = counter.load(Ordering::Relaxed);
                    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    let pct = if total > 0 { 100.0 * done as f64 / total as f64 } else { 0.0 };
                    {
                        let mut err = std::io::stderr().lock();
                        let _ = write!(err, "\r\x1b[2K{label}: {done}/{total} ({pct:.0}%, {rate:.0}/s)");
                        let _ = err.flush();
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        });
        Progress { label, stop, task }
    }

    /// Clears the line and prints `label: summary`.
    pub async fn finish(mut self, summary: &str) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
            eprint!("\r\x1b[2K");
        }
        eprintln!("{}: {summary}", self.label);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Prints a one-line note on stderr (phase headers and the like).
pub fn note(text: &str) {
    eprintln!("{text}");
}
