//! Every key at once; the binary checks what was registered.
use std::time::Duration;

use streamx::prelude::*;
use streamx::{Backoff, ConsumerOptions, DeadLetterTarget, RetryPolicy, StartFrom};

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    id: u64,
}

#[stream_consumer(
    stream = "orders",
    group = "billing",
    consumer = "worker-1",
    name = "billing::charge",
    concurrency = 8,
    batch_size = 100,
    readers = 2,
    block = "2s",
    start = "begin",
    max_retries = 5,
    backoff(initial = "1s", multiplier = 2.0, max = "30s"),
    dlq = true,
    dlq_max_len = 5000,
    claim_idle = "30s",
    max_buffered_bytes = "16MiB",
    max_payload_bytes = 65536,
    timeout = "45s",
    dedupe = "24h",
    ordered = true,
    retention(max_len = 1000000, max_age = "7d"),
    delete_on_ack = true,
    codec = "json",
    middleware = [pass_through, self::PASS],
    rate_limit = "500/s",
    crate = ::streamx,
)]
async fn charge(_msg: Message<Order>) -> Result<(), HandlerError> {
    Ok(())
}

#[stream_consumer(
    stream = "orders",
    group = "audit",
    start = "new",
    max_retries = 0,
    backoff(multiplier = 3),
    dlq = false,
    dlq_max_len = "unbounded",
    max_buffered_bytes = 1_000_000usize,
    max_payload_bytes = "512 KiB",
    retention(max_len = 10, drop_unread = true),
)]
async fn audit(_msg: Message<Order>) -> Result<(), HandlerError> {
    Ok(())
}

#[stream_consumer(
    stream = "orders",
    group = "replay",
    start = "1700000000000-0",
    backoff(),
    dlq = "orders-dead",
    max_buffered_bytes = "1GB",
    max_payload_bytes = "123B",
    crate = "streamx",
)]
async fn replay(_msg: Message<Order>) -> Result<(), HandlerError> {
    Ok(())
}

#[stream_consumer(topic = "payments", shards = 32, group = "ledger", ordered = false)]
async fn ledger(_msg: Message<Order>) {}

#[stream_consumer(topic = "payments", group = "audit")]
async fn audit_payments(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "replay-ms", start = "1700000000000")]
pub(crate) async fn replay_from_millis(_msg: Message<Order>) {}

/// The registration the macro built, by name.
async fn pass_through(delivery: streamx::Delivery, next: streamx::Next) -> streamx::Outcome {
    next.run(delivery).await
}

struct Pass;

const PASS: Pass = Pass;

impl streamx::Middleware for Pass {
    fn call(&self, delivery: streamx::Delivery, next: streamx::Next) -> streamx::BoxFuture<'static, streamx::Outcome> {
        Box::pin(next.run(delivery))
    }
}

fn layers(name: &str) -> usize {
    let registration = streamx::registered().into_iter().find(|registration| registration.name() == name).unwrap();
    registration.to_consumer().layers()
}

fn options(name: &str) -> ConsumerOptions {
    let registration = streamx::registered()
        .into_iter()
        .find(|registration| registration.name() == name)
        .unwrap_or_else(|| panic!("`{name}` is not registered"));
    registration.to_consumer().options().clone()
}

fn main() {
    assert_eq!(
        options("billing::charge"),
        ConsumerOptions {
            consumer_name: Some("worker-1"),
            concurrency: 8,
            batch_size: Some(100),
            readers: Some(2),
            block: Duration::from_secs(2),
            start: StartFrom::Beginning,
            retry: RetryPolicy {
                max_retries: 5,
                backoff: Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(30)),
                dead_letter: DeadLetterTarget::Default,
                dlq_max_len: Some(5000),
            },
            claim_idle: Duration::from_secs(30),
            max_buffered_bytes: Some(16 * 1024 * 1024),
            max_payload_bytes: Some(65_536),
            timeout: Some(Duration::from_secs(45)),
            dedupe: Some(Duration::from_secs(24 * 60 * 60)),
            retention: Some(streamx::Retention::new().max_len(1_000_000).max_age(Duration::from_secs(7 * 24 * 3600))),
            delete_on_ack: true,
            ordered: Some(true),
            codec: streamx::Codec::Json,
            rate_limit: Some(streamx::RateLimit::per_second(500)),
            ..ConsumerOptions::DEFAULT
        }
    );

    assert_eq!(layers("billing::charge"), 2);
    assert_eq!(layers(concat!(module_path!(), "::audit")), 0);

    let audit = options(concat!(module_path!(), "::audit"));
    assert_eq!(audit.start, StartFrom::New);
    assert_eq!(audit.retry.max_retries, 0);
    assert_eq!(audit.retry.backoff, Backoff::DEFAULT.with_multiplier(3.0));
    assert_eq!(audit.retry.dead_letter, DeadLetterTarget::Disabled);
    assert_eq!(audit.retry.dlq_max_len, None);
    assert_eq!(audit.max_buffered_bytes, Some(1_000_000));
    assert_eq!(audit.max_payload_bytes, Some(512 * 1024));
    assert_eq!(audit.retention, Some(streamx::Retention::new().max_len(10).drop_unread(true)));
    assert!(!audit.delete_on_ack);

    let replay = options(concat!(module_path!(), "::replay"));
    assert_eq!(replay.start, StartFrom::Id("1700000000000-0"));
    assert_eq!(replay.retry.backoff, Backoff::DEFAULT);
    assert_eq!(replay.retry.dead_letter, DeadLetterTarget::Stream("orders-dead"));
    assert_eq!(replay.max_buffered_bytes, Some(1_000_000_000));
    assert_eq!(replay.max_payload_bytes, Some(123));

    let from_millis = options(concat!(module_path!(), "::replay_from_millis"));
    assert_eq!(from_millis.start, StartFrom::Id("1700000000000"));
    let expected = ConsumerOptions {
        start: StartFrom::Id("1700000000000"),
        ..ConsumerOptions::DEFAULT
    };
    assert_eq!(from_millis, expected);

    let ledger = options(concat!(module_path!(), "::ledger"));
    assert!(ledger.topic);
    assert_eq!(ledger.shards, Some(32));
    assert!(!ledger.effective_ordered());
    let audit_payments = options(concat!(module_path!(), "::audit_payments"));
    assert!(audit_payments.topic && audit_payments.effective_ordered());
    assert_eq!(audit_payments.shards, None);

    assert_eq!(streamx::registered().len(), 6);
}
