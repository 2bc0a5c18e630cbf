//! Run with: `cargo run --example publish -- 100` (publishes 100 orders to `orders`).

use std::process::ExitCode;

use streamx::{Headers, Producer, PublishOptions};
use streamx_examples::Order;

#[tokio::main]
async fn main() -> ExitCode {
    let count: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    match publish(count).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("publish: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn publish(count: u64) -> Result<(), streamx::Error> {
    let producer = Producer::from_env().await?;
    let orders: Vec<Order> = (1..=count).map(|id| Order { id, amount_cents: 1_000 + id as i64 }).collect();
    let options =
        PublishOptions::new().headers(Headers::new().with("source", "publish-example")).max_len_approx(1_000_000);
    let ids = producer.publish_batch_with("orders", &orders, &options).await?;
    println!("published {} orders to `orders`: {:?} .. {:?}", ids.len(), ids.first(), ids.last());
    Ok(())
}
