//! Run with: `cargo run --example worker` (then publish with `cargo run --example publish`,
//! or `redis-cli XADD orders '*' data '{"id":1,"amount_cents":500}'`; stop with Ctrl-C).
//!
//! A long-running worker: every `#[stream_consumer]` in the binary runs until SIGINT or
//! SIGTERM, then in-flight handlers finish and the process exits 0. It serves
//! `http://127.0.0.1:9090/metrics` (Prometheus), `/healthz` and `/readyz` (another address
//! with `STREAMX_HTTP_ADDR=0.0.0.0:9100`).

use std::process::ExitCode;

use streamx::prelude::*;
use streamx_examples::{init_logging, Order};

#[stream_consumer(stream = "orders", group = "billing", concurrency = 8, max_retries = 5, claim_idle = "30s")]
async fn charge(msg: Message<Order>) -> Result<(), HandlerError> {
    let order = msg.payload();
    if order.amount_cents < 0 {
        return Err(HandlerError::permanent(format!("order {} has a negative amount", order.id)));
    }
    tracing::info!(order = order.id, cents = order.amount_cents, attempt = msg.attempt(), "charged");
    Ok(())
}

#[stream_consumer(stream = "orders", group = "shipping")]
async fn ship(msg: Message<Order>) {
    tracing::info!(order = msg.payload().id, "shipping");
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let http = std::env::var(streamx::HTTP_ADDR_ENV).unwrap_or_else(|_| "127.0.0.1:9090".to_string());
    let runtime = match streamx::Runtime::builder().http(http).build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}
