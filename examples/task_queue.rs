//! Run with: `cargo run --example task_queue` (needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`).
//!
//! Thumbnail jobs shared by three workers of one consumer group (one runtime each, as three
//! processes would be), with progress events, results on a stream of their own, a retried
//! transient failure and a dead-lettered corrupt image. The code is in
//! `examples/recipes/task_queue.rs`.

use std::process::ExitCode;

use streamx_examples::{recipes::task_queue, run_example};

#[tokio::main]
async fn main() -> ExitCode {
    run_example("task_queue", task_queue::run).await
}
