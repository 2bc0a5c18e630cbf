use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing")]
async fn charge(_msg: Message<Order>) -> i32 {
    0
}

fn main() {}
