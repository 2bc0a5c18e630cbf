use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(
    stream = "orders",
    group = "billing",
    max_buffered_bytes = "99999999999GiB",
    max_payload_bytes = 18446744073709551616,
)]
async fn charge(_msg: Message<Order>) {}

fn main() {}
