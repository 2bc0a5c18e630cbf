//! The workload both sides run: the message type, the clock stamped into it, and the
//! names of the keys a run creates (so it can delete them).

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The message: about 100 bytes of JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// When it was published, in ns since the Unix epoch (0 when not timed).
    pub sent_ns: u64,
    pub kind: String,
    pub user: String,
    pub amount_cents: i64,
}

impl Event {
    pub fn new(seq: u64) -> Self {
        Event {
            seq,
            sent_ns: 0,
            kind: "order.created".to_string(),
            user: format!("user-{:08}", seq % 100_000_000),
            amount_cents: (seq % 100_000) as i64 * 7 + 1999,
        }
    }
}

/// `n` events numbered from `first`.
pub fn events(first: u64, n: u64) -> Vec<Event> {
    (first..first + n).map(Event::new).collect()
}

/// A large message (the memory-large phase): a sequence number and a string of filler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blob {
    pub seq: u64,
    pub data: String,
}

/// The JSON of blob `seq`, `bytes` long (give or take the digits of `seq`).
pub fn blob_json(seq: u64, bytes: usize) -> Vec<u8> {
    let head = format!("{{\"seq\":{seq},\"data\":\"");
    let mut json = Vec::with_capacity(bytes.max(head.len() + 2));
    json.extend_from_slice(head.as_bytes());
    json.resize(bytes.saturating_sub(2).max(head.len()), b'x');
    json.extend_from_slice(b"\"}");
    json
}

/// Size of a typical encoded event, for the report.
pub fn typical_payload_bytes() -> usize {
    serde_json::to_vec(&Event { sent_ns: 1_234_567_890, ..Event::new(123_456) }).map_or(0, |v| v.len())
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The shared clock of latency stamps: nanoseconds since the first call in this process.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Unique key names for one run, remembered so they can all be deleted at the end.
pub struct Keys {
    prefix: String,
    created: Mutex<Vec<String>>,
    groups: Mutex<u64>,
}

impl Keys {
    pub fn new() -> Self {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Keys {
            prefix: format!("streamx-bench:{}-{millis}", std::process::id()),
            created: Mutex::new(Vec::new()),
            groups: Mutex::new(0),
        }
    }

    /// A fresh stream name; it (and its default dead-letter stream) will be deleted.
    pub fn stream(&self, what: &str) -> String {
        let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
        let name = format!("{}:{what}:{}", self.prefix, created.len());
        created.push(name.clone());
        created.push(streamx::keys::default_dead_letter_stream(&name));
        name
    }

    /// A fresh stream name of letters, digits, `.`, `_` and `-` only (the stream keys
    /// SeaStreamer accepts); it will be deleted.
    pub fn plain_stream(&self, what: &str) -> String {
        let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
        let name = format!("{}.{what}.{}", self.prefix, created.len()).replace(':', ".");
        created.push(name.clone());
        name
    }

    /// A fresh group name.
    pub fn group(&self, what: &str) -> String {
        let mut n = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        *n += 1;
        format!("{what}-{n}")
    }

    /// Glob patterns matching every key of this run, including the ones the streamx
    /// engine derives from a stream name (`{stream}:retries:<group>` and the like).
    pub fn patterns(&self) -> [String; 2] {
        [format!("{}:*", self.prefix), format!("{{{}:*", self.prefix)]
    }

    /// Every key created so far.
    pub fn all(&self) -> Vec<String> {
        self.created.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
