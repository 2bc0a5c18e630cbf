use streamx::prelude::*;

struct NotDeserialize {}

#[stream_consumer(stream = "orders", group = "billing")]
async fn charge(_msg: Message<NotDeserialize>) {}

fn main() {}
