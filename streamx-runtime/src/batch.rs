//! Batch handlers: `async fn f(batch: Vec<Message<T>>) -> ...`, for consumers that write in
//! bulk (analytics, warehouse loads, search indexing).
//!
//! A batch handler keeps every promise of a one-message handler, because each message still
//! goes through the engine on its own: it is fetched, holds a slot, is acknowledged, parked
//! for a retry with its own delivery count, or dead-lettered, by itself. Only the call is
//! shared: messages that are ready at about the same time are handed to one call of the
//! handler (at most `max_batch` of them, waiting at most `batch_wait` for the batch to
//! fill), and each message gets its own outcome from it:
//!
//! - an entry that cannot be decoded (no payload, bad JSON, wrong shape) is dead-lettered as
//!   poison by itself and never reaches the handler; the rest of its batch goes on;
//! - `Ok(())` (or `()`) acknowledges every message of the batch; `Err(e)` fails every one
//!   (each retried with its own attempt count, as if it had failed alone);
//! - a [`BatchOutcome`] fails only the messages it names and acknowledges the others;
//! - a panic fails every message of the batch with kind `panic`; a `timeout` cancels the
//!   call and fails every message of the batch with kind `timeout`.
//!
//! A message is acknowledged only once the call that contained it returned: at-least-once,
//! as for any handler. `concurrency` counts calls: at most that many batches are handled at
//! once, so at most `concurrency × max_batch` messages are in flight.
//!
//! Known limit: a crash suspect (a message whose holders died while holding it, see the
//! take-over's crash-loop isolation) is started alone but may join a batch with others, so
//! if it crashes the process again, the messages of its call count that delivery too.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::handler::{error_outcome, panicked, Delivery, FailureKind, HandlerArg, HandlerError, Outcome};
use crate::message::{Message, MessageId};

/// The deliveries handed to one call of a batch handler (what the macro's trampoline takes).
pub type Deliveries = Vec<Delivery>;

/// One [`Outcome`] per delivery of a batch, in the order of the deliveries.
pub type Outcomes = Vec<Outcome>;

/// What decoding did with one delivery of a batch: its id (it is in the batch handed to the
/// handler), or why it was rejected as bad input.
pub type Decoded = Result<MessageId, (FailureKind, String)>;

/// The per-message result of a batch handler: every message of the batch succeeds (and is
/// acknowledged) unless marked failed here.
///
/// ```
/// use streamx_runtime::{BatchOutcome, HandlerError, Message};
///
/// #[derive(serde::Deserialize)]
/// struct Click { page: String }
///
/// async fn store(batch: Vec<Message<Click>>) -> BatchOutcome {
///     let mut outcome = BatchOutcome::new();
///     for msg in &batch {
///         if msg.payload().page.is_empty() {
///             // Only this one is dead-lettered; the others are acknowledged.
///             outcome.fail(msg.id(), HandlerError::permanent("a click without a page"));
///         }
///     }
///     outcome
/// }
/// # let _ = store;
/// ```
#[derive(Debug, Default)]
pub struct BatchOutcome {
    failed: HashMap<MessageId, HandlerError>,
}

impl BatchOutcome {
    /// Every message succeeded (so far).
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the message `id` failed with `error`: retried per the consumer's policy (or
    /// dead-lettered at once if `error` is [`HandlerError::permanent`]), by itself. An id
    /// that is not in the batch is ignored; marking one twice keeps the last error.
    pub fn fail(&mut self, id: MessageId, error: impl Into<HandlerError>) -> &mut Self {
        self.failed.insert(id, error.into());
        self
    }

    /// [`fail`](Self::fail), by value, for chaining.
    pub fn with_failure(mut self, id: MessageId, error: impl Into<HandlerError>) -> Self {
        self.fail(id, error);
        self
    }

    /// How many messages are marked failed.
    pub fn failures(&self) -> usize {
        self.failed.len()
    }
}

/// What a batch handler may take as its argument: `Vec<Message<T>>` with
/// `T: DeserializeOwned`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the argument of a streamx batch handler",
    label = "expected `Vec<Message<T>>` here",
    note = "a batch handler takes exactly one argument, `Vec<streamx::Message<T>>`, where `T: serde::de::DeserializeOwned + Send + 'static`"
)]
pub trait BatchArg: Sized + Send + 'static {
    /// Decodes the deliveries: the batch of those that decode, and for each delivery in
    /// order either its id (it is in the batch) or why it was rejected as bad input.
    fn from_deliveries(deliveries: Deliveries) -> (Self, Vec<Decoded>);
}

impl<T> BatchArg for Vec<Message<T>>
where
    Message<T>: HandlerArg,
    T: Send + 'static,
{
    fn from_deliveries(deliveries: Deliveries) -> (Self, Vec<Decoded>) {
        let mut batch = Vec::with_capacity(deliveries.len());
        let decoded = deliveries
            .into_iter()
            .map(|delivery| {
                let id = delivery.id();
                Message::<T>::from_delivery(delivery).map(|msg| {
                    batch.push(msg);
                    id
                })
            })
            .collect();
        (batch, decoded)
    }
}

/// What a batch handler may return: `()`, `Result<(), E>`, [`BatchOutcome`] or
/// `Result<BatchOutcome, E>`, with `E: Into<HandlerError>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the return type of a streamx batch handler",
    label = "expected `Result<(), E>`, `BatchOutcome`, `Result<BatchOutcome, E>` or `()` here",
    note = "a batch handler returns `Result<(), E>` (all or nothing), `streamx::BatchOutcome` (per message), `Result<BatchOutcome, E>` or `()`, where `E` converts into `streamx::HandlerError`"
)]
pub trait BatchReturn: Send {
    /// The outcome of each message of the batch, in the order of `ids`.
    fn into_outcomes(self, ids: &[MessageId]) -> Outcomes;
}

impl BatchReturn for () {
    fn into_outcomes(self, ids: &[MessageId]) -> Outcomes {
        ids.iter().map(|_| Outcome::Done).collect()
    }
}

impl BatchReturn for BatchOutcome {
    fn into_outcomes(mut self, ids: &[MessageId]) -> Outcomes {
        ids.iter().map(|id| self.failed.remove(id).map_or(Outcome::Done, error_outcome)).collect()
    }
}

impl<E> BatchReturn for Result<(), E>
where
    E: Into<HandlerError> + Send,
{
    fn into_outcomes(self, ids: &[MessageId]) -> Outcomes {
        self.map(|()| BatchOutcome::new()).into_outcomes(ids)
    }
}

impl<E> BatchReturn for Result<BatchOutcome, E>
where
    E: Into<HandlerError> + Send,
{
    fn into_outcomes(self, ids: &[MessageId]) -> Outcomes {
        match self {
            Ok(outcome) => outcome.into_outcomes(ids),
            Err(e) => {
                // Every message fails with the same error, each on its own.
                let outcome = error_outcome(e.into());
                ids.iter().map(|_| outcome.clone()).collect()
            }
        }
    }
}

/// Decodes the deliveries, runs `f` on those that decode, and turns its result (or its
/// panic) into one [`Outcome`] per delivery, in order. Shared by macro-generated
/// trampolines and builder-registered closures. (The return type `R` is a parameter of its
/// own so that the macro can name it: a wrong one is then reported once, on the whole type.)
pub fn invoke_batch<F, A, Fut, R>(f: F, deliveries: Deliveries) -> BoxFuture<'static, Outcomes>
where
    F: FnOnce(A) -> Fut,
    A: BatchArg,
    Fut: Future<Output = R> + Send + 'static,
    R: BatchReturn,
{
    let (batch, decoded) = A::from_deliveries(deliveries);
    let ids: Vec<MessageId> = decoded.iter().filter_map(|d| d.as_ref().ok().copied()).collect();
    if ids.is_empty() {
        return Box::pin(std::future::ready(merge(decoded, Vec::new())));
    }
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| f(batch))) {
        Ok(fut) => fut,
        Err(panic) => {
            let outcomes = ids.iter().map(|_| panicked(&panic)).collect();
            return Box::pin(std::future::ready(merge(decoded, outcomes)));
        }
    };
    Box::pin(AssertUnwindSafe(fut).catch_unwind().map(move |r| {
        let outcomes = match r {
            Ok(ret) => ret.into_outcomes(&ids),
            Err(panic) => ids.iter().map(|_| panicked(&panic)).collect(),
        };
        merge(decoded, outcomes)
    }))
}

/// One outcome per delivery: the handler's for those it got (in order), a rejection for the
/// others.
fn merge(decoded: Vec<Decoded>, handled: Outcomes) -> Outcomes {
    let mut handled = handled.into_iter();
    decoded
        .into_iter()
        .map(|d| match d {
            Ok(_) => handled.next().unwrap_or_else(|| Outcome::Failed {
                error: "the batch handler gave no outcome for this message".to_string(),
                kind: FailureKind::Error,
                retry_after: None,
            }),
            Err((kind, reason)) => Outcome::Rejected { reason, kind },
        })
        .collect()
}

/// A type-erased batch handler.
pub(crate) type ErasedBatchHandler = Arc<dyn Fn(Deliveries) -> BoxFuture<'static, Outcomes> + Send + Sync>;

/// Type-erases a batch handler fn or closure taking `Vec<Message<T>>`.
pub(crate) fn erase_batch<F, A, Fut>(f: F) -> ErasedBatchHandler
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    A: BatchArg,
    Fut: Future + Send + 'static,
    Fut::Output: BatchReturn,
{
    Arc::new(move |d| invoke_batch(&f, d))
}

/// Compile-time check used by the macro: the batch argument type is accepted.
pub const fn assert_batch_arg<T: BatchArg>() {}

/// Compile-time check used by the macro: the batch return type is accepted.
pub const fn assert_batch_return<T: BatchReturn>() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Click {
        n: u64,
    }

    fn delivery(seq: u64, data: &'static str) -> Delivery {
        Delivery::for_test("clicks", MessageId::new(1, seq), Some(data))
    }

    fn kinds(outcomes: &[Outcome]) -> Vec<&'static str> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Done => "done",
                Outcome::Deduplicated => "deduplicated",
                Outcome::Failed { kind, .. } | Outcome::Rejected { kind, .. } => kind.as_str(),
            })
            .collect()
    }

    async fn odd_fail(batch: Vec<Message<Click>>) -> BatchOutcome {
        batch.iter().filter(|m| m.payload().n % 2 == 1).fold(BatchOutcome::new(), |o, m| o.with_failure(m.id(), "odd"))
    }

    async fn all_fail(_batch: Vec<Message<Click>>) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("down"))
    }

    async fn boom(_batch: Vec<Message<Click>>) {
        panic!("kaboom")
    }

    #[tokio::test]
    async fn each_delivery_gets_its_own_outcome() {
        let batch = || vec![delivery(0, r#"{"n":0}"#), delivery(1, "{nope"), delivery(2, r#"{"n":1}"#)];
        assert_eq!(kinds(&invoke_batch(odd_fail, batch()).await), ["done", "invalid_json", "error"]);
        assert_eq!(kinds(&invoke_batch(all_fail, batch()).await), ["permanent", "invalid_json", "permanent"]);
        assert_eq!(kinds(&invoke_batch(boom, batch()).await), ["panic", "invalid_json", "panic"]);
        let poison_only = vec![delivery(0, r#"{"x":1}"#)];
        assert_eq!(kinds(&invoke_batch(boom, poison_only).await), ["wrong_shape"], "the handler is not called");
    }
}
