use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    id: u64,
}

#[stream_consumer(stream = "orders", group = "billing", concurrency = 8)]
async fn charge(msg: Message<Order>) -> Result<(), HandlerError> {
    let _ = msg;
    Ok(())
}

fn main() {
    let registered = streamx::registered();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].name(), concat!(module_path!(), "::charge"));
    let consumer = registered[0].to_consumer();
    assert_eq!(consumer.stream(), "orders");
    assert_eq!(consumer.group(), "billing");
    assert_eq!(consumer.options().concurrency, 8);
    assert_eq!(consumer.location().file, file!());
    assert_eq!(consumer.location().line, 9);
}
