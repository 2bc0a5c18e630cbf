use streamx::prelude::*;

#[periodic(cron = "0 */5 * * * * * *", stream = "", catch_up = "yes", every = "5m", stream = "b")]
async fn report() -> u64 {
    1
}

#[periodic(stream = "reports")]
async fn no_cron() {}

fn main() {}
