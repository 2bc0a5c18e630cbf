//! Every recipe's core against a throwaway redis-server, with the outcome asserted.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeSet;

use streamx::testing::{redis_cli, unique_name, RedisServer};
use streamx_examples::recipes;

fn server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("cannot start redis-server: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_sourcing() {
    use recipes::event_sourcing::{run, Account};
    let server = server();
    let report = run(server.url(), unique_name("es")).await.unwrap();
    assert_eq!(report.events, 9);
    assert_eq!(report.rejected, vec!["acc-1: cannot withdraw 50000, the balance is 13000".to_string()]);
    let expected = Account { owner: Some("alice".into()), balance: 11_000, version: 6 };
    assert_eq!(report.replayed, expected);
    assert_eq!(report.snapshot.state, Account { owner: Some("alice".into()), balance: 12_000, version: 4 });
    assert_eq!(report.from_snapshot, expected, "snapshot + the events after it = the full replay");
    assert_eq!(report.read_model, vec![("acc-1".into(), 11_000), ("acc-2".into(), 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_queue() {
    use recipes::task_queue::{run, thumbnail_size, CORRUPT_JOB, JOBS, WORKERS};
    let server = server();
    let report = run(server.url(), unique_name("tq")).await.unwrap();
    assert_eq!(report.jobs as u64, JOBS);
    let done: Vec<u64> = report.thumbnails.keys().copied().collect();
    let expected: Vec<u64> = (1..=JOBS).filter(|j| *j != CORRUPT_JOB).collect();
    assert_eq!(done, expected, "a thumbnail for every job but the corrupt one");
    for t in report.thumbnails.values() {
        let job = &recipes::task_queue::jobs()[t.job as usize - 1];
        assert_eq!((t.width, t.height), thumbnail_size(job.width, job.height));
        assert_eq!(t.attempt, if t.job % 7 == 3 { 2 } else { 1 }, "job {}", t.job);
    }
    assert_eq!(report.retried, 4, "jobs 3, 10, 17 and 24 failed once");
    assert_eq!(report.per_worker.values().sum::<usize>(), done.len());
    assert!(report.per_worker.len() >= 2 && report.per_worker.len() <= WORKERS, "{:?}", report.per_worker);
    assert_eq!(report.completed_on_dashboard, done.len());
    assert_eq!(
        report.dead_letters,
        vec![(format!("photo-{CORRUPT_JOB}-corrupt.jpg"), format!("photo-{CORRUPT_JOB}-corrupt.jpg: not a JPEG"))]
    );
    assert_eq!(thumbnail_size(4000, 3000), (128, 96));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log() {
    use recipes::audit_log::{id_range, run, sessions, ExportLine};
    let server = server();
    let report = run(server.url(), unique_name("audit")).await.unwrap();
    assert_eq!(report.recorded, 9);
    assert_eq!(report.stream_len, 9, "acknowledged entries stay in the stream");
    let window: Vec<_> = report.in_window.iter().map(|l| l.event.clone()).collect();
    assert_eq!(window, sessions()[1], "exactly the second session");
    assert!(report.in_window.iter().all(|l| l.at_ms == l.id.millis()));
    let exported: Vec<ExportLine> =
        std::fs::read_to_string(&report.export).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(exported, report.in_window);
    std::fs::remove_file(&report.export).unwrap();
    assert_eq!(report.deletions, vec![("bob".to_string(), "customer/3".to_string())]);

    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
    let range = id_range(t, t);
    assert_eq!((range.start().to_string(), range.end().millis()), ("1700000000123-0".to_string(), 1_700_000_000_123));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications() {
    use recipes::notifications::{run, Channel};
    use streamx::FailureKind;
    let server = server();
    let report = run(server.url(), unique_name("signups")).await.unwrap();
    assert_eq!(report.signups, 8);
    let email = Channel { sent: (1..=8).collect(), retried: 4, dead_letters: vec![] };
    assert_eq!(report.channels["email"], email, "users 4 and 8 failed twice, then got their email");
    let sms = Channel {
        sent: vec![1, 3, 4, 7, 8],
        retried: 1,
        dead_letters: vec![(5, Some(FailureKind::Error), 2), (6, Some(FailureKind::Permanent), 1)],
    };
    assert_eq!(report.channels["sms"], sms, "no phone: skipped; invalid: permanent; carrier down: 2 deliveries");
    let push = Channel { sent: vec![1, 2, 4, 5, 8], retried: 0, dead_letters: vec![(7, Some(FailureKind::Error), 1)] };
    assert_eq!(report.channels["push"], push, "no retries for push");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics() {
    use recipes::analytics::{run, MINUTES, VIEWS};
    use streamx::FailureKind;
    let server = server();
    let prefix = unique_name("analytics");
    let report = run(server.url(), prefix.clone()).await.unwrap();
    assert_eq!(report.published, VIEWS);
    let valid: u64 = report.expected.values().sum();
    assert!(valid < VIEWS, "the workload has bad views");
    assert_eq!(report.counts, report.expected, "views per (minute, page)");
    let minutes: BTreeSet<u64> = report.counts.keys().map(|(minute, _)| *minute).collect();
    assert_eq!(minutes.len() as u64, MINUTES);
    assert!(report.writes <= VIEWS / 100, "{} writes for {VIEWS} views: batched", report.writes);
    assert_eq!(report.dead_letters.len() as u64, VIEWS - valid, "only the views without a page");
    assert!(
        report
            .dead_letters
            .iter()
            .all(|(kind, error)| *kind == Some(FailureKind::Permanent) && error.contains("without a page")),
        "{:?}",
        report.dead_letters
    );
    let stream = format!("{prefix}.page_views");
    let left = redis_cli(&server, &["EXISTS", &stream, &format!("{{{stream}}}:dlq")]).unwrap();
    assert_eq!(left.trim(), "0", "the run's stream and dead letters are deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks() {
    use recipes::webhooks::{run, RETRY_AFTER_SECS};
    use streamx::FailureKind;
    let server = server();
    let report = run(server.url(), unique_name("hooks")).await.unwrap();
    let requests: Vec<(u64, Vec<u16>)> = report.requests.clone().into_iter().collect();
    assert_eq!(
        requests,
        vec![
            (1, vec![200]),
            (2, vec![500, 200]),
            (3, vec![429, 200]),
            (4, vec![410, 200]),
            (5, vec![400, 200]),
            (6, vec![200]),
        ],
        "5xx retried, 429 retried, 4xx dead-lettered then replayed after the fix"
    );
    let waited = report.waited_after_429.unwrap();
    assert!(waited >= std::time::Duration::from_secs(RETRY_AFTER_SECS), "Retry-After honoured: {waited:?}");
    assert_eq!(
        report.dead_letters,
        vec![
            (4, Some(FailureKind::Permanent), "HTTP 410".into()),
            (5, Some(FailureKind::Permanent), "HTTP 400".into())
        ]
    );
    assert_eq!((report.replayed, report.dead_letters_left), (2, 0));
    assert_eq!(report.delivered, (1..=6).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_workflow() {
    use recipes::order_workflow::{run, OrderShipped};
    use streamx::FailureKind;
    let server = server();
    let report = run(server.url(), unique_name("orders")).await.unwrap();
    assert_eq!(report.placed, 5);
    assert_eq!(report.shipped_before_fix, vec![1, 2, 4, 5], "order 3 (Ireland) stopped at the shipping step");
    assert_eq!(
        report.dead_letters,
        vec![(3, Some(FailureKind::Permanent), "order 3: no carrier for country IE".to_string())]
    );
    assert_eq!(report.replayed, 1);
    let shipped = |order: u64, carrier: &str| OrderShipped {
        order,
        payment: format!("pay-{order}"),
        tracking: format!("{carrier}-{order}"),
    };
    assert_eq!(
        report.shipped,
        vec![shipped(1, "dhl"), shipped(2, "dhl"), shipped(3, "an-post"), shipped(4, "dhl"), shipped(5, "dhl")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters() {
    use recipes::dead_letters::run;
    let server = server();
    let report = run(server.url(), unique_name("payments")).await.unwrap();
    assert_eq!(report.published, 8);
    let by_kind: Vec<(&str, usize)> = report.by_kind.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(by_kind, vec![("error", 2), ("invalid_json", 1), ("permanent", 1), ("wrong_shape", 1)]);
    assert_eq!(report.pages, 3, "5 letters, 2 a page");
    assert_eq!(report.replayed, vec![3, 5]);
    let mut purged = report.purged.clone();
    purged.sort();
    let kinds: Vec<&str> = purged.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, vec!["invalid_json", "permanent", "wrong_shape"]);
    assert_eq!(purged[1].1, "payment 4: amount must be positive");
    assert!(purged[2].1.starts_with("cannot decode payload as"), "{}", purged[2].1);
    assert_eq!((report.purge_count, report.left), (3, 0));
    assert_eq!(report.booked, vec![1, 2, 3, 5, 6]);
}
