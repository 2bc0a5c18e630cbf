//! Run with: `cargo run --example notifications` (needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`).
//!
//! One sign-up event fanned out to three consumer groups (email, SMS, push), each with its
//! own retry policy; what a channel cannot deliver is dead-lettered under its group. The
//! code is in `examples/recipes/notifications.rs`.

use std::process::ExitCode;

use streamx_examples::{recipes::notifications, run_example};

#[tokio::main]
async fn main() -> ExitCode {
    run_example("notifications", notifications::run).await
}
