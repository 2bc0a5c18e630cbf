use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing")]
async fn charge<T: Send>(_msg: Message<T>) {}

fn main() {}
