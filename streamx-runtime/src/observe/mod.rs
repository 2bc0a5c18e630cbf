//! Observability: the metrics the runtime and the producer record through the [`metrics`]
//! facade (one place names them all), the readiness of consumer loops, the sampled gauges
//! and, with features, the HTTP endpoint and OpenTelemetry trace propagation.
//!
//! Every handle is built once (per consumer loop, per stream a producer publishes to), so
//! recording costs an atomic add or two. With no recorder installed every handle is a no-op
//! and the runtime does not even read the clock for histograms.
//!
//! Labels are the stream, the group and the consumer's registration name (label
//! `consumer`): never message ids, member names or payload values.

pub mod names;

#[cfg(feature = "http")]
pub(crate) mod buckets;
pub(crate) mod consumer;
pub(crate) mod gauges;
#[cfg(feature = "http")]
pub(crate) mod http;
pub(crate) mod producer;
pub(crate) mod readiness;
#[cfg(feature = "http")]
pub(crate) mod recorder;
#[cfg(feature = "opentelemetry")]
pub mod trace_context;

pub(crate) use consumer::{ConsumerMetrics, RunClock};
pub(crate) use gauges::{GroupSample, LoopGauges};
pub(crate) use producer::PublishMetrics;
pub(crate) use readiness::Readiness;

/// A dead letter was replayed onto `stream` (operator API: a lookup by name is fine here).
pub(crate) fn dead_letter_replayed(stream: &str) {
    metrics::counter!(names::DEAD_LETTER_REPLAYS, names::LABEL_STREAM => stream.to_string()).increment(1);
}

/// The gauge of whether `group` on `stream` is paused ([`names::CONSUMER_PAUSED`]).
pub(crate) fn paused_gauge(stream: &str, group: &str) -> metrics::Gauge {
    let labels = [(names::LABEL_STREAM, stream.to_string()), (names::LABEL_GROUP, group.to_string())];
    metrics::gauge!(names::CONSUMER_PAUSED, &labels)
}

/// The metrics of a rate-limited group on `stream`: granted starts, refusals and time waited
/// ([`names::RATE_LIMIT_GRANTED`], [`names::RATE_LIMIT_WAITS`],
/// [`names::RATE_LIMIT_WAIT_SECONDS`]).
pub(crate) fn rate_limit_metrics(
    stream: &str,
    group: &str,
) -> (metrics::Counter, metrics::Counter, metrics::Histogram) {
    let labels = [(names::LABEL_STREAM, stream.to_string()), (names::LABEL_GROUP, group.to_string())];
    (
        metrics::counter!(names::RATE_LIMIT_GRANTED, &labels),
        metrics::counter!(names::RATE_LIMIT_WAITS, &labels),
        metrics::histogram!(names::RATE_LIMIT_WAIT_SECONDS, &labels),
    )
}

/// Whether a `metrics` recorder (global, or local to this thread) is installed. Without one,
/// the facade hands out no-op handles; the runtime then skips the clock reads that only
/// histograms need.
///
/// The facade has no query for it; its fallback, `metrics::NoopRecorder`, is the one
/// zero-sized recorder there is (every real recorder holds a registry), which is what
/// this tells apart.
pub(crate) fn recorder_installed() -> bool {
    metrics::with_recorder(|recorder| size_of_val(recorder) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_recorder_is_told_from_a_real_one() {
        assert!(!recorder_installed());
        let recorder = metrics::NoopRecorder;
        assert!(!metrics::with_local_recorder(&recorder, recorder_installed));
    }

    #[cfg(feature = "http")]
    #[test]
    fn outcomes_are_counted_under_their_labels() {
        use crate::handler::FailureKind;

        let recorder = recorder::StreamxRecorder::new();
        let handle = recorder.exporter();
        let consumer = metrics::with_local_recorder(&recorder, || {
            assert!(recorder_installed());
            ConsumerMetrics::new("orders", "billing", "charge")
        });
        consumer.succeeded(1);
        consumer.succeeded(1);
        consumer.retried();
        consumer.dead_lettered(FailureKind::Error);
        consumer.dead_lettered(FailureKind::InvalidJson);
        consumer.taken_over(3);
        consumer.timed_out();
        consumer.dead_letters_trimmed(5);
        let started = consumer.handler_started(crate::message::MessageId::new(1, 0), 1);
        consumer.handler_finished(started);
        // Two more runs timed by a run's clock: the second is a redelivery (no end-to-end).
        let mut clock = consumer.run_clock();
        assert!(clock.is_some(), "a recorder keeps timings");
        let started = consumer.handler_started_in(clock.as_ref(), crate::message::MessageId::new(2, 0), 1);
        consumer.handler_finished_in(clock.as_mut(), started);
        let started = consumer.handler_started_in(clock.as_ref(), crate::message::MessageId::new(3, 0), 2);
        consumer.handler_finished_in(clock.as_mut(), started);
        let text = handle.render();
        let labels = r#"stream="orders",group="billing",consumer="charge""#;
        for (outcome, n) in [("success", 2), ("retry", 1), ("dead_letter", 1), ("rejected", 1)] {
            let line = format!(r#"streamx_messages_consumed_total{{{labels},outcome="{outcome}"}} {n}"#);
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains(&format!("streamx_takeovers_total{{{labels}}} 3")), "{text}");
        assert!(text.contains(&format!("streamx_handler_timeouts_total{{{labels}}} 1")), "{text}");
        assert!(text.contains(&format!("streamx_dead_letters_trimmed_total{{{labels}}} 5")), "{text}");
        assert!(text.contains(&format!("streamx_handler_duration_seconds_count{{{labels}}} 3")), "{text}");
        assert!(text.contains(&format!("streamx_end_to_end_latency_seconds_count{{{labels}}} 2")), "{text}");
        // Counted into buckets as they were recorded: every run took well under a second.
        assert!(text.contains(&format!(r#"streamx_handler_duration_seconds_bucket{{{labels},le="1"}} 3"#)), "{text}");
        assert!(
            text.contains(&format!(r#"streamx_handler_duration_seconds_bucket{{{labels},le="+Inf"}} 3"#)),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE streamx_handler_duration_seconds histogram").count(), 1, "{text}");
    }

    #[cfg(feature = "http")]
    #[test]
    fn the_application_s_own_metrics_are_served_beside_streamx_s() {
        let recorder = recorder::StreamxRecorder::new();
        let handle = recorder.exporter();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("app_request_seconds").record(0.02);
            metrics::histogram!("app_size_bytes").record(10.0);
            metrics::counter!("app_requests_total").increment(4);
            metrics::histogram!(names::PUBLISH_DURATION, names::LABEL_STREAM => "s").record(0.003);
        });
        let text = handle.render();
        assert!(text.contains(r#"app_request_seconds_bucket{le="0.025"} 1"#), "{text}");
        assert!(text.contains("# TYPE app_size_bytes summary\napp_size_bytes{quantile=\"0\"} 10"), "{text}");
        assert!(text.contains("app_requests_total 4"), "{text}");
        assert!(text.contains(r#"streamx_publish_duration_seconds_bucket{stream="s",le="0.0025"} 0"#), "{text}");
        assert!(text.contains(r#"streamx_publish_duration_seconds_bucket{stream="s",le="0.005"} 1"#), "{text}");
    }
}
