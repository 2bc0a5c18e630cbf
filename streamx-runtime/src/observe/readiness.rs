//! Whether a consumer loop is reading: its reader connected and its last read did not fail,
//! and Redis refuses none of its commands. The reader sets the first, the permission watch
//! (see [`crate::permissions`]) the second; `/readyz` and
//! [`RunningRuntime::not_ready`](crate::RunningRuntime::not_ready) read them.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

const CONNECTING: u8 = 0;
const READING: u8 = 1;
const READ_FAILED: u8 = 2;
const STOPPED: u8 = 3;

/// The reader's state and the permissions refused, shared by the loop and the runtime handle.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    reader: AtomicU8,
    /// Why the consumer is not ready while Redis refuses it a command or a key.
    refused: Mutex<Option<String>>,
}

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
        self.reader.store(STOPPED, Ordering::Relaxed);
    }

    /// Redis refuses the consumer something it needs: not ready, for `reason`.
    pub fn refused(&self, reason: String) {
        *self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
    }

    /// Redis refuses the consumer nothing any more.
    pub fn permitted(&self) {
        *self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// `None` when reading and refused nothing, else why not.
    pub fn not_ready_reason(&self) -> Option<String> {
        let reader = match self.reader.load(Ordering::Relaxed) {
            READING => None,
            CONNECTING => Some("the reader is not connected to Redis"),
            READ_FAILED => Some("the reader's last read failed"),
            _ => return Some("the consumer stopped".to_string()),
        };
        let refused = self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match (refused, reader) {
            (Some(refused), Some(reader)) => Some(format!("{refused}; {reader}")),
            (Some(refused), None) => Some(refused),
            (None, reader) => reader.map(str::to_string),
        }
    }

    /// Sets `state` unless the loop stopped (a store only when it changes: the reader calls
    /// this after every read).
    #[inline]
    fn set(&self, state: u8) {
        let current = self.reader.load(Ordering::Relaxed);
        if current != state && current != STOPPED {
            let _ = self.reader.compare_exchange(current, state, Ordering::Relaxed, Ordering::Relaxed);
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

    /// Why the runtime is not ready, one reason per consumer that is not reading or is
    /// refused something (each naming it); empty when every loop reads.
    pub fn reasons(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(name, r)| r.not_ready_reason().map(|why| format!("consumer {name}: {why}")))
            .collect()
    }
}
