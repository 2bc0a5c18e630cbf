//! Run with: `cargo run --example order_lifecycle` (the worker; needs Redis on
//! 127.0.0.1:6379, or set `STREAMX_REDIS_URL`), then in another terminal
//! `cargo run --example order_lifecycle -- publish 500`. Stop the worker with Ctrl-C; delete
//! the recipe's keys with `-- cleanup`.
//!
//! Per-key order on a sharded topic: every order goes placed → paid → shipped → delivered,
//! and the events of many orders are published interleaved to the 16-shard topic `orders`,
//! each keyed by its order id. The handler keeps a state machine per order and refuses an
//! event that skips a stage (a permanent failure: dead-lettered). It can rely on the order
//! because a topic consumer is ordered: one order's events are handled one at a time, in
//! the order they were published, while different orders run in parallel (up to
//! `concurrency`). A redelivered event (at-least-once) is a stage already reached: skipped.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamx::admin::TopicAdmin;
use streamx::prelude::*;
use streamx_examples::{exit, init_logging, subcommand, RecipeError};

const ORDERS: &str = "orders";
const SHARDS: u32 = 16;

/// The stages of an order, in the only order they may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Stage {
    Placed,
    Paid,
    Shipped,
    Delivered,
}

impl Stage {
    const ALL: [Stage; 4] = [Stage::Placed, Stage::Paid, Stage::Shipped, Stage::Delivered];
}

/// Something happened to an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderEvent {
    order: u64,
    stage: Stage,
}

/// The last stage each order reached.
#[derive(Default)]
struct Lifecycles(Mutex<HashMap<u64, Stage>>);

/// What an event does to its order's state machine.
enum Step {
    Next,
    AlreadyDone,
    OutOfOrder(Option<Stage>),
}

impl Lifecycles {
    fn apply(&self, event: &OrderEvent) -> Step {
        let mut orders = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let current = orders.get(&event.order).copied();
        let expected = match current {
            None => Some(Stage::Placed),
            Some(stage) => Stage::ALL.into_iter().find(|s| *s > stage),
        };
        if Some(event.stage) == expected {
            orders.insert(event.order, event.stage);
            Step::Next
        } else if current.is_some_and(|c| event.stage <= c) {
            Step::AlreadyDone
        } else {
            Step::OutOfOrder(current)
        }
    }
}

/// Ordered (the default on a topic): one order's events one at a time, in publish order.
#[stream_consumer(topic = "orders", shards = 16, group = "lifecycle", concurrency = 32)]
async fn lifecycle(msg: Message<OrderEvent>) -> Result<(), HandlerError> {
    let event = msg.payload();
    // Some I/O per event (a database write): events finish in any order unless ordered.
    tokio::time::sleep(Duration::from_millis((event.order * 7 + event.stage as u64) % 4)).await;
    let lifecycles = msg.state::<Lifecycles>().ok_or("no Lifecycles in the state")?;
    match lifecycles.apply(event) {
        Step::Next if event.stage == Stage::Delivered => println!("lifecycle: order {} delivered", event.order),
        Step::Next | Step::AlreadyDone => {}
        Step::OutOfOrder(current) => {
            println!("lifecycle: order {}: OUT OF ORDER: {:?} after {current:?}", event.order, event.stage);
            return Err(HandlerError::permanent(format!("order {}: {:?} after {current:?}", event.order, event.stage)));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let (command, args) = subcommand("worker");
    let result = match command.as_str() {
        "worker" => worker().await,
        "publish" => match args.first().map(|n| n.parse::<u64>()) {
            None => publish(200).await,
            Some(Ok(n)) => publish(n).await,
            Some(Err(_)) => Err(RecipeError::Usage(format!("publish ORDERS: not a number: {}", args[0]))),
        },
        "cleanup" => cleanup().await,
        other => Err(RecipeError::Usage(format!("unknown command `{other}`: worker, publish [ORDERS] or cleanup"))),
    };
    exit("order_lifecycle", result)
}

/// Runs the consumer until Ctrl-C or SIGTERM.
async fn worker() -> Result<(), RecipeError> {
    let runtime = streamx::Runtime::builder().state(Lifecycles::default()).build()?;
    println!("order_lifecycle: following the topic `{ORDERS}` on {}; Ctrl-C to stop", runtime.url());
    runtime.run().await?;
    println!("order_lifecycle: stopped");
    Ok(())
}

/// Publishes the four events of orders 1..=n, interleaved (every order placed, then every
/// order paid, ...), keyed by order id, in one batch.
async fn publish(n: u64) -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    producer.topic(ORDERS, SHARDS).await?;
    let events: Vec<(String, OrderEvent)> = Stage::ALL
        .into_iter()
        .flat_map(|stage| (1..=n).map(move |order| (format!("order-{order}"), OrderEvent { order, stage })))
        .collect();
    let ids = producer.publish_batch_keyed(ORDERS, &events).await?;
    println!("published {} events of {n} orders to the topic `{ORDERS}`", ids.len());
    producer.close().await;
    Ok(())
}

/// Deletes the topic (its shards, their streamx keys and its record) once the worker has
/// drained it and stopped.
async fn cleanup() -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    let deleted = TopicAdmin::new(producer.client()).delete_drained(ORDERS).await?;
    producer.close().await;
    println!("deleted the topic `{ORDERS}` ({} shards, {} keys)", deleted.layout.shards(), deleted.keys);
    Ok(())
}
