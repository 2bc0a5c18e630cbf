//! Whether a consumer loop is reading: its reader connected and its last read did not fail.
//! The reader sets it; `/readyz` and [`RunningRuntime::not_ready`](crate::RunningRuntime::not_ready) read it.

use std::sync::atomic::{AtomicU8, Ordering};

const CONNECTING: u8 = 0;
const READING: u8 = 1;
const READ_FAILED: u8 = 2;
const STOPPED: u8 = 3;

/// The reader's state, shared by the loop and the runtime handle.
#[derive(Debug, Default)]
pub(crate) struct Readiness(AtomicU8);

impl Readiness {
    /// The reader is connected and its last read succeeded (or none failed yet).
    pub fn reading(&self) {
        self.set(READING);
    }

    /// The reader's last read failed (Redis unreachable, restarted, ...).
    pub fn read_failed(&self) {
        self.set(READ_FAILED);
    }

    /// The reader is (re)connecting.
    pub fn connecting(&self) {
        self.set(CONNECTING);
    }

    /// The loop stopped reading for good (shutdown).
    pub fn stopped(&self) {
        self.0.store(STOPPED, Ordering::Relaxed);
    }

    /// `None` when reading, else why not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        match self.0.load(Ordering::Relaxed) {
            READING => None,
            CONNECTING => Some("the reader is not connected to Redis"),
            READ_FAILED => Some("the reader's last read failed"),
            _ => Some("the consumer stopped"),
        }
    }

    /// Sets `state` unless the loop stopped (a store only when it changes: the reader calls
    /// this after every read).
    #[inline]
    fn set(&self, state: u8) {
        let current = self.0.load(Ordering::Relaxed);
        if current != state && current != STOPPED {
            let _ = self.0.compare_exchange(current, state, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// The readiness of every consumer loop of a runtime.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loops(std::sync::Arc<Vec<(String, std::sync::Arc<Readiness>)>>);

impl Loops {
    pub fn new(loops: Vec<(String, std::sync::Arc<Readiness>)>) -> Self {
        Loops(std::sync::Arc::new(loops))
    }

    /// Why the runtime is not ready, one reason per consumer that is not reading (each
    /// naming it); empty when every loop reads.
    pub fn reasons(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(name, r)| r.not_ready_reason().map(|why| format!("consumer {name}: {why}")))
            .collect()
    }
}
