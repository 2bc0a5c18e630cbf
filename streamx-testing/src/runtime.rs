//! [`TestRuntime`]: the application's consumers running against a throwaway
//! `redis-server`, with waits on the runtime's own counters instead of sleeps.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use fred::interfaces::StreamsInterface;
use fred::types::Value;
use serde::Serialize;
use streamx_runtime::keys::dead_letter_stream;
use streamx_runtime::{
    Backoff, Consumer, ConsumerStatsSnapshot, DeadLetter, DeadLetters, Inspector, MessageId, PeriodicJob, Producer,
    RunningRuntime, Runtime, RuntimeBuilder,
};

use crate::error::TestingError;
use crate::server::RedisServer;

/// How long the waits of a [`TestRuntime`] wait by default before failing.
pub const DEFAULT_WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Pause between two checks of a waited-for condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Dead letters read per round trip by [`TestRuntime::dead_letters`].
const DEAD_LETTER_PAGE: u64 = 500;

/// The consumers of the test binary (every `#[stream_consumer]`, or the ones you pick),
/// running against a `redis-server` of their own that is thrown away afterwards.
///
/// Each `TestRuntime` starts its own server on a free loopback port, so tests running in
/// parallel never see each other's messages even though the attribute fixes the stream
/// names at compile time. The waits poll the runtime's counters
/// ([`stats`](Self::stats)) and Redis itself, with a deadline (30 s unless
/// [`TestRuntimeBuilder::wait_limit`] says otherwise): no sleeps in your tests.
///
/// ```no_run
/// # #[derive(serde::Serialize)] struct Order { id: u64 }
/// # async fn demo() -> Result<(), streamx_testing::TestingError> {
/// use streamx_testing::TestRuntime;
///
/// let app = TestRuntime::start().await?; // every #[stream_consumer] of the test binary
/// app.publish("orders", &Order { id: 1 }).await?;
/// app.wait_until_handled(1).await?; // one handler run succeeded
/// assert!(app.dead_letters("orders").await?.is_empty());
/// app.shutdown().await?;
/// # Ok(()) }
/// ```
///
/// Dropping it without [`shutdown`](Self::shutdown) stops the consumers in the background
/// (inside a Tokio runtime) and then the server.
pub struct TestRuntime {
    /// `None` once shut down (or while dropping).
    running: Option<RunningRuntime>,
    producer: Producer,
    inspector: Inspector,
    /// The stream, group and dead-letter stream of every consumer.
    consumers: Vec<ConsumerKeys>,
    wait_limit: Duration,
    /// Dropped after the runtime has stopped; `None` once shut down.
    server: Option<RedisServer>,
    url: String,
}

struct ConsumerKeys {
    name: String,
    stream: String,
    group: String,
    dead_letters: Option<String>,
}

/// Configures a [`TestRuntime`]; from [`TestRuntime::builder`].
#[must_use = "a builder does nothing until `start` is called"]
pub struct TestRuntimeBuilder {
    registered: bool,
    only: Option<Vec<String>>,
    streams: Option<Vec<String>>,
    consumers: Vec<Consumer>,
    periodic: Vec<PeriodicJob>,
    backoff: Option<Backoff>,
    wait_limit: Duration,
    configure: Vec<Box<dyn FnOnce(RuntimeBuilder) -> RuntimeBuilder + Send>>,
}

impl std::fmt::Debug for TestRuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRuntimeBuilder")
            .field("registered", &self.registered)
            .field("only", &self.only)
            .field("streams", &self.streams)
            .field("consumers", &self.consumers)
            .field("periodic", &self.periodic)
            .field("backoff", &self.backoff)
            .field("wait_limit", &self.wait_limit)
            .field("configure", &self.configure.len())
            .finish()
    }
}

impl TestRuntimeBuilder {
    /// Runs only the registered consumers and periodic jobs with these registration names (the fn's path,
    /// e.g. `my_app::billing::charge`, unless `name = ".."` says otherwise). An unknown
    /// name fails [`start`](Self::start) with the list of registered names.
    pub fn only<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Runs only the registered consumers of these streams (and the registered periodic
    /// jobs publishing to them).
    pub fn streams<I, S>(mut self, streams: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.streams = Some(streams.into_iter().map(Into::into).collect());
        self
    }

    /// Adds a periodic job built with [`PeriodicJob::new`] (the test binary's `#[periodic]`
    /// jobs run too, as registered consumers do).
    pub fn periodic(mut self, job: PeriodicJob) -> Self {
        self.periodic.push(job);
        self
    }

    /// Whether to run the consumers registered with `#[stream_consumer]` and the periodic
    /// jobs registered with `#[periodic]` (default true).
    pub fn registered_consumers(mut self, enabled: bool) -> Self {
        self.registered = enabled;
        self
    }

    /// Adds a consumer built with [`Consumer::new`].
    pub fn consumer(mut self, consumer: Consumer) -> Self {
        self.consumers.push(consumer);
        self
    }

    /// Replaces every consumer's retry backoff, e.g. `Backoff::new(10ms, 1.0, 10ms)`, so a
    /// test of retries and dead letters does not wait for the production delays. The
    /// number of retries stays the consumer's own.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// How long the waits wait before failing with [`TestingError::Timeout`] (default 30 s).
    pub fn wait_limit(mut self, limit: Duration) -> Self {
        self.wait_limit = limit;
        self
    }

    /// Makes `value` available to handlers as `msg.state::<S>()`, as
    /// [`RuntimeBuilder::state`] does.
    pub fn state<S: Send + Sync + 'static>(self, value: S) -> Self {
        self.configure(move |b| b.state(value))
    }

    /// Any other runtime setting, e.g. `.configure(|b| b.shutdown_timeout(d))`. The URL and
    /// the consumers are the test runtime's.
    pub fn configure(mut self, f: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder + Send + 'static) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// Starts a `redis-server` (from `PATH`, or `STREAMX_REDIS_SERVER`), then the consumers
    /// against it, and connects a producer.
    ///
    /// # Errors
    ///
    /// [`TestingError::RedisServerNotFound`] (saying how to install it) when there is no
    /// `redis-server`; [`TestingError::Runtime`] when the runtime refuses its configuration
    /// (an unknown name in [`only`](Self::only), a duplicate name, an invalid option) or
    /// cannot start.
    pub async fn start(self) -> Result<TestRuntime, TestingError> {
        let server = tokio::task::spawn_blocking(RedisServer::start).await.map_err(|e| TestingError::Setup {
            what: "starting redis-server".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
        let url = server.url();
        let wait_limit = self.wait_limit;
        let runtime = self.runtime(&url)?;
        let consumers = runtime
            .consumers()
            .iter()
            .map(|c| ConsumerKeys {
                name: c.name().to_string(),
                stream: c.stream().to_string(),
                group: c.group().to_string(),
                dead_letters: dead_letter_stream(c.stream(), &c.options().retry.dead_letter),
            })
            .collect();
        let running = runtime.start().await.map_err(|e| TestingError::runtime("starting the consumers", e))?;
        let producer = Producer::connect(&url).await.map_err(|e| TestingError::runtime("connecting a producer", e))?;
        let inspector =
            Inspector::connect(&url).await.map_err(|e| TestingError::runtime("connecting an inspector", e))?;
        Ok(TestRuntime {
            running: Some(running),
            producer,
            inspector,
            consumers,
            wait_limit,
            server: Some(server),
            url,
        })
    }

    /// The runtime: the chosen consumers against `url`, nothing from the environment.
    fn runtime(self, url: &str) -> Result<Runtime, TestingError> {
        let mut builder = Runtime::builder().redis_url(url).registered_consumers(false).registered_periodic_jobs(false);
        if self.registered {
            let jobs = streamx_runtime::registered_periodic().into_iter().map(|r| r.to_job());
            for job in
                jobs.filter(|j| self.streams.as_ref().is_none_or(|streams| streams.iter().any(|s| s == j.stream())))
            {
                builder = builder.periodic(job);
            }
            let registered = streamx_runtime::registered().into_iter().map(|r| r.to_consumer());
            let chosen = registered.filter(|c| match &self.streams {
                Some(streams) => streams.iter().any(|s| s == c.stream()),
                None => true,
            });
            for consumer in chosen {
                builder = builder.consumer(with_backoff(consumer, self.backoff));
            }
        }
        for consumer in self.consumers {
            builder = builder.consumer(with_backoff(consumer, self.backoff));
        }
        for job in self.periodic {
            builder = builder.periodic(job);
        }
        if let Some(only) = self.only {
            builder = builder.only(only);
        }
        for configure in self.configure {
            builder = configure(builder);
        }
        builder.redis_url(url).build().map_err(|e| TestingError::runtime("configuring the runtime", e))
    }
}

/// `consumer` with its backoff replaced, when one is given.
fn with_backoff(consumer: Consumer, backoff: Option<Backoff>) -> Consumer {
    match backoff {
        Some(backoff) => consumer.backoff(backoff),
        None => consumer,
    }
}

impl TestRuntime {
    /// Every `#[stream_consumer]` of the test binary against a fresh `redis-server`; see
    /// [`TestRuntimeBuilder::start`].
    ///
    /// # Errors
    ///
    /// As for [`TestRuntimeBuilder::start`].
    pub async fn start() -> Result<TestRuntime, TestingError> {
        TestRuntime::builder().start().await
    }

    /// A builder to pick the consumers and settings.
    pub fn builder() -> TestRuntimeBuilder {
        TestRuntimeBuilder {
            registered: true,
            only: None,
            streams: None,
            consumers: Vec::new(),
            periodic: Vec::new(),
            backoff: None,
            wait_limit: DEFAULT_WAIT_LIMIT,
            configure: Vec::new(),
        }
    }

    /// The server's URL, `redis://127.0.0.1:PORT`, for [`History`](streamx_runtime::History),
    /// [`DeadLetters`] and friends.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server, e.g. to [`kill`](RedisServer::kill) it.
    pub fn server(&self) -> Option<&RedisServer> {
        self.server.as_ref()
    }

    /// The producer the test publishes with.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The registration names of the consumers running.
    pub fn consumer_names(&self) -> Vec<&str> {
        self.consumers.iter().map(|c| c.name.as_str()).collect()
    }

    /// Publishes `payload` to `stream` (as JSON); its id.
    ///
    /// # Errors
    ///
    /// [`TestingError::Runtime`] when the payload does not encode or the XADD fails.
    pub async fn publish<T: Serialize + ?Sized>(&self, stream: &str, payload: &T) -> Result<MessageId, TestingError> {
        self.producer.publish(stream, payload).await.map_err(|e| TestingError::runtime("publishing", e))
    }

    /// Every consumer's counters, read now, by registration name.
    pub fn stats(&self) -> BTreeMap<String, ConsumerStatsSnapshot> {
        self.running.as_ref().map(RunningRuntime::stats_all).unwrap_or_default()
    }

    /// Handler runs that succeeded so far, over every consumer.
    pub fn handled(&self) -> u64 {
        self.stats().values().map(|s| s.succeeded).sum()
    }

    /// Messages dead-lettered so far (after their last retry, permanent errors, poison
    /// input), over every consumer.
    pub fn dead_lettered(&self) -> u64 {
        self.stats().values().map(|s| s.dead_lettered).sum()
    }

    /// Waits until `n` handler runs have succeeded in all (counted by the runtime as they
    /// finish, over every consumer; a message handled by two groups counts twice).
    ///
    /// # Errors
    ///
    /// [`TestingError::Timeout`] with the counters when the count is not reached in time.
    pub async fn wait_until_handled(&self, n: u64) -> Result<(), TestingError> {
        self.wait_for(&format!("{n} handled message(s)"), |stats| total(stats, |s| s.succeeded) >= n).await
    }

    /// Waits until `n` messages have been dead-lettered in all (and are in their
    /// dead-letter streams).
    ///
    /// # Errors
    ///
    /// [`TestingError::Timeout`] with the counters when the count is not reached in time.
    pub async fn wait_until_dead_lettered(&self, n: u64) -> Result<(), TestingError> {
        self.wait_for(&format!("{n} dead-lettered message(s)"), |stats| total(stats, |s| s.dead_lettered) >= n).await
    }

    /// Waits until `check` holds for the counters (by registration name), e.g. a given
    /// consumer's `retried` count.
    ///
    /// # Errors
    ///
    /// [`TestingError::Timeout`], naming `what` and showing the counters, when it does not
    /// hold in time.
    pub async fn wait_for(
        &self,
        what: &str,
        mut check: impl FnMut(&BTreeMap<String, ConsumerStatsSnapshot>) -> bool,
    ) -> Result<(), TestingError> {
        self.poll(what, || {
            let stats = self.stats();
            let done = check(&stats);
            async move { Ok((done, format!("{stats:?}"))) }
        })
        .await
    }

    /// Waits until the consumers have nothing left to do: every group has read its whole
    /// stream (lag 0) and holds nothing pending (no handler running, no retry scheduled,
    /// nothing unacknowledged), and no stream grew while that was checked (so a handler
    /// that publishes to another consumer's stream is waited for too).
    ///
    /// # Errors
    ///
    /// [`TestingError::Timeout`] with what was still busy; [`TestingError::Runtime`] when
    /// Redis cannot be read.
    pub async fn wait_idle(&self) -> Result<(), TestingError> {
        self.poll("the consumers to be idle", || async {
            let before = self.stream_lengths().await?;
            let mut busy = Vec::new();
            for c in &self.consumers {
                if let Some(reason) = self.busy(c).await? {
                    busy.push(format!("{} ({}/{}): {reason}", c.name, c.stream, c.group));
                }
            }
            if busy.is_empty() && self.stream_lengths().await? != before {
                busy.push("a stream grew meanwhile".to_string());
            }
            Ok((busy.is_empty(), busy.join("; ")))
        })
        .await
    }

    /// Every dead letter of `stream`'s consumers (the dead-letter stream of the first
    /// consumer of `stream` that has one; `{stream}:dlq` by default), oldest first.
    ///
    /// # Errors
    ///
    /// [`TestingError::Runtime`] when Redis cannot be read.
    pub async fn dead_letters(&self, stream: &str) -> Result<Vec<DeadLetter>, TestingError> {
        let dlq = self.dead_letter_stream(stream);
        let letters = DeadLetters::with_client(self.producer.client(), &dlq);
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = letters
                .list(after, DEAD_LETTER_PAGE)
                .await
                .map_err(|e| TestingError::runtime("reading dead letters", e))?;
            all.extend(page.entries);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// The dead-letter stream of `stream`'s consumers (for [`DeadLetters`]).
    pub fn dead_letter_stream(&self, stream: &str) -> String {
        self.consumers
            .iter()
            .filter(|c| c.stream == stream)
            .find_map(|c| c.dead_letters.clone())
            .or_else(|| dead_letter_stream(stream, &streamx_runtime::DeadLetterTarget::Default))
            .unwrap_or_default()
    }

    /// Stops the consumers gracefully (in-flight handlers finish, the last
    /// acknowledgements are sent), then the server.
    ///
    /// # Errors
    ///
    /// [`TestingError::Runtime`] when a consumer loop failed.
    pub async fn shutdown(mut self) -> Result<(), TestingError> {
        let result = match self.running.take() {
            Some(running) => running.shutdown().await.map_err(|e| TestingError::runtime("shutting down", e)),
            None => Ok(()),
        };
        self.producer.close().await;
        self.server.take();
        result
    }

    /// What keeps consumer `c` busy, if anything.
    async fn busy(&self, c: &ConsumerKeys) -> Result<Option<String>, TestingError> {
        let group = self
            .inspector
            .group(&c.stream, &c.group)
            .await
            .map_err(|e| TestingError::runtime("reading the consumer groups", e))?;
        let Some(group) = group else {
            return Ok(Some("the group does not exist".into()));
        };
        if group.pending > 0 {
            return Ok(Some(format!("{} pending", group.pending)));
        }
        let read_all = match group.lag {
            Some(lag) => lag == 0,
            // Redis cannot tell the lag (entries were deleted): compare with the last id.
            None => self.last_id(&c.stream).await? <= group.last_delivered_id,
        };
        Ok((!read_all).then(|| format!("lag {:?}", group.lag)))
    }

    async fn last_id(&self, stream: &str) -> Result<Option<MessageId>, TestingError> {
        let reply: Value = self.producer.client().xrevrange(stream, "+", "-", Some(1)).await.map_err(|source| {
            let error = streamx_runtime::Error::Redis { command: "XREVRANGE", key: stream.to_string(), source };
            TestingError::runtime("reading the last entry id", error)
        })?;
        let first = reply.into_array().into_iter().next().map(Value::into_array);
        Ok(first
            .and_then(|entry| entry.into_iter().next())
            .and_then(|id| id.as_bytes().and_then(MessageId::parse_bytes)))
    }

    async fn stream_lengths(&self) -> Result<Vec<u64>, TestingError> {
        let mut lengths = Vec::with_capacity(self.consumers.len());
        for c in &self.consumers {
            let len = self.inspector.stream_len(&c.stream).await.map_err(|e| TestingError::runtime("XLEN", e))?;
            lengths.push(len);
        }
        Ok(lengths)
    }

    /// Polls `check` (done?, the state to report) until done or the wait limit.
    async fn poll<F, Fut>(&self, what: &str, check: F) -> Result<(), TestingError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(bool, String), TestingError>>,
    {
        crate::wait::poll(self.wait_limit, POLL_INTERVAL, what, check).await
    }
}

fn total(stats: &BTreeMap<String, ConsumerStatsSnapshot>, counter: impl Fn(&ConsumerStatsSnapshot) -> u64) -> u64 {
    stats.values().map(counter).sum()
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        let Some(running) = self.running.take() else { return };
        let server = self.server.take();
        // Stop the loops before the server goes; without a Tokio runtime they are gone
        // with it anyway.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = running.shutdown().await;
                drop(server);
            });
        }
    }
}

impl std::fmt::Debug for TestRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRuntime")
            .field("url", &self.url)
            .field("consumers", &self.consumer_names())
            .field("wait_limit", &self.wait_limit)
            .finish_non_exhaustive()
    }
}
