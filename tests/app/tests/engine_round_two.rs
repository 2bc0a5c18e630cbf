//! Regression tests for the delivery engine, round two (issue 22): a batch consumer taking
//! over a large dead member, members with different `claim_idle` judging each other, runs
//! counted instead of deliveries (a crash loop costs its neighbours nothing), retries within
//! the byte budget, the drain of thousands of crash suspects, and the hand-back under a
//! reused member name. Each test forces the bad case; each failed before its fix.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_both_topologies, redis_cli, start_runtime, start_runtime_with, wait_until, Job, TestRedis, Topology};
use streamx::testing::{unique_name, RedisServer};
use streamx::{Consumer, DeadLetters, FailureKind, HandlerError, Inspector, Message, MessageId, Producer, Runtime};

type Runs = Arc<Mutex<Vec<(MessageId, u32)>>>;

fn dlq_of(stream: &str) -> String {
    streamx::keys::dead_letter_stream(stream, &streamx::DeadLetterTarget::Default).unwrap()
}

async fn pending(url: &str, stream: &str) -> u64 {
    Inspector::connect(url).await.unwrap().group(stream, "g").await.unwrap().map_or(0, |g| g.pending)
}

/// `n` entries of a new stream, pending in group `g` under the member `dead` (read and
/// never acknowledged: a member that died).
async fn orphaned_entries(server: &TestRedis, url: &str, prefix: &str, n: usize) -> (String, Vec<MessageId>) {
    let stream = unique_name(prefix);
    let producer = Producer::connect(url).await.unwrap();
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n as u64).collect::<Vec<_>>().chunks(5_000) {
        ids.extend(
            producer.publish_batch(&stream, &chunk.iter().map(|n| Job::ok(*n)).collect::<Vec<_>>()).await.unwrap(),
        );
    }
    server.cli(&["XGROUP", "CREATE", &stream, "g", "0"]).unwrap();
    let read = server.cli(&["XREADGROUP", "GROUP", "g", "dead", "COUNT", &n.to_string(), "STREAMS", &stream, ">"]);
    read.unwrap();
    (stream, ids)
}

/// Item 1: a batch consumer of concurrency 100 × max_batch 100 (10,000 permits) takes over a
/// dead member holding 20,000 entries. Every take-over script used to fail with `too many
/// results to unpack` (Lua's limit of ~8,000 values on its XPENDING page, SMISMEMBER and
/// SADD): 16 entries moved and the rest stayed pending under the dead member for good.
async fn a_batch_consumer_takes_over_a_large_dead_member(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let (stream, ids) = orphaned_entries(&server, &url, "big-takeover", 20_000).await;
    let seen: Arc<Mutex<HashSet<MessageId>>> = Arc::default();
    let record = seen.clone();
    let consumer = Consumer::batch(stream.clone(), "g".to_string(), move |batch: Vec<Message<Job>>| {
        let record = record.clone();
        async move {
            record.lock().unwrap().extend(batch.iter().map(Message::id));
            Ok::<(), HandlerError>(())
        }
    })
    .concurrency(100)
    .max_batch(100)
    .batch_wait(Duration::from_millis(20))
    .claim_idle(Duration::from_millis(300));
    let runtime = start_runtime(&url, vec![consumer]).await;
    wait_until(Duration::from_secs(120), "all 20,000 taken over, handled and acknowledged", || async {
        seen.lock().unwrap().len() >= ids.len() && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let missing = ids.iter().filter(|id| !seen.lock().unwrap().contains(id)).count();
    assert_eq!(missing, 0, "entries of the dead member never handled");
    let letters = DeadLetters::connect(&url, &dlq_of(&stream)).await.unwrap().count().await.unwrap();
    assert_eq!(letters, 0, "nothing dead-lettered");
}

/// Items 2a and 2b: member `a` (claim_idle 6 s) runs a handler for much longer than the
/// taker's claim_idle; member `b`, with a shorter `claim_idle` (a rolling deploy that
/// lowered it) and, for 2b, a clean-up of 1 s, must not take it over while `a` is alive.
/// It used to: `b` judged `a`'s heartbeat (sent every 2 s) by its own 300 ms, and its
/// clean-up deleted `a`'s heartbeat while `a` held the entry.
async fn a_live_members_long_run_is_never_taken_over(server: &TestRedis, b_claim_idle: Duration, b_cleanup: Duration) {
    let url = server.url();
    let stream = unique_name("long-run");
    let producer = Producer::connect(&url).await.unwrap();
    let id = producer.publish(&stream, &Job::ok(1)).await.unwrap();
    let runs: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let member = |name: &'static str, claim_idle: Duration| {
        let (runs, gate) = (runs.clone(), gate.clone());
        Consumer::new(stream.clone(), "g".to_string(), move |_msg: Message<Job>| {
            let (runs, gate) = (runs.clone(), gate.clone());
            async move {
                runs.lock().unwrap().push(name);
                gate.acquire().await.unwrap().forget();
            }
        })
        .name_as(name)
        .consumer_name(name)
        .concurrency(1)
        .claim_idle(claim_idle)
    };
    let a = start_runtime(&url, vec![member("a", Duration::from_secs(6))]).await;
    wait_until(Duration::from_secs(10), "a runs the message", || async { !runs.lock().unwrap().is_empty() })
        .await
        .unwrap();
    let b =
        start_runtime_with(&url, vec![member("b", b_claim_idle)], |builder| builder.consumer_cleanup_after(b_cleanup))
            .await;
    // `a` holds every permit, so on Redis 7.0 its idle time grows (7.2+ counts its empty
    // blocking reads as interactions). `b` judges `a` every 75 ms, each time in a script:
    // 45 more scripts served is about 3 s of `b`'s ticks, through at least one whole
    // heartbeat period of `a` (2 s), with `a` idle far beyond `b`'s claim_idle on 7.0.
    let scripts = server.calls_served("evalsha").unwrap();
    wait_until(Duration::from_secs(15), "b judged a through a heartbeat period", || async {
        server.calls_served("evalsha").unwrap() >= scripts + 45
    })
    .await
    .unwrap();
    let inspector = Inspector::connect(&url).await.unwrap();
    assert_eq!(*runs.lock().unwrap(), vec!["a"], "the message ran only on a, which is alive");
    let held = inspector.pending(&stream, "g", None).await.unwrap();
    assert!(held.iter().all(|p| p.id == id && p.consumer == "a"), "a still holds it: {held:?}");
    gate.add_permits(1);
    wait_until(Duration::from_secs(10), "acknowledged", || async { pending(&url, &stream).await == 0 }).await.unwrap();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    assert_eq!(*runs.lock().unwrap(), vec!["a"], "it ran once");
}

async fn a_member_is_judged_by_its_own_claim_idle(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    a_live_members_long_run_is_never_taken_over(&server, Duration::from_millis(300), Duration::from_secs(3600)).await;
}

async fn the_clean_up_keeps_the_heartbeat_of_a_member_that_holds_entries(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    a_live_members_long_run_is_never_taken_over(&server, Duration::from_secs(1), Duration::from_secs(1)).await;
}

/// Item 2: a clean-up sooner than `claim_idle` is refused at build time.
#[test]
fn a_clean_up_sooner_than_claim_idle_is_refused() {
    let consumer = Consumer::new("orders", "g", |_msg: Message<Job>| async {}).claim_idle(Duration::from_secs(6));
    let built = Runtime::builder()
        .redis_url("redis://127.0.0.1:1")
        .registered_consumers(false)
        .consumer(consumer)
        .consumer_cleanup_after(Duration::from_secs(1))
        .build();
    let error = built.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("consumer_cleanup_after") && error.contains("claim_idle"), "{error}");
}

/// A runtime on a thread of its own, which the test can kill: its tokio runtime is shut
/// down without a drain (no hand-back, no more heartbeats), as a crashed process would
/// stop.
struct Killable {
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Killable {
    fn start(url: &str, consumer: Consumer) -> Killable {
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let url = url.to_string();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let running = rt.block_on(start_runtime(url, vec![consumer]));
            ready_tx.send(()).unwrap();
            let _ = killed.recv();
            std::mem::forget(running);
            rt.shutdown_background();
        });
        ready.recv().unwrap();
        Killable { kill, thread }
    }

    fn kill(self) {
        let _ = self.kill.send(());
        self.thread.join().unwrap();
    }
}

/// Item 3a: one message crashes its worker (the test kills the runtime as soon as it
/// starts) among 16 fetched together; the worker is restarted after each crash. With
/// `max_retries` 0 or 1, the take-overs used to count a delivery for every neighbour too,
/// and all 15 were dead-lettered as `delivery_limit` without having run that often. Now the
/// crasher alone is dead-lettered, after at most three crashes (its holder, its taker, its
/// run alone), and every neighbour is handled.
async fn a_crash_loop_costs_its_neighbours_nothing(topology: Topology, max_retries: u32) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("crash-loop");
    let producer = Producer::connect(&url).await.unwrap();
    let mut jobs: Vec<Job> = (0..16).map(|n| Job::sleep(n, 300)).collect();
    jobs[5] = Job::abort(5);
    let ids = producer.publish_batch(&stream, &jobs).await.unwrap();
    let crasher = ids[5];
    let done: Arc<Mutex<HashMap<MessageId, u32>>> = Arc::default();
    let dlq = DeadLetters::connect(&url, &dlq_of(&stream)).await.unwrap();
    let mut crashes = 0;
    for incarnation in 0..8 {
        assert!(crashes <= 3, "{crashes} crashes");
        let crashed = Arc::new(tokio::sync::Notify::new());
        let (record, signal) = (done.clone(), crashed.clone());
        let name: &'static str = Box::leak(format!("worker-{incarnation}").into_boxed_str());
        let consumer = Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Job>| {
            let (record, signal) = (record.clone(), signal.clone());
            async move {
                if msg.payload().action == "abort" {
                    signal.notify_one();
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                *record.lock().unwrap().entry(msg.id()).or_default() += 1;
            }
        })
        .consumer_name(name)
        .concurrency(16)
        .max_retries(max_retries)
        .claim_idle(Duration::from_millis(300));
        let worker = Killable::start(&url, consumer);
        let settled = || async {
            done.lock().unwrap().len() >= 15 && dlq.count().await.unwrap() >= 1 && pending(&url, &stream).await == 0
        };
        let outcome = tokio::select! {
            _ = crashed.notified() => None,
            waited = wait_until(Duration::from_secs(30), "every message settled", settled) => Some(waited),
        };
        worker.kill();
        match outcome {
            None => crashes += 1,
            Some(waited) => {
                waited.unwrap();
                break;
            }
        }
    }
    assert!(crashes <= 3, "{crashes} crashes before the crasher was dead-lettered");
    let letters = dlq.list(None, 100).await.unwrap();
    let dead: Vec<_> = letters.entries.iter().map(|l| (l.origin_id, l.kind)).collect();
    assert_eq!(dead, vec![(Some(crasher), Some(FailureKind::DeliveryLimit))], "only the crasher is dead-lettered");
    let done = done.lock().unwrap();
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| *i != 5) {
        assert!(done.contains_key(id), "neighbour {i} ({id}) was never handled");
    }
}

async fn a_crash_loop_at_max_retries_0_costs_its_neighbours_nothing(topology: Topology) {
    a_crash_loop_costs_its_neighbours_nothing(topology, 0).await;
}

async fn a_crash_loop_at_max_retries_1_costs_its_neighbours_nothing(topology: Topology) {
    a_crash_loop_costs_its_neighbours_nothing(topology, 1).await;
}

/// The payload of the byte-budget test: about 256 KiB.
#[derive(serde::Serialize, serde::Deserialize)]
struct Big {
    pad: String,
}

/// Item 5: 64 messages of 256 KiB, each failing its first attempt, under a byte budget of
/// 1 MiB at concurrency 64. Their retries used to be promoted by the free permits (64 at
/// once: 16 MiB in flight); now by the room in the budget: at most 4, plus the one entry a
/// fetch always takes.
async fn due_retries_stay_within_the_byte_budget(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("big-retries");
    let producer = Producer::connect(&url).await.unwrap();
    let big = Big { pad: "x".repeat(256 * 1024) };
    for _ in 0..64 {
        producer.publish(&stream, &big).await.unwrap();
    }
    let (in_flight, most, retried) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (now, peak, count) = (in_flight.clone(), most.clone(), retried.clone());
    let consumer = Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Big>| {
        let (now, peak, count) = (now.clone(), peak.clone(), count.clone());
        async move {
            if msg.attempt() == 1 {
                return Err(HandlerError::retry_after("first attempt", Duration::from_millis(100)));
            }
            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
    .concurrency(64);
    let runtime = start_runtime_with(&url, vec![consumer], |b| b.max_buffered_bytes(1024 * 1024)).await;
    // Generous: with the budget full, due retries are promoted a promoter tick at a time, and
    // on a loaded 2-core machine the drain took 12-45 s (before issue 26 as after); the bound
    // under test is the peak below, not the speed.
    wait_until(Duration::from_secs(180), "all 64 retried and acknowledged", || async {
        retried.load(Ordering::SeqCst) >= 64 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 5, "{most} retries of 256 KiB ran at once under a 1 MiB budget");
}

/// Redis's microseconds spent in scripts (`EVALSHA`), over every node.
fn script_usec(server: &TestRedis) -> u64 {
    server
        .cli_all(&["INFO", "commandstats"])
        .unwrap()
        .iter()
        .flat_map(|node| node.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|line| line.strip_prefix("cmdstat_evalsha:").map(str::to_string))
        .filter_map(|rest| rest.split(',').find_map(|kv| kv.strip_prefix("usec=").and_then(|v| v.parse::<u64>().ok())))
        .sum()
}

/// Item 6: a dead member holds 3,000 crash suspects (entries it had taken over: marked).
/// Each take-over used to walk its whole pending list to take one suspect (15.7 s of Redis
/// CPU for 3,000, repeated by every member's tick); now they move once to the suspects'
/// placeholder and each is taken in O(log n). Every suspect runs once, alone, at attempt 1.
async fn draining_thousands_of_suspects_is_cheap_for_redis(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let (stream, ids) = orphaned_entries(&server, &url, "suspects", 3_000).await;
    let marks = streamx::keys::takeover_marks(&stream, "g");
    for chunk in ids.chunks(500) {
        let mut args = vec!["SADD".to_string(), marks.clone()];
        args.extend(chunk.iter().map(MessageId::to_string));
        server.cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    }
    let before = script_usec(&server);
    let runs: Runs = Arc::default();
    let record = runs.clone();
    let consumer = Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Job>| {
        let record = record.clone();
        async move { record.lock().unwrap().push((msg.id(), msg.attempt())) }
    })
    .concurrency(4)
    .claim_idle(Duration::from_millis(300));
    let runtime = start_runtime(&url, vec![consumer]).await;
    wait_until(Duration::from_secs(120), "all 3,000 suspects handled", || async {
        runs.lock().unwrap().len() >= 3_000 && pending(&url, &stream).await == 0
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let spent = Duration::from_micros(script_usec(&server) - before);
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 3_000, "each suspect ran once");
    assert!(runs.iter().all(|(_, attempt)| *attempt == 1), "no run was charged for the deaths");
    assert!(server.cli(&["SMEMBERS", &marks]).unwrap().trim().is_empty(), "every mark cleared");
    // (15.7 s before; the target is 0.5 s, measured by streamx-bench; a loaded CI core gets
    // slack here.)
    assert!(spent < Duration::from_secs(2), "the drain cost Redis {spent:?} of scripts");
}

/// Item 7: a predecessor under the fixed member name `fixed` crashed holding a message
/// (max_retries 0). A new process under the same name starts and stops before claim_idle:
/// its hand-back used to take the predecessor's delivery back from the count (the message
/// then ran again as if never started, unmarked). It must leave what it never held where it
/// is, for a take-over that marks it.
async fn a_hand_back_leaves_a_crashed_predecessors_entries_alone(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("fixed-name");
    let producer = Producer::connect(&url).await.unwrap();
    let theirs = producer.publish(&stream, &Job::ok(1)).await.unwrap();
    server.cli(&["XGROUP", "CREATE", &stream, "g", "0"]).unwrap();
    server.cli(&["XREADGROUP", "GROUP", "g", "fixed", "COUNT", "1", "STREAMS", &stream, ">"]).unwrap();
    let runs: Runs = Arc::default();
    let member = |name: &'static str, claim_idle: Duration| {
        let record = runs.clone();
        Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Job>| {
            let record = record.clone();
            async move { record.lock().unwrap().push((msg.id(), msg.attempt())) }
        })
        .consumer_name(name)
        .name_as(name)
        .max_retries(0)
        .claim_idle(claim_idle)
    };
    let restarted = start_runtime(&url, vec![member("fixed", Duration::from_secs(30))]).await;
    let ours = producer.publish(&stream, &Job::ok(2)).await.unwrap();
    wait_until(Duration::from_secs(10), "the restarted process handles a new message", || async {
        runs.lock().unwrap().iter().any(|(id, _)| *id == ours)
    })
    .await
    .unwrap();
    restarted.shutdown().await.unwrap();
    let inspector = Inspector::connect(&url).await.unwrap();
    let held = inspector.pending(&stream, "g", None).await.unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!((held[0].id, held[0].consumer.as_str(), held[0].deliveries), (theirs, "fixed", 1));
    let schedule = streamx::keys::retry_schedule(&stream, "g");
    assert_eq!(server.cli(&["ZSCORE", &schedule, &theirs.to_string()]).unwrap().trim(), "", "not handed back");
    // A peer takes it over, marked (a crash suspect if it dies holding it).
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let open = gate.clone();
    let peer = Consumer::new(stream.clone(), "g".to_string(), move |_msg: Message<Job>| {
        let gate = open.clone();
        async move { gate.acquire().await.unwrap().forget() }
    })
    .consumer_name("peer")
    .claim_idle(Duration::from_millis(300));
    let peer = start_runtime(&url, vec![peer]).await;
    let marks = streamx::keys::takeover_marks(&stream, "g");
    wait_until(Duration::from_secs(10), "the peer took it over, marked", || async {
        server.cli(&["SISMEMBER", &marks, &theirs.to_string()]).unwrap().trim() == "1"
    })
    .await
    .unwrap();
    gate.add_permits(1);
    wait_until(Duration::from_secs(10), "settled", || async { pending(&url, &stream).await == 0 }).await.unwrap();
    peer.shutdown().await.unwrap();
}

/// Scripts (`EVALSHA`) the server has served.
fn scripts_served(server: &RedisServer) -> u64 {
    let stats = redis_cli(server, &["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .filter_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// Found by the chaos test (issue 22): Redis itself stands still for longer than
/// `claim_idle` (an `appendfsync always` write on a busy disk; here `DEBUG SLEEP`). Every
/// member's heartbeat is held up alike, so when Redis resumes every deadline looks past, and
/// the first take-over script served judged live members stopped: their running messages
/// ran twice, and a suspect running alone was dead-lettered as a crash. Member `a` (played
/// by the test: it read a message and beats) is alive throughout; `b`'s scripts, queued
/// behind the stall, are served before `a`'s next beat, and must not take the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_judges_no_live_member_stopped() {
    let server = RedisServer::builder().arg("enable-debug-command", "yes").start().unwrap();
    let url = server.url();
    let stream = unique_name("stall");
    let id = Producer::connect(&url).await.unwrap().publish(&stream, &Job::ok(1)).await.unwrap();
    redis_cli(&server, &["XGROUP", "CREATE", &stream, "g", "0"]).unwrap();
    redis_cli(&server, &["XREADGROUP", "GROUP", "g", "a", "COUNT", "1", "STREAMS", &stream, ">"]).unwrap();
    let deadlines = streamx::keys::member_deadlines(&stream, "g");
    // `a`'s heartbeat, as the engine writes it: its deadline, claim_idle (1 s) from now.
    let beat = || {
        let script = "local t = redis.call('TIME') \
                      redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000) + 1000, 'a') return 1";
        redis_cli(&server, &["EVAL", script, "1", &deadlines]).unwrap();
    };
    beat();
    let runs: Runs = Arc::default();
    let record = runs.clone();
    let b = Consumer::new(stream.clone(), "g".to_string(), move |msg: Message<Job>| {
        let record = record.clone();
        async move { record.lock().unwrap().push((msg.id(), msg.attempt())) }
    })
    .consumer_name("b")
    .claim_idle(Duration::from_secs(1));
    let b = start_runtime(&url, vec![b]).await;
    // `a` beats every 300 ms while `b` judges it (b ticks every 250 ms), past a's idle 1 s.
    for _ in 0..8 {
        let served = scripts_served(&server);
        beat();
        wait_until(Duration::from_secs(5), "b ran a script", || async { scripts_served(&server) > served + 1 })
            .await
            .unwrap();
    }
    assert!(runs.lock().unwrap().is_empty(), "b took over a live member's message before the stall");
    // Redis stands still 2.5 s; a beat right before it, the next right after it.
    beat();
    redis_cli(&server, &["DEBUG", "SLEEP", "2.5"]).unwrap();
    beat();
    for _ in 0..8 {
        let served = scripts_served(&server);
        wait_until(Duration::from_secs(5), "b ran a script", || async { scripts_served(&server) > served + 1 })
            .await
            .unwrap();
        beat();
    }
    assert!(runs.lock().unwrap().is_empty(), "b took over a live member's message after the stall: {runs:?}");
    let held = Inspector::connect(&url).await.unwrap().pending(&stream, "g", None).await.unwrap();
    assert_eq!(held.iter().map(|p| (p.id, p.consumer.as_str())).collect::<Vec<_>>(), vec![(id, "a")]);
    b.shutdown().await.unwrap();
}

on_both_topologies!(
    a_batch_consumer_takes_over_a_large_dead_member,
    a_member_is_judged_by_its_own_claim_idle,
    the_clean_up_keeps_the_heartbeat_of_a_member_that_holds_entries,
    a_crash_loop_at_max_retries_0_costs_its_neighbours_nothing,
    a_crash_loop_at_max_retries_1_costs_its_neighbours_nothing,
    due_retries_stay_within_the_byte_budget,
    draining_thousands_of_suspects_is_cheap_for_redis,
    a_hand_back_leaves_a_crashed_predecessors_entries_alone,
);
