use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing")]
async fn charge(_msg: String) {}

fn main() {}
