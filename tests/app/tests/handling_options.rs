//! The message-handling options of issue 10 against real servers: the handler `timeout`,
//! the dead-letter stream's length cap (`dlq_max_len`), explicit ids on publish
//! (`PublishOptions::id`) and the batch handler form.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    http_get, on_both_topologies, prometheus_value, start_runtime, start_runtime_with, wait_until, Job, TestRedis,
    Topology,
};
use futures_util::TryStreamExt;
use streamx::testing::unique_name;
use streamx::{
    Backoff, BatchOutcome, Consumer, DeadLetters, Error, FailureKind, HandlerError, History, Inspector, Message,
    MessageId, Producer, PublishOptions,
};

fn dlq_of(stream: &str) -> String {
    streamx::keys::dead_letter_stream(stream, &streamx::DeadLetterTarget::Default).unwrap()
}

async fn pending(url: &str, stream: &str) -> u64 {
    Inspector::connect(url).await.unwrap().group(stream, "g").await.unwrap().map_or(0, |g| g.pending)
}

/// Counts its drops: a handler future holding one was cancelled (or finished) when it drops.
struct OnDrop(Arc<AtomicUsize>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Backoff short enough for tests.
fn quick_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), 2.0, Duration::from_millis(200))
}

/// A handler that never returns, with `timeout = 200ms` and two retries: each of its three
/// runs is cancelled at the deadline (its future dropped), retried with backoff, and after
/// the last one the message is dead-lettered with kind `timeout` and 3 deliveries.
async fn a_hung_handler_is_cancelled_retried_and_dead_lettered(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("hung");
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let dropped = Arc::new(AtomicUsize::new(0));
    let consumer = {
        let (attempts, dropped) = (attempts.clone(), dropped.clone());
        Consumer::new(stream.clone(), "g", move |msg: Message<Job>| {
            let (attempts, dropped) = (attempts.clone(), dropped.clone());
            async move {
                attempts.lock().unwrap().push(msg.attempt());
                let _guard = OnDrop(dropped);
                std::future::pending::<()>().await;
                Ok::<(), HandlerError>(())
            }
        })
        .timeout(Duration::from_millis(200))
        .max_retries(2)
        .backoff(quick_backoff())
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let id = Producer::connect(&url).await.unwrap().publish(&stream, &Job::ok(1)).await.unwrap();
    let letters = DeadLetters::connect(&url, &dlq_of(&stream)).await.unwrap();
    wait_until(Duration::from_secs(15), "the hung message dead-lettered", || async {
        letters.count().await.unwrap() == 1 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2, 3], "three runs, each with its own attempt number");
    assert_eq!(dropped.load(Ordering::SeqCst), 3, "every run was cancelled (its future dropped)");
    let letter = &letters.list(None, 10).await.unwrap().entries[0];
    assert_eq!(letter.origin_id, Some(id));
    assert_eq!(letter.kind, Some(FailureKind::Timeout));
    assert_eq!(letter.deliveries, 3);
    assert!(letter.error.contains("timeout"), "{}", letter.error);
    let stats = stats.snapshot();
    assert_eq!(stats.timed_out, 3);
    assert_eq!(stats.retried, 2);
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!(stats.succeeded, 0);
}

/// Handlers that finish within their timeout are untouched by it: every message succeeds on
/// its first run and nothing is counted as timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_within_their_timeout_are_unaffected() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("intime");
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let attempts = attempts.clone();
        Consumer::new(stream.clone(), "g", move |msg: Message<Job>| {
            let attempts = attempts.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                attempts.lock().unwrap().push(msg.attempt());
                Ok::<(), HandlerError>(())
            }
        })
        .timeout(Duration::from_secs(5))
        .concurrency(4)
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let jobs: Vec<Job> = (0..20).map(Job::ok).collect();
    Producer::connect(&url).await.unwrap().publish_batch(&stream, &jobs).await.unwrap();
    wait_until(Duration::from_secs(15), "all 20 acknowledged", || async {
        stats.snapshot().succeeded == 20 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    assert_eq!(*attempts.lock().unwrap(), vec![1; 20], "each ran once");
    let stats = stats.snapshot();
    assert_eq!((stats.timed_out, stats.retried, stats.dead_lettered), (0, 0, 0));
}

/// While one handler hangs, the other slot keeps handling messages; the hung one gives its
/// slot back at the timeout, so afterwards both slots can again run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_frees_its_slot_at_the_timeout() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("slots");
    let hanging = Arc::new(AtomicUsize::new(0));
    let most_hanging = Arc::new(AtomicUsize::new(0));
    let done_while_hanging = Arc::new(AtomicUsize::new(0));
    struct Hanging(Arc<AtomicUsize>);
    impl Drop for Hanging {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let consumer = {
        let (hanging, most, done) = (hanging.clone(), most_hanging.clone(), done_while_hanging.clone());
        Consumer::new(stream.clone(), "g", move |msg: Message<Job>| {
            let (hanging, most, done) = (hanging.clone(), most.clone(), done.clone());
            async move {
                if msg.payload().action == "hang" {
                    let now = hanging.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let _guard = Hanging(hanging);
                    std::future::pending::<()>().await;
                } else if hanging.load(Ordering::SeqCst) > 0 {
                    done.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<(), HandlerError>(())
            }
        })
        .concurrency(2)
        .timeout(Duration::from_secs(2))
        .max_retries(0)
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let producer = Producer::connect(&url).await.unwrap();
    let hang = Job { n: 0, action: serde_json::json!("hang") };
    producer.publish(&stream, &hang).await.unwrap();
    wait_until(Duration::from_secs(10), "the first handler hanging", || async { hanging.load(Ordering::SeqCst) == 1 })
        .await
        .unwrap();
    producer.publish_batch(&stream, &(1..=10).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(10), "ten handled beside it", || async { stats.snapshot().succeeded == 10 })
        .await
        .unwrap();
    assert_eq!(done_while_hanging.load(Ordering::SeqCst), 10, "the other slot handled all ten while one hung");
    wait_until(Duration::from_secs(10), "the hung one timed out", || async { stats.snapshot().timed_out == 1 })
        .await
        .unwrap();
    // Both slots are free again: two hanging messages now run at the same time.
    producer.publish_batch(&stream, &[hang.clone(), hang.clone()]).await.unwrap();
    wait_until(Duration::from_secs(10), "two handlers hanging at once", || async {
        most_hanging.load(Ordering::SeqCst) == 2
    })
    .await
    .unwrap();
    let letters = DeadLetters::connect(&url, &dlq_of(&stream)).await.unwrap();
    wait_until(Duration::from_secs(10), "the three hung messages dead-lettered", || async {
        letters.count().await.unwrap() == 3 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let page = letters.list(None, 10).await.unwrap();
    assert!(page.entries.iter().all(|l| l.kind == Some(FailureKind::Timeout) && l.deliveries == 1), "{page:?}");
    assert_eq!(stats.snapshot().timed_out, 3);
}

/// Every `tracing` event at WARN or above, from every test of this binary (they are told
/// apart by their consumer names).
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| Capture)
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .try_init();
}

/// `dlq_max_len = 20`: 300 messages dead-lettered one after the other leave the dead-letter
/// stream near 20 letters. The trim is approximate (`XTRIM MAXLEN ~` removes whole stream
/// nodes only, each at most `stream-node-max-entries` = 100 letters), so the length is
/// between 20 and 20 + 100; and every letter written is either still there or counted as
/// trimmed, exactly. On a single server the counter and the warning are checked too.
async fn the_dead_letter_stream_stays_near_its_cap(topology: Topology) {
    const CAP: u64 = 20;
    const LETTERS: u64 = 300;
    capture_logs();
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("capped");
    let name = format!("capped-{}", stream);
    let consumer = Consumer::new(stream.clone(), "g", |_: Message<Job>| async {
        Err::<(), _>(HandlerError::permanent("never works"))
    })
    .name_as(name.clone())
    .concurrency(8)
    // One read loop: letters are then written in about the stream's order, so the newest
    // message's letter is among the last written (with two loops, each dead-letters its own
    // half of the backlog and either half may finish first).
    .readers(1)
    .dlq_max_len(Some(CAP));
    let with_http = topology == Topology::Standalone;
    let runtime = start_runtime_with(&url, vec![consumer], |b| if with_http { b.http("127.0.0.1:0") } else { b }).await;
    let stats = runtime.stats(&name).unwrap();
    let jobs: Vec<Job> = (0..LETTERS).map(Job::ok).collect();
    Producer::connect(&url).await.unwrap().publish_batch(&stream, &jobs).await.unwrap();
    wait_until(Duration::from_secs(60), "every message dead-lettered", || async {
        stats.snapshot().dead_lettered == LETTERS && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    let letters = DeadLetters::connect(&url, &dlq_of(&stream)).await.unwrap();
    let len = letters.count().await.unwrap();
    assert!((CAP..=CAP + 100).contains(&len), "{len} letters for a cap of {CAP}");
    let trimmed = stats.snapshot().dead_letters_trimmed;
    assert_eq!(trimmed + len, LETTERS, "every letter written is kept or counted as trimmed");
    if let Some(addr) = runtime.http_addr() {
        let (status, text) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        let labels = [("stream", stream.as_str()), ("group", "g"), ("consumer", name.as_str())];
        assert_eq!(
            prometheus_value(&text, "streamx_dead_letters_trimmed_total", &labels),
            Some(trimmed as f64),
            "{text}"
        );
        let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
        let warned = logs.lines().any(|l| l.contains(&name) && l.contains("reached its length cap"));
        assert!(warned, "no trim warning for {name} in:\n{logs}");
    }
    runtime.shutdown().await.unwrap();
    let newest = letters.list(None, 1000).await.unwrap().entries;
    let origins: Vec<u64> =
        newest.iter().map(|l| serde_json::from_slice::<Job>(l.payload.as_ref().unwrap()).unwrap().n).collect();
    assert_eq!(origins.len() as u64, len);
    assert!(origins.contains(&(LETTERS - 1)), "the newest letter is kept: {origins:?}");
}

/// `dlq_max_len(None)` keeps every letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_dead_letter_stream_keeps_every_letter() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("unbounded");
    let consumer = Consumer::new(stream.clone(), "g", |_: Message<Job>| async {
        Err::<(), _>(HandlerError::permanent("never works"))
    })
    .concurrency(8)
    .dlq_max_len(None);
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    Producer::connect(&url)
        .await
        .unwrap()
        .publish_batch(&stream, &(0..250).map(Job::ok).collect::<Vec<_>>())
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "every message dead-lettered", || async {
        stats.snapshot().dead_lettered == 250 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    assert_eq!(DeadLetters::connect(&url, &dlq_of(&stream)).await.unwrap().count().await.unwrap(), 250);
    assert_eq!(stats.snapshot().dead_letters_trimmed, 0);
}

on_both_topologies!(a_hung_handler_is_cancelled_retried_and_dead_lettered, the_dead_letter_stream_stays_near_its_cap);

/// `PublishOptions::id`: the entry gets exactly the id asked for; an id that is not greater
/// than the stream's last one is refused with `Error::IdNotIncreasing` naming the stream
/// and the id, and writes nothing; a batch refuses an explicit id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_an_explicit_id() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("ids");
    let producer = Producer::connect(&url).await.unwrap();
    let id = MessageId::new(1_700_000_000_000, 7);
    let written = producer.publish_with(&stream, &Job::ok(1), &PublishOptions::new().id(id)).await.unwrap();
    assert_eq!(written, id);
    let history = History::connect(&url).await.unwrap();
    let entries: Vec<Message<Job>> = history.read(&stream, ..).try_collect().await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id(), id, "the entry in the stream has exactly that id");
    assert_eq!(entries[0].payload().n, 1);

    for refused in [id, MessageId::new(1_700_000_000_000, 6), MessageId::new(5, 0)] {
        match producer.publish_with(&stream, &Job::ok(2), &PublishOptions::new().id(refused)).await {
            Err(Error::IdNotIncreasing { stream: s, id: got }) => {
                assert_eq!((s.as_str(), got), (stream.as_str(), refused));
            }
            other => panic!("expected IdNotIncreasing for {refused}, got {other:?}"),
        }
    }
    let zero =
        producer.publish_with(&unique_name("ids0"), &Job::ok(3), &PublishOptions::new().id(MessageId::MIN)).await;
    assert!(matches!(zero, Err(Error::IdNotIncreasing { .. })), "0-0 is never accepted: {zero:?}");
    let message = Error::IdNotIncreasing { stream: stream.clone(), id }.to_string();
    assert!(message.contains(&stream) && message.contains("1700000000000-7"), "{message}");

    let next = id.successor().unwrap();
    assert_eq!(producer.publish_with(&stream, &Job::ok(4), &PublishOptions::new().id(next)).await.unwrap(), next);
    let batch = producer.publish_batch_with(&stream, &[Job::ok(5)], &PublishOptions::new().id(MessageId::MAX)).await;
    assert!(matches!(batch, Err(Error::IdInBatch { .. })), "{batch:?}");
    let ids: Vec<MessageId> = history.read::<Job>(&stream, ..).map_ok(|m| m.id()).try_collect().await.unwrap();
    assert_eq!(ids, vec![id, next], "nothing refused was written");
}

/// A batch consumer (`max_batch = 10`) over a backlog of 95 messages: every call gets at most
/// 10, every message is in exactly one call, and all are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_consumer_gets_batches_within_the_cap_and_acknowledges_all() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("batches");
    let calls: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    Producer::connect(&url)
        .await
        .unwrap()
        .publish_batch(&stream, &(0..95).map(Job::ok).collect::<Vec<_>>())
        .await
        .unwrap();
    let consumer = {
        let calls = calls.clone();
        Consumer::batch(stream.clone(), "g", move |batch: Vec<Message<Job>>| {
            let calls = calls.clone();
            async move {
                calls.lock().unwrap().push(batch.iter().map(|m| m.payload().n).collect());
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<(), HandlerError>(())
            }
        })
        .concurrency(2)
        .max_batch(10)
        .batch_wait(Duration::from_millis(50))
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    wait_until(Duration::from_secs(20), "all 95 acknowledged", || async {
        stats.snapshot().succeeded == 95 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert!(calls.iter().all(|c| !c.is_empty() && c.len() <= 10), "{calls:?}");
    let mut all: Vec<u64> = calls.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..95).collect::<Vec<_>>(), "each message in exactly one call");
    assert!(calls.iter().filter(|c| c.len() == 10).count() >= 5, "a backlog fills batches: {calls:?}");
    let stats = stats.snapshot();
    assert_eq!((stats.retried, stats.dead_lettered), (0, 0));
}

/// The `(n, attempt)` of each message of each call of a batch handler.
type Calls = Arc<Mutex<Vec<Vec<(u64, u32)>>>>;

/// One batch, three fates: the message whose first run fails is retried alone (attempt 2,
/// in a later call) while its neighbours are acknowledged once; a permanent failure is
/// dead-lettered alone; an entry that does not decode is dead-lettered as poison without
/// reaching the handler or failing its batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_of_a_batch_is_retried_alone() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("batchfail");
    let producer = Producer::connect(&url).await.unwrap();
    let ids = producer.publish_batch(&stream, &(0..8).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    let poison =
        producer.publish_raw(&stream, bytes::Bytes::from_static(b"{not json"), &PublishOptions::new()).await.unwrap();
    let calls: Calls = Arc::default();
    let consumer = {
        let calls = calls.clone();
        Consumer::batch(stream.clone(), "g", move |batch: Vec<Message<Job>>| {
            let calls = calls.clone();
            async move {
                calls.lock().unwrap().push(batch.iter().map(|m| (m.payload().n, m.attempt())).collect());
                let mut outcome = BatchOutcome::new();
                for msg in &batch {
                    match msg.payload().n {
                        3 if msg.attempt() == 1 => {
                            outcome.fail(msg.id(), "first try fails");
                        }
                        5 => {
                            outcome.fail(msg.id(), HandlerError::permanent("never"));
                        }
                        _ => {}
                    }
                }
                outcome
            }
        })
        .max_batch(20)
        .batch_wait(Duration::from_millis(100))
        .backoff(quick_backoff())
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    let letters = DeadLetters::connect(&url, &dlq_of(&stream)).await.unwrap();
    wait_until(Duration::from_secs(20), "7 acknowledged, 2 dead-lettered, nothing pending", || async {
        stats.snapshot().succeeded == 7 && letters.count().await.unwrap() == 2 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let runs: Vec<(u64, u32)> = calls.iter().flatten().copied().collect();
    for n in (0..8).filter(|n| *n != 3) {
        assert_eq!(runs.iter().filter(|(m, _)| *m == n).collect::<Vec<_>>(), [&(n, 1)], "{n} ran once: {calls:?}");
    }
    assert_eq!(runs.iter().filter(|(m, _)| *m == 3).collect::<Vec<_>>(), [&(3, 1), &(3, 2)], "{calls:?}");
    assert!(calls.last().unwrap().contains(&(3, 2)) && calls.len() >= 2, "the retry came in a later call: {calls:?}");
    let page = letters.list(None, 10).await.unwrap();
    let mut fates: Vec<(Option<MessageId>, Option<FailureKind>, u32)> =
        page.entries.iter().map(|l| (l.origin_id, l.kind, l.deliveries)).collect();
    fates.sort_by_key(|(id, _, _)| *id);
    assert_eq!(
        fates,
        [(Some(ids[5]), Some(FailureKind::Permanent), 1), (Some(poison), Some(FailureKind::InvalidJson), 1)]
    );
    let stats = stats.snapshot();
    assert_eq!((stats.retried, stats.dead_lettered), (1, 2));
}

/// `Err` from a batch handler fails every message of the call, each retried on its own with
/// its own attempt count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_fails_every_message_of_the_batch_each_on_its_own() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("batcherr");
    Producer::connect(&url)
        .await
        .unwrap()
        .publish_batch(&stream, &(0..6).map(Job::ok).collect::<Vec<_>>())
        .await
        .unwrap();
    let runs: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let consumer = {
        let runs = runs.clone();
        Consumer::batch(stream.clone(), "g", move |batch: Vec<Message<Job>>| {
            let runs = runs.clone();
            async move {
                runs.lock().unwrap().extend(batch.iter().map(|m| (m.payload().n, m.attempt())));
                if batch.iter().any(|m| m.attempt() == 1) {
                    return Err(HandlerError::from("the warehouse is down"));
                }
                Ok(())
            }
        })
        .backoff(quick_backoff())
    };
    let runtime = start_runtime(&url, vec![consumer]).await;
    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    wait_until(Duration::from_secs(20), "all 6 acknowledged", || async {
        stats.snapshot().succeeded == 6 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let mut runs = runs.lock().unwrap().clone();
    runs.sort_unstable();
    let expected: Vec<(u64, u32)> = (0..6).flat_map(|n| [(n, 1), (n, 2)]).collect();
    assert_eq!(runs, expected, "each failed once with the batch and succeeded on its own retry");
    assert_eq!(stats.snapshot().retried, 6);
}
