use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

async fn audit(delivery: streamx::Delivery, next: streamx::Next) -> streamx::Outcome {
    next.run(delivery).await
}

#[stream_consumer(stream = "orders", group = "billing", middleware = [audit, "tenant", 1 + 2])]
async fn charge(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "shipping", middleware = audit)]
async fn ship(_msg: Message<Order>) {}

fn main() {}
