//! The link-time registry: each `#[stream_consumer]` submits one const [`Registration`]
//! through `inventory`; [`registered`] lists them at startup.

use std::borrow::Cow;
use std::sync::Arc;

use crate::consumer::{option_setters, Consumer, ConsumerOptions};
use crate::handler::{BoxFuture, Delivery, Outcome};
use crate::location::SourceLocation;

/// The generated trampoline: decodes a delivery and calls the user's handler.
pub type HandlerFn = fn(Delivery) -> BoxFuture<'static, Outcome>;

/// A consumer declared with `#[stream_consumer]`: const data, collected at link time.
#[derive(Debug)]
pub struct Registration {
    name: &'static str,
    stream: &'static str,
    group: &'static str,
    location: SourceLocation,
    handler: HandlerFn,
    options: ConsumerOptions,
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
        Registration { name, stream, group, location, handler, options: ConsumerOptions::DEFAULT }
    }

    option_setters!(const);

    /// The registration name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Turns the registration into a runnable [`Consumer`].
    pub fn to_consumer(&self) -> Consumer {
        let handler = self.handler;
        Consumer {
            name: Cow::Borrowed(self.name),
            stream: Cow::Borrowed(self.stream),
            group: Cow::Borrowed(self.group),
            location: self.location,
            handler: Arc::new(handler),
            options: self.options.clone(),
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
