use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    id: u64,
}

#[stream_consumer(
    stream = "orders",
    group = "billing",
    consumer = "worker-1",
    name = "billing::charge",
    concurrency = 8,
    batch_size = 100,
    block = "2s",
    start = "begin",
    max_retries = 5,
    backoff(initial = "1s", multiplier = 2.0, max = "30s"),
    dlq = true,
    claim_idle = "30s",
    crate = ::streamx,
)]
async fn charge(_msg: Message<Order>) -> Result<(), HandlerError> {
    Ok(())
}

#[stream_consumer(
    stream = "orders",
    group = "audit",
    start = "new",
    max_retries = 0,
    backoff(multiplier = 3),
    dlq = false,
)]
async fn audit(_msg: Message<Order>) -> Result<(), HandlerError> {
    Ok(())
}

#[stream_consumer(
    stream = "orders",
    group = "replay",
    start = "1700000000000-0",
    backoff(),
    dlq = "orders-dead",
    crate = "streamx",
)]
async fn replay(_msg: Message<Order>) -> Result<(), HandlerError> {
    Ok(())
}

#[stream_consumer(stream = "orders", group = "replay-ms", start = "1700000000000")]
pub(crate) async fn replay_from_millis(_msg: Message<Order>) {}

fn main() {}
