use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing", max_buffered_bytes = "64mib", max_payload_bytes = "4 parsecs")]
async fn charge(_msg: Message<Order>) {}

fn main() {}
