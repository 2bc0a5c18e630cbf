use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing", codec = "protobuf")]
async fn charge(_msg: Message<Order>) {}

fn main() {}
