//! Consume-side middleware: layers around a consumer's handler that see each delivery's
//! metadata (stream, group, id, attempt, headers), may wrap the handler's future (timing,
//! tracing, context), and may settle a delivery themselves without running the handler
//! (skip = acknowledge, retry, dead-letter).
//!
//! # Order
//!
//! Runtime-wide layers ([`RuntimeBuilder::layer`](crate::RuntimeBuilder::layer), in the
//! order added) wrap a consumer's own ([`Consumer::layer`](crate::Consumer::layer) or the
//! attribute's `middleware = [..]`, in the order given); the first added is the outermost:
//!
//! ```text
//! runtime.layer(a).layer(b), consumer.layer(c):
//!
//!   a ─▶ b ─▶ c ─▶ handler
//!   a ◀─ b ◀─ c ◀─ outcome
//! ```
//!
//! The layers run after the checks that settle a delivery without running anything (an
//! entry deleted while pending, over its delivery limit, a payload over the size limit, a
//! duplicate of a `dedupe` consumer) and before the payload is decoded (a payload that does
//! not decode comes back from [`Next::run`] as a rejection). The consumer's `timeout`
//! covers the whole chain: a layer that never finishes is cancelled at the deadline like a
//! handler. A layer's panic is caught like a handler's ([`FailureKind::Panic`], retried,
//! then dead-lettered); the layers outside it see that outcome from [`Next::run`].
//!
//! For a batch consumer the layers run per message, around that message's part of a batch:
//! a message a layer settles (skips, retries, dead-letters) does not join a batch.
//!
//! # Why not `tower`
//!
//! streamx bounds a consumer's work with its own permits, taken *before* an entry is read:
//! what is not running stays in Redis, where another member may take it. A `tower::Service`
//! signals backpressure through `poll_ready` once an entry is in hand, so it would hold read
//! entries in memory (or stall the dispatcher while holding permits). `Service::call` takes
//! `&mut self`, which means a clone or a lock per message on a stack every handler shares.
//! And tower's error type carries none of streamx's outcomes (acknowledge, retry after a
//! delay, dead-letter with a kind). What `tower::timeout` and `tower::limit` offer exists as
//! consumer options (`timeout`, `concurrency`). So a layer is a plain trait object taking
//! `&self`, and the crate stays free of the dependency.
//!
//! # Cost
//!
//! With no layer, the handler is called directly, exactly as before middleware existed. With
//! layers, each delivery takes one reference count on the consumer's chain (its [`Next`]);
//! nothing is allocated per layer beyond the futures the layers return.
//!
//! ```
//! use std::time::Instant;
//! use streamx_runtime::{Consumer, Delivery, Message, Next, Outcome};
//!
//! async fn timed(delivery: Delivery, next: Next) -> Outcome {
//!     let (id, started) = (delivery.id(), Instant::now());
//!     let outcome = next.run(delivery).await;
//!     println!("{id} took {:?}", started.elapsed());
//!     outcome
//! }
//!
//! async fn only_tenants(delivery: Delivery, next: Next) -> Outcome {
//!     if delivery.headers().get("tenant").is_none() {
//!         return Outcome::dead_letter("no tenant header");
//!     }
//!     next.run(delivery).await
//! }
//!
//! async fn ship(_msg: Message<String>) {}
//!
//! let consumer = Consumer::new("orders", "shipping", ship).layer(timed).layer(only_tenants);
//! assert_eq!(consumer.layers(), 2);
//! ```

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use crate::handler::{BoxFuture, Delivery, ErasedHandler, FailureKind, Outcome};

/// A consume-side layer: runs for each delivery of the consumers it is set on, around the
/// handler. Call `next.run(delivery)` to run the rest of the chain (and finally the
/// handler), or return an [`Outcome`] without calling it to settle the delivery yourself
/// (see the [module documentation](self)).
///
/// Async fns and closures `Fn(Delivery, Next) -> impl Future<Output = Outcome>` are layers;
/// implement the trait on your own type for a layer with configuration or state.
///
/// ```
/// use streamx_runtime::{BoxFuture, Delivery, Middleware, Next, Outcome};
///
/// /// Skips (acknowledges without running) the messages of one tenant.
/// struct MuteTenant(&'static str);
///
/// impl Middleware for MuteTenant {
///     fn call(&self, delivery: Delivery, next: Next) -> BoxFuture<'static, Outcome> {
///         if delivery.headers().get("tenant") == Some(self.0) {
///             return Box::pin(async { Outcome::skip() });
///         }
///         Box::pin(next.run(delivery))
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a streamx middleware",
    label = "not a middleware",
    note = "a middleware is an async fn or closure `(Delivery, Next) -> Outcome`, or a value of a type implementing `streamx::Middleware`"
)]
pub trait Middleware: Send + Sync + 'static {
    /// Handles one delivery: usually `next.run(delivery)` with work around it.
    fn call(&self, delivery: Delivery, next: Next) -> BoxFuture<'static, Outcome>;
}

impl<F, Fut> Middleware for F
where
    F: Fn(Delivery, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn call(&self, delivery: Delivery, next: Next) -> BoxFuture<'static, Outcome> {
        Box::pin(self(delivery, next))
    }
}

/// A layer declared in a `#[stream_consumer(middleware = [..])]` attribute: a reference to
/// a `'static` value (a fn item, a const, a static).
pub(crate) struct StaticLayer(pub(crate) &'static dyn Middleware);

impl Middleware for StaticLayer {
    fn call(&self, delivery: Delivery, next: Next) -> BoxFuture<'static, Outcome> {
        self.0.call(delivery, next)
    }
}

/// Compile-time check used by the macro: `m` is a middleware. Spans a wrong value's error
/// on the value.
pub const fn static_layer<M: Middleware>(m: &'static M) -> &'static dyn Middleware {
    m
}

/// The layers of one consumer, outermost first, and its handler.
struct Chain {
    layers: Box<[Arc<dyn Middleware>]>,
    handler: ErasedHandler,
    group: Arc<str>,
}

/// The rest of the chain after a layer: the layers inside it, then the handler.
pub struct Next {
    chain: Arc<Chain>,
    at: usize,
}

impl Next {
    /// Runs the rest of the chain on `delivery` (the next layer, or the handler) and returns
    /// its outcome. A panic in there comes back as a [`FailureKind::Panic`] failure.
    pub fn run(self, delivery: Delivery) -> impl Future<Output = Outcome> + Send + 'static {
        let Next { chain, at } = self;
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| match chain.layers.get(at) {
            Some(layer) => layer.call(delivery, Next { chain: chain.clone(), at: at + 1 }),
            None => (chain.handler)(delivery),
        }));
        async move {
            match started {
                Ok(run) => {
                    AssertUnwindSafe(run).catch_unwind().await.unwrap_or_else(|panic| middleware_panicked(&panic))
                }
                Err(panic) => middleware_panicked(&panic),
            }
        }
    }
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next").field("layers_left", &(self.chain.layers.len() - self.at)).finish()
    }
}

/// The outcome of a layer that panicked (a handler's own panic is caught by the handler's
/// trampoline, with its own text).
fn middleware_panicked(panic: &Box<dyn std::any::Any + Send>) -> Outcome {
    match crate::handler::panicked(panic) {
        Outcome::Failed { error, .. } => Outcome::Failed {
            error: error.replacen("handler panicked", "middleware panicked", 1),
            kind: FailureKind::Panic,
            retry_after: None,
        },
        other => other,
    }
}

/// `handler` behind `layers` (outermost first) for the consumers of `group`; `handler`
/// itself when there are none (the empty stack costs nothing).
pub(crate) fn wrap(layers: &[Arc<dyn Middleware>], group: &str, handler: ErasedHandler) -> ErasedHandler {
    if layers.is_empty() {
        return handler;
    }
    let chain = Arc::new(Chain { layers: layers.into(), handler, group: Arc::from(group) });
    Arc::new(move |mut delivery: Delivery| {
        delivery.group = Some(chain.group.clone());
        Box::pin(Next { chain: chain.clone(), at: 0 }.run(delivery))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;
    use std::sync::Mutex;

    fn delivery() -> Delivery {
        Delivery::for_test("orders", MessageId::new(1, 0), Some("1"))
    }

    fn handler(log: Arc<Mutex<Vec<String>>>) -> ErasedHandler {
        Arc::new(move |_d| {
            log.lock().unwrap().push("handler".into());
            Box::pin(async { Outcome::Done })
        })
    }

    fn recording(name: &'static str, log: Arc<Mutex<Vec<String>>>) -> Arc<dyn Middleware> {
        Arc::new(move |d: Delivery, next: Next| {
            let log = log.clone();
            async move {
                assert_eq!(d.group(), "billing");
                log.lock().unwrap().push(format!("{name} in"));
                let outcome = next.run(d).await;
                log.lock().unwrap().push(format!("{name} out"));
                outcome
            }
        })
    }

    #[tokio::test]
    async fn layers_run_outermost_first_and_see_the_outcome() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let layers = [recording("a", log.clone()), recording("b", log.clone())];
        let run = wrap(&layers, "billing", handler(log.clone()));
        assert!(matches!(run(delivery()).await, Outcome::Done));
        assert_eq!(*log.lock().unwrap(), ["a in", "b in", "handler", "b out", "a out"]);
    }

    #[tokio::test]
    async fn a_panicking_layer_is_a_panic_outcome_seen_by_the_outer_layers() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let boom: Arc<dyn Middleware> = Arc::new(|_d: Delivery, _next: Next| async { panic!("layer boom") });
        let sync_boom: Arc<dyn Middleware> = Arc::new(SyncPanic);
        for inner in [boom, sync_boom] {
            let layers = [recording("a", log.clone()), inner];
            match wrap(&layers, "billing", handler(log.clone()))(delivery()).await {
                Outcome::Failed { kind: FailureKind::Panic, error, .. } => {
                    assert!(error.starts_with("middleware panicked: layer boom"), "{error}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(*log.lock().unwrap(), ["a in", "a out", "a in", "a out"], "the handler never ran");
    }

    struct SyncPanic;
    impl Middleware for SyncPanic {
        fn call(&self, _delivery: Delivery, _next: Next) -> BoxFuture<'static, Outcome> {
            panic!("layer boom")
        }
    }

    #[test]
    fn no_layers_is_the_handler_itself() {
        let h = handler(Arc::default());
        assert!(Arc::ptr_eq(&wrap(&[], "billing", h.clone()), &h));
    }
}
