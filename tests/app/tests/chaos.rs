//! Chaos: messages with mixed behaviours (success, transient failures, failures on every
//! attempt, permanent failures, panics, poison entries) consumed by three `worker`
//! processes that are SIGKILLed and restarted at random every 0.8–2.4 s (at least ten
//! SIGKILLs a run), while Redis (AOF, `appendfsync always`) is SIGKILLed and restarted once
//! mid-run. Three variants, one per `max_retries` (1, 2 and 3: registrations `chaos_r1`,
//! `chaos`, `chaos_r3`), 8,000 messages each (more are published while fewer than ten
//! SIGKILLs have struck), run one after the other. Every attempt logs its start and its end
//! to `app.chaos.log`; an attempt whose log write fails returns a retryable error and notes
//! the failure in its process's journal file. At the end, each message's history is checked
//! against what the recorded faults can explain.
//!
//! Run with: `cargo test -p streamx-test-app --test chaos -- --nocapture` (one variant:
//! add its test's name, e.g. `chaos_max_retries_3`)
//!
//! - `STREAMX_CHAOS_SEED=<n>` replays a run's plans and fault schedule (the seed is printed;
//!   the interleaving with the workers is up to the machine).
//! - `STREAMX_CHAOS_SOAK_SECS=<s>` soaks: chaos goes on for that long, more messages are
//!   published whenever the backlog runs low, and Redis is restarted every 10–30 s.
//! - `STREAMX_CHAOS_KEEP=1` keeps the worker logs, journals and `explained.txt` (the
//!   histories a fault explained, and the faults) of a run that passed.
//!
//! # What the faults may explain
//!
//! The engine counts handler *runs that are known to have started*, not deliveries, against
//! `max_retries + 1`, and a handler sees that count as its attempt number:
//!
//! - a fresh read is attempt 1; a run that fails is parked in the retry schedule keeping its
//!   count, and its promotion runs it at the next attempt number;
//! - a take-over of a stopped member's entries keeps their count (the member may never
//!   have started them): the taker runs them at the *same* attempt number, and marks them
//!   until they settle;
//! - if a member dies holding marked entries, each becomes a suspect and is run *alone* by
//!   a taker, still at the same attempt number; if that taker dies while holding it, the
//!   message crashed its worker: the next taker dead-letters it as `delivery_limit` without
//!   running it, with the runs known to have started as `dlq:deliveries`: the attempt number
//!   it ran alone at.
//!
//! A message's runs are taken in the order they started (times are Redis's, from the log
//! entry ids, and the test's clock for the faults, on one machine); each has the attempt
//! number its handler saw. A delivery that left no trace (fetched or claimed by a process
//! killed before it ran the handler, a reply lost in the Redis restart) changes no count and
//! is not seen. Walking the runs in order:
//!
//! - the first run is attempt 1;
//! - a run must not begin while the previous one is still going (judged by its start): the
//!   member that holds it is alive, so nobody may take it over. Only the Redis restart
//!   excuses that, for a process that was connected when Redis went down (no heartbeat gets
//!   through while Redis is down);
//! - a run's result is *lost* when it started and never ended and its process was SIGKILLed,
//!   or it ended and its process was SIGKILLed before the next run and within `claim_idle`
//!   of the end (later, its ack or retry would have landed), or the Redis restart struck
//!   while it ran or its result was in flight. A run whose result was lost is run again at
//!   the *same* attempt number: a SIGKILL raises no count;
//! - otherwise the result counts: a retryable error (a planned failure, a panic, a log write
//!   that failed) is followed by a run at the *next* attempt number (or by its dead letter,
//!   after attempt max_retries + 1), a final result (success, permanent error) by no run at
//!   all. A second successful end is legitimate only after a lost result;
//! - a run with a start and no end must belong to a process that was SIGKILLed;
//! - the end state must match the last run: acknowledged (not pending, not dead) only after
//!   a successful run; dead-lettered exactly once with the kind it calls for: `permanent`
//!   after a permanent error (counting its attempt), `panic` after a panic at attempt
//!   max_retries + 1, `error` after a planned failure or a failed log write at that attempt,
//!   `invalid_json` for poison (never run); no run starts after the dead-letter move and none
//!   has a higher attempt than `dlq:deliveries` (unless the Redis restart cost a lease);
//! - `delivery_limit` only after a run alone that crashed its worker. The log cannot tell
//!   that a run ran alone; what it can check: `dlq:deliveries` is a, where
//!   a ≤ max_retries + 1 is the attempt of the last run (or the attempt a retryable last run
//!   leads to, or 1 for a message with no run: a run alone whose process was killed before
//!   its start record landed); every run at attempt a lost its result to a fault (the rules
//!   above, and for the last run, before the dead letter); a worker was SIGKILLed after the
//!   last start and at least `claim_idle` / 2 before the dead letter (a taker must judge the
//!   one that ran it alone stopped first); and at least three workers died since the message
//!   reached attempt a (the member that held it, the taker that held it as a take-over, the
//!   taker that ran it alone). The Redis restart stands in for those SIGKILLs when it
//!   struck in the same time (a live member may be judged stopped in it).
//!
//! So a message that should succeed may end dead-lettered only as `delivery_limit` after a
//! run alone that a SIGKILL cut (or as `error` when a log write failed at its last
//! attempt), and may be dead-lettered after a successful run only when that success's ack
//! was lost to a fault; no message is dead-lettered as `delivery_limit` otherwise, whether
//! it started fewer than max_retries + 1 times or not. A message may start more than
//! max_retries + 1 times, but only by runs whose results a fault cut. Also: no attempt
//! number outside 1..=max_retries + 1, no run overlaps another run of its message, XPENDING
//! counts 0 at the end, every published id is acknowledged after a successful run or in the
//! dead-letter stream, no worker exits unless it was killed or told to stop, and each run
//! saw ten SIGKILLs and a Redis restart.
//!
//! *Stalls* explain nothing: a silence of the log of 500 ms or more, outside the Redis
//! restart, across which a run was under way (handlers work at most 400 ms, so its end
//! record was held up) says that Redis, the machine or a worker stopped serving. A member
//! whose heartbeats cannot get through for `claim_idle` may then be judged stopped while
//! alive, which the rules above do not allow: violations near a stall say so, and the
//! summary shows what Redis's latency monitor recorded (an `aof-fsync-always` event means a
//! stall was Redis waiting for its disk).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{sigterm, spawn_worker_logged};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use streamx::testing::{redis_cli, RedisServer};
use streamx::{DeadLetter, DeadLetters, FailureKind, History, Inspector, MessageId, Producer, PublishOptions};

const LOG: &str = "app.chaos.log";
const GROUP: &str = "chaos";
/// Messages published at the start of a default run.
const MESSAGES: u64 = 8_000;
/// A default run goes on (publishing [`TOP_UP`] more messages whenever fewer than
/// [`TOP_UP_BELOW`] are left) until this many SIGKILLs have struck.
const MIN_KILLS: usize = 10;
const TOP_UP: u64 = 2_000;
const TOP_UP_BELOW: usize = 1_000;
/// Pause between two SIGKILLs, in ms.
const KILL_EVERY_MS: (u64, u64) = (800, 2_400);
const WORKERS: usize = 3;
/// The longest pause between reconnection attempts of streamx's clients (see
/// `connection::build_client`: fred's exponential policy, 100 ms doubling to 5 s, plus up to
/// 50 ms of jitter per attempt).
const RECONNECT_CAP: u64 = 5_000;
/// `claim_idle` of the registrations, in ms. A member is judged stopped only once its
/// published deadline (its last heartbeat plus `claim_idle`; one every `claim_idle` / 3) has
/// passed and it has been silent in Redis that long: a dead member's entries are taken
/// over no sooner than ~2/3 of this after its death. A successful run's ack goes out at once,
/// so a fault only explains a lost result if it struck within this time of the run's end.
const CLAIM_IDLE: u64 = 1_000;
/// Slack between the test's clock (a SIGKILL's time, taken just before it) and Redis's (a
/// start record in flight when the signal landed is stamped after it).
const CLOCK_SLACK: u64 = 50;
/// Default run: chaos stops after this, then the workers get a calm period to finish.
const CHAOS_LIMIT: Duration = Duration::from_secs(60);
/// Default run: give up waiting for every message to be accounted for after this.
const DEADLINE: Duration = Duration::from_secs(90);

/// Each variant runs three workers and its own Redis: one at a time, on CI's two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One registration of the worker's chaos consumer.
#[derive(Debug, Clone, Copy)]
struct Variant {
    registration: &'static str,
    stream: &'static str,
    max_retries: u32,
}

impl Variant {
    /// max_retries + 1: the most runs whose results count.
    fn max_runs(self) -> u32 {
        self.max_retries + 1
    }
}

#[test]
fn chaos_max_retries_1() {
    run_variant(Variant { registration: "chaos_r1", stream: "app.chaos.r1", max_retries: 1 });
}

#[test]
fn chaos_max_retries_2() {
    run_variant(Variant { registration: "chaos", stream: "app.chaos", max_retries: 2 });
}

#[test]
fn chaos_max_retries_3() {
    run_variant(Variant { registration: "chaos_r3", stream: "app.chaos.r3", max_retries: 3 });
}

fn run_variant(variant: Variant) {
    // A variant that failed (panicked holding the lock) must not stop the others.
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(chaos(variant));
}

/// What a chaos job's handler does on each attempt (the worker's `Behaviour`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Behaviour {
    Ok,
    FailUntil(u32),
    Permanent,
    Panic,
}

#[derive(Debug, Serialize)]
struct ChaosJob {
    n: u64,
    behaviour: Behaviour,
    sleep_ms: u64,
}

/// What the test expects of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Run(Behaviour),
    /// Invalid JSON, published raw: dead-lettered as `invalid_json` without a run.
    Poison,
}

impl Plan {
    /// The outcome a run of this plan logs on `attempt`.
    fn outcome_at(self, attempt: u32) -> Option<Outcome> {
        match self {
            Plan::Run(Behaviour::Ok) => Some(Outcome::Ok),
            Plan::Run(Behaviour::FailUntil(n)) if attempt <= n => Some(Outcome::Fail),
            Plan::Run(Behaviour::FailUntil(_)) => Some(Outcome::Ok),
            Plan::Run(Behaviour::Permanent) => Some(Outcome::Permanent),
            Plan::Run(Behaviour::Panic) => Some(Outcome::Panic),
            Plan::Poison => None,
        }
    }

    /// Whether it succeeds within `max_runs` counted runs.
    fn should_succeed(self, max_runs: u32) -> bool {
        match self {
            Plan::Run(Behaviour::Ok) => true,
            Plan::Run(Behaviour::FailUntil(n)) => n < max_runs,
            _ => false,
        }
    }

    fn label(self, max_runs: u32) -> &'static str {
        match self {
            Plan::Run(Behaviour::Ok) => "ok",
            Plan::Run(Behaviour::FailUntil(n)) if n < max_runs => "fail_then_ok",
            Plan::Run(Behaviour::FailUntil(_)) => "fail_every_time",
            Plan::Run(Behaviour::Permanent) => "permanent",
            Plan::Run(Behaviour::Panic) => "panic",
            Plan::Poison => "poison",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Ok,
    Fail,
    Permanent,
    Panic,
}

/// A record of `app.chaos.log` (the worker's `ChaosRecord`).
#[derive(Debug, Deserialize)]
struct LogRecord {
    id: String,
    attempt: u32,
    pid: u32,
    run: u64,
    phase: String,
    outcome: Option<Outcome>,
}

/// SplitMix64: small, seedable, good enough to pick plans and a fault schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")))
}

// ---------------------------------------------------------------------------------------
// Faults

/// A worker process that died: SIGKILLed by the test, or found dead (`crashed`).
#[derive(Debug, Clone)]
struct Death {
    pid: u32,
    /// Unix ms just before the SIGKILL (for a crash: when it was noticed).
    at_ms: u64,
    crashed: bool,
}

/// Redis SIGKILLed at `down_ms`, answering again at `up_ms`.
#[derive(Debug, Clone)]
struct Outage {
    down_ms: u64,
    up_ms: u64,
}

impl Outage {
    /// By then every client that lost its connection has reconnected. The delay before
    /// reconnection attempt k is 100 ms × 2^(k-1) plus up to 50 ms of jitter, so each attempt
    /// comes at most (time since the disconnect + 150 ms) after the previous one: the first
    /// attempt after `up_ms` is at most `up_ms - down_ms` + 150 ms later (capped at
    /// `RECONNECT_CAP`); 150 ms more for connecting.
    fn recovered_ms(&self) -> u64 {
        let down_for = self.up_ms - self.down_ms;
        self.up_ms + RECONNECT_CAP.min(down_for + 150) + 150
    }
}

#[derive(Debug, Default)]
struct Faults {
    /// Unix ms when the test started: times in reports are relative to it.
    origin_ms: u64,
    /// When each worker process was started.
    born: HashMap<u32, u64>,
    deaths: Vec<Death>,
    outages: Vec<Outage>,
    /// Stalls read from the log after the run (see [`stalls`]): not injected, and they
    /// explain nothing; a violation near one says so, for whoever looks into it.
    stalls: Vec<(u64, u64)>,
}

impl Faults {
    /// A stall overlapping `[t0, t1]`.
    fn stall_near(&self, t0: u64, t1: u64) -> Option<(u64, u64)> {
        self.stalls.iter().copied().find(|(a, b)| *a <= t1 && *b >= t0)
    }

    /// When `pid` died, if it died at or before `t`.
    fn dead_by(&self, pid: u32, t: u64) -> Option<u64> {
        self.deaths.iter().find(|d| d.pid == pid && d.at_ms <= t).map(|d| d.at_ms)
    }

    fn died(&self, pid: u32) -> bool {
        self.deaths.iter().any(|d| d.pid == pid)
    }

    /// How many workers died within `[t0, t1]`.
    fn deaths_within(&self, t0: u64, t1: u64) -> usize {
        self.deaths.iter().filter(|d| (t0..=t1).contains(&d.at_ms)).count()
    }

    /// A worker was SIGKILLed within `[t0, t1]`.
    fn killed_within(&self, t0: u64, t1: u64) -> bool {
        self.deaths.iter().any(|d| !d.crashed && (t0..=t1).contains(&d.at_ms))
    }

    /// A Redis outage (until every client is back) overlaps `[t0, t1]`.
    fn outage_within(&self, t0: u64, t1: u64) -> bool {
        self.outages.iter().any(|o| o.down_ms <= t1 && o.recovered_ms() >= t0)
    }

    /// A Redis outage could have cost the lease or the result of a run of `pid` from `start`
    /// to `end`: the process was connected when Redis went down (a process started later
    /// never lost a connection), the run had not ended `CLAIM_IDLE` before (its ack would
    /// have landed), and it started before every client was back, or within `CLAIM_IDLE`
    /// after (a delivery that waited for a permit across the outage starts late).
    fn outage_during_run(&self, pid: u32, start: u64, end: u64) -> bool {
        let born = self.born.get(&pid).copied().unwrap_or(u64::MAX);
        self.outages
            .iter()
            .any(|o| born < o.down_ms && o.down_ms <= end + CLAIM_IDLE && o.recovered_ms() + CLAIM_IDLE >= start)
    }
}

// ---------------------------------------------------------------------------------------
// What the workers recorded

/// One handler run of a message, in one process.
#[derive(Debug, Clone)]
struct Run {
    pid: u32,
    run: u64,
    id: MessageId,
    attempt: u32,
    start_ms: Option<u64>,
    end: Option<(u64, Outcome)>,
    /// The journal says this log write failed (`start` or `end`), at this time.
    log_failed: Option<(String, u64)>,
}

impl Run {
    fn new(pid: u32, run: u64, id: MessageId, attempt: u32) -> Self {
        Run { pid, run, id, attempt, start_ms: None, end: None, log_failed: None }
    }

    /// When it ran (its start record, else its journal note or end record).
    fn anchor(&self) -> u64 {
        self.start_ms.or(self.log_failed.as_ref().map(|(_, at)| *at)).or(self.end.map(|(at, _)| at)).unwrap_or(0)
    }

    /// When it returned (its end record or journal note), if it did.
    fn finished(&self) -> Option<u64> {
        self.log_failed.as_ref().map(|(_, at)| *at).or(self.end.map(|(at, _)| at))
    }

    fn fate(&self) -> Fate {
        if self.log_failed.is_some() {
            Fate::Retryable
        } else if let Some((_, outcome)) = self.end {
            match outcome {
                Outcome::Fail | Outcome::Panic => Fate::Retryable,
                Outcome::Ok | Outcome::Permanent => Fate::Final(outcome),
            }
        } else {
            Fate::Interrupted
        }
    }

    /// One line, times in ms since `origin`.
    fn describe(&self, origin: u64) -> String {
        let end = match (self.end, &self.log_failed) {
            (_, Some((phase, _))) => format!("{phase} log write failed"),
            (Some((_, outcome)), None) => format!("{outcome:?}"),
            (None, None) => "no end".to_string(),
        };
        let at = |t: Option<u64>| t.map_or("?".to_string(), |t| (t as i64 - origin as i64).to_string());
        format!(
            "attempt {} by {}#{} [{}..{}] {end}",
            self.attempt,
            self.pid,
            self.run,
            at(self.start_ms),
            at(self.finished())
        )
    }
}

/// How a run ended, as far as the engine should act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// It returned a retryable error (a planned failure, a panic, a failed log write).
    Retryable,
    /// It returned a final result: success (acknowledge) or permanent error (dead-letter).
    Final(Outcome),
    /// It started and never ended.
    Interrupted,
}

/// Reads what the workers logged and what was dead-lettered, incrementally.
struct Observer {
    stream: &'static str,
    history: History,
    dead_letters: DeadLetters,
    inspector: Inspector,
    log_after: Option<MessageId>,
    dead_after: Option<MessageId>,
    runs: HashMap<(u32, u64), Run>,
    succeeded: HashSet<MessageId>,
    dead: HashMap<MessageId, Vec<DeadLetter>>,
    pending: Option<u64>,
    strange: Vec<String>,
}

impl Observer {
    async fn connect(url: &str, stream: &'static str) -> Self {
        let (history, dead_letters, inspector) = Self::clients(url, stream).await.unwrap();
        Observer {
            stream,
            history,
            dead_letters,
            inspector,
            log_after: None,
            dead_after: None,
            runs: HashMap::new(),
            succeeded: HashSet::new(),
            dead: HashMap::new(),
            pending: None,
            strange: Vec::new(),
        }
    }

    async fn clients(url: &str, stream: &str) -> Result<(History, DeadLetters, Inspector), streamx::Error> {
        let dlq = streamx::keys::dead_letter_stream(stream, &streamx::DeadLetterTarget::Default).unwrap();
        Ok((History::connect(url).await?, DeadLetters::connect(url, &dlq).await?, Inspector::connect(url).await?))
    }

    /// New connections, after Redis restarted (a client may give up routing).
    async fn reconnect(&mut self, url: &str) -> Result<(), streamx::Error> {
        (self.history, self.dead_letters, self.inspector) = Self::clients(url, self.stream).await?;
        Ok(())
    }

    /// Reads the log and the dead letters added since the last poll, and the PEL size.
    async fn poll(&mut self) -> Result<(), streamx::Error> {
        let from = self.log_after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut log = self.history.read_paged::<LogRecord>(LOG, (from, Bound::Unbounded), 2000);
        while let Some(item) = log.next().await {
            let msg = item?;
            self.log_after = Some(msg.id());
            let at = msg.id().millis();
            self.record(at, msg.into_payload());
        }
        loop {
            let page = self.dead_letters.list(self.dead_after, 1000).await?;
            for letter in page.entries {
                self.dead_after = Some(letter.id);
                match letter.origin_id {
                    Some(origin) => self.dead.entry(origin).or_default().push(letter),
                    None => self.strange.push(format!("dead letter {} without dlq:id", letter.id)),
                }
            }
            if page.next.is_none() {
                break;
            }
        }
        self.pending = self.inspector.group(self.stream, GROUP).await?.map(|g| g.pending);
        Ok(())
    }

    fn record(&mut self, at: u64, r: LogRecord) {
        let Ok(id) = r.id.parse::<MessageId>() else {
            self.strange.push(format!("log record with a bad id: {r:?}"));
            return;
        };
        let run = self.runs.entry((r.pid, r.run)).or_insert_with(|| Run::new(r.pid, r.run, id, r.attempt));
        if run.id != id || run.attempt != r.attempt {
            self.strange.push(format!("run {}/{} logged for two deliveries: {run:?} and {r:?}", r.pid, r.run));
            return;
        }
        match (r.phase.as_str(), r.outcome) {
            ("start", None) if run.start_ms.is_none() => run.start_ms = Some(at),
            ("end", Some(outcome)) if run.end.is_none() => {
                run.end = Some((at, outcome));
                if outcome == Outcome::Ok {
                    self.succeeded.insert(id);
                }
            }
            _ => self.strange.push(format!("unexpected or repeated log record {r:?} for {run:?}")),
        }
    }

    /// Adds the journal notes (`<pid>.journal`: run, id, attempt, phase, at, error).
    fn read_journals(&mut self, dir: &Path) -> usize {
        let mut notes = 0;
        for file in std::fs::read_dir(dir).unwrap() {
            let path = file.unwrap().path();
            let Some(pid) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let f: Vec<&str> = line.splitn(6, '\t').collect();
                let parsed = (f.len() == 6)
                    .then(|| {
                        Some((f[0].parse::<u64>().ok()?, f[1].parse().ok()?, f[2].parse().ok()?, f[4].parse().ok()?))
                    })
                    .flatten();
                let Some((run, id, attempt, at)) = parsed else {
                    // A process killed while writing its journal leaves a partial line.
                    self.strange.push(format!("unreadable journal line in {}: {line:?}", path.display()));
                    continue;
                };
                let entry = self.runs.entry((pid, run)).or_insert_with(|| Run::new(pid, run, id, attempt));
                entry.log_failed = Some((f[3].to_string(), at));
                notes += 1;
            }
        }
        notes
    }
}

// ---------------------------------------------------------------------------------------
// The fault driver

struct Chaos {
    url: String,
    registration: &'static str,
    dir: PathBuf,
    server: RedisServer,
    workers: Vec<Child>,
    /// The stderr file of each worker in `workers`.
    logs: Vec<PathBuf>,
    last_spawn: Instant,
    spawned: usize,
    faults: Faults,
    rng: Rng,
    /// What Redis's latency monitor recorded (see [`Chaos::read_latency`]).
    latency: Vec<String>,
}

impl Chaos {
    /// Starts worker number `i` (replacing a dead one).
    fn spawn(&mut self, i: usize) {
        self.spawned += 1;
        let journal = self.dir.join("journal");
        let log = self.dir.join(format!("worker-{}.log", self.spawned));
        let child = spawn_worker_logged(
            &self.url,
            self.registration,
            &[("CHAOS_JOURNAL_DIR", journal.to_str().unwrap()), ("RUST_BACKTRACE", "0")],
            &log,
        );
        self.faults.born.insert(child.id(), now_ms());
        if i < self.workers.len() {
            self.workers[i] = child;
            self.logs[i] = log;
        } else {
            self.workers.push(child);
            self.logs.push(log);
        }
        self.last_spawn = Instant::now();
    }

    /// SIGKILLs a random worker and starts a new one in its place.
    fn kill_one(&mut self) {
        let i = self.rng.below(WORKERS as u64) as usize;
        let at_ms = now_ms();
        let pid = self.workers[i].id();
        self.workers[i].kill().unwrap();
        self.workers[i].wait().unwrap();
        self.faults.deaths.push(Death { pid, at_ms, crashed: false });
        self.spawn(i);
    }

    /// Replaces workers that exited on their own (recorded as crashes).
    fn replace_crashed(&mut self) {
        for i in 0..WORKERS {
            if let Some(status) = self.workers[i].try_wait().unwrap() {
                let pid = self.workers[i].id();
                let log = std::fs::read_to_string(&self.logs[i]).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                eprintln!("chaos: worker {pid} exited on its own: {status}; its last words: {tail:?}");
                self.faults.deaths.push(Death { pid, at_ms: now_ms(), crashed: true });
                self.spawn(i);
            }
        }
    }

    /// SIGKILLs Redis, leaves it down 200–1000 ms, and restarts it on its port and data.
    async fn restart_redis(&mut self) {
        self.read_latency();
        let down_ms = now_ms();
        tokio::task::block_in_place(|| self.server.kill()).unwrap();
        tokio::time::sleep(Duration::from_millis(self.rng.between(200, 1000))).await;
        tokio::task::block_in_place(|| self.server.restart()).unwrap();
        self.watch_latency();
        let up_ms = now_ms();
        eprintln!("chaos: redis down for {} ms", up_ms - down_ms);
        self.faults.outages.push(Outage { down_ms, up_ms });
    }

    /// Has Redis record what blocked it for 100 ms or more (`LATENCY LATEST`: an
    /// `aof-fsync-always` event says a stall was its disk).
    fn watch_latency(&self) {
        let set = ["CONFIG", "SET", "latency-monitor-threshold", "100"];
        if let Err(e) = tokio::task::block_in_place(|| redis_cli(&self.server, &set)) {
            eprintln!("chaos: cannot turn Redis's latency monitor on: {e}");
        }
    }

    /// Adds what Redis's latency monitor recorded (each event's latest time and longest
    /// block) to `latency`, times in ms since the origin.
    fn read_latency(&mut self) {
        let Ok(text) = tokio::task::block_in_place(|| redis_cli(&self.server, &["LATENCY", "LATEST"])) else {
            return;
        };
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        for event in lines.chunks(4).filter(|e| e.len() == 4) {
            let at_ms = event[1].parse::<u64>().unwrap_or(0) * 1000;
            let at = at_ms as i64 - self.faults.origin_ms as i64;
            self.latency.push(format!("{} at ~{at} (latest {} ms, max {} ms)", event[0], event[2], event[3]));
        }
    }

    /// Whether every worker has been up for 2 s and said it is ready (a worker connects
    /// once at startup: Redis must not go down under it then).
    fn settled(&self) -> bool {
        self.last_spawn.elapsed() >= Duration::from_secs(2)
            && self.workers.iter().zip(&self.logs).all(|(w, log)| {
                std::fs::read_to_string(log).is_ok_and(|text| text.contains(&format!("worker {} ready", w.id())))
            })
    }

    /// SIGTERMs every worker and waits up to 20 s for it to exit; the ones that do not exit
    /// cleanly (then SIGKILLed).
    async fn stop_workers(&mut self) -> Vec<String> {
        for w in &self.workers {
            sigterm(w);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut trouble = Vec::new();
        for w in &mut self.workers {
            loop {
                if let Some(status) = w.try_wait().unwrap() {
                    if !status.success() {
                        trouble.push(format!("worker {} exited with {status} after SIGTERM", w.id()));
                    }
                    break;
                }
                if Instant::now() > deadline {
                    trouble.push(format!("worker {} still running 20 s after SIGTERM", w.id()));
                    w.kill().unwrap();
                    w.wait().unwrap();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        trouble
    }
}

/// Publishes `count` messages numbered from `first` with random plans to `variant`'s
/// stream: their ids and plans.
async fn publish(
    producer: &Producer,
    variant: Variant,
    rng: &mut Rng,
    first: u64,
    count: u64,
) -> Vec<(MessageId, Plan)> {
    let mut out = Vec::with_capacity(count as usize);
    let mut batch: Vec<ChaosJob> = Vec::new();
    let mut batch_plans: Vec<Plan> = Vec::new();
    for n in first..first + count {
        let behaviour = match rng.below(1000) {
            0..5 => None,
            5..25 => Some(Behaviour::Permanent),
            25..35 => Some(Behaviour::Panic),
            35..85 => Some(Behaviour::FailUntil(1)),
            // Succeeds on its last run.
            85..115 => Some(Behaviour::FailUntil(variant.max_retries)),
            // Fails every run: dead-lettered as `error`.
            115..125 => Some(Behaviour::FailUntil(variant.max_runs())),
            _ => Some(Behaviour::Ok),
        };
        // Mostly short, some long: kills land in the middle of running handlers.
        let sleep_ms = match rng.below(20) {
            0 => rng.between(150, 400),
            1..=5 => rng.between(60, 150),
            _ => rng.between(0, 60),
        };
        match behaviour {
            Some(behaviour) => {
                batch.push(ChaosJob { n, behaviour, sleep_ms });
                batch_plans.push(Plan::Run(behaviour));
            }
            None => {
                flush(producer, variant.stream, &mut batch, &mut batch_plans, &mut out).await;
                let raw = format!(r#"{{"n":{n},"behaviour":"#);
                let id = producer.publish_raw(variant.stream, raw.into(), &PublishOptions::new()).await.unwrap();
                out.push((id, Plan::Poison));
            }
        }
    }
    flush(producer, variant.stream, &mut batch, &mut batch_plans, &mut out).await;
    out
}

async fn flush(
    producer: &Producer,
    stream: &str,
    batch: &mut Vec<ChaosJob>,
    plans: &mut Vec<Plan>,
    out: &mut Vec<(MessageId, Plan)>,
) {
    if batch.is_empty() {
        return;
    }
    let ids = producer.publish_batch(stream, batch).await.unwrap();
    out.extend(ids.into_iter().zip(plans.drain(..)));
    batch.clear();
}

/// The longest silences of the log between `from` and `to` (no record from any worker for
/// at least `min` ms), longest first: a stall of Redis or of the whole machine shows here
/// (a live member whose heartbeat cannot get through for `claim_idle` may be judged stopped).
fn silences(observer: &Observer, from: u64, to: u64, min: u64) -> Vec<(u64, u64)> {
    let mut at: Vec<u64> = observer
        .runs
        .values()
        .flat_map(|r| [r.start_ms, r.end.map(|(t, _)| t)])
        .flatten()
        .filter(|t| (from..=to).contains(t))
        .collect();
    at.sort_unstable();
    let mut gaps: Vec<(u64, u64)> = at.windows(2).filter(|w| w[1] - w[0] >= min).map(|w| (w[0], w[1])).collect();
    gaps.sort_by_key(|(a, b)| std::cmp::Reverse(b - a));
    gaps
}

/// The silences of the log (see [`silences`]) of at least `min` ms, outside the Redis
/// restarts, across which a run was under way (it started before and its end record landed
/// after): handlers work at most 400 ms, so its end record was held up. Redis, the machine
/// or the worker stopped serving meanwhile; a member whose heartbeat cannot get through for
/// `claim_idle` may be judged stopped.
fn stalls(observer: &Observer, faults: &Faults, to: u64, min: u64) -> Vec<(u64, u64)> {
    silences(observer, faults.origin_ms, to, min)
        .into_iter()
        .filter(|(a, b)| !faults.outage_within(*a, *b))
        .filter(|(a, b)| {
            observer.runs.values().any(|r| r.start_ms.is_some_and(|s| s < *a) && r.end.is_some_and(|(e, _)| e >= *b))
        })
        .collect()
}

/// Every run and dead letter, one a line, in start order (times in ms since `origin`), for
/// a kept run's post-mortem.
fn dump(observer: &Observer, origin: u64) -> String {
    let mut runs: Vec<&Run> = observer.runs.values().collect();
    runs.sort_by_key(|r| (r.anchor(), r.pid, r.run));
    let mut out = String::new();
    for r in runs {
        out.push_str(&format!("{} {}\n", r.id, r.describe(origin)));
    }
    for l in observer.dead.values().flatten() {
        let at = l.dead_lettered_at_ms as i64 - origin as i64;
        let written = l.id.millis() as i64 - origin as i64;
        out.push_str(&format!(
            "{} dead-lettered {:?} after {} deliveries at {at} (written {written}) by {}: {}\n",
            l.origin_id.map_or("?".to_string(), |id| id.to_string()),
            l.kind,
            l.deliveries,
            l.consumer,
            l.error
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// The verdict

#[derive(Default)]
struct Report {
    violations: BTreeMap<&'static str, Vec<String>>,
    /// Why a run again at the same attempt number, during a run, or after a final result
    /// was legitimate, counted.
    redeliveries: BTreeMap<&'static str, usize>,
    duplicate_successes: usize,
    max_successes: usize,
    max_attempt: u32,
    max_starts: usize,
    /// Messages that started more than max_retries + 1 times (the extra runs lost their
    /// results to faults).
    beyond_max_runs: usize,
    interrupted: usize,
    log_failures: usize,
    dead_by_kind: BTreeMap<String, usize>,
    /// `delivery_limit` dead letters of messages that started fewer than max_retries + 1
    /// times (each after a run alone that a SIGKILL cut).
    limit_before_max_runs: usize,
    /// `delivery_limit` dead letters of messages with no start record at all.
    limit_without_start: usize,
    succeeding_dead: usize,
    succeeded_then_dead: usize,
    /// For results explained by a SIGKILL: ms from the end record to the kill.
    kill_after_end_ms: Vec<u64>,
    /// The histories a fault explained (runs again, dead letters after faults).
    explained: Vec<String>,
}

impl Report {
    fn violation(&mut self, what: &'static str, detail: String) {
        self.violations.entry(what).or_default().push(detail);
    }

    fn explain(&mut self, why: &'static str) {
        *self.redeliveries.entry(why).or_default() += 1;
    }
}

/// Checks every published message against its runs, its dead letters and the faults (see
/// the module documentation for the rules).
fn verdict(published: &[(MessageId, Plan)], observer: &Observer, faults: &Faults, max_runs: u32, report: &mut Report) {
    let known: HashSet<MessageId> = published.iter().map(|(id, _)| *id).collect();
    let mut by_id: HashMap<MessageId, Vec<&Run>> = HashMap::new();
    for run in observer.runs.values() {
        by_id.entry(run.id).or_default().push(run);
        if !known.contains(&run.id) {
            report.violation("a run of a message nobody published", format!("{run:?}"));
        }
    }
    for (id, letters) in &observer.dead {
        if !known.contains(id) {
            report.violation("a dead letter of a message nobody published", format!("{id}: {letters:?}"));
        }
    }
    for s in &observer.strange {
        report.violation("inconsistent log records", s.clone());
    }

    for (id, plan) in published {
        let mut runs: Vec<&Run> = by_id.remove(id).unwrap_or_default();
        runs.sort_by_key(|r| (r.anchor(), r.attempt));
        let letters = observer.dead.get(id).map(Vec::as_slice).unwrap_or_default();
        let message = Message { id: *id, plan: *plan, runs: &runs, letter: letters.first(), max_runs };
        check_message(&message, letters, faults, report);
    }
    match observer.pending {
        Some(0) => {}
        other => report.violation("XPENDING is not 0 at the end", format!("{other:?}")),
    }
    for d in faults.deaths.iter().filter(|d| d.crashed) {
        report.violation("a worker exited on its own", format!("pid {} (noticed at {})", d.pid, d.at_ms));
    }
}

/// One published message and what became of it.
struct Message<'a> {
    id: MessageId,
    plan: Plan,
    /// Its runs, in the order they started.
    runs: &'a [&'a Run],
    /// Its (first) dead letter.
    letter: Option<&'a DeadLetter>,
    max_runs: u32,
}

impl Message<'_> {
    /// Its history in one line, times in ms since `origin`.
    fn story(&self, origin: u64) -> String {
        let runs: Vec<String> = self.runs.iter().map(|r| r.describe(origin)).collect();
        let dead = self.letter.map_or(String::new(), |l| {
            let at = l.dead_lettered_at_ms as i64 - origin as i64;
            let error: String = l.error.chars().take(60).collect();
            format!("dead-lettered {:?} after {} deliveries at {at} by {} ({error})", l.kind, l.deliveries, l.consumer)
        });
        format!("{} ({}): [{}] {dead}", self.id, self.plan.label(self.max_runs), runs.join("; "))
    }
}

fn check_message(m: &Message, letters: &[DeadLetter], faults: &Faults, report: &mut Report) {
    let story = || {
        let origin = faults.origin_ms;
        let mut story = m.story(origin);
        let first = m.runs.first().map_or(m.id.millis(), |r| r.anchor());
        let last = m
            .runs
            .iter()
            .map(|r| r.finished().unwrap_or_else(|| r.anchor()))
            .chain(m.letter.map(|l| l.dead_lettered_at_ms))
            .max()
            .unwrap_or(first);
        if let Some((a, b)) = faults.stall_near(first.saturating_sub(CLAIM_IDLE), last) {
            story.push_str(&format!(" -- near the stall {}..{}", a - origin, b - origin));
        }
        story
    };
    let (runs, letter, max_runs) = (m.runs, m.letter, m.max_runs);
    let explained_before = report.redeliveries.values().sum::<usize>();

    // Shape of the history.
    let starts = runs.iter().filter(|r| r.start_ms.is_some()).count();
    report.max_starts = report.max_starts.max(starts);
    if starts > max_runs as usize {
        report.beyond_max_runs += 1;
    }
    for r in runs {
        report.max_attempt = report.max_attempt.max(r.attempt);
        if r.attempt == 0 || r.attempt > max_runs {
            report.violation("an attempt number outside 1..=max_retries + 1", story());
        }
        if r.end.is_some() && r.start_ms.is_none() && r.log_failed.is_none() {
            report.violation("an end record without a start record", story());
        }
        if let Some((_, outcome)) = r.end {
            if m.plan.outcome_at(r.attempt) != Some(outcome) {
                report.violation("an outcome the plan does not call for", story());
            }
        }
        match r.fate() {
            Fate::Interrupted => {
                report.interrupted += 1;
                if !faults.died(r.pid) {
                    report.violation("an attempt started and never ended, and its process was not killed", story());
                }
            }
            Fate::Retryable if r.log_failed.is_some() => report.log_failures += 1,
            _ => {}
        }
    }
    if m.plan == Plan::Poison && !runs.is_empty() {
        report.violation("a poison message ran its handler", story());
    }
    if letters.len() > 1 {
        report.violation("dead-lettered more than once", story());
    }
    let successes = runs.iter().filter(|r| matches!(r.end, Some((_, Outcome::Ok)))).count();
    report.max_successes = report.max_successes.max(successes);
    if successes > 1 {
        report.duplicate_successes += 1;
    }
    if let Some(l) = letter {
        let kind = l.kind.map_or("?", |k| k.as_str()).to_string();
        *report.dead_by_kind.entry(kind).or_default() += 1;
        if m.plan.should_succeed(max_runs) {
            report.succeeding_dead += 1;
        }
        if successes > 0 {
            report.succeeded_then_dead += 1;
        }
        // A run with a higher attempt than the dead letter counts: only a lease lost in the
        // Redis restart lets another consumer take a message over while its last run goes on.
        for r in runs.iter().filter(|r| r.attempt > l.deliveries) {
            if !lease_lost_in_outage(runs, r, faults) {
                report.violation("a run with a higher attempt number than its dead letter counts", story());
            }
        }
        for r in runs.iter().filter(|r| r.start_ms.is_some_and(|s| s > l.dead_lettered_at_ms)) {
            if !lease_lost_in_outage(runs, r, faults) {
                report.violation("started after it was dead-lettered", story());
            }
        }
    }

    // The runs, in order.
    if let Some(first) = runs.first() {
        if first.attempt != 1 && !lease_lost_in_outage(runs, first, faults) {
            report.violation("the first run is not attempt 1", story());
        }
    }
    for pair in runs.windows(2) {
        let (r, next) = (pair[0], pair[1]);
        let next_ms = next.anchor();
        // The next run began while this one was still going (by its start): only a lost
        // lease explains that.
        let still_running = match r.finished() {
            Some(end) => next_ms < end,
            None => faults.dead_by(r.pid, next_ms).is_none(),
        };
        if still_running {
            if faults.outage_during_run(r.pid, r.anchor(), next_ms) {
                report.explain("the Redis restart (lease lost while running)");
            } else if r.fate() != Fate::Interrupted || faults.died(r.pid) {
                report.violation("run again while a run was still going, no fault explains it", story());
            }
            continue;
        }
        let counted = match (i64::from(next.attempt) - i64::from(r.attempt), r.fate()) {
            // The same attempt number again: its result was lost (a SIGKILL raises no count).
            (0, _) => match lost_result(r, next_ms, faults, report) {
                Some(why) => {
                    report.explain(why);
                    Ok(())
                }
                None => Err(match r.fate() {
                    Fate::Retryable => "a failed run was not counted (run again at the same attempt number)",
                    _ => "run again after a final result, no fault explains it",
                }),
            },
            (1, Fate::Retryable) => {
                if matches!(r.end, Some((_, Outcome::Ok))) {
                    // The end record was written but its XADD reported a failure: the handler
                    // returned an error, so the success is run again.
                    report.explain("the end record's write reported a failure");
                }
                Ok(())
            }
            (1, Fate::Final(_)) => Err("run again after a final result, no fault explains it"),
            (1, Fate::Interrupted) => Err("a run cut by a SIGKILL was counted (run again at the next attempt number)"),
            (step, _) if step > 1 => Err("an attempt number skipped"),
            _ => Err("the attempt number went down"),
        };
        if let Err(what) = counted {
            if faults.outage_during_run(r.pid, r.anchor(), next_ms) || lease_lost_in_outage(runs, next, faults) {
                report.explain("the Redis restart (count out of step)");
            } else {
                report.violation(what, story());
            }
        }
    }
    if runs.is_empty() && letter.is_none() {
        report.violation("lost: never ran, never dead-lettered", story());
    }
    check_end(m, faults, report, &story);
    let odd_end = letter.is_some_and(|l| m.plan.should_succeed(max_runs) || l.kind == Some(FailureKind::DeliveryLimit));
    if report.redeliveries.values().sum::<usize>() > explained_before || odd_end {
        report.explained.push(story());
    }
}

/// Whether run `r` can overlap an earlier run because the Redis restart cost a lease: the
/// earlier run's (another consumer then took the message over while it ran) or `r`'s own
/// (it waited for a permit across the outage while the message was taken over and finished
/// elsewhere).
fn lease_lost_in_outage(runs: &[&Run], r: &Run, faults: &Faults) -> bool {
    faults.outage_during_run(r.pid, r.anchor(), r.anchor())
        || runs.iter().any(|p| p.anchor() < r.anchor() && faults.outage_during_run(p.pid, p.anchor(), r.anchor()))
}

/// Why the result of run `r` may not have been acted on before `next_ms` (the next run, or
/// the dead-letter move), if a fault explains it: its process was SIGKILLed before `next_ms`
/// and (for a run that returned) within `CLAIM_IDLE` of returning, or the Redis restart
/// struck while the run was under way or its result in flight.
fn lost_result(r: &Run, next_ms: u64, faults: &Faults, report: &mut Report) -> Option<&'static str> {
    if let Some(killed) = faults.dead_by(r.pid, next_ms) {
        match r.finished() {
            None => return Some("its process was killed during the attempt"),
            Some(end) if killed <= end + CLAIM_IDLE => {
                report.kill_after_end_ms.push(killed.saturating_sub(end));
                return Some("its process was killed right after the attempt");
            }
            Some(_) => {}
        }
    }
    let end = r.finished().unwrap_or(next_ms).min(next_ms);
    faults.outage_during_run(r.pid, r.anchor(), end).then_some("the Redis restart")
}

/// The end state against the last run.
fn check_end(m: &Message, faults: &Faults, report: &mut Report, story: &dyn Fn() -> String) {
    let (runs, max_runs) = (m.runs, m.max_runs);
    let last = runs.last().copied();
    let Some(l) = m.letter else {
        // Not dead-lettered: acknowledged, which only a success may do. Normally the last
        // run's; an earlier success's ack may land late when the Redis restart cost a lease
        // (the run after it is checked above), or the last run was cut by a SIGKILL after
        // the success's ack landed.
        if last.is_some_and(|r| r.fate() == Fate::Final(Outcome::Ok)) {
            return;
        }
        if !m.plan.should_succeed(max_runs) {
            report.violation("not dead-lettered", story());
        } else if !runs.iter().any(|r| r.fate() == Fate::Final(Outcome::Ok)) {
            report.violation("acknowledged without a successful attempt (lost)", story());
        } else {
            let explained = last.is_some_and(|r| {
                (r.fate() == Fate::Interrupted && faults.died(r.pid)) || lease_lost_in_outage(runs, r, faults)
            });
            if !explained {
                report.violation("acknowledged by an earlier success while a later run ran", story());
            }
        }
        return;
    };
    let d = l.deliveries;
    let at_d = |f: &dyn Fn(&Run) -> bool| runs.iter().any(|r| r.attempt == d && f(r));
    let ok = match l.kind {
        Some(FailureKind::Permanent) => at_d(&|r| r.fate() == Fate::Final(Outcome::Permanent)),
        Some(FailureKind::Panic) => {
            d == max_runs && at_d(&|r| r.log_failed.is_none() && matches!(r.end, Some((_, Outcome::Panic))))
        }
        Some(FailureKind::Error) => {
            d == max_runs && at_d(&|r| r.log_failed.is_some() || matches!(r.end, Some((_, Outcome::Fail))))
        }
        Some(FailureKind::InvalidJson) => m.plan == Plan::Poison && runs.is_empty(),
        Some(FailureKind::DeliveryLimit) => {
            let starts = runs.iter().filter(|r| r.start_ms.is_some()).count();
            if starts < max_runs as usize {
                report.limit_before_max_runs += 1;
            }
            if starts == 0 {
                report.limit_without_start += 1;
            }
            match crashed_alone(m, l, faults, report) {
                Ok(()) => true,
                Err(why) => {
                    report.violation(
                        "dead-lettered as delivery_limit without a run alone that a SIGKILL cut",
                        format!("{why}: {}", story()),
                    );
                    return;
                }
            }
        }
        _ => false,
    };
    if !ok {
        report.violation("dead-lettered with a kind its last run does not explain", story());
    }
}

/// Whether a `delivery_limit` dead letter `l` can be a run alone that crashed its worker (see
/// the module docs), as far as the log tells: the reason if not.
fn crashed_alone(m: &Message, l: &DeadLetter, faults: &Faults, report: &mut Report) -> Result<(), &'static str> {
    let (runs, d) = (m.runs, l.deliveries);
    // The attempt it ran alone at: at most max_retries + 1.
    if d < 1 || d > m.max_runs {
        return Err("dlq:deliveries outside 1..=max_retries + 1");
    }
    let alone = d;
    if runs.iter().any(|r| r.attempt > alone) {
        return Err("a run at the attempt number the dead letter counts");
    }
    let dead_ms = l.dead_lettered_at_ms;
    let published_ms = m.id.millis();
    let last = runs.last().copied();
    // When it reached the attempt that ran alone.
    let reached_ms = match last {
        None if alone == 1 => published_ms,
        None => return Err("no run, yet an attempt above 1 ran alone"),
        Some(r) if r.attempt == alone => runs
            .iter()
            .filter(|p| p.attempt < alone)
            .map(|p| p.finished().unwrap_or_else(|| p.anchor()))
            .max()
            .unwrap_or(published_ms),
        Some(r) if r.attempt + 1 == alone && r.fate() == Fate::Retryable => r.finished().unwrap_or_else(|| r.anchor()),
        Some(_) => return Err("its last run does not lead to the attempt that ran alone"),
    };
    // Its last run at that attempt (the run alone, or one before it whose taker then died
    // before its start record landed) lost its result to a fault.
    if let Some(r) = last.filter(|r| r.attempt == alone) {
        if lost_result(r, dead_ms, faults, report).is_none() {
            return Err("its last run's result was not lost to a fault");
        }
    }
    // The member that ran it alone stopped after the last start and long enough before the
    // dead letter for a taker to judge it stopped: a SIGKILL, or the Redis restart (no
    // heartbeat gets through, so a live member may be judged stopped).
    let last_start = last.map_or(reached_ms, |r| r.anchor());
    let killed = faults.killed_within(last_start.saturating_sub(CLOCK_SLACK), dead_ms.saturating_sub(CLAIM_IDLE / 2));
    let outage_after_start =
        faults.outages.iter().any(|o| o.down_ms <= dead_ms && o.recovered_ms() + CLAIM_IDLE >= last_start);
    // Three members stopped since it reached that attempt: the one that held it, the taker
    // that held it as a take-over, the taker that ran it alone (or the Redis restart
    // stopped some of them).
    let three = faults.deaths_within(reached_ms, dead_ms) >= 3;
    let outage_since_reached = faults.outage_within(reached_ms, dead_ms);
    match (killed || outage_after_start, three || outage_since_reached) {
        (true, true) => {
            if !killed || !three {
                report.explain("the Redis restart (a member judged stopped)");
            }
            Ok(())
        }
        (false, _) => Err("no SIGKILL after its last start and claim_idle / 2 before the dead letter"),
        (true, false) => Err("fewer than three workers died since it reached the attempt that ran alone"),
    }
}

// ---------------------------------------------------------------------------------------
// The test

async fn chaos(variant: Variant) {
    let seed = env_u64("STREAMX_CHAOS_SEED")
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    let soak = env_u64("STREAMX_CHAOS_SOAK_SECS").map(Duration::from_secs);
    let name = variant.registration;
    eprintln!(
        "chaos {name} (max_retries {}): seed {seed} (replay with STREAMX_CHAOS_SEED={seed})",
        variant.max_retries
    );
    let (chaos_limit, deadline) = match soak {
        Some(s) => (s, s + Duration::from_secs(60)),
        None => (CHAOS_LIMIT, DEADLINE),
    };
    let mut rng = Rng(seed);

    let dir = std::env::temp_dir().join(format!("streamx-chaos-{name}-{seed}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("journal")).unwrap();
    let server = RedisServer::builder().appendonly(true).start().unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let mut published = publish(&producer, variant, &mut rng, 0, MESSAGES).await;
    let mut observer = Observer::connect(&url, variant.stream).await;

    let mut chaos = Chaos {
        url: url.clone(),
        registration: variant.registration,
        dir: dir.clone(),
        server,
        workers: Vec::new(),
        logs: Vec::new(),
        last_spawn: Instant::now(),
        spawned: 0,
        faults: Faults { origin_ms: now_ms(), ..Faults::default() },
        rng,
        latency: Vec::new(),
    };
    chaos.watch_latency();
    for i in 0..WORKERS {
        chaos.spawn(i);
    }
    let started = Instant::now();
    let kill_gap = |rng: &mut Rng| Duration::from_millis(rng.between(KILL_EVERY_MS.0, KILL_EVERY_MS.1));
    let mut next_kill = started + kill_gap(&mut chaos.rng);
    // Exactly one Redis restart in a default run: when 25–60 % of the first messages are
    // done, or at 20 s.
    let restart_at_done = (MESSAGES * chaos.rng.between(25, 60) / 100) as usize;
    let mut next_restart = Some(started + Duration::from_secs(20));
    let mut polls_failed = 0;
    let done = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match observer.poll().await {
            Ok(()) => polls_failed = 0,
            Err(e) => {
                polls_failed += 1;
                if polls_failed % 5 == 0 {
                    eprintln!("chaos: cannot read the state ({polls_failed} tries): {e}; reconnecting");
                    let _ = observer.reconnect(&url).await;
                }
            }
        }
        let accounted = published
            .iter()
            .filter(|(id, _)| observer.succeeded.contains(id) || observer.dead.contains_key(id))
            .count();
        let kills = chaos.faults.deaths.iter().filter(|d| !d.crashed).count();
        let chaos_over = started.elapsed() >= chaos_limit;
        // A default run goes on until it has seen its SIGKILLs and its Redis restart.
        let faults_seen = kills >= MIN_KILLS && !chaos.faults.outages.is_empty();
        let soaked = match soak {
            Some(s) => started.elapsed() >= s,
            None => faults_seen || chaos_over,
        };
        if accounted == published.len() && observer.pending == Some(0) && soaked {
            break true;
        }
        if started.elapsed() > deadline {
            break false;
        }
        chaos.replace_crashed();
        if chaos_over {
            continue; // calm: let the workers finish
        }
        let now = Instant::now();
        let restart_due = next_restart.is_some_and(|at| now >= at)
            || (chaos.faults.outages.is_empty() && accounted >= restart_at_done);
        // No SIGKILL while a Redis restart waits for every worker to have settled.
        if now >= next_kill && !restart_due {
            chaos.kill_one();
            next_kill = now + kill_gap(&mut chaos.rng);
        }
        if restart_due && chaos.settled() {
            chaos.restart_redis().await;
            next_restart = soak.map(|_| Instant::now() + Duration::from_secs(chaos.rng.between(10, 30)));
        }
        let backlog = published.len() - accounted;
        let top_up = match soak {
            Some(_) => (backlog < 5_000).then_some(MESSAGES),
            None => (!faults_seen && backlog < TOP_UP_BELOW).then_some(TOP_UP),
        };
        if let Some(count) = top_up {
            let first = published.len() as u64;
            // A fresh connection: the first one may have given up during a Redis restart.
            let producer = Producer::connect(&url).await.unwrap();
            let more = publish(&producer, variant, &mut chaos.rng, first, count).await;
            published.extend(more);
        }
    };
    let chaos_secs = started.elapsed().as_secs_f64();
    chaos.read_latency();
    let stop_trouble = chaos.stop_workers().await;
    let final_poll = async {
        for _ in 0..10 {
            if observer.poll().await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = observer.reconnect(&url).await;
        }
        false
    };
    assert!(final_poll.await, "cannot read the final state from Redis");
    let journal_notes = observer.read_journals(&dir.join("journal"));

    let mut report = Report::default();
    let max_runs = variant.max_runs();
    let chaos_end = chaos.faults.origin_ms + (chaos_secs * 1000.0) as u64;
    chaos.faults.stalls = stalls(&observer, &chaos.faults, chaos_end, 500);
    verdict(&published, &observer, &chaos.faults, max_runs, &mut report);
    for t in stop_trouble {
        report.violation("a worker did not stop cleanly on SIGTERM", t);
    }
    if !done {
        let left = published
            .iter()
            .filter(|(id, _)| !observer.succeeded.contains(id) && !observer.dead.contains_key(id))
            .count();
        report.violation(
            "not every message accounted for by the deadline",
            format!(
                "{left} of {} neither succeeded nor dead-lettered after {deadline:?}; XPENDING {:?}",
                published.len(),
                observer.pending
            ),
        );
    }
    if chaos.faults.outages.is_empty() {
        report.violation("the test never restarted Redis", String::new());
    }
    let kills = chaos.faults.deaths.iter().filter(|d| !d.crashed).count();
    if kills < MIN_KILLS {
        report.violation("fewer SIGKILLs than the test is for", format!("{kills} < {MIN_KILLS}"));
    }

    let mut plans: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, p) in &published {
        *plans.entry(p.label(max_runs)).or_default() += 1;
    }
    eprintln!("chaos summary ({name}, max_retries {}, seed {seed}):", variant.max_retries);
    eprintln!(
        "  {} messages {plans:?}, done in {chaos_secs:.1} s: {}",
        published.len(),
        if done { "all accounted for" } else { "NOT all accounted for" }
    );
    eprintln!(
        "  faults: {kills} worker SIGKILLs, {} Redis restarts, {} workers spawned",
        chaos.faults.outages.len(),
        chaos.spawned
    );
    eprintln!(
        "  runs: {} logged, {} interrupted by a kill, {} log writes failed ({journal_notes} journal notes)",
        observer.runs.len(),
        report.interrupted,
        report.log_failures,
    );
    eprintln!(
        "  max attempt {}, max starts per message {} ({} messages started more than {max_runs} times), max successful ends per message {}",
        report.max_attempt, report.max_starts, report.beyond_max_runs, report.max_successes
    );
    eprintln!(
        "  {} messages with more than one successful end; runs again that a fault explained: {:?}",
        report.duplicate_successes, report.redeliveries
    );
    eprintln!(
        "  dead letters by kind {:?}; {} should-succeed messages dead-lettered; {} dead-lettered after a successful run",
        report.dead_by_kind, report.succeeding_dead, report.succeeded_then_dead
    );
    eprintln!(
        "  delivery_limit after a run alone cut by a SIGKILL: {} after fewer than {max_runs} starts ({} with no start at all)",
        report.limit_before_max_runs, report.limit_without_start
    );
    let kill_gap = report.kill_after_end_ms.iter().max();
    eprintln!(
        "  results lost to a SIGKILL after their attempt ended: {} (kill at most {kill_gap:?} ms after the end)",
        report.kill_after_end_ms.len()
    );
    eprintln!("  XPENDING at the end: {:?}", observer.pending);
    let origin = chaos.faults.origin_ms;
    let quiet = silences(&observer, origin, chaos_end, 500);
    let stalled: Vec<String> =
        chaos.faults.stalls.iter().map(|(a, b)| format!("{}..{} ({} ms)", a - origin, b - origin, b - a)).collect();
    eprintln!("  Redis blocked 100 ms or more (latency monitor): {:?}", chaos.latency);
    eprintln!(
        "  log silences of 500 ms or more: {}; stalls among them (runs under way, no Redis restart): {stalled:?}",
        quiet.len()
    );

    // The histories the faults explained, and the faults, for whoever wants to look.
    let mut notes = String::new();
    for d in &chaos.faults.deaths {
        notes.push_str(&format!(
            "{} worker {} {}\n",
            d.at_ms - origin,
            d.pid,
            if d.crashed { "crashed" } else { "SIGKILLed" }
        ));
    }
    for o in &chaos.faults.outages {
        notes.push_str(&format!("{}..{} redis down\n", o.down_ms - origin, o.up_ms - origin));
    }
    for (a, b) in &quiet {
        notes.push_str(&format!("{}..{} log silent\n", a - origin, b - origin));
    }
    for line in &report.explained {
        notes.push_str(line);
        notes.push('\n');
    }
    std::fs::write(dir.join("explained.txt"), notes).unwrap();
    std::fs::write(dir.join("runs.txt"), dump(&observer, origin)).unwrap();
    if report.violations.is_empty() && std::env::var_os("STREAMX_CHAOS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    eprintln!("chaos: worker logs, journals and explained.txt kept in {}", dir.display());
    if report.violations.is_empty() {
        return;
    }
    let mut text = String::new();
    for (what, cases) in &report.violations {
        text.push_str(&format!("\n  {what}: {} case(s)", cases.len()));
        for c in cases.iter().take(5) {
            text.push_str(&format!("\n    {c}"));
        }
    }
    if !stalled.is_empty() {
        text.push_str(&format!(
            "\n  (stalls, not injected: {stalled:?}: the log says nothing for that long while runs were under way, \
             so Redis, the machine or a worker stopped serving; a member whose heartbeat cannot get through for \
             claim_idle may be judged stopped. Violations near one say so.)"
        ));
    }
    panic!("chaos {name} (seed {seed}) found violations:{text}");
}

// ---------------------------------------------------------------------------------------
// The model on made-up histories (no Redis): what the verdict must accept and reject.

/// A made-up run: pid, attempt, start ms, end (ms, outcome).
type MadeUpRun = (u32, u32, u64, Option<(u64, Outcome)>);

/// The violations `check_message` finds in one made-up history of a message published at
/// ms 0 (`runs`: pid, attempt, start, end; `kills`: pid, at; `letter`: kind, deliveries, at).
fn judge(
    plan: Plan,
    max_runs: u32,
    runs: &[MadeUpRun],
    kills: &[(u32, u64)],
    letter: Option<(FailureKind, u32, u64)>,
) -> Vec<&'static str> {
    const T0: u64 = 1_000_000;
    let id: MessageId = format!("{T0}-0").parse().unwrap();
    let runs: Vec<Run> = runs
        .iter()
        .enumerate()
        .map(|(n, &(pid, attempt, start, end))| Run {
            start_ms: Some(T0 + start),
            end: end.map(|(at, outcome)| (T0 + at, outcome)),
            ..Run::new(pid, n as u64, id, attempt)
        })
        .collect();
    let mut refs: Vec<&Run> = runs.iter().collect();
    refs.sort_by_key(|r| (r.anchor(), r.attempt));
    let letters: Vec<DeadLetter> = letter
        .into_iter()
        .map(|(kind, deliveries, at)| DeadLetter {
            id: "1-0".parse().unwrap(),
            origin_stream: "app.chaos".to_string(),
            origin_id: Some(id),
            group: GROUP.to_string(),
            consumer: "taker".to_string(),
            deliveries,
            kind: Some(kind),
            error: String::new(),
            dead_lettered_at_ms: T0 + at,
            payload: None,
            headers: streamx::Headers::default(),
        })
        .collect();
    let faults = Faults {
        origin_ms: T0,
        born: HashMap::new(),
        deaths: kills.iter().map(|&(pid, at)| Death { pid, at_ms: T0 + at, crashed: false }).collect(),
        outages: Vec::new(),
        stalls: Vec::new(),
    };
    let m = Message { id, plan, runs: &refs, letter: letters.first(), max_runs };
    let mut report = Report::default();
    check_message(&m, &letters, &faults, &mut report);
    report.violations.into_keys().collect()
}

const OK: Plan = Plan::Run(Behaviour::Ok);

#[test]
fn model_a_take_over_keeps_the_attempt_number() {
    let cut_then_run_again = [(1, 1, 100, None), (2, 1, 1_400, Some((1_450, Outcome::Ok)))];
    assert_eq!(judge(OK, 3, &cut_then_run_again, &[(1, 120)], None), Vec::<&str>::new());
    // What the old counting did: the take-over counted a delivery.
    let counted = [(1, 1, 100, None), (2, 2, 1_400, Some((1_450, Outcome::Ok)))];
    assert_eq!(
        judge(OK, 3, &counted, &[(1, 120)], None),
        ["a run cut by a SIGKILL was counted (run again at the next attempt number)"]
    );
}

#[test]
fn model_a_failed_run_counts_unless_its_result_was_lost() {
    let plan = Plan::Run(Behaviour::FailUntil(1));
    let retried = [(1, 1, 100, Some((150, Outcome::Fail))), (1, 2, 300, Some((350, Outcome::Ok)))];
    assert_eq!(judge(plan, 2, &retried, &[], None), Vec::<&str>::new());
    let not_counted = [(1, 1, 100, Some((150, Outcome::Fail))), (2, 1, 300, Some((350, Outcome::Fail)))];
    assert_eq!(
        judge(plan, 2, &not_counted, &[], None),
        [
            "a failed run was not counted (run again at the same attempt number)",
            "acknowledged without a successful attempt (lost)"
        ]
    );
    // Its process killed right after the failure, before the retry was scheduled.
    let lost = [
        (1, 1, 100, Some((150, Outcome::Fail))),
        (2, 1, 1_400, Some((1_450, Outcome::Fail))),
        (2, 2, 1_600, Some((1_650, Outcome::Ok))),
    ];
    assert_eq!(judge(plan, 2, &lost, &[(1, 160)], None), Vec::<&str>::new());
}

#[test]
fn model_runs_of_one_message_never_overlap() {
    let overlap = [(1, 1, 100, Some((500, Outcome::Ok))), (2, 1, 200, Some((250, Outcome::Ok)))];
    assert!(judge(OK, 3, &overlap, &[], None).contains(&"run again while a run was still going, no fault explains it"));
}

#[test]
fn model_delivery_limit_only_after_a_run_alone_that_a_sigkill_cut() {
    let limit = |at| Some((FailureKind::DeliveryLimit, 1, at));
    // Held by 1 (killed before running it), taken over by 2 (killed before running it), run
    // alone by 3 (killed while running it), dead-lettered by the next taker.
    let alone = [(3, 1, 3_000, None)];
    let chain = [(1, 100), (2, 1_500), (3, 3_050)];
    assert_eq!(judge(OK, 3, &alone, &chain, limit(4_000)), Vec::<&str>::new());
    // The run alone killed before its start record landed.
    assert_eq!(judge(OK, 3, &[], &chain, limit(4_000)), Vec::<&str>::new());
    let not_alone = "dead-lettered as delivery_limit without a run alone that a SIGKILL cut";
    // One SIGKILL: its first holder's, while it ran.
    assert_eq!(judge(OK, 3, &[(1, 1, 100, None)], &[(1, 120)], limit(1_100)), [not_alone]);
    // Dead-lettered before a taker could judge its holder stopped.
    assert_eq!(judge(OK, 3, &alone, &chain, limit(3_200)), [not_alone]);
    // Its last run ended and counted.
    let ended = [(3, 1, 3_000, Some((3_020, Outcome::Ok)))];
    assert!(judge(OK, 3, &ended, &[(1, 100), (2, 1_500), (3, 9_000)], limit(10_000)).contains(&not_alone));
    // A run alone at the last attempt that crashed: dead-lettered with that attempt.
    let plan = Plan::Run(Behaviour::FailUntil(1));
    let last = [(1, 1, 100, Some((150, Outcome::Fail))), (2, 2, 300, None), (3, 2, 1_600, None)];
    let kills = [(2, 320), (3, 1_620), (4, 3_000)];
    assert_eq!(judge(plan, 2, &last, &kills, Some((FailureKind::DeliveryLimit, 2, 4_000))), Vec::<&str>::new());
    // Failed runs are dead-lettered with their own kind, never as delivery_limit.
    let plan = Plan::Run(Behaviour::FailUntil(2));
    let failed = [(1, 1, 100, Some((150, Outcome::Fail))), (1, 2, 300, Some((350, Outcome::Fail)))];
    assert_eq!(judge(plan, 2, &failed, &[], Some((FailureKind::Error, 2, 400))), Vec::<&str>::new());
    assert_eq!(judge(plan, 2, &failed, &chain, Some((FailureKind::DeliveryLimit, 2, 4_000))), [not_alone]);
}
