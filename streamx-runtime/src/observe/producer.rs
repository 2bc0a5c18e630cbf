//! The metric handles of a producer, one set per stream it publishes to, built on the first
//! publish to that stream and kept with the producer.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use metrics::{Counter, Histogram};
use rustc_hash::FxHashMap;

use super::names::*;
use crate::error::Error;

/// The handles of one stream.
struct StreamHandles {
    published: Counter,
    errors: Counter,
    duration: Histogram,
}

/// A producer's handles by stream (shared by its clones).
#[derive(Clone, Default)]
pub(crate) struct PublishMetrics {
    streams: Arc<RwLock<FxHashMap<Box<str>, Arc<StreamHandles>>>>,
}

/// One publish call being measured; `None` inside when no recorder is installed.
pub(crate) struct PublishTimer(Option<(Arc<StreamHandles>, Instant)>);

impl PublishMetrics {
    /// A publish to `stream` starts.
    #[inline]
    pub fn start(&self, stream: &str) -> PublishTimer {
        if !super::recorder_installed() {
            return PublishTimer(None);
        }
        PublishTimer(Some((self.handles(stream), Instant::now())))
    }

    fn handles(&self, stream: &str) -> Arc<StreamHandles> {
        let read = self.streams.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(handles) = read.get(stream) {
            return handles.clone();
        }
        drop(read);
        let mut write = self.streams.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        write
            .entry(Box::from(stream))
            .or_insert_with(|| {
                let labels = [(LABEL_STREAM, stream.to_string())];
                Arc::new(StreamHandles {
                    published: metrics::counter!(MESSAGES_PUBLISHED, &labels),
                    errors: metrics::counter!(PUBLISH_ERRORS, &labels),
                    duration: metrics::histogram!(PUBLISH_DURATION, &labels),
                })
            })
            .clone()
    }
}

impl PublishTimer {
    /// The publish of `messages` messages ended with `result`: counts what was written and
    /// what was not (for a partial batch, what it lists as written), and the duration.
    pub fn finish<T>(self, messages: usize, result: &Result<T, Error>) {
        let Some((handles, started)) = self.0 else { return };
        handles.duration.record(started.elapsed().as_secs_f64());
        let written = match result {
            Ok(_) => messages,
            Err(e) => e.written().len(),
        };
        handles.published.increment(written as u64);
        handles.errors.increment(messages.saturating_sub(written) as u64);
    }
}
