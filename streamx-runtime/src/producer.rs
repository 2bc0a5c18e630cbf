//! Publishing: [`Producer`] and [`PublishOptions`].

use std::time::Duration;

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, StreamsInterface};
use fred::types::streams::XCap;
use fred::types::{ClusterHash, CustomCommand, Value};
use serde::Serialize;

use crate::connection::{ClientRole, HealingClient, RedisUrl};
use crate::error::{Error, Result};
use crate::keys::slot;
use crate::message::{Headers, MessageId};
use crate::wire::{entry_fields, value_bytes};

/// How many XADDs one pipelined round trip of [`Producer::publish_batch`] carries.
const BATCH_CHUNK: usize = 1000;

/// Options of a publish: headers, trimming, NOMKSTREAM.
///
/// ```
/// use streamx_runtime::{Headers, PublishOptions};
/// let opts = PublishOptions::new()
///     .headers(Headers::new().with("trace-id", "abc"))
///     .max_len_approx(100_000);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    headers: Headers,
    max_len: Option<u64>,
    no_mkstream: bool,
    durable: Option<(u32, Duration)>,
}

impl PublishOptions {
    /// No headers, no trimming, the stream is created if missing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Headers stored with each published message.
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Trims the stream to about `len` entries (`MAXLEN ~ len`) on each add. Trimming
    /// removes the oldest entries whether or not every group has read them.
    pub fn max_len_approx(mut self, len: u64) -> Self {
        self.max_len = Some(len);
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

    fn cap(&self) -> Result<XCap, fred::error::Error> {
        match self.max_len {
            Some(len) => XCap::try_from(("MAXLEN", "~", len as i64)),
            None => Ok(XCap::from(None::<()>)),
        }
    }
}

/// Publishes messages to streams. Cheap to clone; clones share one connection, on which
/// concurrent publishes from many tasks are pipelined.
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
}

impl Producer {
    /// Connects to `url` (see [`RedisUrl::parse`] for the accepted forms).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_url(&RedisUrl::parse(url)?, Duration::ZERO).await
    }

    /// Connects to `STREAMX_REDIS_URL` (default `redis://127.0.0.1:6379`).
    pub async fn from_env() -> Result<Self> {
        Self::connect_url(&RedisUrl::from_env()?, Duration::ZERO).await
    }

    /// Connects with a parsed URL (with TLS or credentials options).
    pub async fn connect_with(url: &RedisUrl) -> Result<Self> {
        Self::connect_url(url, Duration::ZERO).await
    }

    pub(crate) async fn connect_url(url: &RedisUrl, deadline: Duration) -> Result<Self> {
        Ok(Producer { client: HealingClient::connect(url, ClientRole::Publish, deadline).await? })
    }

    /// Publishes `payload` as JSON; returns the new entry's id.
    pub async fn publish<T: Serialize + ?Sized>(&self, stream: &str, payload: &T) -> Result<MessageId> {
        self.publish_with(stream, payload, &PublishOptions::default()).await
    }

    /// Publishes `payload` with options.
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        stream: &str,
        payload: &T,
        options: &PublishOptions,
    ) -> Result<MessageId> {
        let data = encode(stream, payload)?;
        self.publish_raw(stream, data, options).await
    }

    /// Publishes an already-encoded payload (stored as the `data` field as is).
    pub async fn publish_raw(&self, stream: &str, data: Bytes, options: &PublishOptions) -> Result<MessageId> {
        let cap = options.cap().map_err(|e| Error::redis("XADD", stream, e))?;
        let client = self.client.get();
        let reply: Value =
            match client.xadd(stream, options.no_mkstream, cap, "*", entry_fields(data, &options.headers)).await {
                Ok(reply) => reply,
                Err(e) => return Err(self.failed(&client, "XADD", stream, e).await),
            };
        let id = parse_added_id(stream, reply)?;
        self.wait_for_replicas(&client, stream, options).await?;
        Ok(id)
    }

    /// Publishes every payload, in order, in pipelined round trips of up to 1000 XADDs (not
    /// one round trip per message). Returns the ids in the same order.
    pub async fn publish_batch<T: Serialize>(&self, stream: &str, payloads: &[T]) -> Result<Vec<MessageId>> {
        self.publish_batch_with(stream, payloads, &PublishOptions::default()).await
    }

    /// [`publish_batch`](Self::publish_batch) with options applied to every message.
    pub async fn publish_batch_with<T: Serialize>(
        &self,
        stream: &str,
        payloads: &[T],
        options: &PublishOptions,
    ) -> Result<Vec<MessageId>> {
        let mut ids = Vec::with_capacity(payloads.len());
        let cap = options.cap().map_err(|e| Error::redis("XADD", stream, e))?;
        let client = self.client.get();
        for chunk in payloads.chunks(BATCH_CHUNK) {
            let pipeline = client.pipeline();
            for payload in chunk {
                let data = encode(stream, payload)?;
                let _: () = pipeline
                    .xadd(stream, options.no_mkstream, cap.clone(), "*", entry_fields(data, &options.headers))
                    .await
                    .map_err(|e| Error::redis("XADD", stream, e))?;
            }
            let replies: Vec<Value> = match pipeline.all().await {
                Ok(replies) => replies,
                Err(e) => return Err(self.failed(&client, "XADD", stream, e).await),
            };
            for reply in replies {
                ids.push(parse_added_id(stream, reply)?);
            }
            self.wait_for_replicas(&client, stream, options).await?;
        }
        Ok(ids)
    }

    /// For a durable publish: `WAIT` on the connection that carried the XADDs (the one to
    /// the stream's master, hence the slot-routed command).
    async fn wait_for_replicas(&self, client: &Client, stream: &str, options: &PublishOptions) -> Result<()> {
        let Some((replicas, timeout)) = options.durable else { return Ok(()) };
        let wait = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot(stream)), false);
        let args = vec![Value::from(i64::from(replicas)), Value::from(timeout.as_millis() as i64)];
        let acked: i64 = match client.custom(wait, args).await {
            Ok(acked) => acked,
            Err(e) => return Err(self.failed(client, "WAIT", stream, e).await),
        };
        if acked < i64::from(replicas) {
            return Err(Error::NotReplicated {
                stream: stream.to_string(),
                wanted: replicas,
                acked: acked.max(0) as u32,
            });
        }
        Ok(())
    }

    /// A failed command: replace the client if it is wedged (the publish itself is not
    /// retried: its fate is unknown and a retry could duplicate it).
    async fn failed(&self, client: &Client, command: &'static str, stream: &str, e: fred::error::Error) -> Error {
        self.client.heal(client, &e).await;
        Error::redis(command, stream, e)
    }

    /// The underlying fred client, for commands streamx does not wrap.
    pub fn client(&self) -> Client {
        self.client.get()
    }

    /// Closes the connection.
    pub async fn close(&self) {
        self.client.quit().await;
    }
}

fn encode<T: Serialize + ?Sized>(stream: &str, payload: &T) -> Result<Bytes> {
    serde_json::to_vec(payload).map(Bytes::from).map_err(|source| Error::Encode { stream: stream.to_string(), source })
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
