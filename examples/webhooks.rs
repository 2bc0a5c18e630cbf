//! Run with: `cargo run --example webhooks` (needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`).
//!
//! Webhook delivery to a local HTTP endpoint the example starts, which fails sometimes: a
//! 500 is retried with backoff, a 429 after its `Retry-After`, a 410 or 400 is permanent
//! and dead-lettered; once the endpoint is fixed the dead letters are inspected and
//! replayed. The code is in `examples/recipes/webhooks.rs`.

use std::process::ExitCode;

use streamx_examples::{recipes::webhooks, run_example};

#[tokio::main]
async fn main() -> ExitCode {
    run_example("webhooks", webhooks::run).await
}
