use streamx::prelude::*;

#[periodic(cron = "* * * * *", stream = "reports")]
fn not_async() -> u64 {
    1
}

#[periodic(cron = "* * * * *", stream = "reports")]
async fn two(a: Tick, b: Tick) -> u64 {
    a.unix_ms() + b.unix_ms()
}

#[periodic(cron = "* * * * *", stream = "reports")]
async fn generic<T: Default>() -> u64 {
    1
}

fn main() {}
