//! Run with: `cargo run --example payments` (the worker; needs Redis on 127.0.0.1:6379, or
//! set `STREAMX_REDIS_URL`), then in another terminal `cargo run --example payments --
//! receive`; stop the worker with Ctrl-C and delete the recipe's keys with
//! `cargo run --example payments -- cleanup`.
//!
//! Payment webhooks with delayed reminders, and every duplicate a payment provider sends
//! handled once:
//! - the receiver publishes each webhook with its provider event id as the idempotency key
//!   (`PublishOptions::idempotency_key`): a webhook the provider sends again (it does, when
//!   our 200 was slow) returns the first entry's id and writes nothing;
//! - the ledger consumes with `dedupe = "24h"`: an event that reached the stream twice by
//!   another path (here: an operator re-importing it from the provider's dashboard, as a
//!   separate entry with the same key) is acknowledged without running again;
//! - a failed payment schedules a reminder for later (`publish_after`); a payment that
//!   succeeds meanwhile cancels it (`Scheduled::cancel`); the mailer reads the reminders
//!   when they are due, with the due time in the header `streamx-scheduled-at`.
//!
//! The reminder's schedule id is kept in this process's memory to keep the recipe short; a
//! real ledger would store it with the invoice.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use fred::interfaces::KeysInterface as _;
use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx::{Headers, ScheduleId, Scheduled, SCHEDULED_AT_HEADER};
use streamx_examples::{delete_stream_keys, exit, init_logging, option, subcommand, RecipeError};

/// The provider's webhooks, one entry per event.
const EVENTS: &str = "payments.events";
/// Reminders to customers whose payment failed, published when due.
const REMINDERS: &str = "payments.reminders";
/// How long after a failed payment the customer is reminded (short, for the demo).
const REMINDER_DELAY: Duration = Duration::from_secs(2);

/// A webhook of the payment provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaymentEvent {
    /// The provider's event id: the same for every delivery of one event.
    event: String,
    invoice: u64,
    outcome: Outcome,
    amount_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Succeeded,
    Failed,
}

/// A reminder to pay an invoice.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reminder {
    invoice: u64,
}

/// What the ledger's handler needs: a producer for the reminders and the pending reminders
/// by invoice.
struct Ledger {
    producer: Producer,
    scheduled: Scheduled,
    reminders: Mutex<HashMap<u64, ScheduleId>>,
}

/// Records each payment once; schedules a reminder for a failed one and cancels it when the
/// invoice is paid after all. One event at a time (the default concurrency): a payment that
/// follows a failure of the same invoice must find its reminder scheduled.
#[stream_consumer(stream = "payments.events", group = "ledger", name = "ledger", dedupe = "24h")]
async fn record(msg: Message<PaymentEvent>) -> Result<(), HandlerError> {
    let ledger = msg.state::<Ledger>().ok_or("no ledger in the state")?;
    let event = msg.payload();
    match event.outcome {
        Outcome::Succeeded => {
            println!("ledger: {} paid invoice {} ({} cents)", event.event, event.invoice, event.amount_cents);
            let pending = ledger.reminders.lock().map_err(|_| "poisoned")?.remove(&event.invoice);
            if let Some(id) = pending {
                if ledger.scheduled.cancel(REMINDERS, &id).await? {
                    println!("ledger: cancelled the reminder for invoice {}", event.invoice);
                }
            }
        }
        Outcome::Failed => {
            let reminder = Reminder { invoice: event.invoice };
            let id = ledger.producer.publish_after(REMINDERS, &reminder, REMINDER_DELAY).await?;
            ledger.reminders.lock().map_err(|_| "poisoned")?.insert(event.invoice, id);
            println!("ledger: {} failed for invoice {}; reminder in {REMINDER_DELAY:?}", event.event, event.invoice);
        }
    }
    Ok(())
}

/// Sends the reminders when they are due.
#[stream_consumer(stream = "payments.reminders", group = "mailer", name = "mailer")]
async fn remind(msg: Message<Reminder>) -> Result<(), HandlerError> {
    let due: u64 = msg.headers().get(SCHEDULED_AT_HEADER).and_then(|d| d.parse().ok()).ok_or("no due time")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
    let late = (now.as_millis() as u64).saturating_sub(due);
    println!("mailer: reminder for invoice {} sent {late} ms after it was due", msg.payload().invoice);
    Ok(())
}

/// The webhooks of one afternoon, in the order the provider sends them.
fn webhooks() -> Vec<PaymentEvent> {
    let event = |n: u32, invoice: u64, outcome: Outcome, amount_cents: i64| PaymentEvent {
        event: format!("evt_{n}"),
        invoice,
        outcome,
        amount_cents,
    };
    vec![
        event(1, 101, Outcome::Succeeded, 4_900),
        event(2, 102, Outcome::Failed, 12_000),
        event(3, 103, Outcome::Failed, 700),
        // Our 200 for evt_1 was slow: the provider sends it again.
        event(1, 101, Outcome::Succeeded, 4_900),
        // The customer of invoice 103 paid with another card.
        event(4, 103, Outcome::Succeeded, 700),
    ]
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let (command, args) = subcommand("worker");
    let result = match command.as_str() {
        "worker" => worker().await,
        "receive" => receive(option(&args, "--reimport")).await,
        "cleanup" => cleanup().await,
        other => Err(RecipeError::Usage(format!("unknown command `{other}`: worker, receive or cleanup"))),
    };
    exit("payments", result)
}

/// Runs the ledger and the mailer until Ctrl-C (SIGINT) or SIGTERM.
async fn worker() -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    let scheduled = Scheduled::with_client(producer.client());
    let ledger = Ledger { producer, scheduled, reminders: Mutex::default() };
    let runtime = streamx::Runtime::builder().state(ledger).build()?;
    println!("payments: ledger and mailer on {}; Ctrl-C to stop", runtime.url());
    runtime.run().await?;
    println!("payments: stopped");
    Ok(())
}

/// Deletes the records of the idempotent publishes (they would expire in a day), then the
/// streams' keys.
async fn cleanup() -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    for webhook in webhooks() {
        let record = streamx::keys::published(EVENTS, &webhook.event);
        let _: u64 = producer.client().del(record).await.map_err(|source| RecipeError::Redis {
            what: format!("deleting the record of {}", webhook.event),
            source,
        })?;
    }
    producer.close().await;
    delete_stream_keys(&[(EVENTS, &["ledger"]), (REMINDERS, &["mailer"])]).await.map(drop)
}

/// Publishes the provider's webhooks as the receiver would, each under its event id; then,
/// as an operator re-importing an event from the provider's dashboard would, `--reimport
/// <event>` publishes that event once more as a plain entry carrying the same key.
async fn receive(reimport: Option<&str>) -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    let mut first: HashMap<String, MessageId> = HashMap::new();
    for webhook in webhooks() {
        let options = PublishOptions::new().idempotency_key(webhook.event.as_str());
        let id = producer.publish_with(EVENTS, &webhook, &options).await?;
        match first.get(&webhook.event) {
            Some(earlier) if *earlier == id => println!("receiver: {} again: already published as {id}", webhook.event),
            _ => println!("receiver: {} published as {id}", webhook.event),
        }
        first.entry(webhook.event.clone()).or_insert(id);
    }
    if let Some(event) = reimport {
        let webhook = webhooks()
            .into_iter()
            .find(|w| w.event == event)
            .ok_or_else(|| RecipeError::Usage(format!("no webhook `{event}` to re-import: evt_1 to evt_4")))?;
        let headers = Headers::new().with(streamx::IDEMPOTENCY_KEY_HEADER, event);
        let id = producer.publish_with(EVENTS, &webhook, &PublishOptions::new().headers(headers)).await?;
        println!("receiver: {event} re-imported as a new entry {id}");
    }
    Ok(())
}
