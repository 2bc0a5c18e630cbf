//! `streamx::testing::TestRuntime`, the harness users test their consumers with: the
//! registered consumers run against a server of their own, the waits follow the runtime's
//! counters, dead letters are visible, parallel runtimes are isolated.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx::testing::{TestRuntime, TestingError};
use streamx::{Backoff, FailureKind, Inspector};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Greeting {
    name: String,
    /// Fail every delivery.
    #[serde(default)]
    fail: bool,
    /// Wait for a permit of the test's [`Gate`] before succeeding.
    #[serde(default)]
    hold: bool,
}

impl Greeting {
    fn to(name: &str) -> Self {
        Greeting { name: name.to_string(), fail: false, hold: false }
    }
}

/// The names greeted by this runtime's handler (application state: one per TestRuntime).
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Seen {
    fn names(&self) -> Vec<String> {
        let mut names = self.0.lock().unwrap().clone();
        names.sort();
        names
    }
}

/// Holds back messages published with `hold: true` until the test adds permits.
struct Gate(Semaphore);

#[stream_consumer(stream = "harness.greetings", group = "greeter", concurrency = 4, max_retries = 1)]
async fn greet(msg: Message<Greeting>) -> Result<(), HandlerError> {
    let greeting = msg.payload();
    if greeting.fail {
        return Err(format!("cannot greet {}", greeting.name).into());
    }
    if greeting.hold {
        let gate = msg.state::<Arc<Gate>>().ok_or("no gate in the state")?;
        gate.0.acquire().await?.forget();
    }
    msg.state::<Arc<Seen>>().ok_or("no Seen in the state")?.0.lock().unwrap().push(greeting.name.clone());
    Ok(())
}

#[stream_consumer(stream = "harness.audit", group = "auditor")]
async fn audit(_msg: Message<serde_json::Value>) {}

/// A test runtime whose handler records into the returned [`Seen`] and waits at the
/// returned [`Gate`], with retries 10 ms apart.
fn harness() -> (streamx::testing::TestRuntimeBuilder, Arc<Seen>, Arc<Gate>) {
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Gate(Semaphore::new(0))));
    let builder = TestRuntime::builder().state(seen.clone()).state(gate.clone()).backoff(Backoff::new(
        Duration::from_millis(10),
        1.0,
        Duration::from_millis(10),
    ));
    (builder, seen, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_consumer_runs_against_its_own_server() {
    let (builder, seen, _) = harness();
    let app = builder.start().await.unwrap();
    assert_eq!(app.consumer_names(), vec!["testing_harness::audit", "testing_harness::greet"]);
    let id = app.publish("harness.greetings", &Greeting::to("ada")).await.unwrap();
    app.wait_until_handled(1).await.unwrap();
    app.wait_idle().await.unwrap();
    let stats = app.stats();
    assert_eq!(stats["testing_harness::greet"].succeeded, 1);
    assert_eq!(stats["testing_harness::audit"].delivered, 0);
    let group = Inspector::connect(app.url()).await.unwrap().group("harness.greetings", "greeter").await.unwrap();
    let group = group.unwrap();
    assert_eq!((group.pending, group.lag, group.last_delivered_id), (0, Some(0), Some(id)));
    assert_eq!(seen.names(), vec!["ada"]);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_handled_returns_at_the_count_and_not_before() {
    let (builder, seen, gate) = harness();
    let app = builder.only(["testing_harness::greet"]).wait_limit(Duration::from_millis(500)).start().await.unwrap();
    assert_eq!(app.consumer_names(), vec!["testing_harness::greet"]);
    app.publish("harness.greetings", &Greeting { hold: true, ..Greeting::to("held") }).await.unwrap();
    for name in ["a", "b"] {
        app.publish("harness.greetings", &Greeting::to(name)).await.unwrap();
    }
    app.wait_until_handled(2).await.unwrap();
    assert_eq!(app.handled(), 2, "the held message is still running");

    // The third one is held: waiting for it times out, naming what was awaited.
    let err = app.wait_until_handled(3).await.unwrap_err();
    assert!(matches!(&err, TestingError::Timeout { what, .. } if what == "3 handled message(s)"), "{err}");
    let err = app.wait_idle().await.unwrap_err();
    assert!(err.to_string().contains("1 pending"), "{err}");

    assert_eq!(seen.names(), vec!["a", "b"]);
    gate.0.add_permits(1);
    app.wait_until_handled(3).await.unwrap();
    app.wait_idle().await.unwrap();
    assert_eq!(app.handled(), 3);
    assert_eq!(seen.names(), vec!["a", "b", "held"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_show_a_failing_message() {
    let app = harness().0.streams(["harness.greetings"]).start().await.unwrap();
    assert_eq!(app.consumer_names(), vec!["testing_harness::greet"]);
    let bad = app.publish("harness.greetings", &Greeting { fail: true, ..Greeting::to("nobody") }).await.unwrap();
    app.publish("harness.greetings", &Greeting::to("ok")).await.unwrap();
    app.wait_until_dead_lettered(1).await.unwrap();
    app.wait_idle().await.unwrap();

    let letters = app.dead_letters("harness.greetings").await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.origin_id, Some(bad));
    assert_eq!(letter.kind, Some(FailureKind::Error));
    assert_eq!(letter.deliveries, 2, "max_retries = 1: two deliveries, 10 ms apart with the test backoff");
    assert_eq!(letter.error, "cannot greet nobody");
    let payload: Greeting = serde_json::from_slice(letter.payload.as_deref().unwrap()).unwrap();
    assert_eq!(payload.name, "nobody");
    let stats = app.stats()["testing_harness::greet"];
    assert_eq!((stats.succeeded, stats.retried, stats.dead_lettered), (1, 1, 1));
    assert_eq!(app.dead_letter_stream("harness.greetings"), "{harness.greetings}:dlq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_test_runtimes_in_parallel_do_not_share_messages() {
    let ((first, first_seen, _), (second, second_seen, _)) = (harness(), harness());
    let (first, second) = tokio::join!(first.start(), second.start());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.url(), second.url());
    let publish = |app: &TestRuntime, names: &'static [&'static str]| {
        let producer = app.producer().clone();
        async move {
            for name in names {
                producer.publish("harness.greetings", &Greeting::to(name)).await.unwrap();
            }
        }
    };
    tokio::join!(publish(&first, &["a1", "a2", "a3"]), publish(&second, &["b1", "b2"]));
    let (one, two) = tokio::join!(first.wait_idle(), second.wait_idle());
    one.unwrap();
    two.unwrap();
    assert_eq!((first.handled(), second.handled()), (3, 2));
    assert_eq!(first_seen.names(), vec!["a1", "a2", "a3"]);
    assert_eq!(second_seen.names(), vec!["b1", "b2"]);
    let (first_len, second_len) = (
        Inspector::connect(first.url()).await.unwrap().stream_len("harness.greetings").await.unwrap(),
        Inspector::connect(second.url()).await.unwrap().stream_len("harness.greetings").await.unwrap(),
    );
    assert_eq!((first_len, second_len), (3, 2));
    let (one, two) = tokio::join!(first.shutdown(), second.shutdown());
    one.unwrap();
    two.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_consumer_name_is_a_clear_error() {
    let err = TestRuntime::builder().only(["testing_harness::nope"]).start().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TestingError::Runtime { .. }), "{err:?}");
    assert!(text.contains("no consumer is registered as `testing_harness::nope`"), "{text}");
    assert!(text.contains("testing_harness::greet"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_it_stops_the_consumers_then_the_server() {
    let (builder, _, _) = harness();
    let app = builder.start().await.unwrap();
    let addr = app.server().unwrap().addr();
    app.publish("harness.greetings", &Greeting::to("last")).await.unwrap();
    app.wait_until_handled(1).await.unwrap();
    drop(app);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the server at {addr} still runs after the drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
