//! A task queue: thumbnail jobs shared by several workers (one consumer group, one runtime
//! per worker, as separate processes would be), each reporting progress and a result on
//! streams of their own; a transient failure is retried, a corrupt image dead-lettered.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use streamx::{Backoff, Consumer, HandlerError, History, Message, Producer, RunningRuntime, Runtime};

use crate::{dead_letters_of, letter_payload, wait_settled, wait_until, RecipeError, RECIPE_LIMIT};

/// A job: make a thumbnail of an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Job number.
    pub job: u64,
    /// The image.
    pub image: String,
    /// Its size.
    pub width: u32,
    /// Its size.
    pub height: u32,
}

/// A worker's progress on a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// Job number.
    pub job: u64,
    /// Which worker.
    pub worker: String,
    /// 0, 50 or 100.
    pub percent: u8,
}

/// A finished thumbnail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thumbnail {
    /// Job number.
    pub job: u64,
    /// Which worker made it.
    pub worker: String,
    /// Thumbnail size (the longer side is [`THUMBNAIL_SIDE`]).
    pub width: u32,
    /// Thumbnail size.
    pub height: u32,
    /// The delivery that succeeded (2 after one transient failure).
    pub attempt: u32,
}

/// The longer side of a thumbnail.
pub const THUMBNAIL_SIDE: u32 = 128;

/// The thumbnail size of a `width × height` image.
pub fn thumbnail_size(width: u32, height: u32) -> (u32, u32) {
    let longer = width.max(height).max(1);
    let scale = |side: u32| (u64::from(side) * u64::from(THUMBNAIL_SIDE) / u64::from(longer)).max(1) as u32;
    (scale(width), scale(height))
}

/// What a worker knows: its name, where to report.
struct Worker {
    name: String,
    producer: Producer,
    progress: String,
    results: String,
}

/// The worker's handler: progress 0 %, the work, 50 %, the result, 100 %.
async fn make_thumbnail(msg: Message<Job>) -> Result<(), HandlerError> {
    let worker = msg.state::<Worker>().ok_or("no worker in the state")?;
    let job = msg.payload();
    let progress = |percent| Progress { job: job.job, worker: worker.name.clone(), percent };
    worker.producer.publish(&worker.progress, &progress(0)).await?;
    if job.image.contains("corrupt") {
        return Err(HandlerError::permanent(format!("{}: not a JPEG", job.image)));
    }
    if job.job % 7 == 3 && msg.attempt() == 1 {
        return Err(format!("{}: object storage timed out", job.image).into());
    }
    tokio::time::sleep(Duration::from_millis(10)).await; // decoding and resizing
    worker.producer.publish(&worker.progress, &progress(50)).await?;
    let (width, height) = thumbnail_size(job.width, job.height);
    let thumbnail = Thumbnail { job: job.job, worker: worker.name.clone(), width, height, attempt: msg.attempt() };
    worker.producer.publish(&worker.results, &thumbnail).await?;
    worker.producer.publish(&worker.progress, &progress(100)).await?;
    Ok(())
}

/// The latest progress of every job, kept by the dashboard consumer.
#[derive(Debug, Default)]
struct Dashboard(Mutex<BTreeMap<u64, u8>>);

async fn track(msg: Message<Progress>) -> Result<(), HandlerError> {
    let dashboard = msg.state::<Arc<Dashboard>>().ok_or("no dashboard in the state")?;
    let mut jobs = dashboard.0.lock().unwrap_or_else(|e| e.into_inner());
    let latest = jobs.entry(msg.payload().job).or_default();
    *latest = (*latest).max(msg.payload().percent);
    Ok(())
}

/// What the recipe did.
#[derive(Debug)]
pub struct Report {
    /// Jobs published.
    pub jobs: usize,
    /// Thumbnails by job (one per job, whatever the redeliveries).
    pub thumbnails: BTreeMap<u64, Thumbnail>,
    /// Jobs done per worker.
    pub per_worker: BTreeMap<String, usize>,
    /// Jobs the dashboard saw reach 100 %.
    pub completed_on_dashboard: usize,
    /// Failed runs retried, over every worker.
    pub retried: u64,
    /// Dead letters: `(job image, error)`.
    pub dead_letters: Vec<(String, String)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} jobs, {} thumbnails, {} retried run(s)", self.jobs, self.thumbnails.len(), self.retried)?;
        for (worker, done) in &self.per_worker {
            writeln!(f, "  {worker}: {done} thumbnails")?;
        }
        writeln!(f, "dashboard: {} job(s) at 100%", self.completed_on_dashboard)?;
        for t in self.thumbnails.values().take(3) {
            writeln!(f, "  job {}: {}x{} by {} (attempt {})", t.job, t.width, t.height, t.worker, t.attempt)?;
        }
        write!(f, "dead letters: {:?}", self.dead_letters)
    }
}

/// Workers started.
pub const WORKERS: usize = 3;
/// Jobs published.
pub const JOBS: u64 = 24;
/// The one job whose image is corrupt.
pub const CORRUPT_JOB: u64 = 13;

/// The jobs the recipe publishes.
pub fn jobs() -> Vec<Job> {
    (1..=JOBS)
        .map(|job| Job {
            job,
            image: if job == CORRUPT_JOB { format!("photo-{job}-corrupt.jpg") } else { format!("photo-{job}.jpg") },
            width: 4000 - job as u32 * 100,
            height: 3000,
        })
        .collect()
}

/// Runs the recipe against `url`, with streams `<prefix>.jobs`, `.progress`, `.results`.
pub async fn run(url: String, prefix: String) -> Result<Report, RecipeError> {
    let (jobs_stream, progress, results) =
        (format!("{prefix}.jobs"), format!("{prefix}.progress"), format!("{prefix}.results"));
    let mut workers: Vec<RunningRuntime> = Vec::new();
    for n in 1..=WORKERS {
        let worker = Worker {
            name: format!("worker-{n}"),
            producer: Producer::connect(&url).await?,
            progress: progress.clone(),
            results: results.clone(),
        };
        let consumer = Consumer::new(jobs_stream.clone(), "thumbnailers", make_thumbnail)
            .concurrency(2)
            .batch_size(2)
            .max_retries(3)
            .backoff(Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(1)));
        let runtime = Runtime::builder().redis_url(&url).registered_consumers(false).consumer(consumer).state(worker);
        workers.push(runtime.build()?.start().await?);
    }
    let dashboard = Arc::new(Dashboard::default());
    let tracker = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(Consumer::new(progress.clone(), "dashboard", track))
        .state(dashboard.clone())
        .build()?
        .start()
        .await?;

    let producer = Producer::connect(&url).await?;
    let jobs = jobs();
    producer.publish_batch(&jobs_stream, &jobs).await?;

    wait_until(RECIPE_LIMIT, "every job to succeed or be dead-lettered", || {
        let settled: u64 =
            workers.iter().flat_map(|w| w.stats_all().into_values()).map(|s| s.succeeded + s.dead_lettered).sum();
        async move { Ok(settled >= JOBS) }
    })
    .await?;
    // Progress: 3 events per thumbnail, 1 per failed run (one transient failure per job
    // numbered 7k+3, and the corrupt one).
    let retried: u64 = workers.iter().flat_map(|w| w.stats_all().into_values()).map(|s| s.retried).sum();
    let progress_events = 3 * (JOBS - 1) + retried + 1;
    wait_settled(&tracker, progress_events, "the dashboard to see every progress event").await?;

    let history = History::connect(&url).await?;
    let thumbnails: BTreeMap<u64, Thumbnail> =
        history.read::<Thumbnail>(&results, ..).map_ok(|m| (m.payload().job, m.into_payload())).try_collect().await?;
    let mut per_worker = BTreeMap::new();
    for t in thumbnails.values() {
        *per_worker.entry(t.worker.clone()).or_insert(0) += 1;
    }
    let dlq = dead_letters_of(&url, &jobs_stream).await?;
    let mut dead_letters = Vec::new();
    for letter in dlq.list(None, 100).await?.entries {
        let job: Job = letter_payload(&letter)?;
        dead_letters.push((job.image, letter.error));
    }
    let completed_on_dashboard =
        dashboard.0.lock().unwrap_or_else(|e| e.into_inner()).values().filter(|p| **p == 100).count();

    for worker in workers {
        worker.shutdown().await?;
    }
    tracker.shutdown().await?;
    Ok(Report { jobs: jobs.len(), thumbnails, per_worker, completed_on_dashboard, retried, dead_letters })
}
