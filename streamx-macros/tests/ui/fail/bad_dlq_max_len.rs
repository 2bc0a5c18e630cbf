use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing", dlq_max_len = 0)]
async fn charge(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "audit", dlq_max_len = "10k")]
async fn audit(_msg: Message<Order>) {}

fn main() {}
