use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Ping {}

#[stream_consumer(stream = "pings", group = "g")]
async fn no_arrow(_msg: Message<Ping>) {}

#[stream_consumer(stream = "pings", group = "h")]
async fn explicit_unit(_msg: Message<Ping>) -> () {}

fn main() {}
