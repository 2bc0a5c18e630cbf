use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Payment {}

#[stream_consumer(stream = "payments", group = "ledger", dedupe = 86400)]
async fn book(_msg: Message<Payment>) {}

#[stream_consumer(stream = "payments", group = "mail", dedupe = "0s")]
async fn mail(_msg: Message<Payment>) {}

#[stream_consumer(stream = "payments", group = "audit", dedupe = "a day")]
async fn audit(_msg: Message<Payment>) {}

fn main() {}
