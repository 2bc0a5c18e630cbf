use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Click {}

#[stream_consumer(stream = "clicks", group = "warehouse", max_batch = 100, batch_wait = "1s")]
async fn store(_msg: Message<Click>) {}

fn main() {}
