//! Periodic jobs: an async fn run on a cron schedule whose result is published to a stream,
//! **once per tick across every process running the job** (`#[periodic(...)]` or
//! [`PeriodicJob`]).
//!
//! Every running runtime runs one task per job. At each tick (UTC, on this machine's
//! clock) the task:
//! 1. reads the job's state key ([`keys::periodic_state`](crate::keys::periodic_state)), the
//!    tick of the last entry the job published; when it is this tick or a later one, another
//!    process won the tick: nothing more to do (counted as `published_elsewhere`);
//! 2. runs the job's fn (in every process that found the tick unpublished: they all wake at
//!    the tick, so usually in all of them; keep it cheap and free of side effects);
//! 3. runs [`PUBLISH_TICK`], which publishes the result only if the tick is still newer
//!    than the state, and sets the state to the tick, atomically.
//!
//! A fn that fails (returns `Err` or panics) publishes nothing and leaves the state as it is:
//! another process may still publish the tick, and one that publishes a later tick makes it
//! unreachable (counted as `failed`, logged).
//!
//! Missed ticks (no process ran, or this one stalled): with `catch_up = false` (the
//! default) only the latest due tick is published and the older ones are skipped (a start
//! skips every tick before it); with `catch_up = true` every tick after the last published
//! one is published in order, at most the latest [`MAX_CATCH_UP`] of them.
//!
//! Why a "last published tick" rather than a key per tick (`SET ... NX`): one key per job,
//! never expiring, needs no TTL chosen against the longest outage and leaves nothing to
//! clean up; and a tick older than the last published one can never be published late by a
//! slow process, which a per-tick key that expired would allow.

use std::borrow::Cow;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use croner::Cron;
use fred::interfaces::KeysInterface;
use fred::types::scripts::Script;
use fred::types::Value;
use futures_util::FutureExt;
use metrics::Counter;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::connection::HealingClient;
use crate::handler::BoxFuture;
use crate::location::SourceLocation;
use crate::message::{Headers, MessageId};
use crate::observe::names::{
    LABEL_JOB, LABEL_REASON, LABEL_STREAM, PERIODIC_PUBLISHED, PERIODIC_SKIPPED, SKIPPED_FAILED, SKIPPED_MISSED,
    SKIPPED_PUBLISHED_ELSEWHERE,
};
use crate::retry_delay::RetryDelay;
use crate::scripts::{assemble, NOW_MS};
use crate::state::State;
use crate::wire::{entry_fields, value_bytes};

/// The header of every entry a periodic job publishes: its tick, as Unix milliseconds (UTC).
pub const PERIODIC_TICK_HEADER: &str = "streamx-periodic-tick";

/// The most missed ticks a job with `catch_up = true` publishes after a gap (the latest
/// ones; older ones are skipped and counted as `missed`).
pub const MAX_CATCH_UP: usize = 100;

/// The tick a periodic job's fn runs for: when it was due, on the schedule (UTC), and the
/// runtime's application state ([`RuntimeBuilder::state`](crate::RuntimeBuilder::state)).
///
/// ```
/// use streamx_runtime::{State, Tick};
/// let tick = Tick::from_unix_ms(1_700_000_000_000).with_state(State::new().with(7u32));
/// assert_eq!(tick.unix_ms(), 1_700_000_000_000);
/// assert_eq!(tick.time(), std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
/// assert_eq!(tick.state::<u32>(), Some(&7));
/// ```
#[derive(Debug, Clone)]
pub struct Tick {
    unix_ms: u64,
    state: State,
}

impl Tick {
    /// The tick at `unix_ms`, without state (for unit tests of a job's fn).
    pub fn from_unix_ms(unix_ms: u64) -> Self {
        Tick { unix_ms, state: State::new() }
    }

    /// The same tick with this application state (for unit tests of a job's fn).
    pub fn with_state(mut self, state: State) -> Self {
        self.state = state;
        self
    }

    /// When the tick was due, as Unix milliseconds (UTC).
    pub fn unix_ms(&self) -> u64 {
        self.unix_ms
    }

    /// When the tick was due.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_ms)
    }

    /// The application state of type `S` given to the runtime, as `msg.state::<S>()` in a
    /// handler.
    pub fn state<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.state.get::<S>()
    }
}

/// What a job's fn gives the scheduler: the encoded payload, or why there is none.
type RunFn = Arc<dyn Fn(Tick) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync>;

/// The trampoline the `#[periodic]` macro generates: runs the user's fn and encodes its
/// result.
pub type PeriodicFn = fn(Tick) -> BoxFuture<'static, Result<Bytes, String>>;

/// A periodic job given to the runtime by hand ([`RuntimeBuilder::periodic`](crate::RuntimeBuilder::periodic)),
/// the equivalent of `#[periodic(...)]`.
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// use streamx_runtime::{PeriodicJob, Runtime, Tick};
///
/// #[derive(serde::Serialize)]
/// struct Report { at_ms: u64 }
///
/// let job = PeriodicJob::new("reports", "0 */5 * * * *", "reports", |tick: Tick| async move {
///     Report { at_ms: tick.unix_ms() }
/// });
/// Runtime::builder().periodic(job.catch_up(true)).build()?.run().await
/// # }
/// ```
#[derive(Clone)]
pub struct PeriodicJob {
    name: Cow<'static, str>,
    cron: Cow<'static, str>,
    stream: Cow<'static, str>,
    catch_up: bool,
    pub(crate) location: SourceLocation,
    run: RunFn,
}

impl std::fmt::Debug for PeriodicJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeriodicJob")
            .field("name", &self.name)
            .field("cron", &self.cron)
            .field("stream", &self.stream)
            .field("catch_up", &self.catch_up)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PeriodicJob {
    /// A job named `name` that publishes what `f` returns (as JSON) to `stream` at each tick
    /// of `cron` (5 fields, or 6 with seconds first, or 7 with a year last; UTC), with
    /// `catch_up = false`. The cron expression is checked by
    /// [`RuntimeBuilder::build`](crate::RuntimeBuilder::build).
    #[track_caller]
    pub fn new<F, Fut, T>(
        name: impl Into<Cow<'static, str>>,
        cron: impl Into<Cow<'static, str>>,
        stream: impl Into<Cow<'static, str>>,
        f: F,
    ) -> Self
    where
        F: Fn(Tick) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Serialize,
    {
        let run: RunFn = Arc::new(move |tick| payload(f(tick)));
        Self::with_run(name.into(), cron.into(), stream.into(), SourceLocation::caller(), run)
    }

    /// Like [`new`](Self::new), for a fn that may fail: an `Err` publishes nothing for the
    /// tick (logged, counted as `failed`), and another process may still publish it.
    #[track_caller]
    pub fn fallible<F, Fut, T, E>(
        name: impl Into<Cow<'static, str>>,
        cron: impl Into<Cow<'static, str>>,
        stream: impl Into<Cow<'static, str>>,
        f: F,
    ) -> Self
    where
        F: Fn(Tick) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: std::fmt::Display,
    {
        let run: RunFn = Arc::new(move |tick| payload_or_error(f(tick)));
        Self::with_run(name.into(), cron.into(), stream.into(), SourceLocation::caller(), run)
    }

    fn with_run(
        name: Cow<'static, str>,
        cron: Cow<'static, str>,
        stream: Cow<'static, str>,
        location: SourceLocation,
        run: RunFn,
    ) -> Self {
        PeriodicJob { name, cron, stream, catch_up: false, location, run }
    }

    /// Whether ticks missed while no process ran the job (or this one stalled) are
    /// published after all, in order, at most the latest [`MAX_CATCH_UP`] (default false:
    /// they are skipped, and only ticks due from the start on are published).
    pub fn catch_up(mut self, on: bool) -> Self {
        self.catch_up = on;
        self
    }

    /// The job's name (logs, metrics, `only`, and its state key).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream the job publishes to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The cron expression, as given.
    pub fn cron(&self) -> &str {
        &self.cron
    }

    /// Whether missed ticks are caught up.
    pub fn catches_up(&self) -> bool {
        self.catch_up
    }

    /// The parsed schedule, or why the job cannot run.
    pub(crate) fn validate(&self) -> Result<Cron, String> {
        if self.name.is_empty() {
            return Err("the job name is empty".into());
        }
        if self.stream.is_empty() {
            return Err("the stream name is empty".into());
        }
        parse_cron(&self.cron)
    }
}

/// Parses a cron expression as the runtime and the macro do (croner's default parser: 5, 6 or
/// 7 fields, POSIX weekdays), with the expression in the error.
pub fn parse_cron(cron: &str) -> Result<Cron, String> {
    Cron::from_str(cron).map_err(|e| format!("invalid cron expression {cron:?}: {e}"))
}

/// Encodes the output of a job's fn as JSON.
fn payload<Fut>(fut: Fut) -> BoxFuture<'static, Result<Bytes, String>>
where
    Fut: Future + Send + 'static,
    Fut::Output: Serialize,
{
    Box::pin(async move { encode(&fut.await) })
}

/// Encodes the `Ok` output of a fallible job's fn as JSON; an `Err` as its message.
fn payload_or_error<Fut, T, E>(fut: Fut) -> BoxFuture<'static, Result<Bytes, String>>
where
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Serialize,
    E: std::fmt::Display,
{
    Box::pin(async move { fut.await.into_payload() })
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, String> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| format!("cannot encode the payload as JSON: {e}"))
}

/// What a periodic job's fn may take: the [`Tick`] only.
#[diagnostic::on_unimplemented(
    message = "a periodic job's argument must be the tick, not `{Self}`",
    label = "not `Tick`",
    note = "a periodic job takes no argument or `streamx::Tick` (when the tick was due)"
)]
pub trait PeriodicArg {
    /// The argument for `tick`.
    fn from_tick(tick: Tick) -> Self;
}

impl PeriodicArg for Tick {
    fn from_tick(tick: Tick) -> Self {
        tick
    }
}

/// What a fallible periodic job's fn may return: `Result<T, E>` with a serializable `T` and a
/// displayable `E`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a periodic job",
    label = "not `Result<T, E>` with `T: Serialize` and `E: Display`",
    note = "a periodic job returns its payload (any `serde::Serialize`) or `Result<T, E>` with `T: serde::Serialize` and `E: std::fmt::Display`"
)]
pub trait PeriodicResult {
    /// The encoded payload, or the error's message.
    fn into_payload(self) -> Result<Bytes, String>;
}

impl<T: Serialize, E: std::fmt::Display> PeriodicResult for Result<T, E> {
    fn into_payload(self) -> Result<Bytes, String> {
        match self {
            Ok(value) => encode(&value),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Not public API: checks the argument type of a `#[periodic]` fn, spanned on it.
#[doc(hidden)]
pub const fn assert_periodic_arg<A: PeriodicArg>() {}

/// Not public API: checks the payload type of a `#[periodic]` fn, spanned on it.
#[doc(hidden)]
pub const fn assert_periodic_payload<T: Serialize>() {}

/// Not public API: checks the `Result` type of a fallible `#[periodic]` fn, spanned on it.
#[doc(hidden)]
pub const fn assert_periodic_result<R: PeriodicResult>() {}

/// Not public API: the argument of a `#[periodic]` fn that takes the tick.
#[doc(hidden)]
pub fn periodic_arg<A: PeriodicArg>(tick: Tick) -> A {
    A::from_tick(tick)
}

/// Not public API: what the `#[periodic]` trampoline calls for a fn returning a payload `T`
/// (named, so a wrong one fails the same bound on the same tokens as the assertion).
#[doc(hidden)]
pub fn invoke_periodic<Fut, T>(fut: Fut) -> BoxFuture<'static, Result<Bytes, String>>
where
    Fut: Future<Output = T> + Send + 'static,
    T: Serialize,
{
    payload(fut)
}

/// Not public API: what the `#[periodic]` trampoline calls for a fn returning `Result`.
#[doc(hidden)]
pub fn invoke_periodic_result<Fut, R>(fut: Fut) -> BoxFuture<'static, Result<Bytes, String>>
where
    Fut: Future<Output = R> + Send + 'static,
    R: PeriodicResult,
{
    Box::pin(async move { fut.await.into_payload() })
}

/// A job declared with `#[periodic]`: const data, collected at link time.
#[derive(Debug)]
pub struct PeriodicRegistration {
    name: &'static str,
    cron: &'static str,
    stream: &'static str,
    catch_up: bool,
    location: SourceLocation,
    run: PeriodicFn,
}

impl PeriodicRegistration {
    /// A registration with `catch_up = false` (what the macro starts from).
    pub const fn new(
        name: &'static str,
        cron: &'static str,
        stream: &'static str,
        location: SourceLocation,
        run: PeriodicFn,
    ) -> Self {
        PeriodicRegistration { name, cron, stream, catch_up: false, location, run }
    }

    /// Sets `catch_up`.
    pub const fn catch_up(mut self, on: bool) -> Self {
        self.catch_up = on;
        self
    }

    /// The registration name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Turns the registration into a runnable [`PeriodicJob`].
    pub fn to_job(&self) -> PeriodicJob {
        let trampoline = self.run;
        let run: RunFn = Arc::new(trampoline);
        let job = PeriodicJob::with_run(
            Cow::Borrowed(self.name),
            Cow::Borrowed(self.cron),
            Cow::Borrowed(self.stream),
            self.location,
            run,
        );
        job.catch_up(self.catch_up)
    }
}

inventory::collect!(PeriodicRegistration);

/// Every periodic job registered with `#[periodic]` in the binary, by name.
pub fn registered_periodic() -> Vec<&'static PeriodicRegistration> {
    let mut all: Vec<_> = inventory::iter::<PeriodicRegistration>.into_iter().collect();
    all.sort_by_key(|r| (r.name, r.location.file, r.location.line));
    all
}

/// Publishes one tick of a job. KEYS: stream, the job's state. ARGV: the tick (Unix ms),
/// then the entry's fields and values (`data`, `h:*`, the tick header among them). Replies
/// `{1, id}` when it published the entry, `{0, last}` when the state holds this tick or a
/// later one (published by another process, or by an earlier run of this very script),
/// `{2, now}` when the tick is not due yet on the Redis clock (a process whose clock runs
/// ahead waits and asks again).
///
/// If the process dies before the script, nothing is published: another process (or the
/// next start, with `catch_up`) publishes the tick. The script is atomic and its first write
/// is the XADD (an XADD refused, e.g. the key holds another type, fails it having written
/// nothing), then the state: a tick is published and marked together or not at all. If the
/// process dies after, the tick is published once. A script re-sent by the client after a
/// reconnect finds its own tick in the state and writes nothing.
///
/// The XADD's arguments go through `unpack`: a payload fn's entry has two fields and one
/// header, far from the limit.
pub(crate) static PUBLISH_TICK: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS],
        r#"
local tick = tonumber(ARGV[1])
local last = redis.call('GET', KEYS[2])
if last and tonumber(last) >= tick then return {0, last} end
local now = now_ms()
if tick > now then return {2, now} end
local args = {'XADD', KEYS[1], '*'}
for i = 2, #ARGV do table.insert(args, ARGV[i]) end
local id = redis.call(unpack(args))
redis.call('SET', KEYS[2], ARGV[1])
return {1, id}
"#,
    )
});

/// [`PUBLISH_TICK`] for the permission check (required of runtimes with periodic jobs).
pub(crate) fn engine_script() -> crate::permissions::EngineScript {
    crate::permissions::EngineScript {
        serves: crate::permissions::Serves::Periodic,
        name: "periodic tick publish",
        ident: "PUBLISH_TICK",
        script: &PUBLISH_TICK,
    }
}

/// What [`PUBLISH_TICK`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Published {
    /// This process published the tick as this entry.
    Added(MessageId),
    /// The state holds this tick (Unix ms) or a later one.
    Known(u64),
    /// The tick is not due on the Redis clock, which reads this (Unix ms).
    Early(u64),
}

impl Published {
    fn parse(reply: Value) -> Option<Published> {
        let mut parts = reply.into_array().into_iter();
        let status = parts.next().and_then(|v| v.as_u64())?;
        let value = value_bytes(parts.next()?)?;
        match status {
            1 => MessageId::parse_bytes(&value).map(Published::Added),
            0 => std::str::from_utf8(&value).ok()?.parse().ok().map(Published::Known),
            2 => std::str::from_utf8(&value).ok()?.parse().ok().map(Published::Early),
            _ => None,
        }
    }
}

/// The ticks to publish when the last one dealt with is `after` (exclusive) and the time
/// is `now` (inclusive), oldest first: every due tick when catching up, at most the latest
/// `keep` of them; and how many older due ticks are left out (counted up to 100,000).
fn due_ticks(cron: &Cron, after: u64, now: u64, keep: usize) -> (Vec<u64>, u64) {
    let mut due = Vec::new();
    let mut cursor = at(now);
    let mut inclusive = true;
    while due.len() < keep {
        match cron.find_previous_occurrence(&cursor, inclusive) {
            Ok(t) if ms(&t) > after => {
                due.push(ms(&t));
                cursor = t;
                inclusive = false;
            }
            _ => break,
        }
    }
    due.reverse();
    let mut skipped = 0;
    if let Some(&oldest) = due.first() {
        let mut cursor = at(after);
        while skipped < 100_000 {
            match cron.find_next_occurrence(&cursor, false) {
                Ok(t) if ms(&t) < oldest => {
                    skipped += 1;
                    cursor = t;
                }
                _ => break,
            }
        }
    }
    (due, skipped)
}

/// The first tick after `after` (Unix ms); `None` when the schedule has no more.
fn next_tick(cron: &Cron, after: u64) -> Option<u64> {
    cron.find_next_occurrence(&at(after), false).ok().map(|t| ms(&t))
}

fn at(unix_ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(unix_ms).unwrap_or(i64::MAX)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn ms(t: &DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A job ready to run: validated, with its schedule.
#[derive(Debug, Clone)]
pub(crate) struct Scheduled {
    pub(crate) job: PeriodicJob,
    pub(crate) cron: Cron,
}

/// Starts one task per job; each runs until `stop`.
pub(crate) fn spawn_all(
    jobs: Vec<Scheduled>,
    client: &HealingClient,
    state: &State,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    jobs.into_iter()
        .map(|job| {
            tracing::info!(job = %job.job.name, stream = %job.job.stream, cron = %job.job.cron, catch_up = job.job.catch_up, "starting periodic job");
            tokio::spawn(supervise(job, client.clone(), state.clone(), stop.clone()))
        })
        .collect()
}

/// Runs a job's task until `stop`, restarting it (after a pause that grows to 5 s) if it
/// panics, so a job never dies silently. (A panic of the job's own fn is caught per tick; this
/// is for the scheduler itself.)
async fn supervise(job: Scheduled, client: HealingClient, state: State, stop: CancellationToken) {
    let mut backoff = RetryDelay::new();
    loop {
        let runner = Runner::new(job.clone(), client.clone(), state.clone(), stop.clone());
        let Err(join) = tokio::spawn(runner.run()).await else {
            return; // stopped, or the schedule has no more ticks
        };
        if stop.is_cancelled() {
            return;
        }
        tracing::error!(job = job.job.name(), reason = %join, retry_in = ?backoff.current(), "periodic job task ended; restarting it");
        backoff.wait(&stop).await;
    }
}

/// How one tick went for this process.
enum Outcome {
    /// Dealt with: published here or elsewhere, or failed in the fn.
    Done,
    /// Redis failed: try the tick again after a backoff (unless a newer tick is due meanwhile
    /// and the job does not catch up).
    Retry,
    /// Shutdown.
    Stop,
}

/// The task of one job.
struct Runner {
    job: PeriodicJob,
    cron: Cron,
    client: HealingClient,
    stop: CancellationToken,
    /// The runtime's application state, handed to the fn with each tick.
    app_state: State,
    state: String,
    published: Counter,
    elsewhere: Counter,
    missed: Counter,
    failed: Counter,
}

impl Runner {
    fn new(s: Scheduled, client: HealingClient, app_state: State, stop: CancellationToken) -> Self {
        let stream = s.job.stream.to_string();
        let name = s.job.name.to_string();
        let labels = [(LABEL_STREAM, stream.clone()), (LABEL_JOB, name.clone())];
        let skipped = |reason: &'static str| metrics::counter!(PERIODIC_SKIPPED, LABEL_STREAM => stream.clone(), LABEL_JOB => name.clone(), LABEL_REASON => reason);
        Runner {
            state: crate::keys::periodic_state(&stream, &name),
            published: metrics::counter!(PERIODIC_PUBLISHED, &labels),
            elsewhere: skipped(SKIPPED_PUBLISHED_ELSEWHERE),
            missed: skipped(SKIPPED_MISSED),
            failed: skipped(SKIPPED_FAILED),
            job: s.job,
            cron: s.cron,
            client,
            stop,
            app_state,
        }
    }

    async fn run(self) {
        let stream = self.job.stream();
        if let Err(e) = crate::stream_names::register(&self.client.get(), stream).await {
            tracing::debug!(stream, error = %e, "cannot add the stream to the registry of stream names");
        }
        let mut after = self.start_after().await;
        let keep = if self.job.catch_up { MAX_CATCH_UP } else { 1 };
        let mut backoff = RetryDelay::new();
        loop {
            let now = now_ms();
            let (due, skipped) = due_ticks(&self.cron, after, now, keep);
            if skipped > 0 {
                self.missed.increment(skipped);
                tracing::warn!(job = self.job.name(), stream, skipped, "periodic job: missed ticks skipped");
            }
            let mut retry = false;
            for tick in due {
                match self.tick(tick).await {
                    Outcome::Done => after = tick,
                    Outcome::Retry => {
                        retry = true;
                        break;
                    }
                    Outcome::Stop => return,
                }
            }
            let wait = if retry {
                backoff.advance()
            } else {
                backoff.reset();
                match next_tick(&self.cron, after.max(now)) {
                    Some(next) => Duration::from_millis(next.saturating_sub(now_ms())),
                    None => {
                        tracing::info!(job = self.job.name(), "periodic job: the schedule has no more ticks");
                        return;
                    }
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Where the first run starts: now, unless the job catches up and has published before
    /// (then right after its last published tick).
    async fn start_after(&self) -> u64 {
        let now = now_ms();
        if !self.job.catch_up {
            return now;
        }
        loop {
            match self.last_published().await {
                Ok(Some(last)) => return last.min(now),
                Ok(None) => return now,
                Err(e) => {
                    tracing::warn!(job = self.job.name(), error = %e, "periodic job: cannot read its state; retrying");
                    tokio::select! {
                        _ = self.stop.cancelled() => return now,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    async fn last_published(&self) -> Result<Option<u64>, fred::error::Error> {
        let used = self.client.get();
        let last: Option<String> = match used.get(&self.state).await {
            Ok(last) => last,
            Err(e) => {
                self.client.heal(&used, &e).await;
                return Err(e);
            }
        };
        Ok(last.and_then(|l| l.parse().ok()))
    }

    /// Publishes `tick` unless another process did.
    async fn tick(&self, tick: u64) -> Outcome {
        let span = tracing::info_span!("streamx.periodic", job = self.job.name(), stream = self.job.stream(), tick);
        self.tick_inner(tick).instrument(span).await
    }

    async fn tick_inner(&self, tick: u64) -> Outcome {
        let name = self.job.name();
        match self.last_published().await {
            Ok(Some(last)) if last >= tick => {
                self.elsewhere.increment(1);
                tracing::debug!(job = name, last, "periodic tick: published by another process");
                return Outcome::Done;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job = name, error = %e, "periodic tick: cannot read the job's state; retrying");
                return Outcome::Retry;
            }
        }
        let run =
            AssertUnwindSafe((self.job.run)(Tick { unix_ms: tick, state: self.app_state.clone() })).catch_unwind();
        let data = tokio::select! {
            _ = self.stop.cancelled() => return Outcome::Stop,
            data = run => data,
        };
        let data = match data {
            Ok(Ok(data)) => data,
            Ok(Err(error)) => {
                self.failed.increment(1);
                tracing::warn!(
                    job = name,
                    error,
                    "periodic tick: the job's fn failed; nothing published by this process"
                );
                return Outcome::Done;
            }
            Err(_) => {
                self.failed.increment(1);
                tracing::warn!(job = name, "periodic tick: the job's fn panicked; nothing published by this process");
                return Outcome::Done;
            }
        };
        let headers = Headers::new().with(PERIODIC_TICK_HEADER, tick.to_string());
        let mut args = vec![Value::from(tick.to_string())];
        args.extend(entry_fields(data, &headers).into_iter().flat_map(|(k, v)| [Value::Bytes(k.into_bytes()), v]));
        let keys = vec![self.job.stream().to_string(), self.state.clone()];
        // A clock ahead of Redis's: wait for the tick on the Redis clock, a few times at most.
        for _ in 0..5 {
            let used = self.client.get();
            let reply: Result<Value, _> = PUBLISH_TICK.evalsha_with_reload(&used, keys.clone(), args.clone()).await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(e) => {
                    self.client.heal(&used, &e).await;
                    tracing::warn!(job = name, error = %e, "periodic tick: cannot publish; retrying");
                    return Outcome::Retry;
                }
            };
            match Published::parse(reply) {
                Some(Published::Added(id)) => {
                    self.published.increment(1);
                    tracing::debug!(job = name, %id, "periodic tick published");
                    return Outcome::Done;
                }
                Some(Published::Known(last)) => {
                    self.elsewhere.increment(1);
                    tracing::debug!(job = name, last, "periodic tick: published by another process");
                    return Outcome::Done;
                }
                Some(Published::Early(redis_now)) => {
                    let wait = Duration::from_millis(tick.saturating_sub(redis_now).max(1));
                    tokio::select! {
                        _ = self.stop.cancelled() => return Outcome::Stop,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                None => {
                    tracing::warn!(job = name, "periodic tick: the publish script replied with something unexpected");
                    return Outcome::Retry;
                }
            }
        }
        tracing::warn!(
            job = name,
            "periodic tick: not due on the Redis clock, which is behind this machine's; retrying"
        );
        Outcome::Retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(expr: &str) -> Cron {
        parse_cron(expr).unwrap()
    }

    const T0: u64 = 1_700_000_000_000; // a whole second

    #[test]
    fn without_catch_up_only_the_latest_due_tick_is_published() {
        let every_second = cron("* * * * * *");
        assert_eq!(due_ticks(&every_second, T0, T0 + 500, 1), (vec![], 0));
        assert_eq!(due_ticks(&every_second, T0, T0 + 1_000, 1), (vec![T0 + 1_000], 0));
        assert_eq!(due_ticks(&every_second, T0, T0 + 5_300, 1), (vec![T0 + 5_000], 4));
    }

    #[test]
    fn catch_up_publishes_every_missed_tick_in_order_up_to_the_bound() {
        let every_second = cron("* * * * * *");
        let (due, skipped) = due_ticks(&every_second, T0, T0 + 3_999, MAX_CATCH_UP);
        assert_eq!((due, skipped), (vec![T0 + 1_000, T0 + 2_000, T0 + 3_000], 0));
        let (due, skipped) = due_ticks(&every_second, T0, T0 + 150_000, MAX_CATCH_UP);
        assert_eq!(due.len(), MAX_CATCH_UP);
        assert_eq!((due[0], due[MAX_CATCH_UP - 1], skipped), (T0 + 51_000, T0 + 150_000, 50));
    }

    #[test]
    fn five_fields_are_minutes_and_the_next_tick_is_after() {
        let every_5_min = cron("*/5 * * * *");
        // 1_700_000_000 s is 2023-11-14 22:13:20 UTC: the next five-minute mark is 22:15:00.
        assert_eq!(next_tick(&every_5_min, T0), Some(T0 + 100_000));
        assert_eq!(next_tick(&cron("0 */5 * * * *"), T0), Some(T0 + 100_000));
        assert!(parse_cron("61 * * * *").unwrap_err().contains("invalid cron expression \"61 * * * *\""));
    }

    #[test]
    fn the_script_reply_is_parsed() {
        let reply = |status: i64, value: &str| Value::Array(vec![Value::from(status), Value::from(value)]);
        assert_eq!(Published::parse(reply(1, "5-0")), Some(Published::Added(MessageId::new(5, 0))));
        assert_eq!(Published::parse(reply(0, "1700000000000")), Some(Published::Known(T0)));
        assert_eq!(Published::parse(reply(2, "17")), Some(Published::Early(17)));
        assert_eq!(Published::parse(reply(3, "17")), None);
    }
}
