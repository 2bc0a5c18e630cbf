//! Run with: `cargo run --example order_workflow` (needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`).
//!
//! Orders go placed → paid → shipped, each step a consumer that publishes the next event
//! with the producer in the application state; the shipping step fails for good on one
//! order, which is dead-lettered and replayed once the fix is deployed. The code is in
//! `examples/recipes/order_workflow.rs`.

use std::process::ExitCode;

use streamx_examples::{recipes::order_workflow, run_example};

#[tokio::main]
async fn main() -> ExitCode {
    run_example("order_workflow", order_workflow::run).await
}
