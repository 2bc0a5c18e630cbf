//! The analytics recipe (`examples/analytics.rs`) against a throwaway redis-server: its
//! core, included from `examples/recipes/analytics.rs`, counts a known workload per page and
//! per minute exactly, in batched store writes, and dead-letters only the bad views.

#![allow(clippy::unwrap_used)]

mod common;

#[path = "../../../examples/recipes/analytics.rs"]
mod analytics;

use std::time::Duration;

use common::{wait_until, TestRedis, Topology};
use streamx::testing::unique_name;
use streamx::{DeadLetters, FailureKind, Producer, Runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analytics_recipe_counts_views_per_page_and_minute() {
    const VIEWS: u64 = 5_000;
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("page_views");
    let (views, expected) = analytics::workload(VIEWS, 5, analytics::minute_of(1_700_000_000_000));
    let valid: u64 = expected.values().sum();
    assert!(valid < VIEWS, "the workload has bad views");
    Producer::connect(&url).await.unwrap().publish_batch(&stream, &views).await.unwrap();

    let store = analytics::Store::default();
    let running = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(analytics::consumer(&stream, "per-minute"))
        .state(store.clone())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let letters = DeadLetters::connect(&url, &format!("{{{stream}}}:dlq")).await.unwrap();
    wait_until(Duration::from_secs(30), "every view counted or dead-lettered", || async {
        store.total() == valid && letters.count().await.unwrap() == VIEWS - valid
    })
    .await
    .unwrap();
    running.shutdown().await.unwrap();

    assert_eq!(store.counts(), expected, "views per (minute, page)");
    assert_eq!(store.counts().keys().map(|(minute, _)| *minute).collect::<std::collections::BTreeSet<_>>().len(), 5);
    assert!(store.writes() <= VIEWS / 100, "{} writes for {VIEWS} views: batched", store.writes());
    let bad = letters.list(None, 100).await.unwrap().entries;
    assert!(
        bad.iter().all(|l| l.kind == Some(FailureKind::Permanent) && l.error.contains("without a page")),
        "{bad:?}"
    );
}
