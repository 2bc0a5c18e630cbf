//! The runtime: discovers consumers, validates them, creates their groups, runs one
//! supervised loop per consumer and shuts down gracefully.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::connection::{redact, ClientRole, HealingClient, RedisUrl};
use crate::consumer::Consumer;
use crate::error::{Error, Result};
use crate::keys::{
    dead_letter_stream, default_dead_letter_stream, derived_key, hash_tag, move_legacy_keys, slot, KeyKind,
};
use crate::observe::readiness::Loops;
use crate::periodic::{registered_periodic, PeriodicJob};
use crate::permissions::{check_consumers, required_commands, ConsumerKeys, Uses};
use crate::policy::DeadLetterTarget;
use crate::producer::Producer;
use crate::registry::registered;
use crate::state::State;
use crate::worker::{self, ensure_group, ConsumerStats, ConsumerStatsSnapshot, LoopHandle, LoopSettings};

/// Default payload size limit: larger payloads are dead-lettered unread.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// The default byte budget of a consumer: fetched entries whose handlers have not finished
/// hold at most about this many bytes (see [`RuntimeBuilder::max_buffered_bytes`]).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;

/// The environment variable that turns the HTTP endpoint on at this address (e.g.
/// `0.0.0.0:9090`) when [`RuntimeBuilder::http`] was not called.
pub const HTTP_ADDR_ENV: &str = "STREAMX_HTTP_ADDR";

/// How often consumer loops sample their gauges by default (see
/// [`RuntimeBuilder::metrics_interval`]).
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// Configures a [`Runtime`].
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// use std::time::Duration;
/// use streamx_runtime::{Consumer, Message, Runtime};
///
/// async fn audit(msg: Message<serde_json::Value>) {
///     println!("{}", msg.payload());
/// }
///
/// Runtime::builder()
///     .redis_url("redis://127.0.0.1:6379")
///     .consumer(Consumer::new("orders", "audit", audit))
///     .shutdown_timeout(Duration::from_secs(5))
///     .build()?
///     .run()
///     .await
/// # }
/// ```
///
/// Its `Debug` output never shows a password.
pub struct RuntimeBuilder {
    url: Option<String>,
    consumers: Vec<Consumer>,
    use_registry: bool,
    periodic: Vec<PeriodicJob>,
    use_periodic_registry: bool,
    only: Option<Vec<String>>,
    shutdown_timeout: Duration,
    connect_timeout: Duration,
    max_payload_bytes: usize,
    max_buffered_bytes: usize,
    cleanup_idle: Duration,
    metrics_interval: Duration,
    http: Option<String>,
    tls_ca: Option<TlsCa>,
    tls_client_cert: Option<(PathBuf, PathBuf)>,
    credentials: Option<(String, String)>,
    state: State,
    /// Middleware of every consumer, outermost first (see [`crate::middleware`]).
    layers: Vec<Arc<dyn crate::Middleware>>,
    /// Publish layers of the producers the runtime hands out.
    publish_layers: Vec<Arc<dyn crate::PublishLayer>>,
}

/// Where the CA certificates given to [`RuntimeBuilder`] come from.
enum TlsCa {
    File(PathBuf),
    Pem(Vec<u8>),
}

impl std::fmt::Debug for TlsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsCa::File(path) => f.debug_tuple("File").field(path).finish(),
            TlsCa::Pem(pem) => write!(f, "Pem({} bytes)", pem.len()),
        }
    }
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("url", &self.url.as_deref().map(redact))
            .field("consumers", &self.consumers)
            .field("use_registry", &self.use_registry)
            .field("periodic", &self.periodic)
            .field("use_periodic_registry", &self.use_periodic_registry)
            .field("only", &self.only)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("cleanup_idle", &self.cleanup_idle)
            .field("metrics_interval", &self.metrics_interval)
            .field("http", &self.http)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("credentials", &self.credentials.as_ref().map(|(user, _)| format!("{user}:***")))
            .field("state", &self.state)
            .field("layers", &self.layers.len())
            .field("publish_layers", &self.publish_layers.len())
            .finish()
    }
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            url: None,
            consumers: Vec::new(),
            use_registry: true,
            periodic: Vec::new(),
            use_periodic_registry: true,
            only: None,
            shutdown_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            cleanup_idle: Duration::from_secs(3600),
            metrics_interval: DEFAULT_METRICS_INTERVAL,
            http: None,
            tls_ca: None,
            tls_client_cert: None,
            credentials: None,
            state: State::new(),
            layers: Vec::new(),
            publish_layers: Vec::new(),
        }
    }
}

impl RuntimeBuilder {
    /// The Redis URL. Default: `STREAMX_REDIS_URL`, else `redis://127.0.0.1:6379`. Either
    /// way, TLS files not set on the builder are taken from `STREAMX_REDIS_TLS_CA`,
    /// `STREAMX_REDIS_TLS_CERT` and `STREAMX_REDIS_TLS_KEY` when set (see [`RedisUrl`]).
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Adds a consumer explicitly (besides those registered with `#[stream_consumer]`).
    pub fn consumer(mut self, consumer: Consumer) -> Self {
        self.consumers.push(consumer);
        self
    }

    /// Whether to run the consumers registered with `#[stream_consumer]` (default true).
    /// Turn off to run only the ones given with [`consumer`](Self::consumer).
    pub fn registered_consumers(mut self, enabled: bool) -> Self {
        self.use_registry = enabled;
        self
    }

    /// Adds a periodic job explicitly (besides those registered with `#[periodic]`): see
    /// [`PeriodicJob`] and the README's "Periodic jobs".
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), streamx_runtime::Error> {
    /// use streamx_runtime::{PeriodicJob, Runtime, Tick};
    ///
    /// let heartbeat = PeriodicJob::new("heartbeat", "*/10 * * * * *", "heartbeats", |tick: Tick| async move {
    ///     tick.unix_ms()
    /// });
    /// Runtime::builder().periodic(heartbeat).build()?.run().await
    /// # }
    /// ```
    pub fn periodic(mut self, job: PeriodicJob) -> Self {
        self.periodic.push(job);
        self
    }

    /// Whether to run the periodic jobs registered with `#[periodic]` (default true). Turn
    /// off to run only the ones given with [`periodic`](Self::periodic).
    pub fn registered_periodic_jobs(mut self, enabled: bool) -> Self {
        self.use_periodic_registry = enabled;
        self
    }

    /// Runs only the consumers and periodic jobs with these registration names (an unknown
    /// name is an error at [`build`](Self::build)).
    pub fn only<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// How long in-flight handlers may run after a shutdown signal (default 10 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long to keep retrying when Redis is unreachable at start (default 10 s; zero:
    /// fail at the first attempt).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Payloads larger than this are dead-lettered unread (default 4 MiB). A consumer's own
    /// `max_payload_bytes` wins.
    pub fn max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// The byte budget of every consumer (default 64 MiB): the payloads and headers of
    /// entries fetched but not yet handled (waiting for a permit or running) add up to
    /// about this much at most. Each read or claim is sized from the room left and the
    /// recent average entry size, so large entries are fetched a few at a time while small
    /// ones still come a full batch at a time. An entry larger than the budget is fetched
    /// alone. A consumer's own `max_buffered_bytes` wins.
    ///
    /// A process's memory then stays near `budget + concurrency × (decoded payload)` per
    /// consumer, whatever the backlog and the entry sizes.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Makes `value` available to every handler as `msg.state::<S>()` (one value per type):
    /// a database pool, an HTTP client, a [`Producer`] for handlers that publish.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), streamx_runtime::Error> {
    /// use streamx_runtime::{Consumer, HandlerError, Message, Producer, Runtime};
    ///
    /// async fn forward(msg: Message<serde_json::Value>) -> Result<(), HandlerError> {
    ///     let producer = msg.state::<Producer>().ok_or("no producer")?;
    ///     producer.publish("audit", msg.payload()).await?;
    ///     Ok(())
    /// }
    ///
    /// let producer = Producer::connect("redis://127.0.0.1:6379").await?;
    /// Runtime::builder().state(producer).consumer(Consumer::new("orders", "audit", forward)).build()?.run().await
    /// # }
    /// ```
    pub fn state<S: Send + Sync + 'static>(mut self, value: S) -> Self {
        self.state.insert(value);
        self
    }

    /// Members of a group that own nothing, were idle this long and whose heartbeat deadline
    /// has passed are deleted from the group (default 1 h). It must be at least every
    /// consumer's `claim_idle` (checked by `build`).
    pub fn consumer_cleanup_after(mut self, idle: Duration) -> Self {
        self.cleanup_idle = idle;
        self
    }

    /// How often each consumer loop samples its group's gauges (lag, pending count, oldest
    /// pending age, dead-letter length, handlers in flight; default 5 s; zero: never). A
    /// sample is one cheap script on the loop's command connection, taken only when a
    /// `metrics` recorder is installed when the runtime starts.
    pub fn metrics_interval(mut self, every: Duration) -> Self {
        self.metrics_interval = every;
        self
    }

    /// Serves the HTTP endpoint at `addr` (e.g. `"0.0.0.0:9090"`, or `"127.0.0.1:0"` for
    /// any free port, see [`RunningRuntime::http_addr`]): `/metrics` in the Prometheus text
    /// format, `/healthz` (200 while the process runs) and `/readyz` (200 when every
    /// consumer reads; 503 with `{"ready":false,"reasons":[...]}` otherwise). Off by default;
    /// `STREAMX_HTTP_ADDR` turns it on too (this call wins).
    ///
    /// Starting it installs a recorder built on `metrics-exporter-prometheus` as the
    /// process's global `metrics` recorder (the application's own metrics are served too),
    /// unless the application installed one before: then the metrics go to that one and
    /// `/metrics` answers 404.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), streamx_runtime::Error> {
    /// streamx_runtime::Runtime::builder().http("0.0.0.0:9090").build()?.run().await
    /// # }
    /// ```
    #[cfg(feature = "http")]
    pub fn http(mut self, addr: impl Into<String>) -> Self {
        self.http = Some(addr.into());
        self
    }

    /// For a `rediss://` URL: trusts only the CA certificates in this PEM file, instead of
    /// the system's (see [`RedisUrl::with_tls_ca_file`]). Without it, the file named by
    /// `STREAMX_REDIS_TLS_CA` is used when set, whether the URL comes from the builder or
    /// from `STREAMX_REDIS_URL`.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(TlsCa::File(path.into()));
        self
    }

    /// Like [`tls_ca_file`](Self::tls_ca_file), with the PEM text itself.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca = Some(TlsCa::Pem(pem.into()));
        self
    }

    /// For a `rediss://` URL: presents this client certificate and key (PEM files) to a
    /// server that verifies clients (see [`RedisUrl::with_tls_client_cert_files`]).
    pub fn tls_client_cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Authenticates as this ACL user, replacing any `user:password@` of the URL (see
    /// [`RedisUrl::with_credentials`]). The password is never logged or shown.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((username.into(), password.into()));
        self
    }

    /// Adds the middleware `layer` to every consumer of the runtime, inside the runtime
    /// layers added before it and outside each consumer's own (see [`crate::middleware`]):
    ///
    /// ```text
    /// builder.layer(a).layer(b) + Consumer::layer(c):  a ─▶ b ─▶ c ─▶ handler
    /// ```
    ///
    /// ```
    /// use streamx_runtime::{Delivery, Next, Outcome, Runtime};
    ///
    /// async fn log_attempts(delivery: Delivery, next: Next) -> Outcome {
    ///     if delivery.attempt() > 1 {
    ///         println!("{} on {}: attempt {}", delivery.id(), delivery.stream(), delivery.attempt());
    ///     }
    ///     next.run(delivery).await
    /// }
    ///
    /// let builder = Runtime::builder().layer(log_attempts);
    /// # let _ = builder;
    /// ```
    pub fn layer(mut self, layer: impl crate::Middleware) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// Adds the publish layer `layer` to the producers the runtime hands out
    /// ([`Runtime::producer`], [`RunningRuntime::producer`]), after those added before it
    /// (see [`PublishLayer`](crate::PublishLayer)). Producers connected on their own take
    /// theirs with [`Producer::with_layer`].
    pub fn publish_layer(mut self, layer: impl crate::PublishLayer) -> Self {
        self.publish_layers.push(Arc::new(layer));
        self
    }

    /// Validates the configuration: the URL (and its TLS files), duplicate names (naming
    /// both source locations), each consumer's options.
    pub fn build(self) -> Result<Runtime> {
        let mut url = match &self.url {
            Some(url) => RedisUrl::parse(url)?,
            None => RedisUrl::from_env()?,
        };
        url = match self.tls_ca {
            Some(TlsCa::File(path)) => url.with_tls_ca_file(path)?,
            Some(TlsCa::Pem(pem)) => url.with_tls_ca_pem(pem)?,
            None => url,
        };
        if let Some((cert, key)) = &self.tls_client_cert {
            url = url.with_tls_client_cert_files(cert, key)?;
        }
        if let Some((username, password)) = self.credentials {
            url = url.with_credentials(username, password);
        }
        // What the builder did not set comes from the environment, as for every connect.
        url = url.with_tls_from_env()?;
        #[cfg_attr(not(feature = "http"), allow(unused_variables))]
        let http = http_addr(self.http)?;
        let mut all: Vec<Consumer> = Vec::new();
        if self.use_registry {
            all.extend(registered().into_iter().map(|r| r.to_consumer()));
        }
        all.extend(self.consumers);
        if !self.layers.is_empty() {
            for c in &mut all {
                c.layers.splice(0..0, self.layers.iter().cloned());
            }
        }
        let mut jobs: Vec<PeriodicJob> = Vec::new();
        if self.use_periodic_registry {
            jobs.extend(registered_periodic().into_iter().map(|r| r.to_job()));
        }
        jobs.extend(self.periodic);
        let mut scheduled = Vec::with_capacity(jobs.len());
        let mut job_names: HashMap<String, usize> = HashMap::new();
        for (i, job) in jobs.iter().enumerate() {
            if let Some(&first) = job_names.get(job.name()) {
                return Err(Error::DuplicatePeriodicJob {
                    name: job.name().to_string(),
                    first: jobs[first].location,
                    second: job.location,
                });
            }
            job_names.insert(job.name().to_string(), i);
            let cron =
                job.validate().map_err(|reason| Error::InvalidPeriodicJob { job: job.name().to_string(), reason })?;
            scheduled.push(crate::periodic::Scheduled { job: job.clone(), cron });
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, c) in all.iter().enumerate() {
            if let Some(&first) = seen.get(c.name()) {
                return Err(Error::DuplicateConsumer {
                    name: c.name().to_string(),
                    first: all[first].location,
                    second: c.location,
                });
            }
            seen.insert(c.name().to_string(), i);
            validate(c, &url, self.cleanup_idle)?;
        }
        if let Some(only) = &self.only {
            for name in only {
                if !seen.contains_key(name) && !job_names.contains_key(name) {
                    return Err(Error::UnknownConsumer {
                        name: name.clone(),
                        registered: all
                            .iter()
                            .map(|c| c.name())
                            .chain(jobs.iter().map(PeriodicJob::name))
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
            all.retain(|c| only.iter().any(|n| n == c.name()));
            scheduled.retain(|s| only.iter().any(|n| n == s.job.name()));
        }
        // Consumers of one stream that disagree on dropping unread entries are refused here.
        crate::retention::plans(&all)?;
        Ok(Runtime {
            url,
            consumers: all,
            periodic: scheduled,
            shutdown_timeout: self.shutdown_timeout,
            connect_timeout: self.connect_timeout,
            max_payload_bytes: self.max_payload_bytes,
            max_buffered_bytes: self.max_buffered_bytes,
            cleanup_idle: self.cleanup_idle,
            metrics_interval: self.metrics_interval,
            #[cfg(feature = "http")]
            http,
            state: self.state,
            publish_layers: crate::producer::layer::PublishLayers::new(self.publish_layers),
        })
    }
}

/// The endpoint's address: the builder's, else `STREAMX_HTTP_ADDR` when set.
fn http_addr(configured: Option<String>) -> Result<Option<SocketAddr>> {
    let addr = configured.or_else(|| std::env::var(HTTP_ADDR_ENV).ok().filter(|a| !a.trim().is_empty()));
    #[cfg(feature = "http")]
    {
        addr.as_deref().map(crate::observe::http::parse_addr).transpose()
    }
    #[cfg(not(feature = "http"))]
    {
        if let Some(addr) = addr {
            tracing::warn!(%addr, "{HTTP_ADDR_ENV} is set, but streamx was built without its `http` feature; no endpoint is served");
        }
        Ok(None)
    }
}

fn validate(c: &Consumer, url: &RedisUrl, cleanup_idle: Duration) -> Result<()> {
    let invalid = |reason: String| Err(Error::InvalidConsumer { consumer: c.name().to_string(), reason });
    let o = &c.options;
    if c.stream().is_empty() {
        return invalid("the stream name is empty".into());
    }
    if c.group().is_empty() {
        return invalid("the group name is empty".into());
    }
    if o.concurrency == 0 {
        return invalid("concurrency must be at least 1".into());
    }
    if o.batch_size == Some(0) {
        return invalid("batch_size must be at least 1".into());
    }
    if o.max_buffered_bytes == Some(0) {
        return invalid("max_buffered_bytes must be at least 1".into());
    }
    if o.block.is_zero() {
        return invalid("block must be longer than zero".into());
    }
    if o.claim_idle < Duration::from_millis(100) {
        return invalid("claim_idle must be at least 100ms".into());
    }
    if cleanup_idle < o.claim_idle {
        // A clean-up that came sooner would judge members by less than the time they were
        // promised to stay silent.
        return invalid(format!(
            "claim_idle ({:?}) must not exceed the runtime's consumer_cleanup_after ({cleanup_idle:?}): \
             raise consumer_cleanup_after or lower claim_idle",
            o.claim_idle
        ));
    }
    if c.is_batch() && o.effective_ordered() {
        // A batch call handles many messages at once, several keys and several messages of
        // one key together: it cannot keep "one at a time per key". Refused, not ignored.
        return invalid(
            "ordered = true is for one-message handlers only: a batch handler gets several messages of a key \
             at once; use a one-message handler (or order inside the batch by Message::key())"
                .into(),
        );
    }
    if c.is_batch() && o.max_batch == 0 {
        return invalid("max_batch must be at least 1".into());
    }
    if o.retry.dlq_max_len == Some(0) {
        return invalid("dlq_max_len must be at least 1 (None keeps every dead letter)".into());
    }
    if o.topic {
        validate_topic(c, url)?;
    } else if o.shards.is_some() {
        return invalid(
            "`shards` applies to a topic only (Consumer::topic, or `topic = \"...\"` in the attribute)".into(),
        );
    }
    if let Some(limit) = o.rate_limit {
        if let Err(e) = limit.check() {
            return invalid(format!("rate_limit {limit}: {e}"));
        }
        if c.is_batch() || o.topic || o.effective_ordered() {
            // Each of these starts entries later than it reads them (a batch fills, a key
            // waits its turn), so starts could bunch beyond the grants: refused, not ignored.
            return invalid(
                "rate_limit applies to one-message, unordered stream consumers only (not batch, ordered or topic \
                 consumers)"
                    .into(),
            );
        }
    }
    if o.timeout.is_some_and(|t| t.is_zero()) {
        return invalid("timeout must be longer than zero (leave it unset for no timeout)".into());
    }
    if o.retention.is_some_and(|r| r.len_bound().is_none() && r.age_bound().is_none()) {
        return invalid("a retention needs max_len or max_age (Retention::new().max_len(n) or .max_age(d))".into());
    }
    let b = &o.retry.backoff;
    if !b.is_valid() {
        return invalid(format!("invalid backoff {b:?}: the multiplier must be >= 1 and max >= initial"));
    }
    if let Some(dlq) = dead_letter_stream(c.stream(), &o.retry.dead_letter) {
        if dlq == c.stream() {
            return invalid("the dead-letter stream cannot be the consumer's own stream".into());
        }
    }
    check_key_slots(c, url.is_cluster()).or_else(invalid)
}

/// What a topic consumer cannot have (yet): each named in the error.
fn validate_topic(c: &Consumer, url: &RedisUrl) -> Result<()> {
    let invalid =
        |reason: &str| Err(Error::InvalidConsumer { consumer: c.name().to_string(), reason: reason.to_string() });
    let o = &c.options;
    crate::topic::TopicLayout::new(c.stream(), o.shards.unwrap_or(crate::topic::DEFAULT_SHARDS))?;
    if c.is_batch() {
        return invalid("a topic consumer takes one message per call (batch handlers read streams)");
    }
    if o.dedupe.is_some() || o.delete_on_ack || o.retention.is_some() {
        return invalid(
            "`dedupe`, `delete_on_ack` and `retention` are not supported on topics yet; use them on streams",
        );
    }
    if url.is_cluster() && matches!(o.retry.dead_letter, DeadLetterTarget::Stream(_)) {
        return invalid(
            "on Redis Cluster a topic's dead letters go to each shard's own dead-letter stream (`dlq = true`)",
        );
    }
    Ok(())
}

/// The engine's scripts touch a consumer's stream together with the keys derived from it and
/// its dead-letter stream: each must be in the stream's hash slot. The derived keys always
/// are (see [`crate::keys`]; checked anyway, on any topology, since a wrong one would strand
/// retries on a cluster); a custom dead-letter stream must be named so, on a cluster.
fn check_key_slots(c: &Consumer, cluster: bool) -> std::result::Result<(), String> {
    let stream = c.stream();
    let wanted = slot(stream);
    for kind in KeyKind::all(c.group()) {
        let key = derived_key(stream, kind);
        if slot(&key) != wanted {
            return Err(format!(
                "the key `{key}` derived from stream `{stream}` is in hash slot {}, not the stream's {wanted} \
                 (a streamx bug: please report it with the stream's name)",
                slot(&key)
            ));
        }
    }
    if let DeadLetterTarget::Stream(dlq) = c.options.retry.dead_letter {
        if cluster && slot(dlq) != wanted {
            // A name with a `}` and no valid tag of its own cannot lend it: the default then.
            let example = if stream.contains('}') && hash_tag(stream) == stream {
                default_dead_letter_stream(stream)
            } else {
                format!("{{{}}}:dead", hash_tag(stream))
            };
            return Err(format!(
                "on Redis Cluster the dead-letter stream `{dlq}` must share the hash slot of `{stream}` \
                 ({wanted}); name it with the same hash tag, e.g. `{example}`"
            ));
        }
    }
    Ok(())
}

/// The streamx runtime: runs every consumer until shutdown.
#[derive(Debug)]
pub struct Runtime {
    url: RedisUrl,
    consumers: Vec<Consumer>,
    periodic: Vec<crate::periodic::Scheduled>,
    shutdown_timeout: Duration,
    connect_timeout: Duration,
    max_payload_bytes: usize,
    max_buffered_bytes: usize,
    cleanup_idle: Duration,
    metrics_interval: Duration,
    #[cfg(feature = "http")]
    http: Option<SocketAddr>,
    state: State,
    publish_layers: crate::producer::layer::PublishLayers,
}

static LOOP_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Runtime {
    /// A builder with defaults.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The consumers this runtime will run.
    pub fn consumers(&self) -> &[Consumer] {
        &self.consumers
    }

    /// The periodic jobs this runtime will run.
    pub fn periodic_jobs(&self) -> impl Iterator<Item = &PeriodicJob> {
        self.periodic.iter().map(|s| &s.job)
    }

    /// The Redis URL (its `Display` hides the password).
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// A producer on the runtime's Redis, with the builder's publish layers (see
    /// [`RuntimeBuilder::publish_layer`]).
    pub async fn producer(&self) -> Result<Producer> {
        Ok(Producer::connect_url(&self.url, self.connect_timeout).await?.with_layers(self.publish_layers.clone()))
    }

    /// The smallest Redis ACL rule for `user` to run this runtime's consumers and periodic
    /// jobs (and producers on their streams), with `>PASSWORD` for the password: what [`start`](Self::start)
    /// checks the user may do. For the consumers of `orders`, it is the README's rule ("TLS
    /// and ACL").
    ///
    /// ```
    /// # async fn audit(_: streamx_runtime::Message<serde_json::Value>) {}
    /// use streamx_runtime::{Consumer, Runtime};
    ///
    /// let runtime = Runtime::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .registered_consumers(false)
    ///     .consumer(Consumer::new("orders", "audit", audit))
    ///     .build()?;
    /// let rule = runtime.acl_rule("orders-worker");
    /// assert!(rule.starts_with("ACL SETUSER orders-worker on >PASSWORD resetkeys ~orders ~{orders}:* "));
    /// # Ok::<(), streamx_runtime::Error>(())
    /// ```
    pub fn acl_rule(&self, user: &str) -> String {
        let consumers = self.consumer_keys();
        crate::permissions::acl_rule(user, &consumers, &required_commands(self.url.is_cluster(), Uses::ALL))
    }

    /// The keys of every consumer and periodic job, for the permission check.
    fn consumer_keys(&self) -> Vec<ConsumerKeys> {
        // (A topic's shards are checked by their first use: their names are known only once
        // the topic's record is read.)
        let consumers = self.consumers.iter().filter(|c| !c.options.topic).map(|c| {
            ConsumerKeys::consumer(c.stream(), c.group(), dead_letter_stream(c.stream(), &c.options.retry.dead_letter))
        });
        let jobs = self.periodic_jobs().map(|j| ConsumerKeys::periodic(j.stream(), j.name()));
        consumers.chain(jobs).collect()
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> Result<()> {
        let running = self.start().await?;
        let signal = crate::shutdown::signal().await;
        running.shutdown().await?;
        signal
    }

    /// Runs until `until` completes, then shuts down gracefully (for tests and embedding).
    pub async fn run_until<F: Future>(self, until: F) -> Result<()> {
        let running = self.start().await?;
        until.await;
        running.shutdown().await
    }

    /// Connects (retrying up to the connect timeout), checks that the Redis user may do
    /// what the consumers and periodic jobs need ([`Error::MissingPermissions`] otherwise, naming what is
    /// missing; see [`acl_rule`](Self::acl_rule)), creates the groups and starts every
    /// consumer loop; returns a handle to stop them.
    pub async fn start(self) -> Result<RunningRuntime> {
        // The endpoint's recorder is installed before any loop builds its metric handles.
        #[cfg(feature = "http")]
        let http = match self.http {
            Some(addr) => Some((crate::observe::http::bind(addr).await?, crate::observe::recorder::install_recorder())),
            None => None,
        };
        let command = HealingClient::connect(&self.url, ClientRole::Command, self.connect_timeout).await?;
        // Before anything is created: a user that lacks a permission fails here, saying which.
        let keys = self.consumer_keys();
        let uses = Uses { periodic: !self.periodic.is_empty(), ..Uses::any(&self.consumers) };
        if let Err(e) = check_consumers(&command.get(), self.url.username(), &keys, self.url.is_cluster(), uses).await {
            command.quit().await;
            return Err(e);
        }
        // A topic consumer's topic is declared (created, or its shard count checked) and its
        // group created on every shard.
        let mut layouts: HashMap<String, crate::topic::TopicLayout> = HashMap::new();
        for c in self.consumers.iter().filter(|c| c.options.topic) {
            let layout = crate::topic::declare(&command.get(), c.stream(), c.options.shards).await?;
            for shard in layout.shard_streams() {
                ensure_group(&command.get(), shard, c.group(), c.options.start.group_create_id()).await?;
                if let Err(e) = crate::stream_names::register(&command.get(), shard).await {
                    tracing::warn!(stream = %shard, error = %e, "cannot add the shard to the registry of stream names");
                }
            }
            layouts.insert(c.name().to_string(), layout);
        }
        for c in self.consumers.iter().filter(|c| !c.options.topic) {
            ensure_group(&command.get(), c.stream(), c.group(), c.options.start.group_create_id()).await?;
            let dead_letter = &c.options.retry.dead_letter;
            move_legacy_keys(&command.get(), self.url.is_cluster(), c.stream(), c.group(), dead_letter).await?;
            // Best effort: a stream missing from the registry is found by the tools' scan.
            if let Err(e) = crate::stream_names::register(&command.get(), c.stream()).await {
                tracing::warn!(stream = c.stream(), error = %e, "cannot add the stream to the registry of stream names");
            }
        }
        // What the server offers beyond 7.0 (XACKDEL, ACKED, IDMP): asked once, here, when a
        // consumer can use it (retention, work-queue mode). Asking needs `COMMAND INFO` and
        // `COMMAND DOCS`, which the README's ACL rule does not grant: a user without them is
        // refused (an ACL log entry) and gets the Redis 7 paths, which are correct everywhere.
        let uses_capabilities = self.consumers.iter().any(|c| c.options.delete_on_ack || c.options.retention.is_some());
        let capabilities = if uses_capabilities {
            crate::Capabilities::detect(&command.get()).await
        } else {
            crate::Capabilities::BASELINE
        };
        // Whether each group is paused is known before any loop or task starts, so a runtime started
        // on a paused group starts nothing (see `crate::pause`).
        let mut pauses = crate::pause::PauseWatch::default();
        for c in &self.consumers {
            pauses.flag_for(c.stream(), c.group());
        }
        if let Err(e) = pauses.poll(&command.get()).await {
            command.quit().await;
            return Err(Error::redis("EXISTS", "the groups' pause flags", e));
        }
        let token = CancellationToken::new();
        let trimmers = crate::retention::spawn(
            crate::retention::plans(&self.consumers)?,
            command.clone(),
            capabilities,
            token.child_token(),
        );
        // One promoter of delayed messages per distinct stream, stopped before the loops.
        let promoting = CancellationToken::new();
        let streams = self.consumers.iter().filter(|c| !c.options.topic).map(|c| c.stream());
        let shards = layouts.values().flat_map(|l| l.shard_streams().iter().map(String::as_str));
        let promoters = crate::scheduler::promoter::spawn_all(streams.chain(shards), &command, &promoting);
        // Periodic jobs publish on the command connection, and stop with the promoters.
        let periodic = crate::periodic::spawn_all(self.periodic, &command, &self.state, &promoting);
        let mut loops = Vec::with_capacity(self.consumers.len());
        for consumer in self.consumers {
            let settings = LoopSettings {
                url: self.url.clone(),
                member_name: consumer.options.consumer_name.map(str::to_string).unwrap_or_else(default_member_name),
                dead_letter_stream: dead_letter_stream(consumer.stream(), &consumer.options.retry.dead_letter),
                max_payload_bytes: consumer.options.max_payload_bytes.unwrap_or(self.max_payload_bytes),
                max_buffered_bytes: consumer.options.max_buffered_bytes.unwrap_or(self.max_buffered_bytes),
                shutdown_timeout: self.shutdown_timeout,
                cleanup_idle: self.cleanup_idle,
                metrics_interval: self.metrics_interval,
                state: self.state.clone(),
                capabilities,
                fence: None,
                stats: None,
                pause: pauses.flag_for(consumer.stream(), consumer.group()),
            };
            tracing::info!(
                consumer = %consumer.name(), stream = consumer.stream(), group = consumer.group(),
                member = %settings.member_name, concurrency = consumer.options.concurrency,
                topic = consumer.options.topic, "starting consumer"
            );
            match layouts.remove(consumer.name()) {
                Some(layout) => loops.push(crate::topic::supervisor::spawn(
                    consumer,
                    layout,
                    settings,
                    command.clone(),
                    token.child_token(),
                )),
                None => loops.push(worker::spawn(consumer, settings, command.clone(), token.child_token())),
            }
        }
        let watching_pauses = CancellationToken::new();
        let pause_watch = pauses.spawn(command.clone(), watching_pauses.clone());
        let readiness = Loops::new(loops.iter().map(|l| (l.name.clone(), l.readiness.clone())).collect());
        #[cfg(feature = "http")]
        let http = match http {
            Some((listener, prometheus)) => {
                Some(crate::observe::http::HttpServer::start(listener, prometheus, readiness.clone())?)
            }
            None => None,
        };
        Ok(RunningRuntime {
            token,
            watching_pauses,
            pause_watch,
            promoting,
            promoters,
            periodic,
            loops,
            trimmers,
            readiness,
            command,
            url: self.url,
            connect_timeout: self.connect_timeout,
            publish_layers: self.publish_layers,
            #[cfg(feature = "http")]
            http,
        })
    }
}

/// `<hostname>-<pid>-<n>`: unique per process and loop.
fn default_member_name() -> String {
    let host =
        gethostname::gethostname().into_string().ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "host".to_string());
    let n = LOOP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{host}-{}-{n}", std::process::id())
}

/// A started runtime.
pub struct RunningRuntime {
    token: CancellationToken,
    /// Stops the poll of the groups' pause flags (see [`crate::pause`]), once the loops ended.
    watching_pauses: CancellationToken,
    pause_watch: tokio::task::JoinHandle<()>,
    promoting: CancellationToken,
    promoters: Vec<tokio::task::JoinHandle<()>>,
    /// The periodic jobs' tasks (see [`crate::periodic`]), stopped with the promoters.
    periodic: Vec<tokio::task::JoinHandle<()>>,
    loops: Vec<LoopHandle>,
    /// The retention trimmers (see [`crate::retention`]), one per stream with a retention.
    trimmers: Vec<tokio::task::JoinHandle<()>>,
    readiness: Loops,
    command: HealingClient,
    url: RedisUrl,
    connect_timeout: Duration,
    publish_layers: crate::producer::layer::PublishLayers,
    #[cfg(feature = "http")]
    http: Option<crate::observe::http::HttpServer>,
}

impl RunningRuntime {
    /// The counters of the consumer registered as `name`.
    pub fn stats(&self, name: &str) -> Option<Arc<ConsumerStats>> {
        self.loops.iter().find(|l| l.name == name).map(|l| l.stats.clone())
    }

    /// The counters of every consumer, read now, by registration name: for exporting them
    /// yourself (the runtime also records them as metrics, see the README's "Monitoring").
    ///
    /// ```no_run
    /// # async fn demo(running: streamx_runtime::RunningRuntime) {
    /// for (name, stats) in running.stats_all() {
    ///     println!("{name}: {} succeeded, {} dead-lettered", stats.succeeded, stats.dead_lettered);
    /// }
    /// # }
    /// ```
    pub fn stats_all(&self) -> BTreeMap<String, ConsumerStatsSnapshot> {
        self.loops.iter().map(|l| (l.name.clone(), l.stats.snapshot())).collect()
    }

    /// Why the runtime is not ready (what `/readyz` answers): one reason per consumer whose
    /// reader is not connected or whose last read failed. Empty when every consumer reads.
    pub fn not_ready(&self) -> Vec<String> {
        self.readiness.reasons()
    }

    /// The address the HTTP endpoint listens on (with the port chosen when `:0` was
    /// asked); `None` when it is off.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        #[cfg(feature = "http")]
        {
            self.http.as_ref().map(|h| h.addr)
        }
        #[cfg(not(feature = "http"))]
        {
            None
        }
    }

    /// A producer on the runtime's Redis, with the builder's publish layers (see
    /// [`RuntimeBuilder::publish_layer`]).
    pub async fn producer(&self) -> Result<Producer> {
        Ok(Producer::connect_url(&self.url, self.connect_timeout).await?.with_layers(self.publish_layers.clone()))
    }

    /// Stops reading, lets in-flight handlers finish (up to the shutdown timeout), sends
    /// the last acknowledgements and hands unfinished messages back to the group.
    pub async fn shutdown(self) -> Result<()> {
        // Delayed messages stop being promoted first (those due later wait in Redis for the
        // next runtime), then the loops drain.
        self.promoting.cancel();
        for promoter in self.promoters {
            let _ = promoter.await;
        }
        for job in self.periodic {
            let _ = job.await;
        }
        self.token.cancel();
        let mut failed = None;
        for l in self.loops {
            if let Err(e) = l.task.await {
                failed = Some(Error::ConsumerFailed { consumer: l.name, reason: e.to_string() });
            }
        }
        for trimmer in self.trimmers {
            let _ = trimmer.await;
        }
        self.watching_pauses.cancel();
        let _ = self.pause_watch.await;
        self.command.quit().await;
        #[cfg(feature = "http")]
        if let Some(http) = self.http {
            http.stop().await;
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Runs every consumer registered with `#[stream_consumer]` against `STREAMX_REDIS_URL`
/// (default `redis://127.0.0.1:6379`) until SIGINT/SIGTERM. Sugar for
/// `Runtime::builder().build()?.run().await`.
pub async fn run() -> Result<()> {
    Runtime::builder().build()?.run().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn handler(_: crate::Message<serde_json::Value>) {}

    fn with_dlq(stream: &'static str, dlq: &'static str) -> Consumer {
        Consumer::new(stream, "g", handler).dlq(DeadLetterTarget::Stream(dlq))
    }

    fn job(name: &'static str, cron: &'static str) -> PeriodicJob {
        PeriodicJob::new(name, cron, "reports", |tick: crate::Tick| async move { tick.unix_ms() })
    }

    fn build_with(jobs: Vec<PeriodicJob>) -> Result<Runtime> {
        let mut builder = Runtime::builder().redis_url("redis://127.0.0.1:6379").registered_consumers(false);
        for j in jobs {
            builder = builder.periodic(j);
        }
        builder.build()
    }

    #[test]
    fn periodic_jobs_are_validated_at_build() {
        let err = build_with(vec![job("a", "0 */5 * * * *"), job("a", "* * * * *")]).unwrap_err();
        assert!(matches!(err, Error::DuplicatePeriodicJob { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("two periodic jobs are registered as `a`: at streamx-runtime/src/runtime.rs:"), "{text}");
        let err = build_with(vec![job("b", "* * * 13 *")]).unwrap_err().to_string();
        assert!(err.starts_with("periodic job `b`: invalid cron expression \"* * * 13 *\""), "{err}");
        let err = build_with(vec![job("", "* * * * *")]).unwrap_err().to_string();
        assert!(err.contains("the job name is empty"), "{err}");
        let runtime = build_with(vec![job("c", "@hourly")]).unwrap();
        assert_eq!(runtime.periodic_jobs().map(PeriodicJob::name).collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn only_picks_periodic_jobs_too() {
        let builder = || {
            Runtime::builder()
                .redis_url("redis://127.0.0.1:6379")
                .registered_consumers(false)
                .consumer(Consumer::new("orders", "g", handler))
                .periodic(job("reports", "* * * * *"))
        };
        let runtime = builder().only(["reports"]).build().unwrap();
        assert!(runtime.consumers().is_empty());
        assert_eq!(runtime.periodic_jobs().count(), 1);
        let err = builder().only(["nope"]).build().unwrap_err().to_string();
        assert!(err.contains("no consumer is registered as `nope`") && err.contains("reports"), "{err}");
    }

    #[test]
    fn a_retention_without_a_bound_is_refused() {
        let url = RedisUrl::parse("redis://127.0.0.1:6379").unwrap();
        let c = Consumer::new("s", "g", handler).retention(crate::Retention::new());
        let err = validate(&c, &url, Duration::from_secs(3600)).unwrap_err().to_string();
        assert!(err.contains("a retention needs max_len or max_age"), "{err}");
        assert!(validate(&c.retention(crate::Retention::new().max_len(0)), &url, Duration::from_secs(3600)).is_ok());
    }

    #[test]
    fn derived_keys_pass_the_slot_check_on_any_topology() {
        for stream in ["orders", "{shop}.orders", "orders}", "a}b", "x{}y", "{{a}", "foo{bar"] {
            for cluster in [false, true] {
                assert_eq!(check_key_slots(&Consumer::new(stream, "g:{x}", handler), cluster), Ok(()), "{stream}");
            }
        }
    }

    #[test]
    fn a_custom_dead_letter_stream_in_another_slot_fails_on_a_cluster_only() {
        assert_eq!(check_key_slots(&with_dlq("orders", "orders-dead"), false), Ok(()));
        assert_eq!(check_key_slots(&with_dlq("orders", "{orders}:dead"), true), Ok(()));
        let hint = |stream, dlq| check_key_slots(&with_dlq(stream, dlq), true).unwrap_err();
        let err = hint("orders", "orders-dead");
        assert!(err.contains("`orders-dead` must share the hash slot of `orders` (105)"), "{err}");
        assert!(err.ends_with("e.g. `{orders}:dead`"), "{err}");
        assert!(hint("{shop}.orders", "orders-dead").ends_with("e.g. `{shop}:dead`"));
        // No tag of its own: the hint is the default name, which is in the right slot.
        let err = hint("orders}", "orders-dead");
        let default = default_dead_letter_stream("orders}");
        assert!(err.ends_with(&format!("e.g. `{default}`")), "{err}");
        assert_eq!(slot(&default), slot("orders}"));
    }
}
