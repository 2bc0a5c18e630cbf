//! OpenTelemetry trace propagation through message headers (feature `opentelemetry`): a
//! publish writes the current `tracing` span's OpenTelemetry context as the W3C headers
//! `traceparent` and `tracestate` (fields `h:traceparent`, `h:tracestate`); a delivery that
//! carries them makes its `streamx.handle` span their child, so one trace runs from the
//! request that published through every handler. The spans come from `tracing-opentelemetry`;
//! without its layer there is no context to write and nothing is added.

use std::borrow::Cow;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::message::Headers;
use crate::producer::PublishOptions;

/// The W3C header carrying the trace and parent span ids.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The W3C header carrying vendor trace state.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// `options` with the current span's context added to its headers, when there is one.
pub(crate) fn with_current_context(options: &PublishOptions) -> Cow<'_, PublishOptions> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return Cow::Borrowed(options);
    }
    let mut headers = options.headers_ref().clone();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
    Cow::Owned(options.clone().headers(headers))
}

/// Makes `span` the child of the context in `headers`, if they carry one.
pub(crate) fn set_parent(span: &tracing::Span, headers: &Headers) {
    if headers.get(TRACEPARENT_HEADER).is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

struct HeaderInjector<'a>(&'a mut Headers);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

struct HeaderExtractor<'a>(&'a Headers);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k).collect()
    }
}
