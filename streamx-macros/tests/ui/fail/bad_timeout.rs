use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing", timeout = 30)]
async fn charge(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "audit", timeout = "0s")]
async fn audit(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "ship", timeout = "half a minute")]
async fn ship(_msg: Message<Order>) {}

fn main() {}
