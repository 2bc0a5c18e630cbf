use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "billing")]
struct Charge;

fn main() {}
