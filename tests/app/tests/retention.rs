//! Safe retention and work-queue mode (issue 24): a slow group loses nothing to a stream kept
//! near 1,000 entries (where `MAXLEN ~ 1000` on publish loses entries), a work queue drained
//! with `delete_on_ack` leaves the stream empty while a second group keeps what it has not
//! acknowledged, one trimmer per stream at a time (the lease), `max_age`, and
//! `PublishOptions::max_len_acked`.
//!
//! Run on Redis 7.0, on Redis 8.2 (with and without `STREAMX_DISABLE_CAPABILITIES=xackdel`,
//! so both code paths run there) and on Valkey 8.1: the assertions are the same on all.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{on_both_topologies, start_runtime, wait_until, Job, TestRedis, Topology};
use streamx::{Capabilities, Consumer, DeadLetters, Error, Message, MessageId, Producer, PublishOptions, Retention};

/// A stream name with braces: its derived keys (the lease) use the escaped form.
const STREAM: &str = "{ret}.orders";

async fn publish_n(producer: &Producer, stream: &str, n: u64, options: &PublishOptions) -> Vec<MessageId> {
    let mut ids = Vec::with_capacity(n as usize);
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let jobs: Vec<Job> = chunk.iter().map(|n| Job::ok(*n)).collect();
        ids.extend(producer.publish_batch_with(stream, &jobs, options).await.unwrap());
    }
    ids
}

fn first_id(server: &TestRedis, stream: &str) -> Option<MessageId> {
    let out = server.cli(&["XRANGE", stream, "-", "+", "COUNT", "1"]).unwrap();
    out.lines().next().and_then(|l| l.trim().parse().ok())
}

fn lease_holder(server: &TestRedis, stream: &str) -> String {
    server.cli(&["GET", &streamx::keys::trim_lease(stream)]).unwrap().trim().to_string()
}

fn dlq(stream: &str) -> String {
    streamx::keys::dead_letter_stream(stream, &streamx::DeadLetterTarget::Default).unwrap()
}

/// `check` holds on every look for `period` (looking every 50 ms).
async fn holds_for(period: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < period {
        assert!(check(), "{what} (after {:?})", start.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn capabilities(url: &str) -> Capabilities {
    let producer = Producer::connect(url).await.unwrap();
    let caps = Capabilities::detect(&producer.client()).await;
    producer.close().await;
    caps
}

/// A fast group and a slow one 11,000 entries behind it (gated until the fast one is done),
/// both with `retention(max_len = 1000)`: while the slow group is held, nothing is trimmed;
/// while it catches up, every entry gone from the stream is one it has handled; no entry was
/// trimmed while pending (no `trimmed` dead letter); the stream ends at 1,000 entries. For
/// contrast, `MAXLEN ~ 1000` on publish leaves the slow group most entries unread and gone.
async fn a_slow_group_loses_nothing_to_retention(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    for group in ["fast", "slow"] {
        server.cli(&["XGROUP", "CREATE", STREAM, group, "0", "MKSTREAM"]).unwrap();
    }
    let ids = publish_n(&producer, STREAM, 11_000, &PublishOptions::new()).await;
    let keep = Retention::new().max_len(1000);
    let fast = Consumer::new(STREAM, "fast", |_: Message<Job>| async {}).concurrency(8).retention(keep);
    let seen: Arc<Mutex<HashSet<MessageId>>> = Arc::default();
    let go = Arc::new(AtomicBool::new(false));
    let (record, gate) = (seen.clone(), go.clone());
    let slow = Consumer::new(STREAM, "slow", move |m: Message<Job>| {
        let (record, gate) = (record.clone(), gate.clone());
        async move {
            while !gate.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Slow: the trimmer gets several ticks while this group catches up.
            tokio::time::sleep(Duration::from_millis(1)).await;
            record.lock().unwrap().insert(m.id());
        }
    })
    .concurrency(2)
    .retention(keep);
    let runtime = start_runtime(&url, vec![fast, slow]).await;
    let stats = runtime.stats(&format!("{STREAM}/fast")).unwrap();
    wait_until(Duration::from_secs(60), "the fast group handled everything", || async {
        stats.snapshot().succeeded >= 11_000
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(10), "a trimmer holds the lease", || async {
        !lease_holder(&server, STREAM).is_empty()
    })
    .await
    .unwrap();
    holds_for(Duration::from_secs(3), "nothing is trimmed while the slow group is 11,000 behind", || {
        server.xlen(STREAM).unwrap() == 11_000
    })
    .await;

    // Contrast: today's `MAXLEN ~ 1000` on publish, with the same slow group behind.
    let capped = "{ret}.capped";
    server.cli(&["XGROUP", "CREATE", capped, "slow", "0", "MKSTREAM"]).unwrap();
    let capped_ids = publish_n(&producer, capped, 11_000, &PublishOptions::new().max_len_approx(1000)).await;
    let left = server.xlen(capped).unwrap();
    let first = first_id(&server, capped).unwrap();
    let lost = capped_ids.iter().filter(|id| **id < first).count();
    println!("MAXLEN ~ 1000 on publish: {lost} of 11,000 entries gone before the slow group read them ({left} left)");
    assert!(left < 2_000 && lost > 9_000, "MAXLEN ~ drops unread entries: {left} left, {lost} lost");

    go.store(true, Ordering::Release);
    let mut looks = 0;
    let mut max_gone = 0;
    wait_until(Duration::from_secs(120), "the slow group handled every entry", || {
        looks += 1;
        // The first entry first, then what was handled: whatever is gone by then must have
        // been handled before.
        let first = first_id(&server, STREAM);
        let handled = seen.lock().unwrap().clone();
        let gone: Vec<&MessageId> = ids.iter().filter(|id| first.is_none_or(|f| **id < f)).collect();
        max_gone = max_gone.max(gone.len());
        let unhandled_gone = gone.iter().filter(|id| !handled.contains(id)).count();
        assert_eq!(unhandled_gone, 0, "entries the slow group never handled are gone from the stream");
        let done = handled.len() >= ids.len();
        async move { done }
    })
    .await
    .unwrap();
    println!("while the slow group caught up: {looks} looks, up to {max_gone} entries gone, each handled before");
    assert!(
        looks > 3 && max_gone > 0,
        "the check looked while trimming went on ({looks} looks, up to {max_gone} gone)"
    );
    wait_until(Duration::from_secs(30), "the stream is back to 1,000 entries", || async {
        server.xlen(STREAM).unwrap() <= 1_000
    })
    .await
    .unwrap();
    holds_for(Duration::from_secs(2), "the stream keeps 1,000 entries", || server.xlen(STREAM).unwrap() == 1_000).await;
    let trimmed_while_pending = DeadLetters::connect(&url, &dlq(STREAM)).await.unwrap().count().await.unwrap();
    assert_eq!(trimmed_while_pending, 0, "no entry was trimmed while pending");
    assert_eq!(seen.lock().unwrap().len(), 11_000);
    runtime.shutdown().await.unwrap();
}

/// A 100,000-entry backlog drained by a group with `delete_on_ack`: the stream is empty at
/// the end (on XACKDEL servers as each acknowledgement lands; elsewhere within the trimmer's
/// next ticks), and during the drain it never holds more than the unread backlog plus what
/// a few trimmer ticks acknowledge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_work_queue_drained_with_delete_on_ack_leaves_an_empty_stream() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let native = capabilities(&url).await.xackdel;
    let producer = Producer::connect(&url).await.unwrap();
    let stream = "jobs";
    server.cli(&["XGROUP", "CREATE", stream, "work", "0", "MKSTREAM"]).unwrap();
    publish_n(&producer, stream, 100_000, &PublishOptions::new()).await;
    let consumer = Consumer::new(stream, "work", |_: Message<Job>| async {}).concurrency(16).delete_on_ack(true);
    let started = Instant::now();
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/work")).unwrap();
    // The most entries the stream held beyond those not yet handled: acknowledged, not yet
    // deleted.
    let mut excess_max = 0u64;
    wait_until(Duration::from_secs(300), "the backlog is drained", || {
        let handled = stats.snapshot().succeeded;
        let len = server.xlen(stream).unwrap();
        excess_max = excess_max.max((len + handled).saturating_sub(100_000));
        async move { handled >= 100_000 }
    })
    .await
    .unwrap();
    let drained = started.elapsed();
    wait_until(Duration::from_secs(10), "nothing pending", || async {
        server.cli(&["XPENDING", stream, "work"]).unwrap().lines().next() == Some("0")
    })
    .await
    .unwrap();
    let len_at_last_ack = server.xlen(stream).unwrap();
    let acked_at = Instant::now();
    wait_until(Duration::from_secs(10), "the stream is empty", || async { server.xlen(stream).unwrap() == 0 })
        .await
        .unwrap();
    println!(
        "delete_on_ack ({}): 100,000 drained in {drained:?}; XLEN at the last acknowledgement {len_at_last_ack}, \
         0 after {:?}; at most {excess_max} acknowledged entries not yet deleted during the drain",
        if native { "XACKDEL" } else { "XACK + trimmer" },
        acked_at.elapsed()
    );
    if native {
        assert_eq!(len_at_last_ack, 0, "XACKDEL deletes each entry with its acknowledgement");
    }
    runtime.shutdown().await.unwrap();
}

/// A work queue with a second group: the first group's `delete_on_ack` deletes nothing the
/// second has not acknowledged; once it has, the stream empties.
async fn a_second_group_keeps_its_entries(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    for group in ["work", "audit"] {
        server.cli(&["XGROUP", "CREATE", STREAM, group, "0", "MKSTREAM"]).unwrap();
    }
    publish_n(&producer, STREAM, 2_000, &PublishOptions::new()).await;
    let work = Consumer::new(STREAM, "work", |_: Message<Job>| async {}).concurrency(8).delete_on_ack(true);
    let runtime = start_runtime(&url, vec![work]).await;
    let stats = runtime.stats(&format!("{STREAM}/work")).unwrap();
    wait_until(Duration::from_secs(60), "the work group handled everything", || async {
        stats.snapshot().succeeded >= 2_000
    })
    .await
    .unwrap();
    holds_for(Duration::from_secs(3), "the audit group's unread entries stay", || {
        server.xlen(STREAM).unwrap() == 2_000
    })
    .await;
    let audit = Consumer::new(STREAM, "audit", |_: Message<Job>| async {}).concurrency(8);
    let auditing = start_runtime(&url, vec![audit]).await;
    wait_until(Duration::from_secs(30), "the stream empties once the audit group acknowledged", || async {
        server.xlen(STREAM).unwrap() == 0
    })
    .await
    .unwrap();
    assert_eq!(auditing.stats(&format!("{STREAM}/audit")).unwrap().snapshot().succeeded, 2_000);
    auditing.shutdown().await.unwrap();
    runtime.shutdown().await.unwrap();
}

/// Two runtimes with a retention on one stream: one holds the lease and keeps it while both
/// run; when it stops, the other takes over and trims.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trimmer_per_stream_and_the_other_takes_over() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    let keep = Retention::new().max_len(100);
    let consumer = |group: &'static str| Consumer::new(STREAM, group, |_: Message<Job>| async {}).retention(keep);
    let first = start_runtime(&url, vec![consumer("a")]).await;
    wait_until(Duration::from_secs(10), "the first runtime's trimmer holds the lease", || async {
        !lease_holder(&server, STREAM).is_empty()
    })
    .await
    .unwrap();
    let holder = lease_holder(&server, STREAM);
    let second = start_runtime(&url, vec![consumer("b")]).await;
    holds_for(Duration::from_secs(4), "the lease stays with one trimmer", || lease_holder(&server, STREAM) == holder)
        .await;
    first.shutdown().await.unwrap();
    wait_until(Duration::from_secs(10), "the second runtime's trimmer takes the lease", || async {
        let now = lease_holder(&server, STREAM);
        !now.is_empty() && now != holder
    })
    .await
    .unwrap();
    // Group `a` outlives its runtime, and would need every new entry: destroyed, so the
    // second trimmer has something to trim.
    server.cli(&["XGROUP", "DESTROY", STREAM, "a"]).unwrap();
    publish_n(&producer, STREAM, 1_000, &PublishOptions::new()).await;
    wait_until(Duration::from_secs(30), "the second trimmer trims", || async { server.xlen(STREAM).unwrap() <= 100 })
        .await
        .unwrap();
    second.shutdown().await.unwrap();
    assert_eq!(lease_holder(&server, STREAM), "", "a graceful shutdown releases the lease");
}

/// `retention(max_age = 3s)`: nothing goes while another group has not read it; once that
/// group is gone, entries older than 3 s go, and not before they are 3 s old.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_age_trims_old_entries_that_no_group_needs() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    for group in ["g", "late"] {
        server.cli(&["XGROUP", "CREATE", STREAM, group, "0", "MKSTREAM"]).unwrap();
    }
    let published = Instant::now();
    publish_n(&producer, STREAM, 300, &PublishOptions::new()).await;
    let consumer = Consumer::new(STREAM, "g", |_: Message<Job>| async {})
        .retention(Retention::new().max_age(Duration::from_secs(3)));
    let runtime = start_runtime(&url, vec![consumer]).await;
    holds_for(Duration::from_secs(5), "the unread entries of `late` stay", || server.xlen(STREAM).unwrap() == 300)
        .await;
    server.cli(&["XGROUP", "DESTROY", STREAM, "late"]).unwrap();
    wait_until(Duration::from_secs(10), "entries older than 3 s are trimmed", || async {
        server.xlen(STREAM).unwrap() == 0
    })
    .await
    .unwrap();
    // Fresh entries are kept until they are 3 s old.
    let fresh = Instant::now();
    publish_n(&producer, STREAM, 10, &PublishOptions::new()).await;
    wait_until(Duration::from_secs(10), "fresh entries are trimmed once 3 s old", || async {
        server.xlen(STREAM).unwrap() == 0
    })
    .await
    .unwrap();
    assert!(fresh.elapsed() >= Duration::from_millis(2_900), "trimmed after {:?}, before max_age", fresh.elapsed());
    assert!(published.elapsed() >= Duration::from_secs(5), "the first entries were held while `late` needed them");
    runtime.shutdown().await.unwrap();
}

/// `max_len_acked(100)` on publish: a group that has read nothing keeps every entry; once it
/// has acknowledged them, publishing trims the stream back to about 100. Combined with
/// `max_len_approx` it is refused and writes nothing.
async fn max_len_acked_keeps_what_a_group_needs(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let producer = Producer::connect(&url).await.unwrap();
    server.cli(&["XGROUP", "CREATE", STREAM, "slow", "0", "MKSTREAM"]).unwrap();
    let acked = PublishOptions::new().max_len_acked(100);
    for n in 0..500 {
        producer.publish_with(STREAM, &Job::ok(n), &acked).await.unwrap();
    }
    publish_n(&producer, STREAM, 1_000, &acked).await;
    assert_eq!(server.xlen(STREAM).unwrap(), 1_500, "the group has read nothing: nothing is trimmed");
    let runtime =
        start_runtime(&url, vec![Consumer::new(STREAM, "slow", |_: Message<Job>| async {}).concurrency(8)]).await;
    let stats = runtime.stats(&format!("{STREAM}/slow")).unwrap();
    wait_until(Duration::from_secs(60), "the group handled everything", || async {
        stats.snapshot().succeeded >= 1_500
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(10), "nothing pending", || async {
        server.cli(&["XPENDING", STREAM, "slow"]).unwrap().lines().next() == Some("0")
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    // Each publish trims at most 100: 15 publishes bring 1,500 back to about 100.
    for n in 0..15 {
        producer.publish_with(STREAM, &Job::ok(n), &acked).await.unwrap();
    }
    let len = server.xlen(STREAM).unwrap();
    assert!((100..=116).contains(&len), "back to about 100 entries (the last publishes are unread): {len}");
    let both = PublishOptions::new().max_len_acked(100).max_len_approx(100);
    let refused = producer.publish_with(STREAM, &Job::ok(0), &both).await;
    assert!(matches!(refused, Err(Error::ConflictingTrim { .. })), "{refused:?}");
    assert_eq!(server.xlen(STREAM).unwrap(), len, "nothing written");
}

on_both_topologies!(
    a_slow_group_loses_nothing_to_retention,
    a_second_group_keeps_its_entries,
    max_len_acked_keeps_what_a_group_needs
);
