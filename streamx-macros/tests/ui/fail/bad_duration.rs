use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing", claim_idle = "30 secs or so")]
async fn charge(_msg: Message<Order>) {}

fn main() {}
