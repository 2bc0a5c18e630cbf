use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(group = "", concurrency = 0, block = "soon", retries = 3, dlq = 1, dlq = true)]
fn charge<T>(_msg: Message<Order>, _extra: T) {}

fn main() {}
