//! Chaos: 20,000 messages with mixed behaviours (success, transient failures, permanent
//! failures, panics, poison entries) consumed by three `worker` processes (registration
//! `chaos`) that are SIGKILLed and restarted at random every 1–3 s, while Redis (AOF,
//! `appendfsync always`) is SIGKILLed and restarted once mid-run. Every attempt logs its
//! start and its end to `app.chaos.log`; an attempt whose log write fails returns a
//! retryable error and notes the failure in its process's journal file. At the end, each
//! message's history is checked against what the recorded faults can explain.
//!
//! Run with: `cargo test -p streamx-test-app --test chaos -- --nocapture`
//!
//! - `STREAMX_CHAOS_SEED=<n>` replays a run's plans and fault schedule (the seed is printed;
//!   the interleaving with the workers is up to the machine).
//! - `STREAMX_CHAOS_SOAK_SECS=<s>` soaks: chaos goes on for that long, 20,000 more messages
//!   are published whenever the backlog runs low, and Redis is restarted every 10–30 s.
//!
//! # What the faults may explain
//!
//! A message's deliveries are numbered 1..=D by the attempt number its handler saw (the
//! group's delivery count; D is the highest one logged, or `dlq:deliveries`). Each delivery
//! either ran the handler (a *run*: start record, end record with an outcome, or a journal
//! note that a log write failed) or left no trace. Times are Redis's (log entry ids) and the
//! test's clock for the faults, on one machine. Walking the deliveries in order:
//!
//! - the next delivery must not begin while a run is still going (judged by the next run's
//!   start, which comes after its delivery): the run's lease forbids it. Only the Redis
//!   restart excuses that, for a process that was connected when Redis went down (no lease
//!   can be renewed while Redis is down);
//! - a run that ended in a planned failure (a `fail_until` attempt, a panic) or whose log
//!   write failed returned a retryable error: another delivery is expected;
//! - a run that ended in a *final* result (success, permanent error) must be the last
//!   delivery unless that result could have been lost: its process was SIGKILLed before the
//!   next delivery began and within `claim_idle` of the end (later than that, the entry
//!   was claimable again with no fault at all), or the Redis restart struck while the run
//!   was under way or its ack in flight (until every client has reconnected, see
//!   [`Outage::recovered_ms`]). This is the only way a second successful end is legitimate;
//! - a run with a start and no end must belong to a process that was SIGKILLed;
//! - a delivery that left no trace (fetched or claimed by a process killed before it ran
//!   the handler, or a reply lost in the Redis restart) needs a SIGKILL or the Redis restart
//!   between the previous and the next delivery;
//! - the end state must match the last delivery: acknowledged (not pending, not dead) only
//!   after a successful run; dead-lettered exactly once with the kind the last delivery
//!   calls for (`permanent` after a permanent error, `panic` after the third panic, `error`
//!   after a third attempt whose log write failed, `invalid_json` for poison), or with
//!   `delivery_limit` after three deliveries whose last one a fault explains; no run starts
//!   after the dead-letter move and none has a higher attempt than `dlq:deliveries`
//!   (unless the Redis restart cost a lease).
//!
//! So a message that should succeed may end dead-lettered (`delivery_limit` or `error`)
//! only when faults used up its three deliveries, and may be dead-lettered after a
//! successful run only when that success's ack was lost to a fault. Also: no message
//! starts more than max_retries + 1 = 3 attempts, no delivery runs twice, XPENDING counts
//! 0 at the end, and no worker exits unless it was killed or told to stop.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{sigterm, spawn_worker_logged};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use streamx::testing::RedisServer;
use streamx::{DeadLetter, DeadLetters, FailureKind, History, Inspector, MessageId, Producer, PublishOptions};

const STREAM: &str = "app.chaos";
const LOG: &str = "app.chaos.log";
const GROUP: &str = "chaos";
const REGISTRATION: &str = "chaos";
const MESSAGES: u64 = 20_000;
const WORKERS: usize = 3;
/// max_retries = 2 in the `chaos` registration.
const MAX_DELIVERIES: u32 = 3;
/// The longest pause between reconnection attempts of streamx's clients (see
/// `connection::build_client`: fred's exponential policy, 100 ms doubling to 5 s, plus up to
/// 50 ms of jitter per attempt).
const RECONNECT_CAP: u64 = 5_000;
/// `claim_idle` of the registration, in ms. A successful run's entry is leased until the
/// handler returns, so once it has been idle this long any consumer may claim it again:
/// an ack that has not landed `CLAIM_IDLE` after the end record risks a duplicate with no
/// fault at all. So a fault only explains a lost ack if it struck within that time.
const CLAIM_IDLE: u64 = 1_000;
/// Default run: chaos stops after this, then the workers get a calm period to finish.
const CHAOS_LIMIT: Duration = Duration::from_secs(75);
/// Default run: give up waiting for every message to be accounted for after this.
const DEADLINE: Duration = Duration::from_secs(105);

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

    fn should_succeed(self) -> bool {
        matches!(self, Plan::Run(Behaviour::Ok | Behaviour::FailUntil(_)))
    }

    fn label(self) -> &'static str {
        match self {
            Plan::Run(Behaviour::Ok) => "ok",
            Plan::Run(Behaviour::FailUntil(_)) => "fail_until",
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
}

impl Faults {
    /// When `pid` died, if it died at or before `t`.
    fn dead_by(&self, pid: u32, t: u64) -> Option<u64> {
        self.deaths.iter().find(|d| d.pid == pid && d.at_ms <= t).map(|d| d.at_ms)
    }

    fn died(&self, pid: u32) -> bool {
        self.deaths.iter().any(|d| d.pid == pid)
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

    /// Some worker died, or Redis was down, within `[t0, t1]`.
    fn any_within(&self, t0: u64, t1: u64) -> bool {
        self.deaths.iter().any(|d| (t0..=t1).contains(&d.at_ms)) || self.outage_within(t0, t1)
    }
}

// ---------------------------------------------------------------------------------------
// What the workers recorded

/// One handler run: one delivery of a message, in one process.
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
    async fn connect(url: &str) -> Self {
        let (history, dead_letters, inspector) = Self::clients(url).await.unwrap();
        Observer {
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

    async fn clients(url: &str) -> Result<(History, DeadLetters, Inspector), streamx::Error> {
        let dlq = streamx::keys::dead_letter_stream(STREAM, &streamx::DeadLetterTarget::Default).unwrap();
        Ok((History::connect(url).await?, DeadLetters::connect(url, &dlq).await?, Inspector::connect(url).await?))
    }

    /// New connections, after Redis restarted (a client may give up routing).
    async fn reconnect(&mut self, url: &str) -> Result<(), streamx::Error> {
        (self.history, self.dead_letters, self.inspector) = Self::clients(url).await?;
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
        self.pending = self.inspector.group(STREAM, GROUP).await?.map(|g| g.pending);
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
    dir: PathBuf,
    server: RedisServer,
    workers: Vec<Child>,
    /// The stderr file of each worker in `workers`.
    logs: Vec<PathBuf>,
    last_spawn: Instant,
    spawned: usize,
    faults: Faults,
    rng: Rng,
}

impl Chaos {
    /// Starts worker number `i` (replacing a dead one).
    fn spawn(&mut self, i: usize) {
        self.spawned += 1;
        let journal = self.dir.join("journal");
        let log = self.dir.join(format!("worker-{}.log", self.spawned));
        let child = spawn_worker_logged(
            &self.url,
            REGISTRATION,
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
        let down_ms = now_ms();
        tokio::task::block_in_place(|| self.server.kill()).unwrap();
        tokio::time::sleep(Duration::from_millis(self.rng.between(200, 1000))).await;
        tokio::task::block_in_place(|| self.server.restart()).unwrap();
        let up_ms = now_ms();
        eprintln!("chaos: redis down for {} ms", up_ms - down_ms);
        self.faults.outages.push(Outage { down_ms, up_ms });
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

/// Publishes `count` messages numbered from `first` with random plans: their ids and plans.
async fn publish(producer: &Producer, rng: &mut Rng, first: u64, count: u64) -> Vec<(MessageId, Plan)> {
    let mut out = Vec::with_capacity(count as usize);
    let mut batch: Vec<ChaosJob> = Vec::new();
    let mut batch_plans: Vec<Plan> = Vec::new();
    for n in first..first + count {
        let behaviour = match rng.below(1000) {
            0..5 => None,
            5..25 => Some(Behaviour::Permanent),
            25..35 => Some(Behaviour::Panic),
            35..85 => Some(Behaviour::FailUntil(1)),
            85..115 => Some(Behaviour::FailUntil(2)),
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
                flush(producer, &mut batch, &mut batch_plans, &mut out).await;
                let raw = format!(r#"{{"n":{n},"behaviour":"#);
                let id = producer.publish_raw(STREAM, raw.into(), &PublishOptions::new()).await.unwrap();
                out.push((id, Plan::Poison));
            }
        }
    }
    flush(producer, &mut batch, &mut batch_plans, &mut out).await;
    out
}

async fn flush(
    producer: &Producer,
    batch: &mut Vec<ChaosJob>,
    plans: &mut Vec<Plan>,
    out: &mut Vec<(MessageId, Plan)>,
) {
    if batch.is_empty() {
        return;
    }
    let ids = producer.publish_batch(STREAM, batch).await.unwrap();
    out.extend(ids.into_iter().zip(plans.drain(..)));
    batch.clear();
}

// ---------------------------------------------------------------------------------------
// The verdict

#[derive(Default)]
struct Report {
    violations: BTreeMap<&'static str, Vec<String>>,
    /// Why a delivery after a final result, or during a run, was legitimate, counted.
    redeliveries: BTreeMap<&'static str, usize>,
    duplicate_successes: usize,
    max_successes: usize,
    max_attempt: u32,
    max_starts: usize,
    lost_deliveries: usize,
    interrupted: usize,
    log_failures: usize,
    dead_by_kind: BTreeMap<String, usize>,
    succeeding_dead: usize,
    succeeded_then_dead: usize,
    /// For results explained by a SIGKILL: ms from the end record to the kill.
    kill_after_end_ms: Vec<u64>,
    /// The histories a fault explained (redeliveries, dead letters after faults).
    explained: Vec<String>,
}

impl Report {
    fn violation(&mut self, what: &'static str, detail: String) {
        self.violations.entry(what).or_default().push(detail);
    }
}

/// Checks every published message against its runs, its dead letters and the faults (see
/// the module documentation for the rules).
fn verdict(published: &[(MessageId, Plan)], observer: &Observer, faults: &Faults, end_ms: u64, report: &mut Report) {
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
        runs.sort_by_key(|r| (r.attempt, r.anchor()));
        let letters = observer.dead.get(id).map(Vec::as_slice).unwrap_or_default();
        check_message(*id, *plan, &runs, letters, faults, end_ms, report);
    }
    match observer.pending {
        Some(0) => {}
        other => report.violation("XPENDING is not 0 at the end", format!("{other:?}")),
    }
    for d in faults.deaths.iter().filter(|d| d.crashed) {
        report.violation("a worker exited on its own", format!("pid {} (noticed at {})", d.pid, d.at_ms));
    }
}

fn check_message(
    id: MessageId,
    plan: Plan,
    runs: &[&Run],
    letters: &[DeadLetter],
    faults: &Faults,
    end_ms: u64,
    report: &mut Report,
) {
    let origin = faults.origin_ms;
    let story = || {
        let runs: Vec<String> = runs.iter().map(|r| r.describe(origin)).collect();
        let dead: Vec<String> = letters
            .iter()
            .map(|l| {
                let at = l.dead_lettered_at_ms as i64 - origin as i64;
                format!("dead-lettered {:?} after {} deliveries at {at}", l.kind, l.deliveries)
            })
            .collect();
        format!("{id} ({}): [{}] {}", plan.label(), runs.join("; "), dead.join("; "))
    };
    let explained_before = report.redeliveries.values().sum::<usize>();

    // Shape of the history.
    let starts = runs.iter().filter(|r| r.start_ms.is_some()).count();
    report.max_starts = report.max_starts.max(starts);
    if starts > MAX_DELIVERIES as usize {
        report.violation("more than max_retries + 1 = 3 attempts started", story());
    }
    for r in runs {
        report.max_attempt = report.max_attempt.max(r.attempt);
        if r.attempt == 0 || r.attempt > MAX_DELIVERIES {
            report.violation("an attempt number outside 1..=3", story());
        }
        if r.end.is_some() && r.start_ms.is_none() && r.log_failed.is_none() {
            report.violation("an end record without a start record", story());
        }
        if let Some((_, outcome)) = r.end {
            if plan.outcome_at(r.attempt) != Some(outcome) {
                report.violation("an outcome the plan does not call for", story());
            }
        }
        match r.fate() {
            Fate::Interrupted => report.interrupted += 1,
            Fate::Retryable if r.log_failed.is_some() => report.log_failures += 1,
            _ => {}
        }
    }
    if runs.windows(2).any(|w| w[0].attempt == w[1].attempt) {
        report.violation("one delivery ran twice", story());
    }
    if plan == Plan::Poison && !runs.is_empty() {
        report.violation("a poison message ran its handler", story());
    }
    if letters.len() > 1 {
        report.violation("dead-lettered more than once", story());
    }
    let letter = letters.first();
    let successes = runs.iter().filter(|r| matches!(r.end, Some((_, Outcome::Ok)))).count();
    report.max_successes = report.max_successes.max(successes);
    if successes > 1 {
        report.duplicate_successes += 1;
    }
    if let Some(l) = letter {
        let kind = l.kind.map_or("?", |k| k.as_str()).to_string();
        *report.dead_by_kind.entry(kind).or_default() += 1;
        if plan.should_succeed() {
            report.succeeding_dead += 1;
        }
        if successes > 0 {
            report.succeeded_then_dead += 1;
        }
        // A delivery after the one the dead letter counts: only a lease lost in the Redis
        // restart lets another consumer claim a message while its last attempt runs.
        for r in runs.iter().filter(|r| r.attempt > l.deliveries) {
            if !lease_lost_in_outage(runs, r, faults) {
                report.violation("delivered more times than its dead letter says", story());
            }
        }
    }

    // The deliveries, in order.
    let last = runs.last().map_or(0, |r| r.attempt).max(letter.map_or(0, |l| l.deliveries));
    let dead_ms = letter.map(|l| l.dead_lettered_at_ms);
    for a in 1..=last {
        let run = runs.iter().find(|r| r.attempt == a);
        let prev_ms = runs.iter().filter(|r| r.attempt < a).map(|r| r.anchor()).max().unwrap_or(id.millis());
        let next_ms = runs.iter().filter(|r| r.attempt > a).map(|r| r.anchor()).min().or(dead_ms).unwrap_or(end_ms);
        if a == last {
            check_end(plan, runs, letter, id.millis(), faults, report, &story);
            continue;
        }
        let Some(r) = run else {
            report.lost_deliveries += 1;
            if !faults.any_within(prev_ms, next_ms) {
                report.violation("a delivery left no trace and no fault explains it", story());
            }
            continue;
        };
        // The next delivery began while this run was still going (by the next run's start,
        // which comes after its delivery): only a lost lease explains that.
        let still_running = match r.finished() {
            Some(end) => next_ms < end,
            None => faults.dead_by(r.pid, next_ms).is_none(),
        };
        if still_running {
            if faults.outage_during_run(r.pid, r.anchor(), next_ms) {
                *report.redeliveries.entry("the Redis restart (lease lost while running)").or_default() += 1;
            } else if r.fate() == Fate::Interrupted && !faults.died(r.pid) {
                report.violation("an attempt started and never ended, and its process was not killed", story());
            } else {
                report.violation("delivered again while an attempt was still running, no fault explains it", story());
            }
            continue;
        }
        match r.fate() {
            Fate::Retryable if matches!(r.end, Some((_, Outcome::Ok))) => {
                // The end record was written but its XADD reported a failure: the handler
                // returned an error, so the success is run again.
                *report.redeliveries.entry("the end record's write reported a failure").or_default() += 1;
            }
            Fate::Retryable => {}
            Fate::Final(_) => match lost_result(r, next_ms, faults, report) {
                Some(why) => *report.redeliveries.entry(why).or_default() += 1,
                None => report.violation("delivered again after a final result, no fault explains it", story()),
            },
            Fate::Interrupted => {} // its process was killed before the next delivery
        }
    }
    if let Some(l) = letter {
        for r in runs.iter().filter(|r| r.start_ms.is_some_and(|s| s > l.dead_lettered_at_ms)) {
            if !lease_lost_in_outage(runs, r, faults) {
                report.violation("started after it was dead-lettered", story());
            }
        }
    }
    if last == 0 && letter.is_none() {
        report.violation("lost: never ran, never dead-lettered", story());
    }
    let odd_end =
        letter.is_some() && (plan.should_succeed() || letter.and_then(|l| l.kind) == Some(FailureKind::DeliveryLimit));
    if report.redeliveries.values().sum::<usize>() > explained_before || odd_end {
        report.explained.push(story());
    }
}

/// Whether run `r` can be a second delivery held at once with an earlier one because the
/// Redis restart cost a lease: the earlier run's (another consumer then claimed the message
/// while it ran) or `r`'s own (it waited for a permit across the outage while the message
/// was claimed and finished elsewhere).
fn lease_lost_in_outage(runs: &[&Run], r: &Run, faults: &Faults) -> bool {
    faults.outage_during_run(r.pid, r.anchor(), r.anchor())
        || runs.iter().any(|p| p.attempt < r.attempt && faults.outage_during_run(p.pid, p.anchor(), r.anchor()))
}

/// Why the result of run `r` may not have been acted on before `next_ms` (the next
/// delivery, or the dead-letter move), if a fault explains it: its process was SIGKILLed
/// before `next_ms` and (for a run that returned) within `CLAIM_IDLE` of returning, or the
/// Redis restart struck while the run was under way or its result in flight.
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

/// The end state against the last delivery: the one the dead letter counts, else the last
/// run. `published_ms`: when the message was published.
fn check_end(
    plan: Plan,
    all: &[&Run],
    letter: Option<&DeadLetter>,
    published_ms: u64,
    faults: &Faults,
    report: &mut Report,
    story: &dyn Fn() -> String,
) {
    let last = letter.map_or_else(|| all.last().map_or(0, |r| r.attempt), |l| l.deliveries);
    let run = all.iter().copied().find(|r| r.attempt == last);
    let fate = run.map(|r| r.fate());
    let prev_ms = all.iter().filter(|r| r.attempt < last).map(|r| r.anchor()).max().unwrap_or(published_ms);
    let Some(l) = letter else {
        // Not dead-lettered: acknowledged, which only a success may do. Normally the last
        // delivery's; an earlier success's ack may land late when a fault explained the
        // delivery after it (checked above), and then the last one must be explained too.
        if fate == Some(Fate::Final(Outcome::Ok)) {
            return;
        }
        if !plan.should_succeed() {
            report.violation("not dead-lettered", story());
        } else if !all.iter().any(|r| r.fate() == Fate::Final(Outcome::Ok)) {
            report.violation("acknowledged without a successful attempt (lost)", story());
        } else {
            let explained = match run {
                None => faults.any_within(prev_ms, u64::MAX),
                Some(r) => {
                    (r.fate() == Fate::Interrupted && faults.died(r.pid)) || lease_lost_in_outage(all, r, faults)
                }
            };
            if !explained {
                report.violation("acknowledged by an earlier success while a later delivery ran", story());
            }
        }
        return;
    };
    let full = l.deliveries == MAX_DELIVERIES;
    let ok = match l.kind {
        Some(FailureKind::Permanent) => fate == Some(Fate::Final(Outcome::Permanent)),
        Some(FailureKind::Panic) => {
            full && run.is_some_and(|r| r.log_failed.is_none() && matches!(r.end, Some((_, Outcome::Panic))))
        }
        Some(FailureKind::Error) => {
            full && run.is_some_and(|r| r.log_failed.is_some() || matches!(r.end, Some((_, Outcome::Fail))))
        }
        Some(FailureKind::InvalidJson) => plan == Plan::Poison && run.is_none(),
        Some(FailureKind::DeliveryLimit) => {
            full && match run {
                None => faults.any_within(prev_ms, l.dead_lettered_at_ms),
                Some(r) => lost_result(r, l.dead_lettered_at_ms, faults, report).is_some(),
            }
        }
        _ => false,
    };
    if !ok {
        report.violation("dead-lettered with a kind its last delivery does not explain", story());
    }
}

// ---------------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_message_ends_as_its_faults_explain() {
    let seed = env_u64("STREAMX_CHAOS_SEED")
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    let soak = env_u64("STREAMX_CHAOS_SOAK_SECS").map(Duration::from_secs);
    eprintln!("chaos: seed {seed} (replay with STREAMX_CHAOS_SEED={seed})");
    let (chaos_limit, deadline) = match soak {
        Some(s) => (s, s + Duration::from_secs(60)),
        None => (CHAOS_LIMIT, DEADLINE),
    };
    let mut rng = Rng(seed);

    let dir = std::env::temp_dir().join(format!("streamx-chaos-{seed}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("journal")).unwrap();
    let server = RedisServer::builder().appendonly(true).start().unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let mut published = publish(&producer, &mut rng, 0, MESSAGES).await;
    let mut observer = Observer::connect(&url).await;

    let mut chaos = Chaos {
        url: url.clone(),
        dir: dir.clone(),
        server,
        workers: Vec::new(),
        logs: Vec::new(),
        last_spawn: Instant::now(),
        spawned: 0,
        faults: Faults { origin_ms: now_ms(), ..Faults::default() },
        rng,
    };
    for i in 0..WORKERS {
        chaos.spawn(i);
    }
    let started = Instant::now();
    let mut next_kill = started + Duration::from_millis(chaos.rng.between(1000, 3000));
    // Exactly one Redis restart in a default run: when 25–60 % is done, or at 30 s.
    let restart_at_done = (MESSAGES * chaos.rng.between(25, 60) / 100) as usize;
    let mut next_restart = Some(started + Duration::from_secs(30));
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
        let soaked = soak.is_none_or(|s| started.elapsed() >= s);
        if accounted == published.len() && observer.pending == Some(0) && soaked {
            break true;
        }
        if started.elapsed() > deadline {
            break false;
        }
        chaos.replace_crashed();
        if started.elapsed() >= chaos_limit {
            continue; // calm: let the workers finish
        }
        let now = Instant::now();
        if now >= next_kill {
            chaos.kill_one();
            next_kill = now + Duration::from_millis(chaos.rng.between(1000, 3000));
        }
        let restart_due = next_restart.is_some_and(|at| now >= at)
            || (chaos.faults.outages.is_empty() && accounted >= restart_at_done);
        if restart_due && chaos.settled() {
            chaos.restart_redis().await;
            next_restart = soak.map(|_| Instant::now() + Duration::from_secs(chaos.rng.between(10, 30)));
        }
        if soak.is_some() && published.len() - accounted < 5_000 {
            let first = published.len() as u64;
            // A fresh connection: the first one may have given up during a Redis restart.
            let producer = Producer::connect(&url).await.unwrap();
            let more = publish(&producer, &mut chaos.rng, first, MESSAGES).await;
            published.extend(more);
        }
    };
    let chaos_secs = started.elapsed().as_secs_f64();
    let stop_trouble = chaos.stop_workers().await;
    let end_ms = now_ms();
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
    verdict(&published, &observer, &chaos.faults, end_ms, &mut report);
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
    let mut plans: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, p) in &published {
        *plans.entry(p.label()).or_default() += 1;
    }
    eprintln!("chaos summary (seed {seed}):");
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
        "  runs: {} logged, {} interrupted by a kill, {} log writes failed ({journal_notes} journal notes), {} deliveries left no trace",
        observer.runs.len(),
        report.interrupted,
        report.log_failures,
        report.lost_deliveries
    );
    eprintln!(
        "  max attempt {}, max starts per message {}, max successful ends per message {}",
        report.max_attempt, report.max_starts, report.max_successes
    );
    eprintln!(
        "  {} messages with more than one successful end; redeliveries a fault explained: {:?}",
        report.duplicate_successes, report.redeliveries
    );
    eprintln!(
        "  dead letters by kind {:?}; {} should-succeed messages dead-lettered after faults used their deliveries; {} dead-lettered after a successful run",
        report.dead_by_kind, report.succeeding_dead, report.succeeded_then_dead
    );
    let kill_gap = report.kill_after_end_ms.iter().max();
    eprintln!(
        "  results lost to a SIGKILL after their attempt ended: {} (kill at most {kill_gap:?} ms after the end)",
        report.kill_after_end_ms.len()
    );
    eprintln!("  XPENDING at the end: {:?}", observer.pending);

    // The histories the faults explained, and the faults, for whoever wants to look.
    let origin = chaos.faults.origin_ms;
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
    for line in &report.explained {
        notes.push_str(line);
        notes.push('\n');
    }
    std::fs::write(dir.join("explained.txt"), notes).unwrap();
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
    panic!("chaos (seed {seed}) found violations:{text}");
}
