use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(group = "billing")]
async fn charge(_msg: Message<Order>) {}

fn main() {}
