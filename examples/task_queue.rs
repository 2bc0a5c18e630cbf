//! Run with: `cargo run --example task_queue -- worker w1` in two or three terminals (one
//! name each; needs Redis on 127.0.0.1:6379, or set `STREAMX_REDIS_URL`), the progress
//! display with `cargo run --example task_queue -- progress` in another, then
//! `cargo run --example task_queue -- publish`. Stop each with Ctrl-C; `-- cleanup`
//! deletes the recipe's keys.
//!
//! A task queue: thumbnail jobs shared by several worker processes (one consumer group),
//! each reporting progress and a result on streams of their own; a transient failure is
//! retried, a corrupt image dead-lettered. `streamx info task_queue.jobs` shows the
//! group `thumbnailers` and how many workers it has.

use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx_examples::{delete_stream_keys, exit, init_logging, subcommand, RecipeError};

const JOBS: &str = "task_queue.jobs";
const PROGRESS: &str = "task_queue.progress";
const RESULTS: &str = "task_queue.results";

/// A job: make a thumbnail of an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    job: u64,
    image: String,
    width: u32,
    height: u32,
}

/// A worker's progress on a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    job: u64,
    worker: String,
    /// 0, 50 or 100.
    percent: u8,
}

/// A finished thumbnail.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Thumbnail {
    job: u64,
    worker: String,
    width: u32,
    height: u32,
    /// The delivery that succeeded (2 after one transient failure).
    attempt: u32,
}

/// The longer side of a thumbnail.
const THUMBNAIL_SIDE: u32 = 128;

/// The thumbnail size of a `width × height` image.
fn thumbnail_size(width: u32, height: u32) -> (u32, u32) {
    let longer = width.max(height).max(1);
    let scale = |side: u32| (u64::from(side) * u64::from(THUMBNAIL_SIDE) / u64::from(longer)).max(1) as u32;
    (scale(width), scale(height))
}

/// What a worker knows: its name, and the producer it reports with.
struct Worker {
    name: String,
    producer: Producer,
}

/// Progress 0 %, the work, 50 %, the result, 100 %.
#[stream_consumer(
    stream = "task_queue.jobs",
    group = "thumbnailers",
    name = "thumbnails",
    concurrency = 2,
    batch_size = 2,
    max_retries = 3,
    backoff(initial = "100ms", max = "1s")
)]
async fn make_thumbnail(msg: Message<Job>) -> Result<(), HandlerError> {
    let worker = msg.state::<Worker>().ok_or("no worker in the state")?;
    let job = msg.payload();
    let progress = |percent| Progress { job: job.job, worker: worker.name.clone(), percent };
    worker.producer.publish(PROGRESS, &progress(0)).await?;
    if job.image.contains("corrupt") {
        println!("{}: job {}: {} is not a JPEG, dead-lettered", worker.name, job.job, job.image);
        return Err(HandlerError::permanent(format!("{}: not a JPEG", job.image)));
    }
    if job.job % 7 == 3 && msg.attempt() == 1 {
        println!("{}: job {}: object storage timed out, will retry", worker.name, job.job);
        return Err(format!("{}: object storage timed out", job.image).into());
    }
    tokio::time::sleep(Duration::from_millis(10)).await; // decoding and resizing
    worker.producer.publish(PROGRESS, &progress(50)).await?;
    let (width, height) = thumbnail_size(job.width, job.height);
    let thumbnail = Thumbnail { job: job.job, worker: worker.name.clone(), width, height, attempt: msg.attempt() };
    worker.producer.publish(RESULTS, &thumbnail).await?;
    worker.producer.publish(PROGRESS, &progress(100)).await?;
    println!("{}: job {} done, {width}x{height} (attempt {})", worker.name, job.job, msg.attempt());
    Ok(())
}

/// The progress display: one line per event.
#[stream_consumer(stream = "task_queue.progress", group = "display", name = "progress")]
async fn show_progress(msg: Message<Progress>) {
    let p = msg.payload();
    println!("progress: job {:2} {:3}% ({})", p.job, p.percent, p.worker);
}

/// The jobs `publish` enqueues: 24, job 13's image corrupt.
fn jobs() -> Vec<Job> {
    (1..=24)
        .map(|job| Job {
            job,
            image: if job == 13 { format!("photo-{job}-corrupt.jpg") } else { format!("photo-{job}.jpg") },
            width: 4000 - job as u32 * 100,
            height: 3000,
        })
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let (command, args) = subcommand("worker");
    let result = match command.as_str() {
        "worker" => {
            let name = args.first().cloned().unwrap_or_else(|| format!("worker-{}", std::process::id()));
            worker(name).await
        }
        "progress" => progress().await,
        "publish" => publish().await,
        "cleanup" => {
            delete_stream_keys(&[(JOBS, &["thumbnailers"]), (PROGRESS, &["display"]), (RESULTS, &[])]).await.map(drop)
        }
        other => {
            Err(RecipeError::Usage(format!("unknown command `{other}`: worker [NAME], progress, publish or cleanup")))
        }
    };
    exit("task_queue", result)
}

/// One worker process: makes thumbnails until Ctrl-C or SIGTERM.
async fn worker(name: String) -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    let runtime =
        streamx::Runtime::builder().only(["thumbnails"]).state(Worker { name: name.clone(), producer }).build()?;
    println!("{name}: taking jobs from `{JOBS}` on {}; Ctrl-C to stop", runtime.url());
    runtime.run().await?;
    println!("{name}: stopped");
    Ok(())
}

/// The progress display, until Ctrl-C or SIGTERM.
async fn progress() -> Result<(), RecipeError> {
    let runtime = streamx::Runtime::builder().only(["progress"]).build()?;
    println!("progress: following `{PROGRESS}` on {}; Ctrl-C to stop", runtime.url());
    runtime.run().await?;
    println!("progress: stopped");
    Ok(())
}

async fn publish() -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    let ids = producer.publish_batch(JOBS, &jobs()).await?;
    println!("enqueued {} jobs on `{JOBS}`", ids.len());
    Ok(())
}
