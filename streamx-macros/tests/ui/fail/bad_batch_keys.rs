use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Click {}

#[stream_consumer(stream = "clicks", group = "warehouse", max_batch = 0, batch_wait = 50)]
async fn store(_batch: Vec<Message<Click>>) {}

fn main() {}
