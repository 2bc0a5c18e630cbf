use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

/// A handler, not a middleware: the wrong signature.
async fn audit(_msg: Message<Order>) {}

const LIMIT: u32 = 7;

#[stream_consumer(stream = "orders", group = "billing", middleware = [audit, LIMIT])]
async fn charge(_msg: Message<Order>) {}

fn main() {}
