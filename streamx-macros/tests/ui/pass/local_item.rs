//! A consumer declared inside a function body, as tests and examples sometimes do.
use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

fn main() {
    #[stream_consumer(stream = "orders", group = "local")]
    async fn charge(_msg: Message<Order>) -> Result<(), HandlerError> {
        Ok(())
    }

    let _handler = charge;
    let registered = streamx::registered();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].name(), concat!(module_path!(), "::charge"));
}
