//! Every recipe run as a user runs it: its example binary as processes (worker, producer,
//! one-off commands) with `STREAMX_REDIS_URL` pointing at a throwaway redis-server. The tests
//! assert on what the programs leave in Redis (read with the library and redis-cli) and on
//! what they print, stop long-running ones with SIGTERM (a graceful shutdown exits 0), and
//! check that each recipe's `cleanup` leaves no key behind.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use streamx::testing::{wait_until, TestRedis, Topology};
use streamx::{DeadLetters, Inspector};

const LIMIT: Duration = Duration::from_secs(60);

/// The example binaries, built once per test run with the same cargo (as `escargot` does):
/// cargo builds examples for `cargo test`, but gives integration tests no path to them.
fn examples() -> &'static HashMap<String, PathBuf> {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "--quiet", "-p", "streamx-examples", "--examples", "--message-format=json"]);
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        // What cargo sets for this test, not for a build: a build script that reads one
        // (ring's reads CARGO_MANIFEST_DIR) would otherwise rebuild on every run.
        const SET_FOR_TESTS: [&str; 7] = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
        ];
        for (key, _) in std::env::vars_os() {
            if SET_FOR_TESTS.iter().any(|prefix| key.to_string_lossy().starts_with(prefix)) {
                cargo.env_remove(key);
            }
        }
        let output = cargo.stderr(Stdio::inherit()).output().expect("run cargo build --examples");
        assert!(output.status.success(), "cargo build --examples failed");
        let mut built = HashMap::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let is_example = message["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "example"));
            if let (true, Some(name), Some(exe)) =
                (is_example, message["target"]["name"].as_str(), message["executable"].as_str())
            {
                built.insert(name.to_string(), PathBuf::from(exe));
            }
        }
        built
    })
}

/// A recipe process, its stdout and stderr in files (a pipe nobody reads could fill).
struct Recipe {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Recipe {
    fn spawn(redis: &TestRedis, name: &str, args: &[&str]) -> Recipe {
        Recipe::spawn_with(redis, name, args, &[])
    }

    /// [`spawn`](Self::spawn) with more environment variables.
    fn spawn_with(redis: &TestRedis, name: &str, args: &[&str], env: &[(&str, &str)]) -> Recipe {
        let exe = examples().get(name).unwrap_or_else(|| panic!("no example binary `{name}`"));
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir();
        let stem = format!("streamx-recipe-{}-{name}-{n}", std::process::id());
        let (out, err) = (dir.join(format!("{stem}.out")), dir.join(format!("{stem}.err")));
        let child = Command::new(exe)
            .args(args)
            .env("STREAMX_REDIS_URL", redis.url())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
        Recipe { name: format!("{name} {}", args.join(" ")), child, out, err }
    }

    /// Runs a one-off command to its end; asserts it exits 0; its stdout.
    async fn run(redis: &TestRedis, name: &str, args: &[&str]) -> String {
        let mut recipe = Recipe::spawn(redis, name, args);
        recipe.wait_exit().await;
        recipe.stdout()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until the process has printed a line containing each of `lines`.
    async fn wait_output(&self, lines: &[&str]) {
        let done = wait_until(LIMIT, &format!("`{}` to print {lines:?}", self.name), || async {
            let out = self.stdout();
            lines.iter().all(|l| out.lines().any(|o| o.contains(l)))
        })
        .await;
        if let Err(e) = done {
            panic!("{e}\nstdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
        }
    }

    async fn wait_exit(&mut self) {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("`{}` did not exit within {LIMIT:?}\nstdout:\n{}", self.name, self.stdout());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            status.success(),
            "`{}` exited with {status}\nstdout:\n{}\nstderr:\n{}",
            self.name,
            self.stdout(),
            self.stderr()
        );
    }

    /// SIGTERM, then waits for the graceful exit (status 0); its stdout.
    async fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.wait_exit().await;
        self.stdout()
    }
}

impl Drop for Recipe {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}

fn redis() -> TestRedis {
    TestRedis::start(Topology::Standalone).unwrap_or_else(|e| panic!("cannot start redis-server: {e}"))
}

/// Every key in the server (sorted).
fn keys(redis: &TestRedis) -> Vec<String> {
    let mut keys: Vec<String> = redis.cli(&["KEYS", "*"]).unwrap().lines().map(str::to_string).collect();
    keys.retain(|k| !k.is_empty());
    keys.sort();
    keys
}

/// Waits until `group` of `stream` has nothing pending and nothing left to read.
async fn wait_drained(url: &str, stream: &str, group: &str) {
    let inspector = Inspector::connect(url).await.unwrap();
    wait_until(LIMIT, &format!("group `{group}` of `{stream}` to be drained"), || async {
        match inspector.group(stream, group).await {
            Ok(Some(g)) => g.pending == 0 && g.lag == Some(0),
            _ => false,
        }
    })
    .await
    .unwrap();
}

async fn dead_letters(url: &str, stream: &str) -> DeadLetters {
    DeadLetters::connect(url, &streamx::keys::default_dead_letter_stream(stream)).await.unwrap()
}

/// Waits until the stream's dead letters number `n`.
async fn wait_dead_letters(url: &str, stream: &str, n: u64) -> DeadLetters {
    let dlq = dead_letters(url, stream).await;
    wait_until(LIMIT, &format!("{n} dead letter(s) of `{stream}`"), || async { dlq.count().await.unwrap() >= n })
        .await
        .unwrap();
    dlq
}

/// A dead letter, as the tests compare them.
#[derive(Debug)]
struct Letter {
    group: String,
    /// The original payload as JSON (`null` when it is not JSON).
    payload: serde_json::Value,
    kind: &'static str,
    deliveries: u32,
    error: String,
}

/// Every dead letter of `dlq`, sorted by group and payload.
async fn letters(dlq: &DeadLetters) -> Vec<Letter> {
    let mut all: Vec<Letter> = dlq
        .list(None, 1000)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|l| Letter {
            payload: serde_json::from_slice(l.payload.as_deref().unwrap_or_default()).unwrap_or_default(),
            kind: l.kind.map(|k| k.as_str()).unwrap_or("unknown"),
            group: l.group,
            deliveries: l.deliveries,
            error: l.error,
        })
        .collect();
    all.sort_by_key(|l| (l.group.clone(), l.payload.to_string()));
    all
}

/// The lines of `out` that start with `prefix`, sorted.
fn lines_starting(out: &str, prefix: &str) -> Vec<String> {
    let mut lines: Vec<String> = out.lines().filter(|l| l.starts_with(prefix)).map(str::to_string).collect();
    lines.sort();
    lines
}

async fn cleanup(redis: &TestRedis, name: &str) {
    let out = Recipe::run(redis, name, &["cleanup"]).await;
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(keys(redis), Vec::<String>::new(), "`{name} cleanup` leaves no key behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications() {
    let redis = redis();
    let url = redis.url();
    let worker = Recipe::spawn(&redis, "notifications", &[]);
    worker.wait_output(&["Ctrl-C to stop"]).await;
    let published = Recipe::run(&redis, "notifications", &["publish"]).await;
    assert_eq!(published.lines().filter(|l| l.starts_with("published the sign-up")).count(), 8, "{published}");

    for group in ["email", "sms", "push"] {
        wait_drained(&url, "notifications.signups", group).await;
    }
    let dlq = wait_dead_letters(&url, "notifications.signups", 3).await;
    let out = worker.stop().await;
    let sent = |channel: &str| -> Vec<u64> {
        let mut users: Vec<u64> = lines_starting(&out, &format!("{channel}: sent to user "))
            .iter()
            .map(|l| l.split_whitespace().nth(4).unwrap().parse().unwrap())
            .collect();
        users.sort();
        users
    };
    assert_eq!(sent("email"), (1..=8).collect::<Vec<_>>(), "{out}");
    assert_eq!(sent("sms"), vec![1, 3, 4, 7, 8], "{out}");
    assert_eq!(sent("push"), vec![1, 2, 4, 5, 8], "{out}");
    assert_eq!(out.matches("SMTP 451, will retry").count(), 4, "users 4 and 8 failed twice: {out}");
    assert!(out.trim_end().ends_with("notifications: stopped"), "{out}");

    let letters: Vec<(String, u64, &str, u32)> = letters(&dlq)
        .await
        .into_iter()
        .map(|l| (l.group, l.payload["user"].as_u64().unwrap(), l.kind, l.deliveries))
        .collect();
    assert_eq!(
        letters,
        vec![
            ("push".to_string(), 7, "error", 1),
            ("sms".to_string(), 5, "error", 2),
            ("sms".to_string(), 6, "permanent", 1),
        ],
        "no retries for push; carrier down: 2 deliveries; invalid number: permanent"
    );
    cleanup(&redis, "notifications").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_workflow() {
    let redis = redis();
    let url = redis.url();
    let worker = Recipe::spawn(&redis, "order_workflow", &[]);
    let placed = Recipe::run(&redis, "order_workflow", &["place"]).await;
    assert_eq!(placed.lines().filter(|l| l.starts_with("placed order")).count(), 5, "{placed}");
    let dlq = wait_dead_letters(&url, "orders.paid", 1).await;
    wait_drained(&url, "orders.shipped", "tracking").await;
    worker.wait_output(&["tracking: order 5 "]).await;
    let out = worker.stop().await;
    let tracked = |out: &str| lines_starting(out, "tracking: order ");
    assert_eq!(
        tracked(&out),
        vec![
            "tracking: order 1 paid (pay-1) and shipped, tracking dhl-1",
            "tracking: order 2 paid (pay-2) and shipped, tracking dhl-2",
            "tracking: order 4 paid (pay-4) and shipped, tracking dhl-4",
            "tracking: order 5 paid (pay-5) and shipped, tracking dhl-5",
        ],
        "order 3 (Ireland) stopped at the shipping step: {out}"
    );
    let letters = letters(&dlq).await;
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].group.as_str(), letters[0].kind), ("shipping", "permanent"));
    assert_eq!(letters[0].error, "order 3: no carrier for country IE");
    assert_eq!(letters[0].payload["placed"]["order"], 3);

    // The fix is deployed: the worker restarts with a carrier for Ireland; replay.
    let worker = Recipe::spawn(&redis, "order_workflow", &["worker", "--ship-to-ireland"]);
    let replayed = Recipe::run(&redis, "order_workflow", &["replay"]).await;
    assert!(replayed.contains("replayed 1 dead letter(s)"), "{replayed}");
    worker.wait_output(&["tracking: order 3 paid (pay-3) and shipped, tracking an-post-3"]).await;
    let out = worker.stop().await;
    assert_eq!(out.matches("payments: order").count(), 0, "the replay went on from `paid`: {out}");
    assert_eq!(dlq.count().await.unwrap(), 0);
    let shipped = redis.cli(&["XLEN", "orders.shipped"]).unwrap();
    assert_eq!(shipped.trim(), "5", "one shipment event per order");
    cleanup(&redis, "order_workflow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_recipe() {
    let redis = redis();
    let url = redis.url();
    let worker = Recipe::spawn(&redis, "dead_letters", &[]);
    Recipe::run(&redis, "dead_letters", &["publish"]).await;
    let dlq = wait_dead_letters(&url, "payments", 5).await;
    wait_drained(&url, "payments", "ledger").await;
    let out = worker.stop().await;
    assert_eq!(lines_starting(&out, "ledger: booked payment ").len(), 3, "payments 1, 2 and 6: {out}");

    let listed = Recipe::run(&redis, "dead_letters", &["list"]).await;
    assert!(
        listed.contains("5 dead letter(s) in 3 page(s): error 2, invalid_json 1, permanent 1, wrong_shape 1"),
        "{listed}"
    );
    let worker = Recipe::spawn(&redis, "dead_letters", &["worker", "--unlocked"]);
    let replayed = Recipe::run(&redis, "dead_letters", &["replay", "error"]).await;
    assert!(replayed.contains("replayed 2 dead letter(s) of kind error"), "{replayed}");
    worker.wait_output(&["ledger: booked payment 3 ", "ledger: booked payment 5 "]).await;
    let out = worker.stop().await;
    assert_eq!(lines_starting(&out, "ledger: booked payment ").len(), 2, "only the replayed ones: {out}");

    let mut left: Vec<&str> = letters(&dlq).await.iter().map(|l| l.kind).collect();
    left.sort();
    assert_eq!(left, vec!["invalid_json", "permanent", "wrong_shape"]);
    let purged = Recipe::run(&redis, "dead_letters", &["purge"]).await;
    assert!(purged.contains("purging (permanent): payment 4: amount must be positive"), "{purged}");
    assert!(purged.contains("purged 3 dead letter(s)"), "{purged}");
    assert_eq!(dlq.count().await.unwrap(), 0);
    cleanup(&redis, "dead_letters").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks() {
    let redis = redis();
    let url = redis.url();
    let worker = Recipe::spawn(&redis, "webhooks", &[]);
    Recipe::run(&redis, "webhooks", &["publish"]).await;
    let dlq = wait_dead_letters(&url, "webhooks", 2).await;
    wait_drained(&url, "webhooks", "subscriber-1").await;
    let out = worker.stop().await;
    let answered = |out: &str, event: u64| -> Vec<u16> {
        out.lines()
            .filter_map(|l| l.strip_prefix(&format!("subscriber: event {event} -> ")))
            .map(|rest| rest[..3].parse().unwrap())
            .collect()
    };
    let before: Vec<Vec<u16>> = (1..=6).map(|e| answered(&out, e)).collect();
    assert_eq!(
        before,
        vec![vec![200], vec![500, 200], vec![429, 200], vec![410], vec![400], vec![200]],
        "5xx and 429 retried, other 4xx dead-lettered at once: {out}"
    );
    let after_429: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("subscriber: event 3 -> 200 ("))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(after_429 >= 1000, "Retry-After: 1 honoured: the next request came {after_429} ms later");
    // Rate-limited to 5 requests a second for the destination: never more in any second.
    let mut arrivals: Vec<u64> =
        lines_starting(&out, "arrival: ").iter().map(|l| l[9..].trim_end_matches(" ms").parse().unwrap()).collect();
    arrivals.sort_unstable();
    assert_eq!(arrivals.len(), 8, "6 events, 2 retried: {out}");
    for (i, &at) in arrivals.iter().enumerate() {
        let in_second = arrivals[i..].iter().take_while(|&&later| later < at + 1000).count();
        assert!(in_second <= 5, "at most 5 requests in any second, {in_second} from {at} ms: {arrivals:?}");
    }
    let errors: Vec<(String, &str)> = letters(&dlq).await.into_iter().map(|l| (l.error, l.kind)).collect();
    let mut errors = errors;
    errors.sort();
    assert_eq!(errors, vec![("HTTP 400".to_string(), "permanent"), ("HTTP 410".to_string(), "permanent")]);

    let worker = Recipe::spawn(&redis, "webhooks", &["worker", "--subscriber-fixed"]);
    let replayed = Recipe::run(&redis, "webhooks", &["replay"]).await;
    assert!(replayed.contains("replayed 2 dead letter(s)"), "{replayed}");
    worker.wait_output(&["delivery: event 4 delivered", "delivery: event 5 delivered"]).await;
    let out = worker.stop().await;
    assert_eq!(lines_starting(&out, "subscriber: ").len(), 2, "only the replayed events: {out}");
    assert_eq!(dlq.count().await.unwrap(), 0);
    cleanup(&redis, "webhooks").await;
}

/// Payment webhooks: the provider's re-sent webhook is absorbed by the idempotent publish,
/// the re-imported one by the ledger's `dedupe`; a failed payment's reminder arrives when due
/// unless the invoice is paid meanwhile (then it is cancelled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments() {
    let redis = redis();
    let url = redis.url();
    let worker = Recipe::spawn(&redis, "payments", &[]);
    let received = Recipe::run(&redis, "payments", &["receive", "--reimport", "evt_2"]).await;
    let first_evt_1 = lines_starting(&received, "receiver: evt_1 published as ");
    assert_eq!(first_evt_1.len(), 1, "{received}");
    let id = first_evt_1[0].rsplit(' ').next().unwrap();
    assert!(received.contains(&format!("receiver: evt_1 again: already published as {id}")), "{received}");
    assert!(received.contains("receiver: evt_2 re-imported as a new entry"), "{received}");
    // Four events and the re-imported one: the re-sent webhook wrote nothing.
    assert_eq!(redis.xlen("payments.events").unwrap(), 5);

    worker.wait_output(&["mailer: reminder for invoice 102 sent"]).await;
    wait_drained(&url, "payments.events", "ledger").await;
    wait_drained(&url, "payments.reminders", "mailer").await;
    let scheduled = streamx::Scheduled::connect(&url).await.unwrap();
    assert_eq!(scheduled.count("payments.reminders").await.unwrap(), 0, "nothing left waiting");
    let out = worker.stop().await;
    let ledger = lines_starting(&out, "ledger: ");
    assert_eq!(
        ledger,
        vec![
            "ledger: cancelled the reminder for invoice 103",
            "ledger: evt_1 paid invoice 101 (4900 cents)",
            "ledger: evt_2 failed for invoice 102; reminder in 2s",
            "ledger: evt_3 failed for invoice 103; reminder in 2s",
            "ledger: evt_4 paid invoice 103 (700 cents)",
        ],
        "each event recorded once, the re-imported evt_2 acknowledged unrun: {out}"
    );
    let mailer = lines_starting(&out, "mailer: ");
    assert_eq!(mailer.len(), 1, "only invoice 102's reminder: {out}");
    let late: u64 = mailer[0].split(" sent ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!(late < 1000, "the reminder arrived {late} ms after it was due");
    cleanup(&redis, "payments").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_queue() {
    let redis = redis();
    let url = redis.url();
    let workers: Vec<Recipe> =
        ["w1", "w2", "w3"].iter().map(|w| Recipe::spawn(&redis, "task_queue", &["worker", w])).collect();
    let display = Recipe::spawn(&redis, "task_queue", &["progress"]);
    // Every worker has joined before the jobs come, so that they share them. (A member shows
    // in XINFO CONSUMERS only once it has read something; its liveness deadline at once.)
    let members = streamx::keys::member_deadlines("task_queue.jobs", "thumbnailers");
    wait_until(LIMIT, "three members of `thumbnailers`", || async {
        let out = redis.cli(&["ZRANGE", &members, "0", "-1"]).unwrap();
        out.lines().filter(|m| !m.is_empty() && !m.starts_with("streamx:")).count() == 3
    })
    .await
    .unwrap();
    let published = Recipe::run(&redis, "task_queue", &["publish"]).await;
    assert!(published.contains("enqueued 24 jobs"), "{published}");
    let dlq = wait_dead_letters(&url, "task_queue.jobs", 1).await;
    wait_drained(&url, "task_queue.jobs", "thumbnailers").await;
    wait_drained(&url, "task_queue.progress", "display").await;

    let mut done: BTreeMap<u64, (String, u32)> = BTreeMap::new();
    for w in workers {
        let out = w.stop().await;
        for line in out.lines().filter(|l| l.contains(" done, ")) {
            // "w1: job 4 done, 125x96 (attempt 1)"
            let words: Vec<&str> = line.split_whitespace().collect();
            let attempt: u32 = words[6].trim_end_matches(')').parse().unwrap();
            assert!(done
                .insert(words[2].parse().unwrap(), (words[0].trim_end_matches(':').to_string(), attempt))
                .is_none());
        }
    }
    let expected: Vec<u64> = (1..=24).filter(|j| *j != 13).collect();
    assert_eq!(done.keys().copied().collect::<Vec<_>>(), expected, "a thumbnail for every job but the corrupt one");
    for (job, (_, attempt)) in &done {
        assert_eq!(*attempt, if job % 7 == 3 { 2 } else { 1 }, "job {job}: jobs 3, 10, 17, 24 fail once");
    }
    let by: std::collections::BTreeSet<&str> = done.values().map(|(w, _)| w.as_str()).collect();
    assert!(by.len() >= 2, "the jobs were shared: {by:?}");
    let results = redis.cli(&["XLEN", "task_queue.results"]).unwrap();
    assert_eq!(results.trim(), "23");
    let progress = display.stop().await;
    assert_eq!(
        lines_starting(&progress, "progress: job").iter().filter(|l| l.contains("100%")).count(),
        23,
        "{progress}"
    );
    let letters = letters(&dlq).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error, "photo-13-corrupt.jpg: not a JPEG");
    cleanup(&redis, "task_queue").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log() {
    let redis = redis();
    let url = redis.url();
    let worker = Recipe::spawn(&redis, "audit_log", &[]);
    let recorded = Recipe::run(&redis, "audit_log", &["record"]).await;
    let window: Vec<&str> = recorded
        .lines()
        .find_map(|l| l.strip_prefix("session 2: 3 events, query with "))
        .unwrap_or_else(|| panic!("{recorded}"))
        .split_whitespace()
        .collect();
    wait_drained(&url, "audit", "security").await;
    worker.wait_output(&["security: ALERT bob deleted customer/3"]).await;
    let out = worker.stop().await;
    assert_eq!(out.matches("ALERT").count(), 1, "{out}");
    assert_eq!(redis.cli(&["XLEN", "audit"]).unwrap().trim(), "9", "acknowledged entries stay in the stream");

    let export = std::env::temp_dir().join(format!("streamx-audit-{}.jsonl", std::process::id()));
    let mut args = window.clone();
    args.insert(0, "query");
    args.extend(["--export", export.to_str().unwrap()]);
    let queried = Recipe::run(&redis, "audit_log", &args).await;
    assert!(queried.contains("3 event(s) in the window"), "{queried}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&export).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    std::fs::remove_file(&export).unwrap();
    let actions: Vec<(&str, &str)> =
        lines.iter().map(|l| (l["actor"].as_str().unwrap(), l["action"].as_str().unwrap())).collect();
    assert_eq!(actions, vec![("bob", "login"), ("bob", "read"), ("bob", "delete")], "exactly the second session");
    for line in &lines {
        let id = line["id"].as_str().unwrap();
        assert_eq!(id.split('-').next().unwrap(), line["at_ms"].to_string(), "the time is the id's");
    }
    cleanup(&redis, "audit_log").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics() {
    let redis = redis();
    let url = redis.url();
    let worker = Recipe::spawn(&redis, "analytics", &[]);
    let published = Recipe::run(&redis, "analytics", &["publish"]).await;
    assert!(
        published.contains("published 20000 page views to `analytics.page_views`: 19980 with a page, 20 without"),
        "{published}"
    );
    let dlq = wait_dead_letters(&url, "analytics.page_views", 20).await;
    wait_drained(&url, "analytics.page_views", "per-minute").await;
    // The periodic job's report (every 10 s) catches up with the store: one entry per tick.
    let report = || -> Option<serde_json::Value> {
        let entries = redis.cli_json(&["XREVRANGE", "analytics.reports", "+", "-", "COUNT", "1"]).unwrap();
        let fields = entries.get(0)?.get(1)?.as_array()?.clone();
        let data = fields.chunks(2).find(|kv| kv[0] == "data")?.get(1)?.as_str()?.to_string();
        serde_json::from_str(&data).ok()
    };
    wait_until(Duration::from_secs(30), "a report of every view", || async {
        report().is_some_and(|r| r["counted"] == 19_980)
    })
    .await
    .unwrap();
    let report = report().unwrap();
    let raw = redis.cli(&["XREVRANGE", "analytics.reports", "+", "-", "COUNT", "1"]).unwrap();
    assert!(raw.contains("h:streamx-periodic-tick") && raw.contains(&report["tick_ms"].to_string()), "{raw}");
    assert_eq!(report["tick_ms"].as_u64().unwrap() % 10_000, 0, "{report}");
    let out = worker.stop().await;
    let summary = out.lines().find(|l| l.starts_with("counted ")).unwrap_or_else(|| panic!("{out}"));
    let words: Vec<&str> = summary.split_whitespace().collect();
    assert_eq!(words[1], "19980", "{summary}");
    let writes: u64 = words[4].parse().unwrap();
    assert!(writes <= 200, "{writes} writes for 20,000 views: batched");
    let rows: Vec<&str> =
        out.lines().filter(|l| l.ends_with(|c: char| c.is_ascii_digit()) && l.contains(" UTC ")).collect();
    assert!(rows.len() >= 10, "a row per minute: {out}");
    let per_row: u64 = rows
        .iter()
        .flat_map(|r| {
            r.split("UTC")
                .nth(1)
                .unwrap()
                .split(',')
                .map(|c| c.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        })
        .sum();
    assert_eq!(per_row, 19_980, "the table adds up");
    assert!(letters(&dlq).await.iter().all(|l| l.kind == "permanent" && l.error.contains("without a page")));
    cleanup(&redis, "analytics").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_sourcing() {
    let redis = redis();
    let url = redis.url();
    let projection = Recipe::spawn(&redis, "event_sourcing", &[]);
    let out = Recipe::run(&redis, "event_sourcing", &["commands"]).await;
    assert_eq!(out.matches(": appended ").count(), 9, "{out}");
    assert!(
        out.contains("Withdraw(\"acc-1\", 50000): refused: acc-1: cannot withdraw 50000, the balance is 13000"),
        "{out}"
    );
    assert!(out.contains("snapshot of acc-1 at "), "{out}");
    assert!(out.contains("Account { owner: Some(\"alice\"), balance: 12000, version: 4 }"), "{out}");

    let loaded = Recipe::run(&redis, "event_sourcing", &["load", "acc-1"]).await;
    let expected = "Account { owner: Some(\"alice\"), balance: 11000, version: 6 }";
    assert!(loaded.contains(&format!("acc-1 replayed from the start: {expected}")), "{loaded}");
    let from_snapshot = loaded.lines().find(|l| l.contains("from the snapshot")).unwrap();
    assert!(from_snapshot.ends_with(expected), "snapshot + the events after it = the full replay: {loaded}");

    wait_drained(&url, "bank.events", "balances").await;
    let out = projection.stop().await;
    let last = |account: &str| out.lines().rfind(|l| l.starts_with(&format!("balances: {account} is now ")));
    assert_eq!(last("acc-1"), Some("balances: acc-1 is now 11000"), "{out}");
    assert_eq!(last("acc-2"), Some("balances: acc-2 is now 0"), "{out}");
    cleanup(&redis, "event_sourcing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart() {
    let redis = redis();
    let out = Recipe::run(&redis, "quickstart", &[]).await;
    assert!(out.contains("published 1000 orders in one pipelined batch"), "{out}");
    assert!(out.contains("handled 1000 orders in "), "{out}");
    assert!(out.contains("group `billing`: pending 0, lag Some(0)"), "{out}");
    assert_eq!(redis.cli(&["XLEN", "quickstart.orders"]).unwrap().trim(), "1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_publish() {
    let redis = redis();
    let url = redis.url();
    // Any free port for the worker's /metrics, not the default 9090.
    let worker = Recipe::spawn_with(&redis, "worker", &[], &[("STREAMX_HTTP_ADDR", "127.0.0.1:0")]);
    let out = Recipe::run(&redis, "publish", &["100"]).await;
    assert!(out.starts_with("published 100 orders to `orders`"), "{out}");
    wait_drained(&url, "orders", "billing").await;
    wait_drained(&url, "orders", "shipping").await;
    worker.stop().await;
    assert_eq!(dead_letters(&url, "orders").await.count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipe_refuses_an_unknown_command_and_redacts_the_redis_password() {
    let redis = redis();
    let mut bogus = Recipe::spawn(&redis, "notifications", &["bogus"]);
    let status = bogus.child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    assert_eq!(bogus.stderr().trim(), "notifications: unknown command `bogus`: worker, publish or cleanup");

    let mut down = Recipe::spawn_with(
        &redis,
        "notifications",
        &["publish"],
        &[("STREAMX_REDIS_URL", "redis://u:hunter2@127.0.0.1:1")],
    );
    let status = down.child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let err = down.stderr();
    assert!(err.contains("notifications: cannot connect to Redis at redis://u:***@127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2") && !err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_lifecycle() {
    const ORDERS: usize = 300;
    let redis = redis();
    let worker = Recipe::spawn(&redis, "order_lifecycle", &[]);
    let published = Recipe::run(&redis, "order_lifecycle", &["publish", &ORDERS.to_string()]).await;
    assert!(published.contains(&format!("published {} events of {ORDERS} orders", 4 * ORDERS)), "{published}");
    let delivered =
        |out: &str| lines_starting(out, "lifecycle: order ").iter().filter(|l| l.ends_with(" delivered")).count();
    let done = wait_until(LIMIT, &format!("{ORDERS} orders delivered (or an event out of order)"), || async {
        let out = worker.stdout();
        delivered(&out) == ORDERS || out.contains("OUT OF ORDER")
    })
    .await;
    let out = worker.stop().await;
    done.unwrap();
    let disorder = lines_starting(&out, "lifecycle: order ");
    let disorder: Vec<&String> = disorder.iter().filter(|l| l.contains("OUT OF ORDER")).collect();
    assert!(
        disorder.is_empty(),
        "{} events handled out of their order's sequence, e.g. {:?}",
        disorder.len(),
        &disorder[..disorder.len().min(5)]
    );
    let mut orders: Vec<u64> = lines_starting(&out, "lifecycle: order ")
        .iter()
        .filter_map(|l| l.strip_prefix("lifecycle: order ")?.strip_suffix(" delivered")?.parse().ok())
        .collect();
    orders.sort_unstable();
    assert_eq!(orders, (1..=ORDERS as u64).collect::<Vec<_>>(), "every order delivered exactly once");
    let out = Recipe::run(&redis, "order_lifecycle", &["cleanup"]).await;
    assert!(out.contains("deleted the topic `orders` (16 shards"), "{out}");
    // The shard epochs stay on purpose (a process of the old topic must never hold an epoch
    // a new topic of the same name hands out again); nothing else does.
    let left: Vec<String> = keys(&redis).into_iter().filter(|k| !k.contains(":shard-epoch:")).collect();
    assert_eq!(left, Vec::<String>::new(), "`order_lifecycle cleanup` leaves only shard epochs");
}
