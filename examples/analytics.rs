//! Run with: `cargo run --example analytics` (needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`).
//!
//! Windowed aggregation with a batch handler: publishes 20,000 page views spread over ten
//! minutes to a fresh stream, counts them per page and per minute with a consumer that
//! takes up to 500 views per call (one store write per batch), dead-letters the few views
//! without a page, prints the per-minute table and exits. The code is in
//! `examples/recipes/analytics.rs`.

use std::process::ExitCode;

use streamx_examples::{recipes::analytics, run_example};

#[tokio::main]
async fn main() -> ExitCode {
    run_example("analytics", analytics::run).await
}
