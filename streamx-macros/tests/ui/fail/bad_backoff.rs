use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "a", backoff(initial = "1s", jitter = true))]
async fn unknown_sub_key(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "b", backoff(multiplier = 0.5))]
async fn shrinking(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "c", backoff(initial = "1m", max = "10s"))]
async fn max_below_initial(_msg: Message<Order>) {}

fn main() {}
