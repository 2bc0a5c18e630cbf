//! Run with: `cargo run --example dead_letters` (the ledger worker; needs Redis on
//! 127.0.0.1:6379, or set `STREAMX_REDIS_URL`), then in another terminal:
//!
//! ```text
//! cargo run --example dead_letters -- publish        # 6 payments and 2 malformed entries
//! cargo run --example dead_letters -- list           # the dead letters, 2 a page, by kind
//! # the audit is over: restart the worker with `-- worker --unlocked`, then
//! cargo run --example dead_letters -- replay error   # replay the letters of kind `error`
//! cargo run --example dead_letters -- purge          # record and purge the rest
//! cargo run --example dead_letters -- cleanup        # delete the recipe's keys
//! ```
//!
//! Working with dead letters: inspect them page by page, count them by kind, replay the
//! ones a fix makes good (transient `error`s once the locked account is unlocked), and
//! purge the rest (poison input, permanent refusals) after recording them. The `streamx`
//! CLI does the same from a terminal (`streamx dlq list payments`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx::{DeadLetter, DeadLetters, RedisUrl};
use streamx_examples::{delete_stream_keys, exit, has_flag, init_logging, subcommand, RecipeError};

const PAYMENTS: &str = "payments";

/// A payment to book.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    id: u64,
    /// The account to credit.
    account: String,
    /// Cents; must be positive.
    amount_cents: i64,
}

/// The ledger's configuration: account `acc-9` is locked (for an audit) unless unlocked.
struct Ledger {
    unlocked: bool,
}

/// Books a payment; one retry, then dead-lettered.
#[stream_consumer(
    stream = "payments",
    group = "ledger",
    name = "ledger",
    max_retries = 1,
    backoff(initial = "20ms", multiplier = 1.0, max = "20ms")
)]
async fn book(msg: Message<Payment>) -> Result<(), HandlerError> {
    let ledger = msg.state::<Ledger>().ok_or("no ledger in the state")?;
    let payment = msg.payload();
    if payment.amount_cents <= 0 {
        println!("ledger: payment {} refused: amount must be positive", payment.id);
        return Err(HandlerError::permanent(format!("payment {}: amount must be positive", payment.id)));
    }
    if payment.account == "acc-9" && !ledger.unlocked {
        println!("ledger: payment {}: account acc-9 is locked (attempt {})", payment.id, msg.attempt());
        return Err(format!("payment {}: account acc-9 is locked", payment.id).into());
    }
    println!("ledger: booked payment {} ({} cents to {})", payment.id, payment.amount_cents, payment.account);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let (command, args) = subcommand("worker");
    let result = match command.as_str() {
        "worker" => worker(has_flag(&args, "--unlocked")).await,
        "publish" => publish().await,
        "list" => list().await,
        "replay" => replay(args.first().map(String::as_str).unwrap_or("error")).await,
        "purge" => purge().await,
        "cleanup" => delete_stream_keys(&[(PAYMENTS, &["ledger"])]).await.map(drop),
        other => Err(RecipeError::Usage(format!(
            "unknown command `{other}`: worker [--unlocked], publish, list, replay [KIND], purge or cleanup"
        ))),
    };
    exit("dead_letters", result)
}

async fn worker(unlocked: bool) -> Result<(), RecipeError> {
    let runtime = streamx::Runtime::builder().state(Ledger { unlocked }).build()?;
    let lock = if unlocked { "unlocked" } else { "locked" };
    println!("dead_letters: ledger reading `{PAYMENTS}` on {} (acc-9 {lock}); Ctrl-C to stop", runtime.url());
    runtime.run().await?;
    println!("dead_letters: stopped");
    Ok(())
}

async fn publish() -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    let payment = |id, account: &str, amount_cents| Payment { id, account: account.into(), amount_cents };
    let payments = [
        payment(1, "acc-1", 500),
        payment(2, "acc-2", 700),
        payment(3, "acc-9", 900),  // locked: fails, retried once, dead-lettered (kind error)
        payment(4, "acc-1", -100), // refused for good (kind permanent)
        payment(5, "acc-9", 300),  // locked
        payment(6, "acc-3", 1_100),
    ];
    producer.publish_batch(PAYMENTS, &payments).await?;
    // Two malformed entries from another producer: poison, dead-lettered unread.
    producer.publish_raw(PAYMENTS, "{\"id\": 7, \"account\": ".into(), &PublishOptions::new()).await?;
    producer.publish_raw(PAYMENTS, "{\"id\": \"eight\"}".into(), &PublishOptions::new()).await?;
    println!("published {} payments and 2 malformed entries to `{PAYMENTS}`", payments.len());
    Ok(())
}

async fn dead_letters() -> Result<DeadLetters, RecipeError> {
    let dlq = streamx::keys::default_dead_letter_stream(PAYMENTS);
    Ok(DeadLetters::connect_with(&RedisUrl::from_env()?, &dlq).await?)
}

fn kind_name(letter: &DeadLetter) -> &'static str {
    letter.kind.map(|k| k.as_str()).unwrap_or("unknown")
}

/// Every dead letter, read 2 a page (a real tool would read hundreds).
async fn all_letters(dlq: &DeadLetters) -> Result<(Vec<DeadLetter>, usize), RecipeError> {
    let (mut letters, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let page = dlq.list(after, 2).await?;
        pages += 1;
        letters.extend(page.entries);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((letters, pages)),
        }
    }
}

/// Lists the dead letters and counts them by kind.
async fn list() -> Result<(), RecipeError> {
    let dlq = dead_letters().await?;
    let (letters, pages) = all_letters(&dlq).await?;
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for letter in &letters {
        println!("{} {:12} after {} deliveries: {}", letter.id, kind_name(letter), letter.deliveries, letter.error);
        *by_kind.entry(kind_name(letter)).or_insert(0) += 1;
    }
    let counts: Vec<String> = by_kind.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
    println!("{} dead letter(s) in {pages} page(s): {}", letters.len(), counts.join(", "));
    Ok(())
}

/// Replays the dead letters of one kind.
async fn replay(kind: &str) -> Result<(), RecipeError> {
    let dlq = dead_letters().await?;
    let (letters, _) = all_letters(&dlq).await?;
    let mut replayed = 0;
    for letter in letters.iter().filter(|l| kind_name(l) == kind) {
        if let Some(id) = dlq.replay(letter.id).await? {
            println!("replayed {} as {id}: {}", letter.id, letter.error);
            replayed += 1;
        }
    }
    println!("replayed {replayed} dead letter(s) of kind {kind}");
    Ok(())
}

/// Records what is left (a replay cannot fix it), then purges it.
async fn purge() -> Result<(), RecipeError> {
    let dlq = dead_letters().await?;
    for letter in all_letters(&dlq).await?.0 {
        println!("purging ({}): {}", kind_name(&letter), letter.error);
    }
    println!("purged {} dead letter(s)", dlq.purge().await?);
    Ok(())
}
