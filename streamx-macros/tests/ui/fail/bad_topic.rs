use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", shards = 16, group = "billing")]
async fn charge(_msg: Message<Order>) {}

#[stream_consumer(topic = "{orders}", group = "billing")]
async fn ship(_msg: Message<Order>) {}

#[stream_consumer(topic = "orders", shards = 2000, group = "billing", ordered = "yes")]
async fn invoice(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", topic = "orders", group = "billing")]
async fn audit(_msg: Message<Order>) {}

fn main() {}
