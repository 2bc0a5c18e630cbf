use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "a")]
async fn string_error(_msg: Message<Order>) -> Result<(), String> {
    Err("declined".to_string())
}

#[stream_consumer(stream = "orders", group = "b")]
async fn io_error(_msg: Message<Order>) -> Result<(), std::io::Error> {
    Ok(())
}

#[stream_consumer(stream = "orders", group = "c")]
async fn static_str_error(_msg: Message<Order>) -> Result<(), &'static str> {
    Ok(())
}

#[stream_consumer(stream = "orders", group = "d")]
async fn handler_error(_msg: Message<Order>) -> std::result::Result<(), HandlerError> {
    Ok(())
}

fn main() {}
