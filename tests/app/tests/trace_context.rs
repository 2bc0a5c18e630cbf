//! OpenTelemetry trace propagation (feature `opentelemetry`): a span around `publish`, and
//! the handler's `streamx.handle` span is its child in the same trace.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use streamx::testing::unique_name;
use streamx::{Consumer, Message};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

async fn record(msg: Message<serde_json::Value>) {
    // The headers the publish wrote reach the handler too.
    assert!(msg.headers().get("traceparent").is_some_and(|t| t.starts_with("00-")), "{:?}", msg.headers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_span_is_a_child_of_the_publishing_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let server = start_server();
    let stream = unique_name("traced");
    let running = start_runtime(server.url(), vec![Consumer::new(stream.clone(), "g", record)]).await;
    let producer = running.producer().await.unwrap();

    let request = tracing::info_span!("http.request");
    producer.publish(&stream, &"hello").instrument(request.clone()).await.unwrap();
    drop(request);

    let spans = || exporter.get_finished_spans().unwrap();
    let named = |spans: &[SpanData], name: &str| spans.iter().find(|s| s.name == name).cloned();
    wait_until(Duration::from_secs(10), "the handler's span ended", || async {
        let spans = spans();
        named(&spans, "streamx.handle").is_some() && named(&spans, "http.request").is_some()
    })
    .await
    .unwrap();
    let spans = spans();
    let (request, handle) = (named(&spans, "http.request").unwrap(), named(&spans, "streamx.handle").unwrap());
    assert_eq!(handle.span_context.trace_id(), request.span_context.trace_id());
    assert_eq!(handle.parent_span_id, request.span_context.span_id());
    assert_eq!(running.stats_all()[&format!("{stream}/g")].succeeded, 1);
    running.shutdown().await.unwrap();
}
