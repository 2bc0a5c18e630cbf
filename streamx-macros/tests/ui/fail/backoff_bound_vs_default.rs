//! A single backoff bound is checked against the runtime's default for the other one.
use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "a", backoff(max = "500ms"))]
async fn max_below_default_initial(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "b", backoff(multiplier = 1.5, initial = "1h"))]
async fn initial_above_default_max(_msg: Message<Order>) {}

fn main() {}
