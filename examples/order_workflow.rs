//! Run with: `cargo run --example order_workflow` (the worker; needs Redis on
//! 127.0.0.1:6379, or set `STREAMX_REDIS_URL`), then in another terminal
//! `cargo run --example order_workflow -- place`. Order 3 (to Ireland) stops at the
//! shipping step and is dead-lettered; "deploy the fix" by restarting the worker with
//! `-- worker --ship-to-ireland`, then `cargo run --example order_workflow -- replay`
//! puts the failed step back. Delete the recipe's keys with `-- cleanup`.
//!
//! A multi-step workflow: order placed → paid → shipped. Each step is a consumer of one
//! stream that publishes the next event with the `Producer` from the application state. Each
//! step may run twice for one order (at-least-once), so each is idempotent by order id: the
//! payment id is derived from it, and the tracking step keeps one record per order.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx::{DeadLetters, RedisUrl};
use streamx_examples::{delete_stream_keys, exit, has_flag, init_logging, subcommand, RecipeError};

const PLACED: &str = "orders.placed";
const PAID: &str = "orders.paid";
const SHIPPED: &str = "orders.shipped";

/// A customer placed an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order: u64,
    amount_cents: i64,
    /// Where to ship: ISO country code.
    country: String,
}

/// The order was paid.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPaid {
    placed: OrderPlaced,
    /// Derived from the order id: charging twice is refused by the bank.
    payment: String,
}

/// The order left the warehouse.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderShipped {
    order: u64,
    payment: String,
    tracking: String,
}

/// The shipping service's configuration: until the fix, no carrier for Ireland.
struct Carriers {
    ireland: bool,
}

/// Orders shipped, by order id: the tracking step's store (one record per order).
#[derive(Default)]
struct Tracking(Mutex<BTreeMap<u64, OrderShipped>>);

fn state<S: Send + Sync + 'static, T>(msg: &Message<T>) -> Result<&S, HandlerError> {
    Ok(msg.state::<S>().ok_or_else(|| format!("no {} in the state", std::any::type_name::<S>()))?)
}

/// Step 1: charge, then publish `paid`.
#[stream_consumer(stream = "orders.placed", group = "payments", name = "payments")]
async fn charge(msg: Message<OrderPlaced>) -> Result<(), HandlerError> {
    let producer = state::<Producer, _>(&msg)?;
    let placed = msg.payload().clone();
    if placed.amount_cents <= 0 {
        return Err(HandlerError::permanent(format!("order {}: nothing to charge", placed.order)));
    }
    let paid = OrderPaid { payment: format!("pay-{}", placed.order), placed };
    producer.publish(PAID, &paid).await?;
    println!("payments: order {} charged {} cents ({})", paid.placed.order, paid.placed.amount_cents, paid.payment);
    Ok(())
}

/// Step 2: book a carrier, then publish `shipped`.
#[stream_consumer(stream = "orders.paid", group = "shipping", name = "shipping")]
async fn ship(msg: Message<OrderPaid>) -> Result<(), HandlerError> {
    let (producer, carriers) = (state::<Producer, _>(&msg)?, state::<Carriers, _>(&msg)?);
    let paid = msg.payload();
    let carrier = match paid.placed.country.as_str() {
        "IE" if !carriers.ireland => {
            println!("shipping: order {}: no carrier for IE, dead-lettered", paid.placed.order);
            return Err(HandlerError::permanent(format!("order {}: no carrier for country IE", paid.placed.order)));
        }
        "IE" => "an-post",
        _ => "dhl",
    };
    let tracking = format!("{carrier}-{}", paid.placed.order);
    let shipped = OrderShipped { order: paid.placed.order, payment: paid.payment.clone(), tracking };
    producer.publish(SHIPPED, &shipped).await?;
    println!("shipping: order {} handed to {carrier}", shipped.order);
    Ok(())
}

/// Step 3: record the shipment (one record per order, however often it arrives).
#[stream_consumer(stream = "orders.shipped", group = "tracking", name = "tracking")]
async fn record(msg: Message<OrderShipped>) -> Result<(), HandlerError> {
    let shipped = msg.payload();
    let mut tracking = state::<Tracking, _>(&msg)?.0.lock().unwrap_or_else(|e| e.into_inner());
    if tracking.insert(shipped.order, shipped.clone()).is_none() {
        println!(
            "tracking: order {} paid ({}) and shipped, tracking {}",
            shipped.order, shipped.payment, shipped.tracking
        );
    }
    Ok(())
}

/// The orders `place` publishes.
fn orders() -> Vec<OrderPlaced> {
    let countries = ["FR", "DE", "IE", "ES", "FR"];
    (1..=5u64)
        .zip(countries)
        .map(|(order, country)| OrderPlaced { order, amount_cents: order as i64 * 1_250, country: country.into() })
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let (command, args) = subcommand("worker");
    let result = match command.as_str() {
        "worker" => worker(has_flag(&args, "--ship-to-ireland")).await,
        "place" => place().await,
        "replay" => replay().await,
        "cleanup" => delete_stream_keys(&[(PLACED, &["payments"]), (PAID, &["shipping"]), (SHIPPED, &["tracking"])])
            .await
            .map(drop),
        other => Err(RecipeError::Usage(format!(
            "unknown command `{other}`: worker [--ship-to-ireland], place, replay or cleanup"
        ))),
    };
    exit("order_workflow", result)
}

/// Runs the three steps until Ctrl-C or SIGTERM.
async fn worker(ireland: bool) -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    let runtime =
        streamx::Runtime::builder().state(producer).state(Carriers { ireland }).state(Tracking::default()).build()?;
    let ie = if ireland { "with" } else { "without" };
    println!(
        "order_workflow: payments, shipping and tracking on {} ({ie} a carrier for IE); Ctrl-C to stop",
        runtime.url()
    );
    runtime.run().await?;
    println!("order_workflow: stopped");
    Ok(())
}

/// Places the orders.
async fn place() -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    for order in orders() {
        producer.publish(PLACED, &order).await?;
        println!("placed order {} ({} cents, to {})", order.order, order.amount_cents, order.country);
    }
    Ok(())
}

/// Puts the shipping step's dead letters back: the orders go on from `paid`.
async fn replay() -> Result<(), RecipeError> {
    let dlq =
        DeadLetters::connect_with(&RedisUrl::from_env()?, &streamx::keys::default_dead_letter_stream(PAID)).await?;
    for letter in dlq.list(None, 100).await?.entries {
        println!("replaying dead letter {} of `{}`: {}", letter.id, letter.group, letter.error);
    }
    let replayed = dlq.replay_all().await?;
    println!("replayed {replayed} dead letter(s)");
    Ok(())
}
