use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    id: u64,
}

#[stream_consumer(stream = "orders", group = "billing", concurrency = 8)]
async fn charge(msg: Message<Order>) -> Result<(), HandlerError> {
    let _ = msg;
    Ok(())
}

fn main() {}
