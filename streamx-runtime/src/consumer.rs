//! A consumer: a handler bound to a stream and group, with its options. Built by the
//! `#[stream_consumer]` attribute (through [`crate::registry`]) or by hand with
//! [`Consumer::new`].

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use crate::batch::{erase_batch, BatchArg, BatchReturn, ErasedBatchHandler};
use crate::handler::{erase, ErasedHandler, HandlerArg, HandlerReturn};
use crate::location::SourceLocation;
use crate::policy::{Name, RetryPolicy, StartFrom};

/// Everything about a consumer besides its stream, group and handler. Every field has a
/// default; see the README's attribute reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerOptions {
    /// The consumer name inside the group. Default: `<hostname>-<pid>-<n>`, unique per
    /// process and loop.
    pub consumer_name: Option<&'static str>,
    /// At most this many handler invocations run at once. Default 1.
    pub concurrency: usize,
    /// The most entries one read asks for: the `COUNT` of every `XREADGROUP` of each of the
    /// [`readers`](Self::readers) read loops (each loop reads up to `batch_size`, so a round of
    /// reads fetches up to `readers × batch_size`; the byte budget may fetch fewer). Memory:
    /// at most `concurrency + 2 × readers × batch_size` fetched, unfinished messages (each
    /// loop holds the read it dispatches and one read ahead), and at most
    /// [`max_buffered_bytes`](Self::max_buffered_bytes) of their payloads. Default `None`: the
    /// runtime sizes reads: each loop starts at its share of `8 × concurrency` (at least 128
    /// and at most 512 in all) and doubles its reads, up to 512, while handlers keep up,
    /// falling back when they do not.
    pub batch_size: Option<usize>,
    /// How many read loops fetch new entries, each on a connection and a task of its own,
    /// sharing the batch, the permits and the byte budget. Default: 1 below concurrency 8
    /// (entries then start in stream order), 8 from 8. One loop dispatches at
    /// most one core's worth of quick handlers, and several keep Redis busy while each
    /// dispatches what it read.
    pub readers: Option<usize>,
    /// How long one XREADGROUP waits for new entries. Default 2 s.
    pub block: Duration,
    /// Where a newly created group starts. Default [`StartFrom::Beginning`].
    pub start: StartFrom,
    /// Retries, backoff and dead letters.
    pub retry: RetryPolicy,
    /// A message pending this long without its consumer renewing it is taken over by another
    /// consumer of the group. Default 30 s.
    pub claim_idle: Duration,
    /// Payloads larger than this are dead-lettered unread. Default: the runtime's limit
    /// (4 MiB unless set with `RuntimeBuilder::max_payload_bytes`).
    pub max_payload_bytes: Option<usize>,
    /// The byte budget of fetched, unfinished entries. Default: the runtime's (64 MiB unless
    /// set with `RuntimeBuilder::max_buffered_bytes`).
    pub max_buffered_bytes: Option<usize>,
    /// How long one handler run may take: at the deadline the handler's future is dropped
    /// (cancelled) and the delivery fails with [`FailureKind::Timeout`](crate::FailureKind::Timeout),
    /// retried with backoff like an error and dead-lettered with kind `timeout` after its
    /// last delivery. Default `None`: no timeout, a handler may run as long as it likes
    /// (the heartbeat keeps its message this consumer's meanwhile).
    pub timeout: Option<Duration>,
    /// Batch handlers only: the most messages one call of the handler gets. Default 100.
    pub max_batch: usize,
    /// Batch handlers only: how long the first message of a batch waits for others to join
    /// it before the call starts with what it has (a full batch starts at once). Default
    /// 50 ms.
    pub batch_wait: Duration,
    /// How the stream is trimmed (see [`Retention`](crate::Retention)): never an entry a
    /// group still needs, unless `drop_unread`. Default `None`: streamx never trims.
    pub retention: Option<crate::retention::Retention>,
    /// Work-queue mode: acknowledged entries are deleted from the stream once no group needs
    /// them (`XACKDEL ... ACKED` on Redis 8.2+; `XACK` and the safe trim of the stream's
    /// trimmer elsewhere). Default `false`.
    pub delete_on_ack: bool,
    /// Idempotent consumption: a message whose key (its
    /// [`IDEMPOTENCY_KEY_HEADER`](crate::IDEMPOTENCY_KEY_HEADER) header, else its entry id)
    /// this group handled successfully within the last `dedupe` is acknowledged without
    /// running the handler (counted in [`ConsumerStats::deduplicated`](crate::ConsumerStats::deduplicated)).
    /// A success is recorded in the same script as its XACK. Default `None`: off. See the
    /// README's "Idempotency" for the crash windows this closes and those it cannot.
    pub dedupe: Option<Duration>,
    /// Per-key ordering: messages with the same key ([`Message::key`](crate::Message::key))
    /// are handled one at a time, in stream order, while different keys run in parallel up
    /// to `concurrency`; messages without a key run unordered. `None` (the default): ordered
    /// on a topic ([`Consumer::topic`]), unordered on a stream. See the README's "Topics and
    /// ordering".
    pub ordered: Option<bool>,
    /// Whether the consumer reads a sharded topic (see [`Consumer::topic`]) rather than one
    /// stream. Default `false`.
    pub topic: bool,
    /// A topic's shard count: checked against the count recorded in Redis
    /// ([`Error::TopicShardsMismatch`](crate::Error::TopicShardsMismatch) if it differs),
    /// and used to create the topic if it does not exist yet. `None`: the recorded count,
    /// or [`DEFAULT_SHARDS`](crate::topic::DEFAULT_SHARDS) for a new topic. Topics only.
    pub shards: Option<u32>,
    /// The codec of entries without a `content-type` header (see [`crate::codec`]): an entry
    /// that names its codec is decoded in that one whatever this says, and a handler taking
    /// `Message<Bytes>` gets the bytes as they are. Default [`Codec::Json`](crate::Codec::Json)
    /// (attribute `codec = "msgpack"` for [`Codec::MsgPack`](crate::Codec), with the
    /// `msgpack` feature).
    pub codec: crate::codec::Codec,
    /// At most this many handler starts per period for the whole group, across every process
    /// (attribute `rate_limit = "500/s"`; default: none). See [`crate::RateLimit`].
    pub rate_limit: Option<crate::RateLimit>,
}

impl ConsumerOptions {
    /// All defaults.
    pub const DEFAULT: ConsumerOptions = ConsumerOptions {
        consumer_name: None,
        concurrency: 1,
        batch_size: None,
        readers: None,
        block: Duration::from_secs(2),
        start: StartFrom::Beginning,
        retry: RetryPolicy::DEFAULT,
        claim_idle: Duration::from_secs(30),
        max_payload_bytes: None,
        max_buffered_bytes: None,
        timeout: None,
        max_batch: 100,
        batch_wait: Duration::from_millis(50),
        retention: None,
        delete_on_ack: false,
        dedupe: None,
        ordered: None,
        topic: false,
        shards: None,
        codec: crate::codec::Codec::Json,
        rate_limit: None,
    };

    /// Whether messages of one key are handled one at a time, in order (see
    /// [`ordered`](Self::ordered)).
    pub fn effective_ordered(&self) -> bool {
        self.ordered.unwrap_or(self.topic)
    }

    /// An explicit [`batch_size`](Self::batch_size), else the default batch the read loops
    /// share when they start (`8 × concurrency`, between 128 and 512).
    pub fn effective_batch_size(&self) -> usize {
        self.batch_size.unwrap_or_else(|| self.concurrency.saturating_mul(8).clamp(128, 512))
    }

    /// The number of read loops in effect: at least 1, at most the concurrency.
    pub fn effective_readers(&self) -> usize {
        let default = if self.concurrency < 8 { 1 } else { 8 };
        self.readers.unwrap_or(default).clamp(1, self.concurrency.max(1))
    }
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions::DEFAULT
    }
}

/// Defines the option setters once, for the const [`Registration`](crate::registry::Registration)
/// the macro builds and for the run-time [`Consumer`].
macro_rules! option_setters {
    ($($constness:ident)?) => {
        /// Sets the consumer name inside the group (default `<hostname>-<pid>-<n>`).
        pub $($constness)? fn consumer_name(mut self, name: &'static str) -> Self {
            self.options.consumer_name = ::std::option::Option::Some(name);
            self
        }
        /// Sets how many handler invocations may run at once (default 1).
        pub $($constness)? fn concurrency(mut self, n: usize) -> Self {
            self.options.concurrency = n;
            self
        }
        /// Sets how many entries one XREADGROUP fetches.
        pub $($constness)? fn batch_size(mut self, n: usize) -> Self {
            self.options.batch_size = Some(n);
            self
        }
        /// Sets how many read loops fetch new entries, each on a connection of its own
        /// (default 1 below concurrency 8, 8 from 8; at most the concurrency).
        pub $($constness)? fn readers(mut self, n: usize) -> Self {
            self.options.readers = ::std::option::Option::Some(n);
            self
        }
        /// Sets the XREADGROUP BLOCK time (default 2 s).
        pub $($constness)? fn block(mut self, block: ::std::time::Duration) -> Self {
            self.options.block = block;
            self
        }
        /// Sets where a newly created group starts (default: the beginning of the stream).
        pub $($constness)? fn start(mut self, start: $crate::policy::StartFrom) -> Self {
            self.options.start = start;
            self
        }
        /// Sets how many times a failed message is retried (default 3).
        pub $($constness)? fn max_retries(mut self, n: u32) -> Self {
            self.options.retry.max_retries = n;
            self
        }
        /// Sets the backoff between retries (default 1 s, ×2, at most 30 s).
        pub $($constness)? fn backoff(mut self, backoff: $crate::policy::Backoff) -> Self {
            self.options.retry.backoff = backoff;
            self
        }
        /// Sets where messages go after their last failure (default `<stream>`'s DLQ).
        pub $($constness)? fn dlq(mut self, target: $crate::policy::DeadLetterTarget) -> Self {
            self.options.retry.dead_letter = target;
            self
        }
        /// Sets the dead-letter stream's length cap: each dead letter written trims it to
        /// about `len` letters, oldest first (`XTRIM MAXLEN ~`; counted in
        /// `streamx_dead_letters_trimmed_total`, with a warning). `None` keeps every letter.
        /// Default `Some(100_000)` ([`DEFAULT_DLQ_MAX_LEN`](crate::policy::DEFAULT_DLQ_MAX_LEN)).
        pub $($constness)? fn dlq_max_len(mut self, len: ::std::option::Option<u64>) -> Self {
            self.options.retry.dlq_max_len = len;
            self
        }
        /// Sets how long this member promises to stay alive after each heartbeat (sent every
        /// `claim_idle / 3`; default 30 s): once that deadline has passed, the others take
        /// over what it holds. Members of one group may differ: each is judged by its own.
        pub $($constness)? fn claim_idle(mut self, idle: ::std::time::Duration) -> Self {
            self.options.claim_idle = idle;
            self
        }
        /// Sets the payload size limit for this consumer: larger payloads are dead-lettered
        /// unread (default: the runtime's, 4 MiB unless set with
        /// `RuntimeBuilder::max_payload_bytes`).
        pub $($constness)? fn max_payload_bytes(mut self, limit: usize) -> Self {
            self.options.max_payload_bytes = Some(limit);
            self
        }
        /// Sets the byte budget of this consumer's fetched, unfinished entries (default: the
        /// runtime's, 64 MiB unless set with `RuntimeBuilder::max_buffered_bytes`).
        pub $($constness)? fn max_buffered_bytes(mut self, bytes: usize) -> Self {
            self.options.max_buffered_bytes = Some(bytes);
            self
        }
        /// Cancels a handler run that takes longer than `timeout`: the delivery then fails
        /// with kind `timeout` (retried with backoff, then dead-lettered). Default: no
        /// timeout.
        pub $($constness)? fn timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.options.timeout = Some(timeout);
            self
        }
        /// Batch handlers only: sets the most messages one call gets (default 100).
        pub $($constness)? fn max_batch(mut self, n: usize) -> Self {
            self.options.max_batch = n;
            self
        }
        /// Batch handlers only: sets how long a batch waits to fill before its call starts
        /// (default 50 ms).
        pub $($constness)? fn batch_wait(mut self, wait: ::std::time::Duration) -> Self {
            self.options.batch_wait = wait;
            self
        }
        /// Trims the stream by `retention`: at most about its `max_len` entries and none older
        /// than its `max_age`, except entries a group still needs (see
        /// [`Retention`](crate::Retention)). Default: no trimming.
        pub $($constness)? fn retention(mut self, retention: $crate::retention::Retention) -> Self {
            self.options.retention = ::std::option::Option::Some(retention);
            self
        }
        /// Work-queue mode: deletes acknowledged entries from the stream once no group needs
        /// them (default `false`; see the README's "Work-queue mode").
        pub $($constness)? fn delete_on_ack(mut self, on: bool) -> Self {
            self.options.delete_on_ack = on;
            self
        }
        /// Acknowledges without running a message whose key (its `idempotency-key` header,
        /// else its entry id) this group handled successfully within the last `window`
        /// (attribute `dedupe = "24h"`; default: off). Each success is recorded with its
        /// XACK, atomically; duplicates in flight in one process wait for the first's
        /// outcome. Two members of the group that read duplicates close together can
        /// both run them; a crash between a handler's side effect and its acknowledgement
        /// runs the message again (see the README's "Idempotency").
        pub $($constness)? fn dedupe(mut self, window: ::std::time::Duration) -> Self {
            self.options.dedupe = ::std::option::Option::Some(window);
            self
        }
        /// Handles the messages of one key (their `streamx-key` header) one at a time, in
        /// stream order, different keys in parallel up to `concurrency` (attribute
        /// `ordered = true`). Default: ordered on a topic, unordered on a stream.
        pub $($constness)? fn ordered(mut self, on: bool) -> Self {
            self.options.ordered = ::std::option::Option::Some(on);
            self
        }
        /// Reads the sharded topic named by the consumer's stream name rather than one
        /// stream (what [`Consumer::topic`] and the attribute's `topic = "..."` set).
        pub $($constness)? fn as_topic(mut self) -> Self {
            self.options.topic = true;
            self
        }
        /// A topic's shard count (attribute `shards = 16`): checked against the count
        /// recorded in Redis, used when the topic is created. Topics only.
        pub $($constness)? fn shards(mut self, n: u32) -> Self {
            self.options.shards = ::std::option::Option::Some(n);
            self
        }
        /// Sets the codec of entries without a `content-type` header (attribute
        /// `codec = "msgpack"`; default JSON). Entries that name their codec are decoded in
        /// it whatever this says.
        pub $($constness)? fn codec(mut self, codec: $crate::codec::Codec) -> Self {
            self.options.codec = codec;
            self
        }
        /// At most `limit` handler starts per period for the whole group, across every
        /// process, retries and take-overs included (attribute `rate_limit = "500/s"`;
        /// default: none). Messages beyond it wait unread in Redis. One-message stream
        /// consumers only (not batch, ordered or topic consumers: refused at start). See
        /// [`RateLimit`](crate::RateLimit) and the README's "Rate limits".
        pub $($constness)? fn rate_limit(mut self, limit: $crate::RateLimit) -> Self {
            self.options.rate_limit = ::std::option::Option::Some(limit);
            self
        }
    };
}
pub(crate) use option_setters;

/// A consumer ready to run: what [`crate::RuntimeBuilder::consumer`] takes.
///
/// ```
/// use streamx_runtime::{Consumer, HandlerError, Message};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// async fn charge(msg: Message<Order>) -> Result<(), HandlerError> {
///     let _ = msg.payload().id;
///     Ok(())
/// }
///
/// let consumer = Consumer::new("orders", "billing", charge).concurrency(8).max_retries(5);
/// assert_eq!(consumer.name(), "orders/billing");
/// ```
#[derive(Clone)]
pub struct Consumer {
    pub(crate) name: Name,
    pub(crate) stream: Name,
    pub(crate) group: Name,
    pub(crate) location: SourceLocation,
    pub(crate) handler: HandlerKind,
    pub(crate) options: ConsumerOptions,
    /// Its middleware, outermost first (see [`crate::middleware`]); the runtime's are put
    /// before these when the runtime is built.
    pub(crate) layers: Vec<std::sync::Arc<dyn crate::Middleware>>,
}

/// A consumer's handler: one message per call, or a batch per call (see [`crate::batch`]).
#[derive(Clone)]
pub(crate) enum HandlerKind {
    One(ErasedHandler),
    Batch(ErasedBatchHandler),
}

impl Consumer {
    /// A consumer of `stream` in `group` running `handler` (an async fn or closure taking
    /// `Message<T>`). Its name defaults to `<stream>/<group>`.
    #[track_caller]
    pub fn new<F, A, Fut>(stream: impl Into<Name>, group: impl Into<Name>, handler: F) -> Self
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: HandlerArg,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerReturn,
    {
        Self::with_handler(stream.into(), group.into(), HandlerKind::One(erase(handler)), SourceLocation::caller())
    }

    /// A consumer of `stream` in `group` whose `handler` takes a batch: an async fn or
    /// closure taking `Vec<Message<T>>` and returning `()`, `Result<(), E>` (all or
    /// nothing), [`BatchOutcome`](crate::BatchOutcome) or `Result<BatchOutcome, E>` (per
    /// message). Messages are still acknowledged, retried and dead-lettered one by one;
    /// `concurrency` counts calls, `max_batch` and `batch_wait` size the batches. Its name
    /// defaults to `<stream>/<group>`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use streamx_runtime::{Consumer, HandlerError, Message};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Click { page: String }
    ///
    /// async fn store(batch: Vec<Message<Click>>) -> Result<(), HandlerError> {
    ///     println!("{} clicks in one insert", batch.len());
    ///     Ok(())
    /// }
    ///
    /// let consumer = Consumer::batch("clicks", "warehouse", store).max_batch(500).batch_wait(Duration::from_millis(200));
    /// assert!(consumer.is_batch());
    /// ```
    #[track_caller]
    pub fn batch<F, A, Fut>(stream: impl Into<Name>, group: impl Into<Name>, handler: F) -> Self
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: BatchArg,
        Fut: Future + Send + 'static,
        Fut::Output: BatchReturn,
    {
        let handler = HandlerKind::Batch(erase_batch(handler));
        Self::with_handler(stream.into(), group.into(), handler, SourceLocation::caller())
    }

    /// A consumer of the sharded topic `topic` in `group` running `handler`: the processes
    /// running it share the topic's shards (each shard read by one process at a time, under
    /// a fenced lease), and messages of one key are handled in order (see the README's
    /// "Topics and ordering"). Its name defaults to `<topic>/<group>`.
    ///
    /// ```
    /// use streamx_runtime::{Consumer, HandlerError, Message};
    ///
    /// async fn ship(msg: Message<String>) -> Result<(), HandlerError> {
    ///     println!("order {:?}: {}", msg.key(), msg.payload());
    ///     Ok(())
    /// }
    ///
    /// let consumer = Consumer::topic("orders", "shipping", ship).shards(16).concurrency(32);
    /// assert!(consumer.options().topic && consumer.options().effective_ordered());
    /// ```
    #[track_caller]
    pub fn topic<F, A, Fut>(topic: impl Into<Name>, group: impl Into<Name>, handler: F) -> Self
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: HandlerArg,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerReturn,
    {
        Self::with_handler(topic.into(), group.into(), HandlerKind::One(erase(handler)), SourceLocation::caller())
            .as_topic()
    }

    fn with_handler(stream: Name, group: Name, handler: HandlerKind, location: SourceLocation) -> Self {
        Consumer {
            name: Cow::Owned(format!("{stream}/{group}")),
            stream,
            group,
            location,
            handler,
            options: ConsumerOptions::DEFAULT,
            layers: Vec::new(),
        }
    }

    /// Adds the middleware `layer` inside those added before it (and inside the runtime's,
    /// see [`RuntimeBuilder::layer`](crate::RuntimeBuilder::layer)): an async fn or closure
    /// `(Delivery, Next) -> Outcome`, or a value of a type implementing
    /// [`Middleware`](crate::Middleware). The attribute's equivalent is
    /// `middleware = [path, ..]`. For a batch consumer the layers run per message (see
    /// [`crate::middleware`]).
    pub fn layer(mut self, layer: impl crate::Middleware) -> Self {
        self.layers.push(std::sync::Arc::new(layer));
        self
    }

    /// How many middleware layers the consumer has of its own.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Whether the handler takes a batch (see [`Consumer::batch`]).
    pub fn is_batch(&self) -> bool {
        matches!(self.handler, HandlerKind::Batch(_))
    }

    /// How many messages may be in flight (fetched and handed to the handler) at once: one
    /// per permit. `concurrency` for a one-message handler; `concurrency × max_batch` for a
    /// batch handler, whose `concurrency` counts calls.
    pub(crate) fn slots(&self) -> usize {
        match self.handler {
            HandlerKind::One(_) => self.options.concurrency,
            HandlerKind::Batch(_) => self.options.concurrency.saturating_mul(self.options.max_batch),
        }
    }

    /// Sets the registration name (used in logs, metrics and `RuntimeBuilder::only`).
    pub fn name_as(mut self, name: impl Into<Name>) -> Self {
        self.name = name.into();
        self
    }

    /// Replaces all options at once.
    pub fn with_options(mut self, options: ConsumerOptions) -> Self {
        self.options = options;
        self
    }

    option_setters!();

    /// The registration name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Where the consumer was declared.
    pub fn location(&self) -> SourceLocation {
        self.location
    }

    /// The options.
    pub fn options(&self) -> &ConsumerOptions {
        &self.options
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("location", &self.location)
            .field("options", &self.options)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}
