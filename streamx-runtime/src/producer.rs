//! Publishing: [`Producer`] and [`PublishOptions`]; routing to a topic's shards in
//! [`topic`].

mod append;
mod coalesce;
pub(crate) mod layer;
mod topic;

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, LuaInterface, StreamsInterface};
use fred::types::streams::XCap;
use fred::types::{ClusterHash, CustomCommand, Value};
use futures_util::StreamExt;
use serde::Serialize;

use crate::codec::{Codec, CONTENT_TYPE_HEADER, OCTET_STREAM_CONTENT_TYPE};
use crate::connection::{read_off_runtime, with_env_off_runtime, ClientRole, HealingClient, RedisUrl};
use crate::dedupe::Published;
use crate::error::{Error, Result};
use crate::keys::slot;
use crate::message::{Headers, MessageId};
use crate::observe::PublishMetrics;
use crate::scheduler::ScheduleId;
use crate::wire::{entry_fields, value_bytes};

/// How many XADDs one round trip of [`Producer::publish_batch`] carries.
const BATCH_CHUNK: usize = 500;

/// The most payload bytes one round trip of a batch carries (at least one entry): one
/// script call is one command, which Redis reads whole before running it.
const BATCH_CHUNK_BYTES: usize = 1 << 20;

/// How many round trips of a batch are in flight at once on the connection (measured on a
/// 2-core VM: 8 × 500 in flight publishes about twice as fast as one 1,000 at a time).
const CHUNKS_IN_FLIGHT: usize = 8;

/// Options of a publish: headers, trimming, NOMKSTREAM, durability, an explicit id.
///
/// ```
/// use streamx_runtime::{Headers, MessageId, PublishOptions};
/// let opts = PublishOptions::new()
///     .headers(Headers::new().with("trace-id", "abc"))
///     .max_len_approx(100_000);
/// # let _ = opts;
/// // An entry whose id is given, e.g. to mirror another stream's ids:
/// let mirrored = PublishOptions::new().id(MessageId::new(1_700_000_000_000, 0));
/// # let _ = mirrored;
/// ```
#[derive(Debug, Clone)]
pub struct PublishOptions {
    headers: Headers,
    max_len: Option<u64>,
    max_len_acked: Option<u64>,
    no_mkstream: bool,
    durable: Option<(u32, Duration)>,
    id: Option<MessageId>,
    idempotency_key: Option<String>,
    idempotency_window: Option<Duration>,
    codec: Codec,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self::NONE
    }
}

impl PublishOptions {
    /// No option set: the one place the defaults are written (what [`Producer::publish`]
    /// uses: a constant, so no publish builds and drops options of its own).
    const NONE: PublishOptions = PublishOptions {
        headers: Headers::new(),
        max_len: None,
        max_len_acked: None,
        no_mkstream: false,
        durable: None,
        id: None,
        idempotency_key: None,
        idempotency_window: None,
        codec: Codec::Json,
    };

    /// No headers, no trimming, the stream is created if missing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Headers stored with each published message (the codec's `content-type` is kept).
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self.name_codec();
        self
    }

    /// Serializes payloads in `codec` (default [`Codec::Json`]). Any codec but JSON also
    /// stores its `content-type` header, so consumers (streamx's, or another language's)
    /// know how to read the entry; JSON entries carry no header, as they always did.
    /// [`publish_raw`](Producer::publish_raw) stores its bytes as they are, with the header.
    ///
    /// ```
    /// use streamx_runtime::{Codec, PublishOptions, CONTENT_TYPE_HEADER};
    /// let json = PublishOptions::new().codec(Codec::Json);
    /// assert_eq!(json.stored_headers().get(CONTENT_TYPE_HEADER), None);
    /// # #[cfg(feature = "msgpack")]
    /// # {
    /// let msgpack = PublishOptions::new().codec(Codec::MsgPack);
    /// assert_eq!(msgpack.stored_headers().get(CONTENT_TYPE_HEADER), Some("application/msgpack"));
    /// # }
    /// ```
    pub fn codec(mut self, codec: Codec) -> Self {
        if self.codec != Codec::Json && self.headers.get(CONTENT_TYPE_HEADER) == Some(self.codec.content_type()) {
            self.headers.remove(CONTENT_TYPE_HEADER);
        }
        self.codec = codec;
        self.name_codec();
        self
    }

    /// The headers each published message gets: those set, the codec's `content-type`.
    pub fn stored_headers(&self) -> &Headers {
        &self.headers
    }

    /// Stores the `content-type` of a codec other than JSON in the headers (once, here, so
    /// that publishing costs no more than a JSON publish with one header).
    fn name_codec(&mut self) {
        if self.codec != Codec::Json {
            self.headers.insert(CONTENT_TYPE_HEADER, self.codec.content_type());
        }
    }

    /// Trims the stream to about `len` entries (`MAXLEN ~ len`) on each add. Trimming
    /// removes the oldest entries whether or not every group has read them.
    pub fn max_len_approx(mut self, len: u64) -> Self {
        self.max_len = Some(len);
        self
    }

    /// Trims the stream to about `len` entries on each add, **keeping every entry a consumer
    /// group still needs** (not read by some group, or read and not acknowledged): the safe
    /// counterpart of [`max_len_approx`](Self::max_len_approx). A script adds the entry and
    /// trims at most 100 of the oldest entries no group needs (with `XTRIM ... ACKED` on Redis
    /// 8.2+; see [`crate::retention`] for why not `XADD ... MAXLEN ~ len ACKED`); a batch
    /// trims once after its last entry. Like `MAXLEN ~`, the stream may hold somewhat more than `len`
    /// entries; unlike it, it may hold many more while a group is behind.
    ///
    /// Cannot be combined with [`max_len_approx`](Self::max_len_approx): such a publish fails
    /// with [`Error::ConflictingTrim`] and writes nothing.
    ///
    /// ```no_run
    /// # async fn demo(producer: streamx_runtime::Producer) -> Result<(), streamx_runtime::Error> {
    /// use streamx_runtime::PublishOptions;
    /// producer.publish_with("orders", &42, &PublishOptions::new().max_len_acked(100_000)).await?;
    /// # Ok(()) }
    /// ```
    pub fn max_len_acked(mut self, len: u64) -> Self {
        self.max_len_acked = Some(len);
        self
    }

    /// Fails instead of creating the stream when it does not exist (`NOMKSTREAM`).
    pub fn no_mkstream(mut self) -> Self {
        self.no_mkstream = true;
        self
    }

    /// Waits until at least `replicas` replicas of the stream's master confirm the write
    /// (`WAIT`), up to `timeout`; fails with [`Error::NotReplicated`] otherwise. An
    /// acknowledged durable publish survives the failover of that master. Without this, a
    /// publish returns once the master has the entry (replication is asynchronous).
    pub fn durable(mut self, replicas: u32, timeout: Duration) -> Self {
        self.durable = Some((replicas, timeout));
        self
    }

    /// Gives the entry this id instead of letting Redis choose one (`XADD key <id> ...`).
    /// Redis accepts only an id greater than the stream's last one (and greater than
    /// `0-0`); otherwise the publish fails with [`Error::IdNotIncreasing`] and nothing is
    /// written. For [`Producer::publish`], [`publish_with`](Producer::publish_with) and
    /// [`publish_raw`](Producer::publish_raw) only: a batch cannot give one id to all its
    /// entries, so [`publish_batch_with`](Producer::publish_batch_with) refuses these
    /// options with [`Error::IdInBatch`].
    ///
    /// ```no_run
    /// # async fn demo(producer: streamx_runtime::Producer) -> Result<(), streamx_runtime::Error> {
    /// use streamx_runtime::{Error, MessageId, PublishOptions};
    ///
    /// let id = MessageId::new(1_700_000_000_000, 7);
    /// match producer.publish_with("orders", &42, &PublishOptions::new().id(id)).await {
    ///     Ok(written) => assert_eq!(written, id),
    ///     Err(Error::IdNotIncreasing { stream, id }) => eprintln!("{stream} already has entries at or after {id}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn id(mut self, id: MessageId) -> Self {
        self.id = Some(id);
        self
    }

    /// Publishes at most once per `key` and stream within the
    /// [`idempotency_window`](Self::idempotency_window) (default 24 h,
    /// [`DEFAULT_IDEMPOTENCY_WINDOW`](crate::DEFAULT_IDEMPOTENCY_WINDOW)): a second publish
    /// with the same key to the same stream within the window writes nothing and returns the
    /// first entry's id. The check and the write are one script (atomic, in the stream's hash
    /// slot, on Redis 7.0 and later), so two producers racing with one key write one entry,
    /// and a publish retried after a timeout (or re-sent by the client after a reconnect)
    /// cannot add a second entry. The key is also written as the header
    /// [`IDEMPOTENCY_KEY_HEADER`](crate::IDEMPOTENCY_KEY_HEADER) (`idempotency-key`), which
    /// a [`dedupe`](crate::ConsumerOptions::dedupe) consumer reads.
    ///
    /// The window starts at the first publish; after it the key publishes again. The other
    /// options apply to the write (headers, `max_len_approx`, `no_mkstream`, an explicit
    /// [`id`](Self::id), [`durable`](Self::durable): the `WAIT` follows either reply). For
    /// single publishes only: [`publish_batch_with`](Producer::publish_batch_with) refuses
    /// these options with [`Error::IdempotencyKeyInBatch`]. The record is the key
    /// `{<stream>}:published:<key>` (see [`keys::published`](crate::keys::published)), one
    /// per key, expiring with its window. Redis 8.6's `XADD ... IDMP` is not used: its window
    /// and capacity are the stream's settings, which cannot promise this one (see the README).
    ///
    /// ```no_run
    /// # async fn demo(producer: streamx_runtime::Producer) -> Result<(), streamx_runtime::Error> {
    /// use std::time::Duration;
    /// use streamx_runtime::PublishOptions;
    ///
    /// // A webhook's event id as the key: the provider's retries publish nothing new.
    /// let options = PublishOptions::new().idempotency_key("evt_1NXq2").idempotency_window(Duration::from_secs(3600));
    /// let first = producer.publish_with("payments", &"paid", &options).await?;
    /// let again = producer.publish_with("payments", &"paid", &options).await?;
    /// assert_eq!(first, again);
    /// # Ok(()) }
    /// ```
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// How long an [`idempotency_key`](Self::idempotency_key) is remembered after its first
    /// publish (default 24 h; whole milliseconds, at least 1 ms). Ignored without a key.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = Some(window);
        self
    }

    /// Sets the message's key (the [`MESSAGE_KEY_HEADER`](crate::MESSAGE_KEY_HEADER)
    /// header): messages of one key are handled in order by an `ordered` consumer, and land
    /// in one shard of a topic. See [`Producer::publish_keyed`].
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.headers.insert(crate::message::MESSAGE_KEY_HEADER, key);
        self
    }

    /// The headers set so far.
    pub(crate) fn headers_ref(&self) -> &Headers {
        &self.headers
    }

    /// The headers, for a publish layer (see [`layer`]).
    pub(crate) fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The safe trim's length, refused beside `max_len_approx`.
    fn acked_len(&self, stream: &str) -> Result<Option<u64>> {
        match (self.max_len_acked, self.max_len) {
            (Some(_), Some(_)) => Err(Error::ConflictingTrim { stream: stream.to_string() }),
            (acked, _) => Ok(acked),
        }
    }

    /// The first option set that a delayed publish cannot take, with why (see
    /// [`Error::Unschedulable`]); `durable` applies to the schedule's write.
    fn unschedulable(&self) -> Option<(&'static str, &'static str)> {
        if self.id.is_some() {
            Some(("an explicit id", "the entry is added when it is due, after entries added meanwhile"))
        } else if self.no_mkstream {
            Some(("no_mkstream", "whether the stream exists is known only when the message is due"))
        } else if self.max_len.is_some() {
            Some((
                "max_len_approx",
                "a promoted message is added untrimmed; trim the stream with a publish or retention",
            ))
        } else if self.max_len_acked.is_some() {
            Some((
                "max_len_acked",
                "a promoted message is added untrimmed; trim the stream with a publish or retention",
            ))
        } else if self.idempotency_key.is_some() {
            Some((
                "an idempotency key",
                "a delayed message is published when due; cancel a schedule with `Scheduled::cancel` instead",
            ))
        } else if self.headers.len() > crate::scheduler::MAX_HEADERS {
            Some(("more than 3,000 headers", "a delayed message's fields are added by one command in a Lua script"))
        } else {
            None
        }
    }

    fn cap(&self) -> Result<XCap, fred::error::Error> {
        match self.max_len {
            Some(len) => XCap::try_from(("MAXLEN", "~", len as i64)),
            None => Ok(XCap::from(None::<()>)),
        }
    }
}

/// Publishes messages to streams. Cheap to clone; clones share one connection, on which
/// concurrent publishes from many tasks are coalesced into shared round trips (a lone publish
/// leaves at once; see the README's "Publishing"), and, once a batch of more than 500
/// messages is published, a second one for such batches (see
/// [`publish_batch`](Self::publish_batch)).
///
/// A publish is sent once: if the connection drops before the reply arrives, the call
/// fails (the entry may or may not have been added) rather than risking a duplicate.
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// use streamx_runtime::Producer;
///
/// #[derive(serde::Serialize)]
/// struct Order { id: u64, amount_cents: i64 }
///
/// let producer = Producer::connect("redis://127.0.0.1:6379").await?;
/// let id = producer.publish("orders", &Order { id: 1, amount_cents: 500 }).await?;
/// let ids = producer.publish_batch("orders", &[Order { id: 2, amount_cents: 1 }]).await?;
/// println!("{id} {ids:?}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    client: HealingClient,
    bulk: Arc<BulkConnection>,
    metrics: PublishMetrics,
    registered: crate::stream_names::Registered,
    /// What the server offers (asked at the first publish that needs it).
    capabilities: Arc<tokio::sync::OnceCell<crate::Capabilities>>,
    /// The names this producer knows to be topics, or plain streams (see [`topic`]).
    topics: topic::Topics,
    /// Whether the server lets this producer's user run the append script (see [`append`]).
    scripts: Arc<append::ScriptUse>,
    /// The queue of single publishes, coalesced into round trips (see [`coalesce`]).
    coalescer: Arc<coalesce::Coalescer>,
    /// What runs before each publish (see [`layer`]).
    layers: layer::PublishLayers,
}

/// The connection of batches of more than one round trip, made at the first of them.
struct BulkConnection {
    url: RedisUrl,
    client: tokio::sync::OnceCell<HealingClient>,
}

impl Producer {
    /// Connects to `url` (see [`RedisUrl::parse`] for the accepted forms). For a
    /// `rediss://` URL the CA file in `STREAMX_REDIS_TLS_CA` and the client certificate in
    /// `STREAMX_REDIS_TLS_CERT` / `STREAMX_REDIS_TLS_KEY` are used when set, as by the
    /// runtime (see [`RedisUrl`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_url(&RedisUrl::parse(url)?, Duration::ZERO).await
    }

    /// Connects to `STREAMX_REDIS_URL` (default `redis://127.0.0.1:6379`), with the TLS
    /// files named by the environment (see [`RedisUrl::from_env`]), read off the async
    /// runtime.
    pub async fn from_env() -> Result<Self> {
        let env_url = std::env::var(crate::connection::REDIS_URL_ENV).unwrap_or_default();
        let url = read_off_runtime(&env_url, RedisUrl::from_env).await?;
        Self::connect_url(&url, Duration::ZERO).await
    }

    /// Connects with a parsed URL (with TLS or credentials options). TLS files it does not
    /// set are taken from the environment, as for [`connect`](Self::connect); its own
    /// settings win.
    pub async fn connect_with(url: &RedisUrl) -> Result<Self> {
        Self::connect_url(url, Duration::ZERO).await
    }

    /// Connects with `url` completed from the environment, retrying until `deadline`.
    pub(crate) async fn connect_url(url: &RedisUrl, deadline: Duration) -> Result<Self> {
        let url = with_env_off_runtime(url).await?;
        let client = HealingClient::connect(&url, ClientRole::Publish, deadline).await?;
        let bulk = Arc::new(BulkConnection { url, client: tokio::sync::OnceCell::new() });
        let scripts = Arc::new(append::ScriptUse::default());
        let coalescer = Arc::new(coalesce::Coalescer::new(client.clone(), scripts.clone()));
        Ok(Producer {
            client,
            bulk,
            metrics: PublishMetrics::default(),
            registered: Default::default(),
            capabilities: Default::default(),
            topics: Default::default(),
            scripts,
            coalescer,
            layers: Default::default(),
        })
    }

    /// This producer with the publish layer `layer` after those it has (see
    /// [`PublishLayer`](crate::PublishLayer)): it runs before every publish of this
    /// producer and of its clones made after this call. A closure
    /// `Fn(&mut Outgoing<'_>) -> Result<(), PublishRefused>` is a layer.
    ///
    /// ```no_run
    /// # async fn demo() -> streamx_runtime::Result<()> {
    /// use streamx_runtime::{Outgoing, Producer, PublishRefused};
    ///
    /// let producer = Producer::connect("redis://127.0.0.1:6379").await?.with_layer(
    ///     |msg: &mut Outgoing<'_>| -> Result<(), PublishRefused> {
    ///         msg.headers_mut().insert("tenant", "acme");
    ///         Ok(())
    ///     },
    /// );
    /// producer.publish("orders", &7).await?; // stored with the header `tenant: acme`
    /// # Ok(()) }
    /// ```
    pub fn with_layer(mut self, layer: impl crate::PublishLayer) -> Self {
        self.layers = self.layers.with(Arc::new(layer));
        self
    }

    /// This producer with `layers` in place of its own (the runtime's, for the producers it
    /// hands out).
    pub(crate) fn with_layers(mut self, layers: layer::PublishLayers) -> Self {
        self.layers = layers;
        self
    }

    /// Publishes `payload` as JSON (no `content-type` header); returns the new entry's id.
    pub async fn publish<T: Serialize + ?Sized>(&self, stream: &str, payload: &T) -> Result<MessageId> {
        self.publish_with(stream, payload, &PublishOptions::NONE).await
    }

    /// Publishes `payload` with options, in their [`codec`](PublishOptions::codec).
    ///
    /// ```no_run
    /// # #[cfg(feature = "msgpack")]
    /// # async fn demo(producer: streamx_runtime::Producer) -> streamx_runtime::Result<()> {
    /// use streamx_runtime::{Codec, PublishOptions};
    /// #[derive(serde::Serialize)]
    /// struct Order { id: u64 }
    /// let msgpack = PublishOptions::new().codec(Codec::MsgPack);
    /// producer.publish_with("orders", &Order { id: 7 }, &msgpack).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        stream: &str,
        payload: &T,
        options: &PublishOptions,
    ) -> Result<MessageId> {
        let data = encode(stream, payload, options.codec)?;
        self.publish_raw(stream, data, options).await
    }

    /// Publishes `data` as raw bytes: stored in the `data` field as they are, with the header
    /// `content-type: application/octet-stream`. A handler taking `Message<Bytes>` gets them
    /// back unchanged; a typed handler dead-letters them as `unsupported_codec`.
    ///
    /// ```no_run
    /// # async fn demo(producer: streamx_runtime::Producer) -> streamx_runtime::Result<()> {
    /// producer.publish_bytes("images", vec![0x89, b'P', b'N', b'G']).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_bytes(&self, stream: &str, data: impl Into<Bytes>) -> Result<MessageId> {
        self.publish_bytes_with(stream, data, &PublishOptions::default()).await
    }

    /// [`publish_bytes`](Self::publish_bytes) with options. A `content-type` header among
    /// the options' headers is kept (bytes of a format streamx does not decode, e.g.
    /// `application/x-protobuf`); without one, `application/octet-stream` is stored.
    pub async fn publish_bytes_with(
        &self,
        stream: &str,
        data: impl Into<Bytes>,
        options: &PublishOptions,
    ) -> Result<MessageId> {
        if options.headers.get(CONTENT_TYPE_HEADER).is_some() && options.codec == Codec::Json {
            return self.publish_raw(stream, data.into(), options).await;
        }
        let mut options = options.clone();
        options.codec = Codec::Json;
        options.headers.insert(CONTENT_TYPE_HEADER, OCTET_STREAM_CONTENT_TYPE);
        self.publish_raw(stream, data.into(), &options).await
    }

    /// Publishes `payload` as JSON with the key `key` (the
    /// [`MESSAGE_KEY_HEADER`](crate::MESSAGE_KEY_HEADER) header): an `ordered` consumer
    /// handles the messages of one key one at a time, in order, and a topic keeps them in
    /// one shard. Returns the new entry's id.
    ///
    /// ```no_run
    /// # async fn demo(producer: streamx_runtime::Producer) -> streamx_runtime::Result<()> {
    /// producer.publish_keyed("orders", "order-7", &"placed").await?;
    /// producer.publish_keyed("orders", "order-7", &"paid").await?; // handled after "placed"
    /// # Ok(()) }
    /// ```
    pub async fn publish_keyed<T: Serialize + ?Sized>(
        &self,
        target: &str,
        key: &str,
        payload: &T,
    ) -> Result<MessageId> {
        self.publish_keyed_with(target, key, payload, &PublishOptions::default()).await
    }

    /// [`publish_keyed`](Self::publish_keyed) with options.
    pub async fn publish_keyed_with<T: Serialize + ?Sized>(
        &self,
        target: &str,
        key: &str,
        payload: &T,
        options: &PublishOptions,
    ) -> Result<MessageId> {
        let options = options.clone().key(key);
        self.publish_with(target, payload, &options).await
    }

    /// Publishes an already-encoded payload (stored as the `data` field as is).
    pub async fn publish_raw(&self, stream: &str, data: Bytes, options: &PublishOptions) -> Result<MessageId> {
        let options = &*self.layers.apply(stream, 1, options)?;
        #[cfg(feature = "opentelemetry")]
        let options = &*crate::observe::trace_context::with_current_context(options);
        // Up to the queue of coalesced publishes, outside tokio's cooperative budget: a publish
        // polled before another (a caller's `join_all`) must not yield on the way and be
        // queued after it (see `coalesce`).
        let stream = &*tokio::task::unconstrained(self.destination(stream, options)).await?;
        let timer = self.metrics.start(stream);
        let result = self.add_one(stream, data, options).await;
        timer.finish(1, &result);
        result
    }

    /// Declares the topic `name` of `shards` shards for this producer (see
    /// [`topic::declare`](crate::topic::declare)): creates the topic's record in Redis when
    /// there is none, and from then on this producer (and its clones) publishes to `name`
    /// through the shards. Fails with [`Error::TopicShardsMismatch`] when the topic exists
    /// with another shard count (nothing is written, and publishes are never spread over a
    /// different count), and with [`Error::InvalidTopic`] for a name with `{` or `}` or a count
    /// out of range.
    ///
    /// A name this producer never declared is looked up in Redis at its first publish (one
    /// round trip per name, remembered for the producer's lifetime): a producer that first
    /// published to a name before the topic existed keeps publishing to the plain stream of
    /// that name, so create a topic before publishing to it.
    ///
    /// ```no_run
    /// # async fn demo(producer: streamx_runtime::Producer) -> Result<(), streamx_runtime::Error> {
    /// let layout = producer.topic("orders", 16).await?;
    /// assert_eq!(layout.shards(), 16);
    /// // Every message of customer 42 goes to one shard, in order:
    /// producer.publish_keyed("orders", "customer-42", &"placed").await?;
    /// producer.publish_keyed("orders", "customer-42", &"paid").await?;
    /// // Without a key, messages take the shards in turn.
    /// producer.publish("orders", &"audit").await?;
    /// # Ok(()) }
    /// ```
    pub async fn topic(&self, name: &str, shards: u32) -> Result<crate::topic::TopicLayout> {
        let layout = crate::topic::declare(&self.client.get(), name, Some(shards)).await?;
        self.topics.declared(layout.clone());
        Ok(layout)
    }

    /// The stream a single publish to `target` writes to: `target` itself, or for a topic
    /// the shard of the message's key (of the idempotency key when it has no message key;
    /// the round-robin's next shard without either).
    async fn destination<'t>(&self, target: &'t str, options: &PublishOptions) -> Result<Cow<'t, str>> {
        match self.topics.route_of(&self.client.get(), target).await? {
            None => Ok(Cow::Borrowed(target)),
            Some(route) => {
                let key =
                    options.headers.get(crate::message::MESSAGE_KEY_HEADER).or(options.idempotency_key.as_deref());
                Ok(Cow::Owned(route.stream(route.shard(key)).to_string()))
            }
        }
    }

    async fn add_one(&self, stream: &str, data: Bytes, options: &PublishOptions) -> Result<MessageId> {
        let acked_len = options.acked_len(stream)?;
        if let Some(key) = &options.idempotency_key {
            let id = self.add_once(stream, key, data, options).await?;
            if let Some(len) = acked_len {
                // The record and the entry are written; trimming after them is as safe.
                self.trim_acked(&self.client.get(), stream, len).await?;
            }
            return Ok(id);
        }
        if let Some(len) = acked_len {
            return self.add_one_acked(stream, data, options, len).await;
        }
        tokio::task::unconstrained(self.registered.once(&self.client, stream)).await;
        if options.id.is_none() && options.durable.is_none() {
            // Coalesced with the publishes of other tasks (see `coalesce`). (A durable publish
            // is sent here: its WAIT must follow its XADD on the same connection.)
            return self.coalescer.add(stream, data, &options.headers, options.no_mkstream, options.max_len).await;
        }
        let client = self.client.get();
        let cap = options.cap().map_err(|e| Error::redis("XADD", stream, e))?;
        let id = options.id.map_or_else(|| "*".to_string(), |id| id.to_string());
        let reply: Value =
            match client.xadd(stream, options.no_mkstream, cap, id, entry_fields(data, &options.headers)).await {
                Ok(reply) => reply,
                Err(e) => match options.id.filter(|_| is_id_not_increasing(&e)) {
                    Some(id) => return Err(Error::IdNotIncreasing { stream: stream.to_string(), id }),
                    None => return Err(failed(&self.client, &client, "XADD", stream, e).await),
                },
            };
        let id = parse_added_id(stream, reply)?;
        wait_for_replicas(&self.client, &client, stream, options).await?;
        Ok(id)
    }

    /// What the server offers, asked once per producer.
    async fn capabilities(&self) -> crate::Capabilities {
        *self
            .capabilities
            .get_or_init(|| async {
                let client = self.client.get();
                crate::Capabilities::detect(&client).await
            })
            .await
    }

    /// A publish with [`PublishOptions::max_len_acked`]: one script adds the entry and trims
    /// up to [`PUBLISH_TRIM_CHUNK`](crate::retention::PUBLISH_TRIM_CHUNK) entries no group needs
    /// (with `XTRIM ... ACKED` where the server has it; see [`crate::retention`]).
    async fn add_one_acked(&self, stream: &str, data: Bytes, options: &PublishOptions, len: u64) -> Result<MessageId> {
        let acked = self.capabilities().await.xackdel;
        let client = self.client.get();
        self.registered.once(&self.client, stream).await;
        let id = options.id.map_or_else(|| "*".to_string(), |id| id.to_string());
        let mut args = vec![
            Value::from(len.to_string()),
            Value::from(crate::retention::PUBLISH_TRIM_CHUNK.to_string()),
            Value::from(id),
            Value::from(if options.no_mkstream { "1" } else { "0" }),
            Value::from(if acked { "1" } else { "0" }),
        ];
        args.extend(
            entry_fields(data, &options.headers).into_iter().flat_map(|(k, v)| [Value::Bytes(k.into_bytes()), v]),
        );
        let reply: std::result::Result<Value, _> =
            crate::retention::PUBLISH_ACKED.evalsha_with_reload(&client, vec![stream.to_string()], args).await;
        let reply = match reply {
            Ok(reply) => reply.into_array().into_iter().next().unwrap_or(Value::Null),
            Err(e) => match options.id.filter(|_| is_id_not_increasing(&e)) {
                Some(id) => return Err(Error::IdNotIncreasing { stream: stream.to_string(), id }),
                None => return Err(failed(&self.client, &client, "XADD", stream, e).await),
            },
        };
        let id = parse_added_id(stream, reply)?;
        wait_for_replicas(&self.client, &client, stream, options).await?;
        Ok(id)
    }

    /// An idempotent publish (see [`PublishOptions::idempotency_key`]).
    async fn add_once(&self, stream: &str, key: &str, data: Bytes, options: &PublishOptions) -> Result<MessageId> {
        let client = self.client.get();
        self.registered.once(&self.client, stream).await;
        let mut headers = options.headers.clone();
        headers.insert(crate::dedupe::IDEMPOTENCY_KEY_HEADER, key);
        let window = options.idempotency_window.unwrap_or(crate::dedupe::DEFAULT_IDEMPOTENCY_WINDOW);
        let record = crate::keys::published(stream, key);
        let published = crate::dedupe::publish_once(
            &client,
            stream,
            record,
            window,
            options.no_mkstream,
            options.max_len,
            options.id,
            data,
            &headers,
        )
        .await;
        let id = match published {
            Ok(Published::Added(id)) => id,
            Ok(Published::Known(id)) => {
                tracing::debug!(stream, key, %id, "idempotent publish: the key was published already; nothing written");
                id
            }
            Ok(Published::NoStream) => return parse_added_id(stream, Value::Null),
            Err(e) => match options.id.filter(|_| is_id_not_increasing(&e)) {
                Some(id) => return Err(Error::IdNotIncreasing { stream: stream.to_string(), id }),
                None => return Err(failed(&self.client, &client, "EVALSHA (idempotent publish)", stream, e).await),
            },
        };
        wait_for_replicas(&self.client, &client, stream, options).await?;
        Ok(id)
    }

    /// After a batch with [`PublishOptions::max_len_acked`]: trims the stream to about `len`
    /// entries, keeping what a group needs, a chunk per call while calls trim full chunks.
    async fn trim_acked(&self, client: &Client, stream: &str, len: u64) -> Result<()> {
        let acked = if self.capabilities().await.xackdel { "1" } else { "0" };
        let chunk = crate::retention::TRIM_CHUNK.to_string();
        let args = vec![len.to_string(), chunk, String::new(), "0".to_string(), acked.to_string()];
        loop {
            let reply: Value = crate::retention::PUBLISH_ACKED
                .evalsha_with_reload(client, vec![stream.to_string()], args.clone())
                .await
                .map_err(|e| Error::redis("XTRIM", stream, e))?;
            if reply.into_array().get(2).and_then(Value::as_i64) != Some(1) {
                return Ok(());
            }
        }
    }

    /// Publishes `payload` (as JSON) to `stream` once `delay` has passed, on the Redis
    /// server's clock: the message waits in Redis (in the stream's hash slot, durable as
    /// Redis is) and a running [`Runtime`](crate::Runtime) with a consumer of `stream` adds it
    /// to the stream when due, with the header
    /// [`SCHEDULED_AT_HEADER`](crate::SCHEDULED_AT_HEADER). Returns its [`ScheduleId`], with
    /// which [`Scheduled`](crate::Scheduled) lists or cancels it (the stream entry and its id
    /// exist only once it is promoted). See the README's "Delayed messages".
    ///
    /// ```no_run
    /// # async fn demo(producer: streamx_runtime::Producer) -> Result<(), streamx_runtime::Error> {
    /// use std::time::Duration;
    /// let id = producer.publish_after("reminders", &"call back", Duration::from_secs(3600)).await?;
    /// println!("scheduled {id}");
    /// # Ok(()) }
    /// ```
    pub async fn publish_after<T: Serialize + ?Sized>(
        &self,
        stream: &str,
        payload: &T,
        delay: Duration,
    ) -> Result<ScheduleId> {
        self.publish_after_with(stream, payload, delay, &PublishOptions::default()).await
    }

    /// [`publish_after`](Self::publish_after) with options: the headers are kept;
    /// [`durable`](PublishOptions::durable) waits for replicas of the schedule's write; an
    /// explicit [`id`](PublishOptions::id), [`no_mkstream`](PublishOptions::no_mkstream) and
    /// [`max_len_approx`](PublishOptions::max_len_approx) are refused with
    /// [`Error::Unschedulable`] (nothing is scheduled).
    pub async fn publish_after_with<T: Serialize + ?Sized>(
        &self,
        stream: &str,
        payload: &T,
        delay: Duration,
        options: &PublishOptions,
    ) -> Result<ScheduleId> {
        // Whole milliseconds, rounded up: never due before `delay` has passed.
        let ms = delay.as_nanos().div_ceil(1_000_000);
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        self.schedule(stream, encode(stream, payload, options.codec)?, "after", ms, options).await
    }

    /// Publishes `payload` (as JSON) to `stream` at `when` (this machine's wall time, as
    /// Unix ms); a time in the past is due at once. Otherwise as
    /// [`publish_after`](Self::publish_after).
    ///
    /// ```no_run
    /// # async fn demo(producer: streamx_runtime::Producer) -> Result<(), streamx_runtime::Error> {
    /// use std::time::{Duration, SystemTime};
    /// let tomorrow = SystemTime::now() + Duration::from_secs(86_400);
    /// let id = producer.publish_at("reminders", &"renew the subscription", tomorrow).await?;
    /// # let _ = id;
    /// # Ok(()) }
    /// ```
    pub async fn publish_at<T: Serialize + ?Sized>(
        &self,
        stream: &str,
        payload: &T,
        when: std::time::SystemTime,
    ) -> Result<ScheduleId> {
        self.publish_at_with(stream, payload, when, &PublishOptions::default()).await
    }

    /// [`publish_at`](Self::publish_at) with options (as for
    /// [`publish_after_with`](Self::publish_after_with)).
    pub async fn publish_at_with<T: Serialize + ?Sized>(
        &self,
        stream: &str,
        payload: &T,
        when: std::time::SystemTime,
        options: &PublishOptions,
    ) -> Result<ScheduleId> {
        let ms =
            when.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.schedule(stream, encode(stream, payload, options.codec)?, "at", ms, options).await
    }

    /// Schedules one encoded message (see [`crate::scheduler::SCHEDULE`]): `mode` is `at`
    /// (`ms` is the due time) or `after` (`ms` is added to the Redis clock).
    async fn schedule(
        &self,
        stream: &str,
        data: Bytes,
        mode: &'static str,
        ms: u64,
        options: &PublishOptions,
    ) -> Result<ScheduleId> {
        if let Some((option, reason)) = options.unschedulable() {
            return Err(Error::Unschedulable { stream: stream.to_string(), option, reason });
        }
        let options = &*self.layers.apply(stream, 1, options)?;
        #[cfg(feature = "opentelemetry")]
        let options = &*crate::observe::trace_context::with_current_context(options);
        let stream = &*self.destination(stream, options).await?;
        let client = self.client.get();
        self.registered.once(&self.client, stream).await;
        let id = ScheduleId::random();
        let encoded = crate::scheduler::encode(&data, options.headers_ref());
        let args = vec![
            Value::from(id.to_string()),
            Value::from(mode),
            Value::from(ms.to_string()),
            Value::Bytes(Bytes::from(encoded)),
        ];
        let scheduled: std::result::Result<Value, _> = crate::scheduler::SCHEDULE
            .evalsha_with_reload(&client, crate::scheduler::schedule_keys(stream), args)
            .await;
        if let Err(e) = scheduled {
            return Err(failed(&self.client, &client, "EVALSHA (schedule)", stream, e).await);
        }
        wait_for_replicas(&self.client, &client, stream, options).await?;
        Ok(id)
    }

    /// Publishes every payload, in order, in round trips of up to 500 entries and 1 MiB, up
    /// to 8 of them in flight at once (not one round trip per message): each round trip is one
    /// call of the append script, which adds every entry with its own `XADD` (pipelined `XADD`s
    /// for a user the server does not allow `EVAL`; see the README's "Publishing"). Returns the
    /// ids in the same order.
    ///
    /// A batch of more than one round trip goes over a second connection of the producer,
    /// made at the first such batch, which leaves TCP_NODELAY off: the kernel then sends
    /// what the client writes as full segments, not a packet per write, which publishes
    /// ~1.2x as many messages per second on the benchmark's machine and costs Redis less
    /// per message. Single publishes and smaller batches keep the first connection, where
    /// each request leaves at once. Batches and publishes awaited one after the other land
    /// in that order; calls running at the same time have no order between them.
    ///
    /// Every payload is encoded before anything is sent: a payload that cannot be encoded
    /// fails the batch with [`Error::Encode`] and nothing is written.
    ///
    /// A batch that fails after writing some entries returns [`Error::PartialPublish`]; its
    /// [`written`](Error::written) lists, by position in `payloads`, exactly the entries
    /// that are in the stream. They are usually a prefix (the round trips before the one
    /// that failed), but within a round trip each XADD succeeds or fails on its own (e.g.
    /// `OOM`), so a failed round trip can have written some of its positions and not others.
    /// After a lost connection or a timeout the round trips in flight are not listed and their
    /// fate is unknown, as with [`publish`](Self::publish). After the first round trip with a
    /// failure no further round trip starts (later payloads are not sent); the ones already
    /// in flight finish, and what they wrote is listed too. A batch that wrote nothing fails
    /// with the error itself, for which `written()` is empty.
    ///
    /// Retrying only what was not written:
    ///
    /// ```no_run
    /// # async fn demo(producer: streamx_runtime::Producer, orders: Vec<u64>) -> Result<(), streamx_runtime::Error> {
    /// match producer.publish_batch("orders", &orders).await {
    ///     Ok(ids) => println!("published {}", ids.len()),
    ///     Err(e) => {
    ///         let written = e.written();
    ///         let rest: Vec<u64> = orders
    ///             .iter()
    ///             .enumerate()
    ///             .filter(|(i, _)| written.binary_search_by_key(i, |&(at, _)| at).is_err())
    ///             .map(|(_, order)| *order)
    ///             .collect();
    ///         eprintln!("{e}; {} written, {} to retry", written.len(), rest.len());
    ///         producer.publish_batch("orders", &rest).await?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn publish_batch<T: Serialize>(&self, stream: &str, payloads: &[T]) -> Result<Vec<MessageId>> {
        self.publish_batch_with(stream, payloads, &PublishOptions::default()).await
    }

    /// [`publish_batch`](Self::publish_batch) with options applied to every message. With
    /// [`durable`](PublishOptions::durable), each round trip is followed by a `WAIT`; a
    /// round trip that is written but not replicated in time fails the batch with
    /// [`Error::PartialPublish`] whose source is [`Error::NotReplicated`], listing its
    /// entries among the written ones.
    pub async fn publish_batch_with<T: Serialize>(
        &self,
        stream: &str,
        payloads: &[T],
        options: &PublishOptions,
    ) -> Result<Vec<MessageId>> {
        #[cfg(feature = "opentelemetry")]
        let options = &*crate::observe::trace_context::with_current_context(options);
        if options.id.is_some() {
            return Err(Error::IdInBatch { stream: stream.to_string() });
        }
        if options.idempotency_key.is_some() {
            return Err(Error::IdempotencyKeyInBatch { stream: stream.to_string() });
        }
        let options = &*self.layers.apply(stream, payloads.len(), options)?;
        let encoded = encode_all(stream, payloads.iter(), options.codec)?;
        self.publish_entries(stream, encoded, None, options).await
    }

    /// A batch that is checked and encoded, to `target` (a stream, or a topic whose shards
    /// share it out, see [`topic`](Self::topic)); `keys`, when given, is each entry's
    /// message key (as long as `encoded`).
    async fn publish_entries(
        &self,
        target: &str,
        encoded: Vec<Bytes>,
        keys: Option<Vec<String>>,
        options: &PublishOptions,
    ) -> Result<Vec<MessageId>> {
        match self.topics.route_of(&self.client.get(), target).await? {
            Some(route) => self.publish_split(&route, encoded, keys, options).await,
            None => self.publish_to_stream(target, &encoded, keys.as_deref(), options).await,
        }
    }

    /// A batch to one stream: the pipelined round trips, then the safe trim.
    async fn publish_to_stream(
        &self,
        stream: &str,
        encoded: &[Bytes],
        keys: Option<&[String]>,
        options: &PublishOptions,
    ) -> Result<Vec<MessageId>> {
        let acked_len = options.acked_len(stream)?;
        let cap = options.cap().map_err(|e| Error::redis("XADD", stream, e))?;
        let healing = if encoded.len() > BATCH_CHUNK { self.bulk_client().await? } else { &self.client };
        let client = healing.get();
        self.registered.once(&self.client, stream).await;
        // A durable batch has one round trip in flight, each followed by its WAIT.
        let in_flight = if options.durable.is_some() { 1 } else { CHUNKS_IN_FLIGHT };
        let timer = self.metrics.start(stream);
        let batch = Entries { encoded, keys };
        let mut result = self.publish_chunks(healing, &client, stream, batch, &cap, options, in_flight).await;
        if let (Ok(ids), Some(len)) = (&result, acked_len) {
            // One safe trim per batch, after it (what the batch wrote is never needed less).
            if let Err(e) = self.trim_acked(&client, stream, len).await {
                let written = ids.iter().copied().enumerate().collect();
                result = Err(Error::partial_publish(stream, written, e));
            }
        }
        timer.finish(encoded.len(), &result);
        result
    }

    /// A batch to a topic: each entry to its shard (its key's, or the round-robin's next),
    /// one batch per shard, all shards at once. Entries of one key go to one shard in the
    /// batch's order, so each key's order is kept; the ids come back in the batch's order.
    /// Each shard's part fails on its own: [`Error::PartialPublish`] lists what every shard
    /// wrote, by position in the whole batch, with the first failure as its source.
    async fn publish_split(
        &self,
        route: &topic::TopicRoute,
        encoded: Vec<Bytes>,
        keys: Option<Vec<String>>,
        options: &PublishOptions,
    ) -> Result<Vec<MessageId>> {
        let shards = route.layout.shards().max(1);
        let total = encoded.len();
        let common_key = options.headers.get(crate::message::MESSAGE_KEY_HEADER);
        let unkeyed = if keys.is_none() && common_key.is_none() { total as u64 } else { 0 };
        let first_turn = if unkeyed > 0 { route.next_shards(unkeyed) } else { 0 };
        // Per shard: the positions of its entries in the batch, their payloads and keys.
        let mut parts: Vec<(Vec<usize>, Vec<Bytes>, Vec<String>)> = vec![Default::default(); shards as usize];
        let mut keys = keys.map(Vec::into_iter);
        for (at, data) in encoded.into_iter().enumerate() {
            let key = keys.as_mut().and_then(Iterator::next);
            let shard = match key.as_deref().or(common_key) {
                Some(key) => route.layout.shard_of_key(key),
                None => ((u64::from(first_turn) + at as u64) % u64::from(shards)) as u32,
            };
            let part = &mut parts[shard as usize];
            part.0.push(at);
            part.1.push(data);
            part.2.extend(key);
        }
        let sends = parts.into_iter().enumerate().filter(|(_, part)| !part.0.is_empty()).map(
            |(shard, (positions, encoded, keys))| async move {
                let stream = route.stream(shard as u32);
                let keys = (!keys.is_empty()).then_some(keys.as_slice());
                let result = self.publish_to_stream(stream, &encoded, keys, options).await;
                (positions, result)
            },
        );
        let results = futures_util::future::join_all(sends).await;
        let mut ids = vec![MessageId::default(); total];
        let mut written = Vec::with_capacity(total);
        let mut first_failure = None;
        for (positions, result) in results {
            match result {
                Ok(shard_ids) => {
                    for (at, id) in positions.iter().zip(shard_ids) {
                        ids[*at] = id;
                        written.push((*at, id));
                    }
                }
                Err(e) => {
                    written.extend(e.written().iter().map(|&(at, id)| (positions[at], id)));
                    let source = match e {
                        Error::PartialPublish { source, .. } => *source,
                        other => other,
                    };
                    first_failure.get_or_insert(source);
                }
            }
        }
        match first_failure {
            None => Ok(ids),
            Some(source) => {
                written.sort_unstable_by_key(|&(at, _)| at);
                Err(Error::partial_publish(route.layout.name(), written, source))
            }
        }
    }

    /// Publishes `(key, payload)` pairs in order, each message with its key (the header
    /// [`MESSAGE_KEY_HEADER`](crate::MESSAGE_KEY_HEADER)), as [`publish_batch`](Self::publish_batch) does: to a stream
    /// in one pipelined batch, in order; to a topic split per shard (each key to its shard,
    /// every key's messages in the batch's order, see [`topic`](Self::topic)). Returns the
    /// ids in the batch's order; a failure is an [`Error::PartialPublish`] as for
    /// `publish_batch` (for a topic, each shard's part fails on its own, and `written` lists
    /// what every shard wrote, by position in the batch).
    ///
    /// ```no_run
    /// # async fn demo(producer: streamx_runtime::Producer) -> Result<(), streamx_runtime::Error> {
    /// let events = [("order-1", "placed"), ("order-2", "placed"), ("order-1", "paid")];
    /// let ids = producer.publish_batch_keyed("orders", &events).await?;
    /// assert_eq!(ids.len(), 3);
    /// # Ok(()) }
    /// ```
    pub async fn publish_batch_keyed<K: AsRef<str>, T: Serialize>(
        &self,
        target: &str,
        entries: &[(K, T)],
    ) -> Result<Vec<MessageId>> {
        self.publish_batch_keyed_with(target, entries, &PublishOptions::default()).await
    }

    /// [`publish_batch_keyed`](Self::publish_batch_keyed) with options applied to every
    /// message (as [`publish_batch_with`](Self::publish_batch_with); each entry's key
    /// replaces a key set in the options).
    pub async fn publish_batch_keyed_with<K: AsRef<str>, T: Serialize>(
        &self,
        target: &str,
        entries: &[(K, T)],
        options: &PublishOptions,
    ) -> Result<Vec<MessageId>> {
        #[cfg(feature = "opentelemetry")]
        let options = &*crate::observe::trace_context::with_current_context(options);
        if options.id.is_some() {
            return Err(Error::IdInBatch { stream: target.to_string() });
        }
        if options.idempotency_key.is_some() {
            return Err(Error::IdempotencyKeyInBatch { stream: target.to_string() });
        }
        let options = &*self.layers.apply(target, entries.len(), options)?;
        let encoded = encode_all(target, entries.iter().map(|(_, payload)| payload), options.codec)?;
        let keys = entries.iter().map(|(key, _)| key.as_ref().to_string()).collect();
        self.publish_entries(target, encoded, Some(keys), options).await
    }

    /// A batch as round trips of up to [`BATCH_CHUNK`] entries and [`BATCH_CHUNK_BYTES`],
    /// `in_flight` at once (a durable round trip ends with its WAIT). The round trips are
    /// started in order (`buffered` polls each new one after the ones before it, and a round
    /// trip queues its command when first polled), so the entries land in the stream in the
    /// batch's order. Once one has failed, no further round trip starts.
    #[allow(clippy::too_many_arguments)]
    async fn publish_chunks<'e>(
        &self,
        healing: &HealingClient,
        client: &Client,
        stream: &str,
        batch: Entries<'e>,
        cap: &XCap,
        options: &PublishOptions,
        in_flight: usize,
    ) -> Result<Vec<MessageId>> {
        let failed = AtomicBool::new(false);
        let scripts = &*self.scripts;
        let round = |(offset, chunk): (usize, Entries<'e>)| {
            let failed = &failed;
            async move {
                if failed.load(Ordering::Acquire) {
                    return (offset, Vec::new(), None);
                }
                let (ids, failure) = send_chunk(healing, client, stream, chunk, cap, options, scripts).await;
                let failure = match failure {
                    Some(e) => Some(e),
                    None => wait_for_replicas(healing, client, stream, options).await.err(),
                };
                (offset, ids, failure)
            }
        };
        let mut chunks = batch.chunks();
        // Until the server has said whether it runs the append script, round trips go one at
        // a time: round trips refused together would fall back to XADDs in no sure order.
        let mut alone = Vec::new();
        while scripts.unknown() && !failed.load(Ordering::Acquire) {
            let Some(chunk) = chunks.next() else { break };
            let outcome = round(chunk).await;
            if outcome.2.is_some() {
                failed.store(true, Ordering::Release);
            }
            alone.push(outcome);
        }
        let rest = futures_util::stream::iter(chunks).map(round).buffered(in_flight);
        let mut rounds = futures_util::stream::iter(alone).chain(rest);
        let mut written: Vec<(usize, MessageId)> = Vec::with_capacity(batch.encoded.len());
        let mut first_failure = None;
        while let Some((offset, ids, failure)) = rounds.next().await {
            written.extend(ids.into_iter().map(|(at, id)| (offset + at, id)));
            if let Some(e) = failure {
                failed.store(true, Ordering::Release);
                first_failure.get_or_insert(e);
            }
        }
        match first_failure {
            Some(source) => Err(Error::partial_publish(stream, written, source)),
            None => Ok(written.into_iter().map(|(_, id)| id).collect()),
        }
    }

    /// The connection of batches of more than one round trip (see
    /// [`publish_batch`](Self::publish_batch)), made at the first of them.
    async fn bulk_client(&self) -> Result<&HealingClient> {
        let bulk = &self.bulk;
        bulk.client.get_or_try_init(|| HealingClient::connect(&bulk.url, ClientRole::BulkPublish, Duration::ZERO)).await
    }

    /// The underlying fred client, for commands streamx does not wrap (the connection of
    /// single publishes).
    pub fn client(&self) -> Client {
        self.client.get()
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.client.quit().await;
        if let Some(bulk) = self.bulk.client.get() {
            bulk.quit().await;
        }
    }
}

/// One round trip of a batch: the entries it added, as `(position in the chunk, id)`, and
/// its first failure. A round trip of several entries is one call of the append script
/// (see [`append`]) where the server allows it; otherwise, and for a lone entry, the
/// XADDs are pipelined (below).
#[allow(clippy::too_many_arguments)]
async fn send_chunk(
    healing: &HealingClient,
    client: &Client,
    stream: &str,
    chunk: Entries<'_>,
    cap: &XCap,
    options: &PublishOptions,
    scripts: &append::ScriptUse,
) -> (Vec<(usize, MessageId)>, Option<Error>) {
    if chunk.encoded.len() < 2 || !scripts.may_try() || options.headers.len() > append::MAX_SCRIPT_HEADERS {
        return send_xadds(healing, client, stream, chunk, cap, options).await;
    }
    let headers = append::header_args(&options.headers, chunk.keys.is_some());
    let bare = headers.is_empty() && chunk.keys.is_none();
    let mut args = append::AppendArgs::new(options.no_mkstream, options.max_len, chunk.encoded.len(), bare);
    for (at, data) in chunk.encoded.iter().enumerate() {
        args.push(data.clone(), &headers, chunk.key(at));
    }
    let sent = args.len();
    let reply: std::result::Result<Value, fred::error::Error> = client
        .eval(fred::bytes_utils::Str::from_static(append::APPEND), vec![stream.to_string()], args.into_args())
        .await;
    match reply {
        Ok(reply) => {
            scripts.allowed();
            let mut added = Vec::with_capacity(sent);
            let mut failure = None;
            for (at, outcome) in append::entry_replies(stream, sent, reply).into_iter().enumerate() {
                match outcome {
                    Ok(id) => added.push((at, id)),
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            (added, failure)
        }
        Err(e) if append::scripts_refused(&e) => {
            tracing::info!(stream, error = %e, "the server refuses the append script to this user; publishing batches as pipelined XADDs");
            scripts.refused();
            send_xadds(healing, client, stream, chunk, cap, options).await
        }
        Err(e) => {
            healing.heal(client, &e).await;
            (Vec::new(), Some(Error::redis("EVAL (append)", stream, e)))
        }
    }
}

/// One round trip of pipelined XADDs: the entries it added, as `(position in the chunk,
/// id)`, and its first failure.
///
/// The XADDs go as one fred `Pipeline`. fred writes a pipeline's commands out one by
/// one when nothing else is queued on the connection, but batches the writes while other
/// requests are queued behind it (`strace -c`: ~1,070 writes for 20,000 XADDs with four
/// round trips in flight, ~20,200 with one), so a batch keeps several round trips in
/// flight: the raw producer that measured fastest (`pipeline-500x8` in the benchmark)
/// has the same shape. The entries land in the stream in the order of `chunk`, and
/// round trips started one after the other land one after the other.
async fn send_xadds(
    healing: &HealingClient,
    client: &Client,
    stream: &str,
    chunk: Entries<'_>,
    cap: &XCap,
    options: &PublishOptions,
) -> (Vec<(usize, MessageId)>, Option<Error>) {
    // One fred pipeline per round trip: its commands go to the connection as one message
    // with one reply channel, instead of a future, a channel and a router message per
    // XADD. Each XADD is buffered at its first poll, here, in order (its own reply is a
    // placeholder and is not awaited: a pipeline's command would yield once the task's
    // cooperative budget runs out, but it is buffered before that point). The round
    // trip is handed to the connection when `try_all` is first polled, so round trips in
    // flight together are written in the order they were started.
    let pipeline = client.pipeline();
    let mut queue_now = std::task::Context::from_waker(std::task::Waker::noop());
    for (at, data) in chunk.encoded.iter().enumerate() {
        let fields = match chunk.key(at) {
            Some(key) => {
                entry_fields(data.clone(), &options.headers.clone().with(crate::message::MESSAGE_KEY_HEADER, key))
            }
            None => entry_fields(data.clone(), &options.headers),
        };
        let xadd = pipeline.xadd::<Value, _, _, _, _>(stream, options.no_mkstream, cap.clone(), "*", fields);
        let _ = std::pin::pin!(xadd).poll(&mut queue_now);
    }
    let replies: Vec<Result<Value, fred::error::Error>> = pipeline.try_all::<Value>().await;
    if let Some(Err(e)) = replies.iter().find(|reply| reply.is_err()) {
        healing.heal(client, e).await;
    }
    chunk_outcome(stream, chunk.encoded.len(), replies)
}

/// The encoded entries of a batch (or of one round trip of it), with each entry's message
/// key when the batch is keyed.
#[derive(Clone, Copy)]
struct Entries<'a> {
    encoded: &'a [Bytes],
    keys: Option<&'a [String]>,
}

impl<'a> Entries<'a> {
    /// The round trips, in order, each with the position of its first entry: up to
    /// [`BATCH_CHUNK`] entries and [`BATCH_CHUNK_BYTES`] of payload (at least one entry).
    fn chunks(self) -> impl Iterator<Item = (usize, Entries<'a>)> {
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= self.encoded.len() {
                return None;
            }
            let mut end = start + 1;
            let mut bytes = self.encoded[start].len();
            while end < self.encoded.len() && end - start < BATCH_CHUNK {
                bytes += self.encoded[end].len();
                if bytes > BATCH_CHUNK_BYTES {
                    break;
                }
                end += 1;
            }
            let chunk = Entries { encoded: &self.encoded[start..end], keys: self.keys.map(|keys| &keys[start..end]) };
            let offset = start;
            start = end;
            Some((offset, chunk))
        })
    }

    /// The message key of the entry at `at`, when the batch is keyed.
    fn key(&self, at: usize) -> Option<&'a str> {
        self.keys.and_then(|keys| keys.get(at)).map(String::as_str)
    }
}

/// For a durable publish: `WAIT` on the connection that carried the XADDs (the one to
/// the stream's master, hence the slot-routed command).
async fn wait_for_replicas(
    healing: &HealingClient,
    client: &Client,
    stream: &str,
    options: &PublishOptions,
) -> Result<()> {
    let Some((replicas, timeout)) = options.durable else { return Ok(()) };
    let wait = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot(stream)), false);
    let args = vec![Value::from(i64::from(replicas)), Value::from(timeout.as_millis() as i64)];
    let acked: i64 = match client.custom(wait, args).await {
        Ok(acked) => acked,
        Err(e) => return Err(failed(healing, client, "WAIT", stream, e).await),
    };
    if acked < i64::from(replicas) {
        return Err(Error::NotReplicated { stream: stream.to_string(), wanted: replicas, acked: acked.max(0) as u32 });
    }
    Ok(())
}

/// A failed command: replace the client if it is wedged (the publish itself is not
/// retried: its fate is unknown and a retry could duplicate it).
async fn failed(
    healing: &HealingClient,
    client: &Client,
    command: &'static str,
    stream: &str,
    e: fred::error::Error,
) -> Error {
    healing.heal(client, &e).await;
    Error::redis(command, stream, e)
}

/// The most [`encode_all`] reserves from its first payload's size.
const RESERVE_AHEAD: usize = 64 << 20;

/// Every payload in `codec`, written one after the other into one buffer that the returned
/// payloads share: one allocation for a batch instead of one per payload, and the bytes
/// of a round trip next to each other in memory.
fn encode_all<'a, T: Serialize + 'a>(
    stream: &str,
    payloads: impl ExactSizeIterator<Item = &'a T>,
    codec: Codec,
) -> Result<Vec<Bytes>> {
    let count = payloads.len();
    let mut text: Vec<u8> = Vec::new();
    let mut ends = Vec::with_capacity(count);
    for payload in payloads {
        crate::codec::encode_into(codec, &mut text, payload, stream)?;
        if ends.is_empty() {
            // The first payload's size for each, a quarter more, at most 64 MiB ahead (the
            // first may be much larger than the rest); the buffer grows beyond as needed.
            let estimate = text.len().saturating_mul(count).saturating_mul(5) / 4;
            text.reserve(estimate.min(RESERVE_AHEAD));
        }
        ends.push(text.len());
    }
    Ok(crate::wire::split_at_ends(Bytes::from(text), ends).collect())
}

/// `payload` in `codec`.
fn encode<T: Serialize + ?Sized>(stream: &str, payload: &T, codec: Codec) -> Result<Bytes> {
    match codec {
        // As JSON always was (`to_vec` starts at 128 bytes of capacity).
        Codec::Json => serde_json::to_vec(payload)
            .map(Bytes::from)
            .map_err(|source| Error::Encode { stream: stream.to_string(), source }),
        #[allow(unreachable_patterns)]
        _ => {
            let mut out = Vec::with_capacity(128);
            crate::codec::encode_into(codec, &mut out, payload, stream)?;
            Ok(Bytes::from(out))
        }
    }
}

/// What a round trip of `sent` XADDs did: the entries added, as `(position, id)`, and the
/// first failure. fred answers a round trip that failed as a whole (connection lost,
/// timeout) with a single error in place of the replies: then nothing is known to be added.
fn chunk_outcome(
    stream: &str,
    sent: usize,
    replies: Vec<Result<Value, fred::error::Error>>,
) -> (Vec<(usize, MessageId)>, Option<Error>) {
    if replies.len() != sent {
        let received = replies.len();
        let failure = replies.into_iter().find_map(Result::err).map_or_else(
            || Error::Decode {
                stream: stream.to_string(),
                id: "*".to_string(),
                reason: format!("{sent} pipelined XADDs got {received} replies"),
            },
            |e| Error::redis("XADD", stream, e),
        );
        return (Vec::new(), Some(failure));
    }
    let mut added = Vec::with_capacity(sent);
    let mut failure = None;
    for (at, reply) in replies.into_iter().enumerate() {
        match reply.map_err(|e| Error::redis("XADD", stream, e)).and_then(|reply| parse_added_id(stream, reply)) {
            Ok(id) => added.push((at, id)),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    (added, failure)
}

/// Redis refused an explicit XADD id: not greater than the stream's last id, or `0-0`.
fn is_id_not_increasing(e: &fred::error::Error) -> bool {
    e.details().contains("The ID specified in XADD")
}

fn parse_added_id(stream: &str, reply: Value) -> Result<MessageId> {
    if reply.is_null() {
        return Err(Error::Decode {
            stream: stream.to_string(),
            id: "*".to_string(),
            reason: "XADD added nothing: the stream does not exist and NOMKSTREAM was set".to_string(),
        });
    }
    value_bytes(reply.clone()).and_then(|b| MessageId::parse_bytes(&b)).ok_or_else(|| Error::Decode {
        stream: stream.to_string(),
        id: format!("{reply:?}"),
        reason: "XADD replied with something that is not an entry id".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use fred::error::{Error as FredError, ErrorKind};

    use super::*;

    fn id(n: u64) -> Value {
        Value::from(format!("{n}-0"))
    }

    fn server_error(text: &'static str) -> FredError {
        FredError::new(ErrorKind::Unknown, text)
    }

    #[test]
    fn a_batch_encodes_into_one_buffer_each_payload_as_alone() {
        // A large first payload, then small ones, then an empty string: each slice is what
        // encoding its payload alone gives, and all share one buffer.
        let payloads = ["x".repeat(10_000), "a".to_string(), String::new(), "é\"\n".to_string()];
        let encoded = encode_all("s", payloads.iter(), Codec::Json).unwrap();
        let alone: Vec<Bytes> = payloads.iter().map(|p| encode("s", p, Codec::Json).unwrap()).collect();
        assert_eq!(encoded, alone);
        let base = encoded[0].as_ptr() as usize;
        assert_eq!(encoded[1].as_ptr() as usize, base + encoded[0].len(), "one buffer, back to back");
        assert!(encode_all::<u8>("s", [].iter(), Codec::Json).unwrap().is_empty());
        let err = encode_all("s", [std::collections::HashMap::from([((1, 2), 3)])].iter(), Codec::Json).unwrap_err();
        assert!(matches!(err, Error::Encode { .. }), "{err:?}");
    }

    #[test]
    fn a_round_trip_keeps_every_added_id_and_the_first_failure() {
        let replies =
            vec![Ok(id(1)), Err(server_error("OOM command not allowed")), Ok(id(3)), Ok(Value::Null), Ok(id(5))];
        let (added, failure) = chunk_outcome("s", 5, replies);
        let positions: Vec<usize> = added.iter().map(|(at, _)| *at).collect();
        assert_eq!(positions, [0, 2, 4]);
        assert_eq!(added[1].1.to_string(), "3-0");
        assert!(
            matches!(&failure, Some(Error::Redis { source, .. }) if source.details().starts_with("OOM")),
            "{failure:?}"
        );
    }

    #[test]
    fn a_round_trip_that_failed_as_a_whole_added_nothing_known() {
        let (added, failure) = chunk_outcome("s", 3, vec![Err(FredError::new(ErrorKind::Timeout, "timed out"))]);
        assert!(added.is_empty());
        assert!(matches!(failure, Some(Error::Redis { command: "XADD", .. })), "{failure:?}");
    }

    #[test]
    fn refused_explicit_ids_are_recognised() {
        assert!(is_id_not_increasing(&server_error(
            "ERR The ID specified in XADD is equal or smaller than the target stream top item"
        )));
        assert!(is_id_not_increasing(&server_error("ERR The ID specified in XADD must be greater than 0-0")));
        assert!(!is_id_not_increasing(&server_error("OOM command not allowed")));
    }

    #[test]
    fn a_round_trip_without_failures_adds_every_entry() {
        let (added, failure) = chunk_outcome("s", 2, vec![Ok(id(7)), Ok(id(8))]);
        assert_eq!(added.len(), 2);
        assert!(failure.is_none());
    }

    #[test]
    fn only_a_batch_that_wrote_something_is_a_partial_publish() {
        let not_replicated = || Error::NotReplicated { stream: "s".into(), wanted: 1, acked: 0 };
        let none = Error::partial_publish("s", Vec::new(), not_replicated());
        assert!(matches!(none, Error::NotReplicated { .. }));
        assert!(none.written().is_empty());
        let some = Error::partial_publish("s", vec![(0, MessageId::default())], not_replicated());
        assert!(
            matches!(&some, Error::PartialPublish { source, .. } if matches!(**source, Error::NotReplicated { .. }))
        );
        assert_eq!(some.written().len(), 1);
    }
}
