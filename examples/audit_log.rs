//! Run with: `cargo run --example audit_log` (needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`).
//!
//! A keep-everything audit stream: three sessions of events, a consumer flagging
//! deletions, a query of one session's time window with `History` (id bounds made from
//! timestamps) and its export as JSON lines. The code is in `examples/recipes/audit_log.rs`.

use std::process::ExitCode;

use streamx_examples::{recipes::audit_log, run_example};

#[tokio::main]
async fn main() -> ExitCode {
    run_example("audit_log", audit_log::run).await
}
