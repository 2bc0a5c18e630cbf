use streamx::prelude::*;

#[derive(serde::Deserialize)]
struct Hook {}

#[stream_consumer(stream = "hooks", group = "a", rate_limit = 500)]
async fn a(_msg: Message<Hook>) {}

#[stream_consumer(stream = "hooks", group = "b", rate_limit = "500")]
async fn b(_msg: Message<Hook>) {}

#[stream_consumer(stream = "hooks", group = "c", rate_limit = "0/s")]
async fn c(_msg: Message<Hook>) {}

#[stream_consumer(stream = "hooks", group = "d", rate_limit = "many/s")]
async fn d(_msg: Message<Hook>) {}

#[stream_consumer(stream = "hooks", group = "e", rate_limit = "5/fortnight")]
async fn e(_msg: Message<Hook>) {}

#[stream_consumer(stream = "hooks", group = "f", rate_limit = "5/2d")]
async fn f(_msg: Message<Hook>) {}

fn main() {}
