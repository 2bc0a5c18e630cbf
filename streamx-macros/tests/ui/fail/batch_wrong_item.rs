use streamx::prelude::*;

#[stream_consumer(stream = "clicks", group = "warehouse")]
async fn store(_batch: Vec<String>) {}

fn main() {}
