//! Publish-side layers: run before a publish is written, to add headers (a correlation id,
//! a tenant) or refuse it.
//!
//! A layer runs once per publish call, before anything is sent, with the headers the
//! publish will store: once per message for [`publish`](crate::Producer::publish) and its
//! variants (`publish_with`, `publish_bytes`, `publish_keyed`, `publish_after`,
//! `publish_at`); once per call for a batch (`publish_batch`, `publish_batch_keyed`), whose
//! messages share the batch's headers as they share its options. A refusal fails the call
//! with [`Error::PublishRefused`](crate::Error::PublishRefused) and writes nothing: for a
//! batch, none of its messages. Layers run in the order added; the first refusal stops
//! the others. A producer without layers runs nothing of this.

use std::borrow::Cow;
use std::sync::Arc;

use crate::message::Headers;
use crate::producer::PublishOptions;

/// A publish-side layer: sees the destination and the headers of each publish, may change
/// the headers, or refuse the publish. Closures `Fn(&mut Outgoing<'_>) -> Result<(),
/// PublishRefused>` are layers.
///
/// ```
/// use streamx_runtime::{Outgoing, PublishRefused};
///
/// fn tenant_required(msg: &mut Outgoing<'_>) -> Result<(), PublishRefused> {
///     if msg.headers().get("tenant").is_none() {
///         return Err(PublishRefused::new("every message needs a tenant"));
///     }
///     Ok(())
/// }
/// # let _ = tenant_required;
/// ```
pub trait PublishLayer: Send + Sync + 'static {
    /// Runs before the publish is written.
    fn on_publish(&self, msg: &mut Outgoing<'_>) -> Result<(), PublishRefused>;
}

impl<F> PublishLayer for F
where
    F: Fn(&mut Outgoing<'_>) -> Result<(), PublishRefused> + Send + Sync + 'static,
{
    fn on_publish(&self, msg: &mut Outgoing<'_>) -> Result<(), PublishRefused> {
        self(msg)
    }
}

/// Why a [`PublishLayer`] refused a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRefused {
    reason: String,
}

impl PublishRefused {
    /// A refusal with `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        PublishRefused { reason: reason.into() }
    }

    /// The reason given.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// What a [`PublishLayer`] sees of a publish.
#[derive(Debug)]
pub struct Outgoing<'a> {
    stream: &'a str,
    messages: usize,
    headers: &'a mut Headers,
}

impl Outgoing<'_> {
    /// The stream (or topic) published to, as the caller named it.
    pub fn stream(&self) -> &str {
        self.stream
    }

    /// How many messages the publish writes: 1, or a batch's length (they all get these
    /// headers).
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// The headers the publish stores.
    pub fn headers(&self) -> &Headers {
        self.headers
    }

    /// The headers the publish stores, to add or change some.
    pub fn headers_mut(&mut self) -> &mut Headers {
        self.headers
    }
}

/// A producer's publish layers, in order (shared by its clones).
#[derive(Clone, Default)]
pub(crate) struct PublishLayers(Option<Arc<[Arc<dyn PublishLayer>]>>);

impl PublishLayers {
    pub(crate) fn new(layers: Vec<Arc<dyn PublishLayer>>) -> Self {
        PublishLayers((!layers.is_empty()).then(|| layers.into()))
    }

    /// These layers then `layer`.
    pub(crate) fn with(&self, layer: Arc<dyn PublishLayer>) -> Self {
        let mut all: Vec<_> = self.0.iter().flat_map(|l| l.iter().cloned()).collect();
        all.push(layer);
        PublishLayers::new(all)
    }

    /// `options` as the layers leave them for a publish of `messages` to `stream`: borrowed
    /// as they are when there is no layer.
    pub(crate) fn apply<'o>(
        &self,
        stream: &str,
        messages: usize,
        options: &'o PublishOptions,
    ) -> crate::Result<Cow<'o, PublishOptions>> {
        let Some(layers) = &self.0 else {
            return Ok(Cow::Borrowed(options));
        };
        let mut options = options.clone();
        let mut msg = Outgoing { stream, messages, headers: options.headers_mut() };
        for layer in layers.iter() {
            layer.on_publish(&mut msg).map_err(|refused| crate::Error::PublishRefused {
                stream: stream.to_string(),
                reason: refused.reason,
            })?;
        }
        Ok(Cow::Owned(options))
    }
}

impl std::fmt::Debug for PublishLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} publish layers", self.0.as_ref().map_or(0, |l| l.len()))
    }
}
