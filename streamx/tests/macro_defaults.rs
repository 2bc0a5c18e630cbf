//! Pins the macro to the runtime's defaults: a setting left out of `#[stream_consumer]`
//! keeps whatever the runtime's default is, read back here through the registration's
//! options and compared with the runtime's own constants (never with literal values), so a
//! change of a runtime default needs no change in the macro.

use std::time::Duration;

use streamx::prelude::*;
use streamx::{Backoff, ConsumerOptions, RetryPolicy};

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    id: u64,
}

#[stream_consumer(stream = "orders", group = "bare")]
async fn bare(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "multiplier", backoff(multiplier = 3.0))]
async fn multiplier_only(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "initial", backoff(initial = "10ms"))]
async fn initial_only(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "max", backoff(max = "1h"))]
async fn max_only(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "empty", backoff())]
async fn empty_backoff(_msg: Message<Order>) {}

/// The options of the registration of `fn_name` in this file, read back from the registry.
fn options(fn_name: &str) -> ConsumerOptions {
    let name = format!("{}::{fn_name}", module_path!());
    let registration = streamx::registered()
        .into_iter()
        .find(|registration| registration.name() == name)
        .unwrap_or_else(|| panic!("`{name}` is not registered"));
    registration.to_consumer().options().clone()
}

/// The runtime's default options with `backoff` in place of the default backoff.
fn defaults_with(backoff: Backoff) -> ConsumerOptions {
    ConsumerOptions { retry: RetryPolicy { backoff, ..RetryPolicy::DEFAULT }, ..ConsumerOptions::DEFAULT }
}

#[test]
fn a_consumer_without_settings_has_the_runtime_defaults() {
    assert_eq!(options("bare"), ConsumerOptions::default());
    assert_eq!(options("empty_backoff"), ConsumerOptions::default());
}

#[test]
fn backoff_multiplier_alone_keeps_the_runtime_initial_and_max() {
    let options = options("multiplier_only");
    let backoff = options.retry.backoff;
    assert_eq!(backoff.multiplier, 3.0);
    assert_eq!(backoff.initial, Backoff::default().initial);
    assert_eq!(backoff.max, Backoff::default().max);
    assert_eq!(options, defaults_with(Backoff { multiplier: 3.0, ..Backoff::DEFAULT }));
}

#[test]
fn backoff_initial_alone_keeps_the_runtime_multiplier_and_max() {
    let backoff = options("initial_only").retry.backoff;
    assert_eq!(backoff, Backoff { initial: Duration::from_millis(10), ..Backoff::DEFAULT });
}

#[test]
fn backoff_max_alone_keeps_the_runtime_initial_and_multiplier() {
    let backoff = options("max_only").retry.backoff;
    assert_eq!(backoff, Backoff { max: Duration::from_secs(3600), ..Backoff::DEFAULT });
}

#[stream_consumer(stream = "orders", group = "limited", rate_limit = "10/500ms")]
async fn limited(_msg: Message<Order>) {}

#[test]
fn rate_limit_alone_sets_only_the_limit() {
    let options = options("limited");
    assert_eq!(options.rate_limit, Some(streamx::RateLimit::new(10, Duration::from_millis(500))));
    assert_eq!(options, ConsumerOptions { rate_limit: options.rate_limit, ..ConsumerOptions::DEFAULT });
}
