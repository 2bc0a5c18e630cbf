//! Working with dead letters: inspect them page by page, count and filter them by kind,
//! replay the ones a fix makes good (transient `error`s once the account is unlocked), and
//! purge the rest (poison input, permanent refusals) after recording them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamx::{Backoff, Consumer, DeadLetter, FailureKind, HandlerError, Message, Producer, PublishOptions, Runtime};

use crate::{dead_letters_of, letter_payload, wait_settled, wait_until, RecipeError, RECIPE_LIMIT};

/// A payment to book.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    /// Payment id.
    pub id: u64,
    /// The account to credit.
    pub account: String,
    /// Cents; must be positive.
    pub amount_cents: i64,
}

/// The ledger: books payments; account `acc-9` is locked (for an audit) until unlocked.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Set when the audit is over.
    pub unlocked: AtomicBool,
    booked: Mutex<Vec<u64>>,
}

impl Ledger {
    /// Payment ids booked, sorted.
    pub fn booked(&self) -> Vec<u64> {
        let mut booked = self.booked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        booked.sort();
        booked.dedup();
        booked
    }
}

async fn book(msg: Message<Payment>) -> Result<(), HandlerError> {
    let ledger = msg.state::<Arc<Ledger>>().ok_or("no ledger in the state")?;
    let payment = msg.payload();
    if payment.amount_cents <= 0 {
        return Err(HandlerError::permanent(format!("payment {}: amount must be positive", payment.id)));
    }
    if payment.account == "acc-9" && !ledger.unlocked.load(Ordering::SeqCst) {
        return Err(format!("payment {}: account acc-9 is locked", payment.id).into());
    }
    ledger.booked.lock().unwrap_or_else(|e| e.into_inner()).push(payment.id);
    Ok(())
}

/// What the recipe did.
#[derive(Debug)]
pub struct Report {
    /// Entries published (payments and two malformed ones).
    pub published: usize,
    /// Dead letters by kind after the first pass.
    pub by_kind: BTreeMap<String, usize>,
    /// Pages read to list them (2 letters a page).
    pub pages: usize,
    /// Payment ids of the dead letters of kind `error` that were replayed.
    pub replayed: Vec<u64>,
    /// The dead letters purged: `(kind, error)`.
    pub purged: Vec<(String, String)>,
    /// What `purge` reported removing.
    pub purge_count: u64,
    /// Dead letters left at the end.
    pub left: u64,
    /// Payments booked at the end.
    pub booked: Vec<u64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "published {} entries; dead letters by kind ({} pages): {:?}",
            self.published, self.pages, self.by_kind
        )?;
        writeln!(f, "account unlocked; replayed the `error` ones: payments {:?}", self.replayed)?;
        for (kind, error) in &self.purged {
            writeln!(f, "purged ({kind}): {error}")?;
        }
        writeln!(f, "purge removed {}; {} dead letter(s) left", self.purge_count, self.left)?;
        write!(f, "payments booked: {:?}", self.booked)
    }
}

fn kind_name(letter: &DeadLetter) -> String {
    letter.kind.map(|k| k.as_str().to_string()).unwrap_or_else(|| "unknown".into())
}

/// Runs the recipe against `url`, with the stream `<prefix>.payments`.
pub async fn run(url: String, prefix: String) -> Result<Report, RecipeError> {
    let stream = format!("{prefix}.payments");
    let ledger = Arc::new(Ledger::default());
    let consumer = Consumer::new(stream.clone(), "ledger", book)
        .name_as("ledger")
        .max_retries(1)
        .backoff(Backoff::new(Duration::from_millis(20), 1.0, Duration::from_millis(20)));
    let running = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(consumer)
        .state(ledger.clone())
        .build()?
        .start()
        .await?;

    let producer = Producer::connect(&url).await?;
    let payment = |id, account: &str, amount_cents| Payment { id, account: account.into(), amount_cents };
    let payments = [
        payment(1, "acc-1", 500),
        payment(2, "acc-2", 700),
        payment(3, "acc-9", 900),  // locked: fails, retried once, dead-lettered (kind error)
        payment(4, "acc-1", -100), // refused for good (kind permanent)
        payment(5, "acc-9", 300),  // locked
        payment(6, "acc-3", 1_100),
    ];
    producer.publish_batch(&stream, &payments).await?;
    // Two malformed entries from another producer: poison, dead-lettered unread.
    producer.publish_raw(&stream, "{\"id\": 7, \"account\": ".into(), &PublishOptions::new()).await?;
    producer.publish_raw(&stream, "{\"id\": \"eight\"}".into(), &PublishOptions::new()).await?;
    let published = payments.len() + 2;
    wait_settled(&running, published as u64, "every entry to be booked or dead-lettered").await?;

    // Inspect: page through the dead letters, counting them by kind.
    let dlq = dead_letters_of(&url, &stream).await?;
    let (mut letters, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let page = dlq.list(after, 2).await?;
        pages += 1;
        letters.extend(page.entries);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut by_kind = BTreeMap::new();
    for letter in &letters {
        *by_kind.entry(kind_name(letter)).or_insert(0) += 1;
    }

    // The audit is over: replay only what failed for a transient reason.
    ledger.unlocked.store(true, Ordering::SeqCst);
    let mut replayed = Vec::new();
    for letter in letters.iter().filter(|l| l.kind == Some(FailureKind::Error)) {
        let payment: Payment = letter_payload(letter)?;
        if dlq.replay(letter.id).await?.is_some() {
            replayed.push(payment.id);
        }
    }
    replayed.sort();
    let expected = 3 + replayed.len();
    wait_until(RECIPE_LIMIT, "the replayed payments to be booked", || {
        let booked = ledger.booked().len();
        async move { Ok(booked >= expected) }
    })
    .await?;
    running.shutdown().await?;

    // What is left cannot be fixed by a replay: keep a record, then purge.
    let purged: Vec<(String, String)> =
        dlq.list(None, 100).await?.entries.iter().map(|l| (kind_name(l), l.error.clone())).collect();
    let purge_count = dlq.purge().await?;
    Ok(Report {
        published,
        by_kind,
        pages,
        replayed,
        purged,
        purge_count,
        left: dlq.count().await?,
        booked: ledger.booked(),
    })
}
