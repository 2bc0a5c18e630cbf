//! The analytics recipe's core: page views counted per page and per minute by a batch
//! handler that writes each batch to the store in one go. Used by `examples/analytics.rs`
//! and by its test in `tests/app/tests/recipe_analytics.rs` (which includes this file).
//!
//! - The handler takes `Vec<Message<PageView>>`: up to `max_batch` views per call, so the
//!   store gets one write per batch instead of one per view.
//! - A view without a page is bad data: only it is dead-lettered (`BatchOutcome::fail` with
//!   a permanent error); the rest of its batch is counted.
//! - Delivery is at-least-once, so the store remembers which views it counted (by message
//!   id) and counts a redelivered one only once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamx::{BatchOutcome, Consumer, HandlerError, Message, MessageId};

/// One page view, as a web front end would publish it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageView {
    /// The page, e.g. `/pricing`.
    pub page: String,
    /// When the view happened, Unix milliseconds.
    pub at_ms: u64,
}

/// One aggregation window: the minute (its start, Unix milliseconds) and the page.
pub type Window = (u64, String);

/// The start of the minute `at_ms` falls in.
pub fn minute_of(at_ms: u64) -> u64 {
    at_ms - at_ms % 60_000
}

/// The aggregate store: views per page per minute. A stand-in for the table an analytics
/// service would upsert into; shared with the handler as application state.
#[derive(Debug, Clone, Default)]
pub struct Store {
    inner: Arc<Mutex<Tables>>,
}

#[derive(Debug, Default)]
struct Tables {
    counts: BTreeMap<Window, u64>,
    counted: HashSet<MessageId>,
    writes: u64,
}

impl Store {
    /// Adds a batch's counts in one write, skipping views it already counted.
    fn write(&self, views: Vec<(MessageId, Window)>) {
        let mut tables = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        tables.writes += 1;
        for (id, window) in views {
            if tables.counted.insert(id) {
                *tables.counts.entry(window).or_insert(0) += 1;
            }
        }
    }

    /// Views per window so far.
    pub fn counts(&self) -> BTreeMap<Window, u64> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).counts.clone()
    }

    /// How many views were counted.
    pub fn total(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).counted.len() as u64
    }

    /// How many writes (batches) the store took.
    pub fn writes(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).writes
    }
}

/// The batch handler: counts a batch of views per minute and page, in one write.
pub async fn count_views(batch: Vec<Message<PageView>>) -> Result<BatchOutcome, HandlerError> {
    let Some(store) = batch.first().and_then(|msg| msg.state::<Store>()).cloned() else {
        return Err(HandlerError::from("the runtime was built without the analytics `Store` state"));
    };
    let mut outcome = BatchOutcome::new();
    let mut views = Vec::with_capacity(batch.len());
    for msg in &batch {
        let view = msg.payload();
        if view.page.is_empty() {
            outcome.fail(msg.id(), HandlerError::permanent("a page view without a page"));
        } else {
            views.push((msg.id(), (minute_of(view.at_ms), view.page.clone())));
        }
    }
    store.write(views);
    Ok(outcome)
}

/// The consumer of `stream`: batches of up to 500 views, waiting at most 100 ms to fill,
/// two batches at a time.
pub fn consumer(stream: &str, group: &str) -> Consumer {
    Consumer::batch(stream.to_string(), group.to_string(), count_views)
        .concurrency(2)
        .max_batch(500)
        .batch_wait(Duration::from_millis(100))
}

/// A deterministic workload: `n` views over `minutes` minutes starting at `start_ms`, on a
/// few pages, every 997th without a page (bad data). Returns the views and the counts a
/// correct aggregation gives.
pub fn workload(n: u64, minutes: u64, start_ms: u64) -> (Vec<PageView>, BTreeMap<Window, u64>) {
    const PAGES: [&str; 4] = ["/", "/pricing", "/docs", "/blog"];
    let span = minutes * 60_000;
    let mut expected: HashMap<Window, u64> = HashMap::new();
    let views = (0..n)
        .map(|i| {
            let at_ms = start_ms + (i * span) / n.max(1);
            let page =
                if i % 997 == 996 { String::new() } else { PAGES[(i * 7 % 11) as usize % PAGES.len()].to_string() };
            if !page.is_empty() {
                *expected.entry((minute_of(at_ms), page.clone())).or_insert(0) += 1;
            }
            PageView { page, at_ms }
        })
        .collect();
    (views, expected.into_iter().collect())
}
