use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing", max_buffered_bytes = -1, max_payload_bytes = 1.5)]
async fn charge(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "audit", max_buffered_bytes = "1.5MiB", max_payload_bytes = "4096")]
async fn audit(_msg: Message<Order>) {}

fn main() {}
