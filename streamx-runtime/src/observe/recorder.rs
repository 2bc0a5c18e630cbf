//! The `metrics` recorder the HTTP endpoint installs (feature `http`): the Prometheus
//! exporter's recorder, except that streamx's own `_seconds` histograms are counted in
//! buckets as they are recorded ([`buckets`](super::buckets)) instead of kept sample by
//! sample until a scrape. `/metrics` renders both.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::buckets::BucketHistograms;

/// Buckets of every `_seconds` histogram: 1 ms to 1 min.
pub(crate) const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const _: () = assert!(SECONDS_BUCKETS.len() <= super::buckets::MAX_BOUNDS);

/// The recorder: Prometheus's, with streamx's duration histograms bucketed by streamx.
pub(crate) struct StreamxRecorder {
    prometheus: PrometheusRecorder,
    histograms: Arc<BucketHistograms>,
}

/// What `/metrics` renders.
#[derive(Clone)]
pub(crate) struct Exporter {
    prometheus: PrometheusHandle,
    histograms: Arc<BucketHistograms>,
}

impl StreamxRecorder {
    /// A new recorder (`_seconds` histograms of other names also get [`SECONDS_BUCKETS`]).
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS) {
            Ok(builder) => builder,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set the histogram buckets; histograms are summaries");
                PrometheusBuilder::new()
            }
        };
        StreamxRecorder { prometheus: builder.build_recorder(), histograms: Arc::default() }
    }

    /// The handle that renders what this recorder holds.
    pub fn exporter(&self) -> Exporter {
        Exporter { prometheus: self.prometheus.handle(), histograms: self.histograms.clone() }
    }

    /// Whether streamx buckets `name` itself: its own duration histograms.
    fn bucketed(name: &str) -> bool {
        name.starts_with("streamx_") && name.ends_with("_seconds")
    }
}

impl Recorder for StreamxRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.prometheus.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.prometheus.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if Self::bucketed(key.name()) {
            Histogram::from_arc(self.histograms.get_or_create(key, SECONDS_BUCKETS))
        } else {
            self.prometheus.register_histogram(key, metadata)
        }
    }
}

impl Exporter {
    /// Everything recorded, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = self.prometheus.render();
        self.histograms.render_into(&mut text);
        text
    }

    /// Folds the samples of the histograms the Prometheus recorder keeps (bounds their memory
    /// when nobody scrapes).
    pub fn run_upkeep(&self) {
        self.prometheus.run_upkeep();
    }
}

/// The exporter of the recorder this process installed, if it could install one.
static INSTALLED: OnceLock<Option<Exporter>> = OnceLock::new();

/// Installs a [`StreamxRecorder`] as the global `metrics` recorder, once per process; `None`
/// when another recorder was installed first. Called before any consumer loop builds its
/// metric handles.
pub(crate) fn install_recorder() -> Option<Exporter> {
    INSTALLED
        .get_or_init(|| {
            let recorder = StreamxRecorder::new();
            let exporter = recorder.exporter();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(exporter),
                Err(_) => {
                    tracing::warn!(
                        "a metrics recorder was installed before the runtime started: streamx records into it, and \
                         /metrics does not serve them (export them with that recorder's exporter)"
                    );
                    None
                }
            }
        })
        .clone()
}
