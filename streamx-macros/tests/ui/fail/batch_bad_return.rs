use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Click {}

#[stream_consumer(stream = "clicks", group = "warehouse")]
async fn store(batch: Vec<Message<Click>>) -> Vec<Result<(), HandlerError>> {
    batch.iter().map(|_| Ok(())).collect()
}

fn main() {}
