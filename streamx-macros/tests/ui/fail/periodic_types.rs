use streamx::prelude::*;

struct NotSerialize;

#[periodic(cron = "* * * * *", stream = "reports")]
async fn not_serialize() -> NotSerialize {
    NotSerialize
}

#[periodic(cron = "* * * * *", stream = "reports")]
async fn wrong_arg(n: u64) -> u64 {
    n
}

struct NotDisplay;

#[periodic(cron = "* * * * *", stream = "reports")]
async fn error_not_display() -> Result<u64, NotDisplay> {
    Ok(1)
}

fn main() {}
