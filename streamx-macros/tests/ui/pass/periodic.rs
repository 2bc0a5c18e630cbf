//! `#[periodic]`: with and without the tick, a payload or a `Result`, `catch_up`, a renamed
//! crate; each registers a job the runtime can turn into a `PeriodicJob`, and the fns stay
//! callable.
#![deny(unused_qualifications)]

use streamx::prelude::*;

#[derive(serde::Serialize)]
struct Report {
    at_ms: u64,
}

#[periodic(cron = "0 */5 * * * *", stream = "reports")]
async fn report(tick: Tick) -> Result<Report, String> {
    Ok(Report { at_ms: tick.unix_ms() })
}

#[periodic(cron = "0 0 * * *", stream = "daily", name = "daily", catch_up = true)]
async fn daily() -> &'static str {
    "a new day"
}

#[periodic(cron = "@hourly", stream = "units", name = "unit")]
async fn unit() {}

mod renamed {
    extern crate streamx as sx;

    // Shadowed std names must not break the expansion.
    #[allow(dead_code)]
    struct String;
    #[allow(dead_code)]
    enum Result {}

    #[sx::periodic(crate = sx, cron = "* * * * * *", stream = "beats", name = "beat")]
    async fn beat(tick: sx::Tick) -> u64 {
        tick.unix_ms()
    }
}

fn main() {
    let jobs: Vec<_> = streamx::registered_periodic().iter().map(|r| r.to_job()).collect();
    let names: Vec<_> = jobs.iter().map(|j| j.name().to_string()).collect();
    assert_eq!(names.len(), 4);
    assert!(names.contains(&"daily".to_string()) && names.contains(&"beat".to_string()));
    assert!(names.iter().any(|n| n.ends_with("::report")), "{names:?}");
    let job = jobs.iter().find(|j| j.name() == "daily").unwrap();
    assert!(job.catches_up());
    assert_eq!((job.cron(), job.stream()), ("0 0 * * *", "daily"));
    let _ = (report(Tick::from_unix_ms(0)), daily(), unit());
}
