//! The engine of [streamx](https://docs.rs/streamx): consumer loops, producer, history,
//! retries and dead letters on Redis Streams. Use it through the `streamx` crate.
//!
//! # Cargo features
#![doc = document_features::document_features!()]

pub mod admin;
mod batch;
mod capabilities;
mod clock;
pub mod codec;
mod connection;
mod consumer;
pub mod dead_letters;
mod dedupe;
mod error;
mod handler;
pub mod history;
mod inspect;
pub mod keys;
mod lease;
mod location;
mod members;
mod message;
pub mod middleware;
pub mod observe;
mod pause;
mod periodic;
mod permissions;
mod policy;
mod producer;
mod rate_limit;
mod registry;
pub mod retention;
mod retry_delay;
mod runtime;
mod scheduler;
mod scripts;
mod shutdown;
mod state;
mod stream_names;
pub mod topic;
pub mod wire;
mod worker;

pub use batch::{BatchArg, BatchOutcome, BatchReturn, Decoded};
pub use bytes::Bytes;
pub use capabilities::{Capabilities, DISABLE_CAPABILITIES_ENV};
pub use codec::{Codec, CONTENT_TYPE_HEADER};
pub use connection::{
    redact, RedisUrl, DEFAULT_REDIS_URL, REDIS_TLS_CA_ENV, REDIS_TLS_CERT_ENV, REDIS_TLS_KEY_ENV, REDIS_URL_ENV,
};
pub use consumer::{Consumer, ConsumerOptions};
pub use dead_letters::{DeadLetter, DeadLetterPage, DeadLetters};
pub use dedupe::{DEFAULT_IDEMPOTENCY_WINDOW, IDEMPOTENCY_KEY_HEADER};
pub use error::{Error, MissingPermissions, Result};
pub use handler::{BoxFuture, Delivery, FailureKind, HandlerArg, HandlerError, HandlerReturn, Outcome};
pub use history::History;
pub use inspect::{
    estimate_lag, is_placeholder_consumer, ConsumerInfo, GroupInfo, Inspector, PauseInfo, PendingEntry, PendingSummary,
    ShardGroup, ShardInfo, ShardOwner, StreamCounters, TopicGroupTotals, TopicInfo,
};
pub use location::SourceLocation;
pub use members::{MemberInfo, MemberRole};
pub use message::{Headers, Message, MessageId, ParseMessageIdError, MESSAGE_KEY_HEADER};
pub use middleware::{Middleware, Next};
pub use periodic::{
    parse_cron, registered_periodic, PeriodicArg, PeriodicJob, PeriodicRegistration, PeriodicResult, Tick,
    MAX_CATCH_UP, PERIODIC_TICK_HEADER,
};
pub use policy::{Backoff, DeadLetterTarget, RetryPolicy, StartFrom, DEFAULT_DLQ_MAX_LEN};
pub use producer::layer::{Outgoing, PublishLayer, PublishRefused};
pub use producer::{Producer, PublishOptions};
pub use rate_limit::{ParseRateLimitError, RateLimit};
pub use registry::{registered, Registration};
pub use retention::Retention;
pub use runtime::{
    run, RunningRuntime, Runtime, RuntimeBuilder, DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_METRICS_INTERVAL, HTTP_ADDR_ENV,
};
pub use scheduler::{
    ParseScheduleIdError, ScheduleCursor, ScheduleId, Scheduled, ScheduledMessage, ScheduledPage, SCHEDULED_AT_HEADER,
};
pub use state::State;
pub use wire::{DATA_FIELD, HEADER_PREFIX};
pub use worker::{ConsumerStats, ConsumerStatsSnapshot, SCHEDULED_CONSUMER, SUSPECTS_CONSUMER};

/// Not public API: what `#[stream_consumer]` expands to. May change in any release.
#[doc(hidden)]
pub mod __private {
    pub use core::time::Duration;
    pub use inventory;

    pub use crate::codec::Codec;

    pub use crate::batch::{assert_batch_arg, assert_batch_return, invoke_batch, Deliveries, Outcomes};
    pub use crate::handler::{assert_handler_arg, assert_handler_return, invoke, BoxFuture, Delivery, Outcome};
    pub use crate::location::SourceLocation;
    pub use crate::middleware::{static_layer, Middleware};
    pub use crate::periodic::{
        assert_periodic_arg, assert_periodic_payload, assert_periodic_result, invoke_periodic, invoke_periodic_result,
        periodic_arg, PeriodicRegistration, Tick,
    };

    /// What the `#[periodic]` trampoline returns: the encoded payload, or why there is none.
    pub type PeriodicFuture = BoxFuture<'static, ::core::result::Result<bytes::Bytes, String>>;
    pub use crate::policy::{Backoff, DeadLetterTarget, StartFrom};
    pub use crate::rate_limit::RateLimit;
    pub use crate::registry::Registration;
    pub use crate::retention::Retention;
}
