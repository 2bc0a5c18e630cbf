//! Windowed aggregation with a batch handler: page views counted per page and per minute by
//! a consumer that writes each batch to the store in one go.
//!
//! - The handler takes `Vec<Message<PageView>>`: up to `max_batch` views per call, so the
//!   store gets one write per batch instead of one per view.
//! - A view without a page is bad data: only it is dead-lettered (`BatchOutcome::fail` with
//!   a permanent error); the rest of its batch is counted.
//! - Delivery is at-least-once, so the store remembers which views it counted (by message
//!   id) and counts a redelivered one only once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::interfaces::KeysInterface;
use streamx::{BatchOutcome, Consumer, FailureKind, HandlerError, Message, MessageId, Producer, Runtime};

use crate::{dead_letters_of, wait_until, RecipeError, RECIPE_LIMIT};

/// Page views the recipe publishes.
pub const VIEWS: u64 = 20_000;
/// Minutes the views are spread over: the ones before the current minute.
pub const MINUTES: u64 = 10;

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

/// What the recipe did.
#[derive(Debug)]
pub struct Report {
    /// Views published.
    pub published: u64,
    /// Views per window as the workload says a correct aggregation counts them.
    pub expected: BTreeMap<Window, u64>,
    /// Views per window the consumer counted.
    pub counts: BTreeMap<Window, u64>,
    /// Store writes: one per batch.
    pub writes: u64,
    /// Dead letters: `(kind, error)` of each.
    pub dead_letters: Vec<(Option<FailureKind>, String)>,
    /// From starting the consumer until every view was counted or dead-lettered.
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counted: u64 = self.counts.values().sum();
        writeln!(f, "published {} page views over {MINUTES} minutes", self.published)?;
        writeln!(f, "counted {counted} in {} store writes ({:?}); views per minute:", self.writes, self.elapsed)?;
        let mut minutes: Vec<u64> = self.counts.keys().map(|(minute, _)| *minute).collect();
        minutes.dedup();
        for minute in minutes {
            let row: Vec<String> = self
                .counts
                .iter()
                .filter(|((m, _), _)| *m == minute)
                .map(|((_, page), n)| format!("{page} {n}"))
                .collect();
            let of_day = minute / 60_000 % (24 * 60);
            writeln!(f, "  {:02}:{:02} UTC  {}", of_day / 60, of_day % 60, row.join(", "))?;
        }
        write!(f, "dead-lettered {} views without a page", self.dead_letters.len())
    }
}

/// Runs the recipe against `url`: publishes [`VIEWS`] views over the last [`MINUTES`]
/// minutes to `<prefix>.page_views`, counts them with [`consumer`], and deletes the stream
/// and its dead letters at the end.
pub async fn run(url: String, prefix: String) -> Result<Report, RecipeError> {
    let stream = format!("{prefix}.page_views");
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let (views, expected) = workload(VIEWS, MINUTES, minute_of(now_ms) - MINUTES * 60_000);
    let valid: u64 = expected.values().sum();
    let producer = Producer::connect(&url).await?;
    producer.publish_batch(&stream, &views).await?;

    let store = Store::default();
    let started = Instant::now();
    let running = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(consumer(&stream, "per-minute"))
        .state(store.clone())
        .build()?
        .start()
        .await?;
    let dlq = dead_letters_of(&url, &stream).await?;
    wait_until(RECIPE_LIMIT, "every view to be counted or dead-lettered", || async {
        Ok(store.total() >= valid && dlq.count().await? >= VIEWS - valid)
    })
    .await?;
    let elapsed = started.elapsed();
    running.shutdown().await?;

    let dead_letters = dlq.list(None, VIEWS).await?.entries.into_iter().map(|l| (l.kind, l.error)).collect();
    let counts = store.counts();
    if counts != expected {
        return Err(RecipeError::Unexpected(format!("counted {counts:?}, expected {expected:?}")));
    }
    // 20,000 entries a run: not kept. (The producer's client is a plain fred client, for
    // commands streamx does not wrap.)
    let deleted: Result<i64, _> = producer.client().del(vec![stream.clone(), dlq.stream().to_string()]).await;
    if let Err(e) = deleted {
        tracing::warn!(error = %e, "cannot delete the run's streams");
    }
    Ok(Report { published: views.len() as u64, expected, counts, writes: store.writes(), dead_letters, elapsed })
}
