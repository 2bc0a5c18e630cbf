//! The error type of every fallible streamx operation.

use crate::location::SourceLocation;
use crate::message::MessageId;
pub use crate::permissions::MissingPermissions;

/// Everything that can go wrong in streamx, with the context needed to act on it:
/// which URL, stream, group or message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL could not be parsed. The URL in the message has its password redacted.
    #[error("invalid Redis URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis could not be reached (or refused our credentials) when connecting.
    #[error("cannot connect to Redis at {url}: {source}")]
    Connect {
        /// The URL with any password replaced by `***`.
        url: String,
        /// The underlying client error.
        #[source]
        source: fred::error::Error,
    },
    /// The TLS settings of a `rediss://` URL cannot be used: a CA or client certificate
    /// file that cannot be read or holds no certificate, a key that does not fit, TLS
    /// options on a URL without TLS, no trusted CA certificates.
    #[error("TLS setup for Redis at {url} failed: {reason}")]
    Tls {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A `rediss://` URL (or a TLS setting) was given, but streamx was built without its
    /// `tls` feature (on by default).
    #[error(
        "Redis at {url} needs TLS, but streamx was built without TLS support: enable the `tls` feature of streamx \
         (on by default)"
    )]
    TlsNotEnabled {
        /// The URL with any password replaced by `***`.
        url: String,
    },
    /// The HTTP endpoint cannot be served: its address does not parse, or binding it failed.
    #[error("cannot serve HTTP on `{addr}`: {reason}")]
    Http {
        /// The address as given.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// A Redis command failed.
    #[error("Redis {command} on `{key}` failed: {source}")]
    Redis {
        /// The command, e.g. `XADD` or `XREADGROUP`.
        command: &'static str,
        /// The key (stream) the command addressed.
        key: String,
        /// The underlying client error (the server's message is in its details).
        #[source]
        source: fred::error::Error,
    },
    /// A dead letter could not be replayed; it is still in its dead-letter stream.
    #[error("cannot replay dead letter {letter} of `{dlq}`: {reason}")]
    Replay {
        /// The dead-letter stream.
        dlq: String,
        /// The letter's id there.
        letter: String,
        /// Why.
        reason: String,
    },
    /// A durable publish was written but fewer replicas than asked confirmed it in time.
    #[error(
        "publish to `{stream}` reached {acked} replica(s) of the {wanted} required; it may not survive a failover"
    )]
    NotReplicated {
        /// The stream.
        stream: String,
        /// Replicas required.
        wanted: u32,
        /// Replicas that confirmed.
        acked: u32,
    },
    /// A batch publish ([`Producer::publish_batch`](crate::Producer::publish_batch)) failed
    /// after writing some of its entries. `written` lists exactly those (retry only the
    /// other payloads, or they are duplicated); `source` is the failure that stopped the
    /// batch. Also returned when every entry was written but a durable batch was not
    /// replicated in time (`source` is then [`Error::NotReplicated`]). A batch that wrote
    /// nothing fails with the underlying error itself.
    #[error("batch publish to `{stream}` failed with {} of its entries written: {source}", .written.len())]
    PartialPublish {
        /// The stream.
        stream: String,
        /// The entries in the stream, as `(position of the payload in the batch, its id)`,
        /// by position.
        written: Vec<(usize, MessageId)>,
        /// Why the batch stopped.
        #[source]
        source: Box<Error>,
    },
    /// A publish with an explicit id ([`PublishOptions::id`](crate::PublishOptions::id))
    /// was refused: Redis accepts only ids greater than the stream's last entry's (and
    /// greater than `0-0`). Nothing was written.
    #[error(
        "cannot publish to `{stream}` with id {id}: Redis accepts only an id greater than the stream's last entry's \
         (and greater than 0-0)"
    )]
    IdNotIncreasing {
        /// The stream.
        stream: String,
        /// The id asked for.
        id: MessageId,
    },
    /// [`Producer::publish_batch_with`](crate::Producer::publish_batch_with) was given
    /// options with an explicit id, which cannot apply to every entry of a batch. Nothing
    /// was written; publish such entries one at a time with
    /// [`Producer::publish_with`](crate::Producer::publish_with).
    #[error(
        "a batch publish to `{stream}` cannot give one explicit id to all its entries; publish them one at a time"
    )]
    IdInBatch {
        /// The stream.
        stream: String,
    },
    /// A publish was given both [`PublishOptions::max_len_acked`](crate::PublishOptions::max_len_acked)
    /// and [`max_len_approx`](crate::PublishOptions::max_len_approx): the second would delete
    /// entries the first keeps. Nothing was written.
    #[error("a publish to `{stream}` cannot trim with both max_len_acked and max_len_approx; choose one")]
    ConflictingTrim {
        /// The stream.
        stream: String,
    },
    /// [`PublishOptions::idempotency_key`](crate::PublishOptions::idempotency_key) was given
    /// to a batch publish: one key for every entry would write only the first. Nothing was
    /// written.
    #[error(
        "a batch publish to `{stream}` cannot give one idempotency key to all its entries; publish them one at a time"
    )]
    IdempotencyKeyInBatch {
        /// The stream.
        stream: String,
    },
    /// No topic of this name is recorded in Redis (its record `{<topic>}:topic` does not
    /// exist), or a shard index beyond its shard count was asked for.
    #[error("no topic `{topic}` (or no such shard of it)")]
    UnknownTopic {
        /// The topic name.
        topic: String,
    },
    /// A topic cannot be deleted yet: the shard named is not drained (entries unread or
    /// pending, retries or delayed messages waiting, dead letters, or a consumer holding its
    /// lease). See [`TopicAdmin::delete_drained`](crate::admin::TopicAdmin::delete_drained).
    #[error("topic `{topic}` is not drained: shard `{shard}`: {reason}")]
    TopicNotDrained {
        /// The topic name.
        topic: String,
        /// The first shard's stream that is not drained.
        shard: String,
        /// Why it is not.
        reason: String,
    },
    /// A [`PublishLayer`](crate::PublishLayer) refused the publish: nothing was written (for
    /// a batch, none of its messages).
    #[error("publish to `{stream}` refused by a publish layer: {reason}")]
    PublishRefused {
        /// The stream (or topic) named by the publish.
        stream: String,
        /// The layer's reason.
        reason: String,
    },
    /// A delayed publish ([`Producer::publish_after_with`](crate::Producer::publish_after_with),
    /// [`publish_at_with`](crate::Producer::publish_at_with)) was given an option that cannot
    /// apply to an entry added later (an explicit id, `no_mkstream`, `max_len_approx` or
    /// `max_len_acked`, an idempotency key), or more headers than a delayed message may carry. Nothing was scheduled.
    #[error("a delayed publish to `{stream}` cannot take {option}: {reason}")]
    Unschedulable {
        /// The stream.
        stream: String,
        /// The option refused.
        option: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// A payload could not be serialized to JSON when publishing.
    #[error("cannot encode payload for stream `{stream}`: {source}")]
    Encode {
        /// The target stream.
        stream: String,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },
    /// A payload could not be serialized to MessagePack when publishing
    /// ([`Codec::MsgPack`](crate::Codec)).
    #[cfg(feature = "msgpack")]
    #[error("cannot encode payload as MessagePack for stream `{stream}`: {source}")]
    EncodeMsgPack {
        /// The target stream.
        stream: String,
        /// The rmp-serde error.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// An entry could not be turned into the requested message type.
    #[error("entry {id} of stream `{stream}` cannot be decoded: {reason}")]
    Decode {
        /// The stream the entry came from.
        stream: String,
        /// The entry id.
        id: String,
        /// What is wrong with the entry.
        reason: String,
    },
    /// Two consumers were registered under the same name.
    #[error("two consumers are registered as `{name}`: at {first} and at {second}; give one of them `name = \"...\"`")]
    DuplicateConsumer {
        /// The clashing registration name.
        name: String,
        /// Where the first one was declared.
        first: SourceLocation,
        /// Where the second one was declared.
        second: SourceLocation,
    },
    /// `only([...])` named a consumer that is not registered.
    #[error("no consumer is registered as `{name}` (registered: {registered})")]
    UnknownConsumer {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        registered: String,
    },
    /// Two periodic jobs were registered under the same name.
    #[error(
        "two periodic jobs are registered as `{name}`: at {first} and at {second}; give one of them `name = \"...\"`"
    )]
    DuplicatePeriodicJob {
        /// The clashing name.
        name: String,
        /// Where the first one was declared.
        first: SourceLocation,
        /// Where the second one was declared.
        second: SourceLocation,
    },
    /// A periodic job's configuration is invalid (checked when the runtime is built): an
    /// empty name or stream, a cron expression that does not parse.
    #[error("periodic job `{job}`: {reason}")]
    InvalidPeriodicJob {
        /// The job's name.
        job: String,
        /// What is wrong.
        reason: String,
    },
    /// A consumer's configuration is invalid (checked when the runtime is built).
    #[error("consumer `{consumer}`: {reason}")]
    InvalidConsumer {
        /// The consumer's registration name.
        consumer: String,
        /// What is wrong.
        reason: String,
    },
    /// A topic exists with another shard count than the one a consumer or producer names.
    /// Nothing was written: a different count would send a key's messages to another shard
    /// and reorder them. To change the count, drain the topic and recreate it (see the
    /// README's "Topics and ordering").
    #[error("topic `{topic}` has {recorded} shards, not the {requested} named here; to change the count, drain the topic and recreate it")]
    TopicShardsMismatch {
        /// The topic.
        topic: String,
        /// The shard count recorded in Redis.
        recorded: u32,
        /// The shard count named by the caller.
        requested: u32,
    },
    /// A topic name or shard count cannot be used.
    #[error("topic `{topic}`: {reason}")]
    InvalidTopic {
        /// The topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// At a consumer's start, a key derived from its stream could not be moved from its old
    /// name (earlier releases named the keys of a stream whose name has a `}` differently,
    /// see [`keys`](crate::keys)) to its current one, e.g. because the key at the new name
    /// has another type. Nothing was moved; move or delete it by hand.
    #[error("cannot move `{old}` to its new name `{new}`: {source}")]
    KeyMove {
        /// The key's old name (the stream's name and a suffix: `{shop}.orders:retries:billing`).
        old: String,
        /// The key's new name.
        new: String,
        /// The underlying client error (the server's message is in its details).
        #[source]
        source: fred::error::Error,
    },
    /// The Redis user may not run a command or touch a key the consumers need (checked when
    /// the runtime starts, before any group is created; see the README's "TLS and ACL"). The
    /// message names them and gives both the `ACL SETUSER` that adds them and the smallest
    /// rule for these consumers.
    #[error("{0}")]
    MissingPermissions(Box<MissingPermissions>),
    /// A consumer loop ended with an error it could not recover from.
    #[error("consumer `{consumer}` stopped: {reason}")]
    ConsumerFailed {
        /// The consumer's registration name.
        consumer: String,
        /// Why it stopped.
        reason: String,
    },
    /// Installing the signal handlers failed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),
}

impl Error {
    pub(crate) fn redis(command: &'static str, key: impl Into<String>, source: fred::error::Error) -> Self {
        Error::Redis { command, key: key.into(), source }
    }

    /// A failed batch's entries that are in the stream anyway, as `(position of the payload
    /// in the batch, its id)`, by position: those of an [`Error::PartialPublish`], and none
    /// for any other error (nothing was written).
    pub fn written(&self) -> &[(usize, MessageId)] {
        match self {
            Error::PartialPublish { written, .. } => written,
            _ => &[],
        }
    }

    /// `source` after a batch wrote `written`: [`Error::PartialPublish`], or `source` itself
    /// when nothing was written.
    pub(crate) fn partial_publish(stream: &str, written: Vec<(usize, MessageId)>, source: Error) -> Self {
        if written.is_empty() {
            return source;
        }
        Error::PartialPublish { stream: stream.to_string(), written, source: Box::new(source) }
    }

    /// True when this error means the consumer group (or its stream) no longer exists,
    /// e.g. after a Redis restart without persistence or a `FLUSHALL`.
    pub fn is_no_group(&self) -> bool {
        match self {
            Error::Redis { source, .. } => is_no_group(source),
            _ => false,
        }
    }
}

/// The server's error text starts with `NOGROUP`.
pub(crate) fn is_no_group(err: &fred::error::Error) -> bool {
    err.details().starts_with("NOGROUP")
}

/// The server's error text starts with `BUSYGROUP` (the group exists already).
pub(crate) fn is_busy_group(err: &fred::error::Error) -> bool {
    err.details().starts_with("BUSYGROUP")
}

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
