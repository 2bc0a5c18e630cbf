//! The complete example of the README's "Testing" section, compiled and run: the text
//! between the markers below must appear in README.md as it is (checked by the last test).
#![allow(missing_docs, clippy::unwrap_used)]

// README example start
use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx::testing::TestRuntime;

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    amount_cents: i64,
}

// In your crate this is in src/; every #[stream_consumer] linked into the test runs.
#[stream_consumer(stream = "orders", group = "billing")]
async fn charge(msg: Message<Order>) -> Result<(), HandlerError> {
    if msg.payload().amount_cents < 0 {
        return Err(HandlerError::permanent("negative amount"));
    }
    Ok(())
}

// A unit test: no Redis, the handler is a plain async fn.
#[tokio::test]
async fn a_negative_amount_is_refused_for_good() {
    let msg = Message::new("orders", MessageId::new(1, 0), Order { id: 7, amount_cents: -5 });
    let err = charge(msg).await.unwrap_err();
    assert!(err.is_permanent());
}

// An integration test: the consumers against a throwaway redis-server of their own.
#[tokio::test]
async fn orders_are_charged_or_dead_lettered() {
    let app = TestRuntime::start().await.unwrap();
    app.publish("orders", &Order { id: 1, amount_cents: 500 }).await.unwrap();
    app.publish("orders", &Order { id: 2, amount_cents: -1 }).await.unwrap();
    app.wait_idle().await.unwrap(); // everything read, handled and acknowledged
    assert_eq!(app.handled(), 1);
    assert_eq!(app.dead_letters("orders").await.unwrap()[0].error, "negative amount");
}
// README example end

#[test]
fn the_readme_shows_this_example_as_it_is() {
    let this = include_str!("readme_testing.rs");
    let start = "// README example start\n";
    let example = &this[this.find(start).unwrap() + start.len()..this.find("// README example end").unwrap()];
    let readme = include_str!("../../../README.md");
    assert!(readme.contains(example), "README.md's Testing section differs from tests/app/tests/readme_testing.rs");
}
