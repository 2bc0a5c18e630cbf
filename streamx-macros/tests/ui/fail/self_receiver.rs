use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

struct Billing;

impl Billing {
    #[stream_consumer(stream = "orders", group = "billing")]
    async fn charge(&self, _msg: Message<Order>) {}
}

fn main() {}
