use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing", max_buffered_bytes = 0, max_payload_bytes = "0KiB")]
async fn charge(_msg: Message<Order>) {}

fn main() {}
