use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(stream = "orders", group = "a", retention())]
async fn no_bound(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "b", retention(max_len = -1))]
async fn negative(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "c", retention(max_len = 10, max_age = "7 fortnights"))]
async fn bad_age(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "d", retention(max_len = 10, drop_unread = 1))]
async fn not_a_bool(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "e", retention = 1000)]
async fn not_a_list(_msg: Message<Order>) {}

#[stream_consumer(stream = "orders", group = "f", delete_on_ack = "true")]
async fn quoted_bool(_msg: Message<Order>) {}

fn main() {}
