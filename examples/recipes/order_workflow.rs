//! A multi-step workflow: order placed → paid → shipped. Each step is a consumer of one
//! stream that publishes the next event with the `Producer` from the application state. A
//! step that fails for good is dead-lettered; after the fix is deployed the dead letter is
//! replayed and the order goes on from that step.
//!
//! Each step may run twice for one order (at-least-once), so each is idempotent by order
//! id: the payment id is derived from it, and the last step keeps one record per order.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use streamx::{Consumer, FailureKind, HandlerError, Message, Producer, Runtime};

use crate::{dead_letters_of, letter_payload, wait_until, RecipeError, RECIPE_LIMIT};

/// A customer placed an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// Order id.
    pub order: u64,
    /// Cents.
    pub amount_cents: i64,
    /// Where to ship: ISO country code.
    pub country: String,
}

/// The order was paid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPaid {
    /// The order.
    pub placed: OrderPlaced,
    /// The payment (derived from the order id: charging twice is refused by the bank).
    pub payment: String,
}

/// The order left the warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    /// Order id.
    pub order: u64,
    /// The payment.
    pub payment: String,
    /// The carrier's tracking number.
    pub tracking: String,
}

/// The streams of the workflow, and the producer the steps publish with (application state).
pub struct Workflow {
    producer: Producer,
    /// Orders placed.
    pub placed: String,
    /// Orders paid.
    pub paid: String,
    /// Orders shipped.
    pub shipped: String,
}

/// The shipping service's configuration: until the fix, it has no carrier for Ireland.
#[derive(Debug, Default)]
pub struct Carriers {
    /// Set when the fix is deployed.
    pub ireland_supported: AtomicBool,
}

/// Orders shipped, by order id, as the last step saw them.
#[derive(Debug, Default)]
struct Shipped(Mutex<BTreeMap<u64, OrderShipped>>);

fn state<S: Send + Sync + 'static, T>(msg: &Message<T>) -> Result<&S, HandlerError> {
    Ok(msg.state::<S>().ok_or_else(|| format!("no {} in the state", std::any::type_name::<S>()))?)
}

/// Step 1, on `placed`: charge, then publish `paid`.
async fn charge(msg: Message<OrderPlaced>) -> Result<(), HandlerError> {
    let workflow = state::<Arc<Workflow>, _>(&msg)?;
    let placed = msg.payload().clone();
    if placed.amount_cents <= 0 {
        return Err(HandlerError::permanent(format!("order {}: nothing to charge", placed.order)));
    }
    let paid = OrderPaid { payment: format!("pay-{}", placed.order), placed };
    workflow.producer.publish(&workflow.paid, &paid).await?;
    Ok(())
}

/// Step 2, on `paid`: book a carrier, then publish `shipped`.
async fn ship(msg: Message<OrderPaid>) -> Result<(), HandlerError> {
    let workflow = state::<Arc<Workflow>, _>(&msg)?;
    let carriers = state::<Arc<Carriers>, _>(&msg)?;
    let paid = msg.payload();
    let carrier = match paid.placed.country.as_str() {
        "IE" if !carriers.ireland_supported.load(Ordering::SeqCst) => {
            return Err(HandlerError::permanent(format!("order {}: no carrier for country IE", paid.placed.order)))
        }
        "IE" => "an-post",
        _ => "dhl",
    };
    let shipped = OrderShipped {
        order: paid.placed.order,
        payment: paid.payment.clone(),
        tracking: format!("{carrier}-{}", paid.placed.order),
    };
    workflow.producer.publish(&workflow.shipped, &shipped).await?;
    Ok(())
}

/// Step 3, on `shipped`: record it (one record per order, however often it arrives).
async fn record(msg: Message<OrderShipped>) -> Result<(), HandlerError> {
    let shipped = state::<Arc<Shipped>, _>(&msg)?;
    shipped.0.lock().unwrap_or_else(|e| e.into_inner()).insert(msg.payload().order, msg.payload().clone());
    Ok(())
}

/// The orders the recipe places.
pub fn orders() -> Vec<OrderPlaced> {
    let countries = ["FR", "DE", "IE", "ES", "FR"];
    (1..=5)
        .map(|order| OrderPlaced {
            order,
            amount_cents: order as i64 * 1_250,
            country: countries[order as usize - 1].into(),
        })
        .collect()
}

/// What the recipe did.
#[derive(Debug)]
pub struct Report {
    /// Orders placed.
    pub placed: usize,
    /// Orders shipped before the fix.
    pub shipped_before_fix: Vec<u64>,
    /// Dead letters of the shipping step: `(order, kind, error)`.
    pub dead_letters: Vec<(u64, Option<FailureKind>, String)>,
    /// Dead letters replayed after the fix.
    pub replayed: u64,
    /// Every order shipped at the end.
    pub shipped: Vec<OrderShipped>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} orders placed; shipped before the fix: {:?}", self.placed, self.shipped_before_fix)?;
        for (order, kind, error) in &self.dead_letters {
            writeln!(
                f,
                "dead letter of `shipping`: order {order}, kind {}, {error}",
                kind.map(|k| k.as_str()).unwrap_or("?")
            )?;
        }
        writeln!(f, "fix deployed (a carrier for IE); replayed {} dead letter(s)", self.replayed)?;
        for s in &self.shipped {
            writeln!(f, "  order {} paid ({}) and shipped, tracking {}", s.order, s.payment, s.tracking)?;
        }
        Ok(())
    }
}

/// Runs the recipe against `url`, with streams `<prefix>.placed`, `.paid`, `.shipped`.
pub async fn run(url: String, prefix: String) -> Result<Report, RecipeError> {
    let workflow = Arc::new(Workflow {
        producer: Producer::connect(&url).await?,
        placed: format!("{prefix}.placed"),
        paid: format!("{prefix}.paid"),
        shipped: format!("{prefix}.shipped"),
    });
    let (carriers, shipped) = (Arc::new(Carriers::default()), Arc::new(Shipped::default()));
    let running = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(Consumer::new(workflow.placed.clone(), "payments", charge).name_as("payments"))
        .consumer(Consumer::new(workflow.paid.clone(), "shipping", ship).name_as("shipping"))
        .consumer(Consumer::new(workflow.shipped.clone(), "tracking", record).name_as("tracking"))
        .state(workflow.clone())
        .state(carriers.clone())
        .state(shipped.clone())
        .build()?
        .start()
        .await?;
    let orders = orders();
    for order in &orders {
        workflow.producer.publish(&workflow.placed, order).await?;
    }
    let n = orders.len() as u64;
    let counter =
        |name: &str, f: fn(&streamx::ConsumerStatsSnapshot) -> u64| running.stats_all().get(name).map(f).unwrap_or(0);
    wait_until(RECIPE_LIMIT, "every order to be shipped or dead-lettered", || {
        let done = counter("shipping", |s| s.succeeded + s.dead_lettered) >= n
            && counter("tracking", |s| s.succeeded) >= counter("shipping", |s| s.succeeded);
        async move { Ok(done) }
    })
    .await?;
    let shipped_before_fix: Vec<u64> = shipped.0.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();

    let dlq = dead_letters_of(&url, &workflow.paid).await?;
    let mut dead_letters = Vec::new();
    for letter in dlq.list(None, 100).await?.entries {
        let paid: OrderPaid = letter_payload(&letter)?;
        dead_letters.push((paid.placed.order, letter.kind, letter.error));
    }
    // Deploy the fix, then put the failed step back: the order goes on from `paid`.
    carriers.ireland_supported.store(true, Ordering::SeqCst);
    let replayed = dlq.replay_all().await?;
    wait_until(RECIPE_LIMIT, "the replayed orders to be shipped", || {
        let done = shipped.0.lock().unwrap_or_else(|e| e.into_inner()).len() as u64 >= n;
        async move { Ok(done) }
    })
    .await?;
    running.shutdown().await?;
    let shipped = shipped.0.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
    Ok(Report { placed: orders.len(), shipped_before_fix, dead_letters, replayed, shipped })
}
