//! Run with: `cargo run --example dead_letters` (needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`).
//!
//! Dead letters of every kind (a transient failure out of retries, a permanent refusal,
//! invalid JSON, JSON of the wrong shape): listed page by page, counted by kind, the
//! fixable ones replayed, the rest purged. The code is in `examples/recipes/dead_letters.rs`.

use std::process::ExitCode;

use streamx_examples::{recipes::dead_letters, run_example};

#[tokio::main]
async fn main() -> ExitCode {
    run_example("dead_letters", dead_letters::run).await
}
