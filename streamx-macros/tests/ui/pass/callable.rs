//! The annotated fn is emitted unchanged: still an ordinary async fn.
use streamx::prelude::*;

/// The payload.
#[derive(serde::Deserialize)]
pub struct Order {}

#[stream_consumer(stream = "orders", group = "billing")]
async fn charge(_msg: Message<Order>) -> Result<(), HandlerError> {
    Ok(())
}

#[stream_consumer(stream = "orders", group = "visible")]
pub async fn visible(_msg: Message<Order>) {}

fn main() {
    let _as_value = charge;
    let _as_fn_pointer: fn(Message<Order>) -> _ = charge;
    let _future_type = visible;
    fn takes_handler<F, Fut>(_f: F)
    where
        F: Fn(Message<Order>) -> Fut,
        Fut: std::future::Future<Output = Result<(), HandlerError>> + Send,
    {
    }
    takes_handler(charge);
}
