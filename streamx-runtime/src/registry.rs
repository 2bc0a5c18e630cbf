//! The link-time registry: each `#[stream_consumer]` submits one const [`Registration`]
//! through `inventory`; [`registered`] lists them at startup.

use std::borrow::Cow;
use std::sync::Arc;

use crate::batch::{Deliveries, Outcomes};
use crate::consumer::{option_setters, Consumer, ConsumerOptions, HandlerKind};
use crate::handler::{BoxFuture, Delivery, Outcome};
use crate::location::SourceLocation;

/// The generated trampoline: decodes a delivery and calls the user's handler.
pub type HandlerFn = fn(Delivery) -> BoxFuture<'static, Outcome>;

/// The generated trampoline of a batch handler: decodes the deliveries and calls the
/// user's handler with those that decode; one outcome per delivery, in order.
pub type BatchHandlerFn = fn(Deliveries) -> BoxFuture<'static, Outcomes>;

/// The trampoline of a registration.
#[derive(Debug, Clone, Copy)]
enum RegisteredHandler {
    One(HandlerFn),
    Batch(BatchHandlerFn),
}
/// A consumer declared with `#[stream_consumer]`: const data, collected at link time.
#[derive(Debug)]
pub struct Registration {
    name: &'static str,
    stream: &'static str,
    group: &'static str,
    location: SourceLocation,
    handler: RegisteredHandler,
    options: ConsumerOptions,
    middleware: StaticLayers,
}

/// The layers of `middleware = [..]` (see [`crate::middleware`]).
#[derive(Clone, Copy)]
struct StaticLayers(&'static [&'static dyn crate::Middleware]);

impl std::fmt::Debug for StaticLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} layers", self.0.len())
    }
}

impl Registration {
    /// A registration with default options (what the macro starts from).
    pub const fn new(
        name: &'static str,
        stream: &'static str,
        group: &'static str,
        location: SourceLocation,
        handler: HandlerFn,
    ) -> Self {
        let handler = RegisteredHandler::One(handler);
        Registration {
            name,
            stream,
            group,
            location,
            handler,
            options: ConsumerOptions::DEFAULT,
            middleware: StaticLayers(&[]),
        }
    }

    /// A registration of a batch handler with default options (what the macro starts from
    /// for `async fn f(batch: Vec<Message<T>>)`).
    pub const fn batch(
        name: &'static str,
        stream: &'static str,
        group: &'static str,
        location: SourceLocation,
        handler: BatchHandlerFn,
    ) -> Self {
        let handler = RegisteredHandler::Batch(handler);
        Registration {
            name,
            stream,
            group,
            location,
            handler,
            options: ConsumerOptions::DEFAULT,
            middleware: StaticLayers(&[]),
        }
    }

    option_setters!(const);

    /// Its middleware, outermost first (what the macro emits for `middleware = [..]`).
    pub const fn middleware(mut self, layers: &'static [&'static dyn crate::Middleware]) -> Self {
        self.middleware = StaticLayers(layers);
        self
    }

    /// The registration name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Turns the registration into a runnable [`Consumer`].
    pub fn to_consumer(&self) -> Consumer {
        let handler = match self.handler {
            RegisteredHandler::One(handler) => HandlerKind::One(Arc::new(handler)),
            RegisteredHandler::Batch(handler) => HandlerKind::Batch(Arc::new(handler)),
        };
        Consumer {
            name: Cow::Borrowed(self.name),
            stream: Cow::Borrowed(self.stream),
            group: Cow::Borrowed(self.group),
            location: self.location,
            handler,
            options: self.options.clone(),
            layers: self
                .middleware
                .0
                .iter()
                .map(|&layer| Arc::new(crate::middleware::StaticLayer(layer)) as Arc<dyn crate::Middleware>)
                .collect(),
        }
    }
}

inventory::collect!(Registration);

/// Every consumer registered with `#[stream_consumer]` in the binary, in a stable order
/// (by name).
pub fn registered() -> Vec<&'static Registration> {
    let mut all: Vec<_> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by_key(|r| (r.name, r.location.file, r.location.line));
    all
}
