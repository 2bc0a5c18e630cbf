//! Batch handlers: every accepted return type, the batch keys, and what was registered.
use std::time::Duration;

use streamx::prelude::*;
use streamx::BatchOutcome;

#[derive(serde::Deserialize)]
struct Click {
    #[allow(dead_code)]
    page: String,
}

#[stream_consumer(stream = "clicks", group = "all-or-nothing", concurrency = 2, max_batch = 500, batch_wait = "200ms")]
async fn all_or_nothing(batch: Vec<Message<Click>>) -> Result<(), HandlerError> {
    let _ = batch.len();
    Ok(())
}

#[stream_consumer(stream = "clicks", group = "per-message")]
async fn per_message(batch: Vec<Message<Click>>) -> BatchOutcome {
    let mut outcome = BatchOutcome::new();
    for msg in &batch {
        outcome.fail(msg.id(), "not today");
    }
    outcome
}

#[stream_consumer(stream = "clicks", group = "fallible-per-message", batch_wait = "0ms")]
async fn fallible(_batch: Vec<Message<Click>>) -> Result<BatchOutcome, std::io::Error> {
    Ok(BatchOutcome::new())
}

#[stream_consumer(stream = "clicks", group = "unit")]
async fn unit(_batch: std::vec::Vec<Message<Click>>) {}

fn consumer(group: &str) -> streamx::Consumer {
    streamx::registered()
        .into_iter()
        .map(|registration| registration.to_consumer())
        .find(|consumer| consumer.group() == group)
        .unwrap_or_else(|| panic!("`{group}` is not registered"))
}

fn main() {
    let first = consumer("all-or-nothing");
    assert!(first.is_batch());
    assert_eq!(first.options().concurrency, 2);
    assert_eq!(first.options().max_batch, 500);
    assert_eq!(first.options().batch_wait, Duration::from_millis(200));
    for group in ["per-message", "fallible-per-message", "unit"] {
        assert!(consumer(group).is_batch(), "{group}");
    }
    assert_eq!(consumer("fallible-per-message").options().batch_wait, Duration::ZERO);
    assert_eq!(consumer("unit").options().max_batch, streamx::ConsumerOptions::DEFAULT.max_batch);
}
