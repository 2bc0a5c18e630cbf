//! Handlers: what a handler may take and return, the error it reports, and the type-erased
//! form the consumer loop calls.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

pub use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, CONTENT_TYPE_HEADER};
use crate::message::{Headers, Message, MessageId};
use crate::state::State;
use crate::wire::RawEntry;

/// The error a handler returns. Any `std::error::Error + Send + Sync + 'static`, `String` or
/// `&str` converts into it with `?` or `.into()`; by default the message is retried per the
/// consumer's policy.
///
/// ```
/// use streamx_runtime::HandlerError;
/// use std::time::Duration;
///
/// let transient: HandlerError = "payment service timed out".into();
/// assert!(!transient.is_permanent());
///
/// // Never retried: straight to the dead-letter stream.
/// let permanent = HandlerError::permanent("card number is invalid");
/// assert!(permanent.is_permanent());
///
/// // Retried after 5 s instead of the configured backoff.
/// let later = HandlerError::retry_after("rate limited", Duration::from_secs(5));
/// assert_eq!(later.retry_delay(), Some(Duration::from_secs(5)));
/// ```
pub struct HandlerError {
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
    permanent: bool,
    retry_after: Option<Duration>,
}

impl HandlerError {
    /// A failure that retrying cannot fix: the message goes to the dead-letter stream at once.
    pub fn permanent(err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        HandlerError { source: err.into(), permanent: true, retry_after: None }
    }

    /// A transient failure to retry after `delay` instead of the configured backoff (still
    /// counted against `max_retries`).
    pub fn retry_after(err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>, delay: Duration) -> Self {
        HandlerError { source: err.into(), permanent: false, retry_after: Some(delay) }
    }

    /// True for [`HandlerError::permanent`].
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The delay asked for with [`HandlerError::retry_after`].
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The underlying error.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E> From<E> for HandlerError
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn from(err: E) -> Self {
        HandlerError { source: err.into(), permanent: false, retry_after: None }
    }
}

impl std::fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerError")
            .field("error", &self.source.to_string())
            .field("permanent", &self.permanent)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.source, f)
    }
}

/// Why a message could not be handled: recorded as `dlq:kind` in the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The handler returned an error on its last allowed delivery.
    Error,
    /// The handler returned [`HandlerError::permanent`].
    Permanent,
    /// The handler panicked on its last allowed delivery.
    Panic,
    /// The entry had no `data` field.
    MissingPayload,
    /// The payload was larger than the consumer's limit.
    PayloadTooLarge,
    /// The payload was not valid JSON.
    InvalidJson,
    /// The payload was JSON of the wrong shape for the handler's type.
    WrongShape,
    /// The message reached its limit of runs without a result: `max_retries + 1` runs that
    /// started, or a run alone (as a crash suspect) during which its process died, i.e. a
    /// message that crashes its worker. Its `deliveries` are the runs known to have started
    /// (a run whose process died is known only when it ran alone).
    DeliveryLimit,
    /// The entry was deleted from the stream (trimmed, `XDEL`) while it was pending: only
    /// its id and the group's bookkeeping are left, no payload.
    Trimmed,
    /// The handler did not finish within the consumer's `timeout` on its last allowed
    /// delivery: it was cancelled (its future dropped) at the deadline.
    Timeout,
    /// The entry's `content-type` header names a codec the handler cannot decode (an
    /// unknown type, raw bytes for a typed handler, MessagePack without the `msgpack`
    /// feature): dead-lettered at its first delivery, never retried. See [`crate::codec`].
    UnsupportedCodec,
}

impl FailureKind {
    /// The stable text stored in the dead-letter entry.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::Permanent => "permanent",
            FailureKind::Panic => "panic",
            FailureKind::MissingPayload => "missing_payload",
            FailureKind::PayloadTooLarge => "payload_too_large",
            FailureKind::InvalidJson => "invalid_json",
            FailureKind::WrongShape => "wrong_shape",
            FailureKind::DeliveryLimit => "delivery_limit",
            FailureKind::Trimmed => "trimmed",
            FailureKind::Timeout => "timeout",
            FailureKind::UnsupportedCodec => "unsupported_codec",
        }
    }

    /// Every kind, in the order of [`FailureKind::as_str`]'s documentation: the one list
    /// that parsing and the command line's help are derived from.
    pub const ALL: [FailureKind; 11] = [
        FailureKind::Error,
        FailureKind::Permanent,
        FailureKind::Panic,
        FailureKind::MissingPayload,
        FailureKind::PayloadTooLarge,
        FailureKind::InvalidJson,
        FailureKind::WrongShape,
        FailureKind::DeliveryLimit,
        FailureKind::Trimmed,
        FailureKind::Timeout,
        FailureKind::UnsupportedCodec,
    ];

    /// Parses [`FailureKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// True for kinds decided before the handler ran (bad input): never retried.
    pub fn is_poison(&self) -> bool {
        matches!(
            self,
            FailureKind::MissingPayload
                | FailureKind::PayloadTooLarge
                | FailureKind::InvalidJson
                | FailureKind::WrongShape
                | FailureKind::UnsupportedCodec
        )
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of one handler invocation.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Handled: acknowledge.
    Done,
    /// Failed, may be retried (after `retry_after`, or the backoff).
    Failed {
        /// The error text.
        error: String,
        /// [`FailureKind::Error`], [`FailureKind::Panic`] or [`FailureKind::Timeout`].
        kind: FailureKind,
        /// An explicit delay from [`HandlerError::retry_after`].
        retry_after: Option<Duration>,
    },
    /// Not run: a [`dedupe`](crate::ConsumerOptions::dedupe) consumer's group handled the
    /// message's key already. Acknowledged (without recording it again), counted apart.
    Deduplicated,
    /// Must not be retried: dead-letter now.
    Rejected {
        /// What was wrong.
        reason: String,
        /// Why (permanent error or a kind of bad input).
        kind: FailureKind,
    },
}

impl Outcome {
    /// Settles the delivery as handled without running the rest of the chain: the entry is
    /// acknowledged and counted as succeeded (for a [middleware](crate::Middleware) that
    /// decides a message needs no work).
    pub fn skip() -> Self {
        Outcome::Done
    }

    /// A transient failure: retried after the consumer's backoff (counted against
    /// `max_retries`; dead-lettered as `error` once they are spent).
    pub fn retry(error: impl Into<String>) -> Self {
        Outcome::Failed { error: error.into(), kind: FailureKind::Error, retry_after: None }
    }

    /// A transient failure retried after `delay` instead of the backoff (still counted
    /// against `max_retries`).
    pub fn retry_after(error: impl Into<String>, delay: Duration) -> Self {
        Outcome::Failed { error: error.into(), kind: FailureKind::Error, retry_after: Some(delay) }
    }

    /// Moves the message to the dead-letter stream now, with `reason` and the kind
    /// [`FailureKind::Permanent`] (never retried). For another kind, build
    /// [`Outcome::Rejected`] yourself.
    pub fn dead_letter(reason: impl Into<String>) -> Self {
        Outcome::Rejected { reason: reason.into(), kind: FailureKind::Permanent }
    }

    /// Whether the message is acknowledged as handled (done, skipped or deduplicated).
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Done | Outcome::Deduplicated)
    }
}

/// One delivered entry, before decoding: what the consumer loop hands a handler, and what
/// a [middleware](crate::Middleware) sees.
#[derive(Debug)]
pub struct Delivery {
    pub(crate) stream: Arc<str>,
    pub(crate) entry: RawEntry,
    pub(crate) attempt: u32,
    pub(crate) state: State,
    /// The codec of an entry without a `content-type` header: the consumer's.
    pub(crate) codec: Codec,
    /// The consumer's group: set when the delivery goes through middleware (see
    /// [`crate::middleware`]), which alone sees it; none on the direct path to a handler.
    pub(crate) group: Option<Arc<str>>,
}

impl Delivery {
    pub(crate) fn new(stream: Arc<str>, entry: RawEntry, attempt: u32, state: State) -> Self {
        Delivery { stream, entry, attempt, state, codec: Codec::Json, group: None }
    }

    /// The stream the entry was read from (a topic's shard stream for a topic consumer).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The consumer group delivering it.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or_default()
    }

    /// Which delivery this is: 1 for the first, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The entry's headers.
    pub fn headers(&self) -> &Headers {
        &self.entry.headers
    }

    /// The entry's headers, to change what the handler sees in
    /// [`Message::headers`](crate::Message::headers) (the entry in Redis is not changed).
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.entry.headers
    }

    /// The raw payload (the entry's `data` field), before decoding; `None` if it has none.
    pub fn payload_bytes(&self) -> Option<&bytes::Bytes> {
        self.entry.data.as_ref()
    }

    /// This delivery, its payload read as `codec` when the entry names no codec.
    pub(crate) fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The entry id.
    pub fn id(&self) -> MessageId {
        self.entry.id
    }

    /// A first delivery of entry `id` of `stream` with payload `data`, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(stream: &str, id: MessageId, data: Option<&'static str>) -> Self {
        let entry = RawEntry {
            id,
            data: data.map(|d| bytes::Bytes::from_static(d.as_bytes())),
            headers: Headers::new(),
            deleted: false,
            replay_group: None,
        };
        Delivery::new(Arc::from(stream), entry, 1, State::new())
    }
}

/// What a handler may take as its argument: `Message<T>` with `T: DeserializeOwned`, decoded
/// in the codec its entry's `content-type` header names (see [`crate::codec`]), or
/// `Message<Bytes>` for the payload's bytes as they are, whatever the content type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the argument of a streamx handler",
    label = "expected `Message<T>` here",
    note = "a handler takes exactly one argument, `streamx::Message<T>`, where `T: serde::de::DeserializeOwned + Send + 'static`"
)]
pub trait HandlerArg: Sized + Send + 'static {
    /// Decodes the delivery; an error rejects it as bad input.
    fn from_delivery(delivery: Delivery) -> Result<Self, (FailureKind, String)>;
}

impl<T> HandlerArg for Message<T>
where
    T: DeserializeOwned + Send + 'static,
{
    fn from_delivery(delivery: Delivery) -> Result<Self, (FailureKind, String)> {
        let Delivery { stream, entry, attempt, state, codec, .. } = delivery;
        let Some(data) = entry.data else {
            return Err((FailureKind::MissingPayload, "the entry has no `data` field".to_string()));
        };
        let payload = crate::codec::decode::<T>(data, entry.headers.get(CONTENT_TYPE_HEADER), codec)?;
        Ok(Message { id: entry.id, stream, payload, headers: entry.headers, attempt, state })
    }
}

/// What a handler may return: `()` or `Result<(), E>` with `E: Into<HandlerError>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the return type of a streamx handler",
    label = "expected `Result<(), E>` or `()` here",
    note = "a handler returns `Result<(), E>` where `E` converts into `streamx::HandlerError` (any `std::error::Error + Send + Sync + 'static`, `String`, `&str`), or `()`"
)]
pub trait HandlerReturn: Send {
    /// Converts the return value into an outcome.
    fn into_outcome(self) -> Outcome;
}

impl HandlerReturn for () {
    fn into_outcome(self) -> Outcome {
        Outcome::Done
    }
}

impl<E> HandlerReturn for Result<(), E>
where
    E: Into<HandlerError> + Send,
{
    fn into_outcome(self) -> Outcome {
        match self {
            Ok(()) => Outcome::Done,
            Err(e) => error_outcome(e.into()),
        }
    }
}

/// The outcome of a handler that returned `e`: dead-letter now if it is permanent, else
/// retry (after its delay, or the backoff).
pub(crate) fn error_outcome(e: HandlerError) -> Outcome {
    if e.permanent {
        Outcome::Rejected { reason: e.to_string(), kind: FailureKind::Permanent }
    } else {
        Outcome::Failed { error: e.to_string(), kind: FailureKind::Error, retry_after: e.retry_after }
    }
}

/// Decodes the delivery, runs `f` on it, and turns its result (or its panic) into an
/// [`Outcome`]. Shared by macro-generated trampolines and builder-registered closures.
pub fn invoke<F, A, Fut>(f: F, delivery: Delivery) -> BoxFuture<'static, Outcome>
where
    F: FnOnce(A) -> Fut,
    A: HandlerArg,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerReturn,
{
    let arg = match A::from_delivery(delivery) {
        Ok(arg) => arg,
        Err((kind, reason)) => return Box::pin(std::future::ready(Outcome::Rejected { reason, kind })),
    };
    // Calling `f` may itself panic (a non-async fn body); catch that as well.
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| f(arg))) {
        Ok(fut) => fut,
        Err(panic) => return Box::pin(std::future::ready(panicked(&panic))),
    };
    Box::pin(AssertUnwindSafe(fut).catch_unwind().map(|r| match r {
        Ok(ret) => ret.into_outcome(),
        Err(panic) => panicked(&panic),
    }))
}

/// The outcome of a handler that panicked with `panic`.
pub(crate) fn panicked(panic: &Box<dyn Any + Send>) -> Outcome {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string());
    Outcome::Failed { error: format!("handler panicked: {text}"), kind: FailureKind::Panic, retry_after: None }
}

/// A type-erased handler, callable many times from many tasks.
pub(crate) type ErasedHandler = Arc<dyn Fn(Delivery) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// Type-erases a handler fn or closure taking `Message<T>`.
pub(crate) fn erase<F, A, Fut>(f: F) -> ErasedHandler
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    A: HandlerArg,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerReturn,
{
    // Called by reference (`&F` is `FnOnce` too): no clone of the closure, and of what it
    // captured (often an `Arc`, a shared count), per message.
    Arc::new(move |d| invoke(&f, d))
}

/// Compile-time check used by the macro: the argument type is accepted.
pub const fn assert_handler_arg<T: HandlerArg>() {}

/// Compile-time check used by the macro: the return type is accepted.
pub const fn assert_handler_return<T: HandlerReturn>() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Order {
        id: u64,
    }

    fn delivery(data: Option<&'static str>) -> Delivery {
        Delivery::for_test("orders", MessageId::new(1, 0), data)
    }

    async fn ok(msg: Message<Order>) -> Result<(), HandlerError> {
        assert_eq!(msg.payload().id, 7);
        Ok(())
    }

    async fn boom(_msg: Message<Order>) -> Result<(), String> {
        panic!("kaboom")
    }

    async fn fails(_msg: Message<Order>) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("disk full"))
    }

    #[tokio::test]
    async fn outcomes() {
        assert!(matches!(invoke(ok, delivery(Some(r#"{"id":7}"#))).await, Outcome::Done));
        assert!(matches!(
            invoke(ok, delivery(Some("{nope"))).await,
            Outcome::Rejected { kind: FailureKind::InvalidJson, .. }
        ));
        assert!(matches!(
            invoke(ok, delivery(Some(r#"{"id":"x"}"#))).await,
            Outcome::Rejected { kind: FailureKind::WrongShape, .. }
        ));
        assert!(matches!(
            invoke(ok, delivery(None)).await,
            Outcome::Rejected { kind: FailureKind::MissingPayload, .. }
        ));
        match invoke(boom, delivery(Some(r#"{"id":7}"#))).await {
            Outcome::Failed { kind: FailureKind::Panic, error, .. } => assert!(error.contains("kaboom")),
            other => panic!("unexpected {other:?}"),
        }
        match invoke(fails, delivery(Some(r#"{"id":7}"#))).await {
            Outcome::Failed { kind: FailureKind::Error, error, .. } => assert_eq!(error, "disk full"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn calls_share_what_the_closure_captured() {
        // A counter captured by value (not in an `Arc`): every call sees the same one, as
        // the erased handler calls the closure by reference instead of cloning it.
        let calls = std::sync::atomic::AtomicU64::new(0);
        let handler = erase(move |msg: Message<Order>| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            async move {
                if msg.payload().id == n {
                    Ok(())
                } else {
                    Err(format!("call {n} saw id {}", msg.payload().id))
                }
            }
        });
        for id in 1..=3 {
            let outcome = handler(delivery(Some(&*format!(r#"{{"id":{id}}}"#).leak()))).await;
            assert!(matches!(outcome, Outcome::Done), "call {id}: {outcome:?}");
        }
    }

    #[test]
    fn failure_kinds_round_trip() {
        for k in [
            FailureKind::Error,
            FailureKind::DeliveryLimit,
            FailureKind::WrongShape,
            FailureKind::Trimmed,
            FailureKind::Timeout,
        ] {
            assert_eq!(FailureKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(FailureKind::Timeout.as_str(), "timeout");
        assert!(!FailureKind::Timeout.is_poison(), "a timeout is retried like an error");
    }
}
