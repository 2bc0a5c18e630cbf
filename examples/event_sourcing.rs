//! Run with: `cargo run --example event_sourcing` (needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`).
//!
//! An account aggregate: commands are checked against the state rebuilt from the event
//! stream and append events; the state is rebuilt with `History` from the start and from a
//! snapshot id; a projection consumer keeps the balances read model. The code is in
//! `examples/recipes/event_sourcing.rs`.

use std::process::ExitCode;

use streamx_examples::{recipes::event_sourcing, run_example};

#[tokio::main]
async fn main() -> ExitCode {
    run_example("event_sourcing", event_sourcing::run).await
}
