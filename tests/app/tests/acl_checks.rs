//! The permission check of the runtime, against real servers with ACL users: a user that
//! lacks a command or a key the engine needs fails at start with an error that names them
//! and gives the README's rule; a user that loses a permission while its worker runs makes
//! that consumer not ready, counted and logged, until the permission is back.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{http_get, on_both_topologies, redis_cli, spawn_worker, wait_exit, wait_until, Job, TestRedis, Topology};
use streamx::testing::RedisServer;
use streamx::{Consumer, Error, HandlerError, Message, Producer, RunningRuntime, Runtime};

const USER: &str = "orders-worker";
const PASSWORD: &str = "correct-horse-battery";

/// The rule of the README's "TLS and ACL" section, as printed there (for `orders`, user
/// `orders-worker`, password `PASSWORD`).
fn readme_rule() -> String {
    let readme = include_str!("../../../README.md");
    readme.lines().find(|l| l.starts_with("ACL SETUSER orders-worker ")).expect("the README's ACL rule").to_string()
}

/// The README's rule for `stream` instead of `orders`, as `redis-cli` arguments, with this
/// test's password, minus the words in `without`.
fn rule_args(stream: &str, without: &[&str]) -> Vec<String> {
    let rule = readme_rule().replace("orders", stream).replace(&format!("{stream}-worker"), USER);
    let words: Vec<String> = rule
        .split_whitespace()
        .map(|w| if w == ">PASSWORD" { format!(">{PASSWORD}") } else { w.to_string() })
        .collect();
    for w in without {
        assert!(words.iter().any(|x| x == w), "`{w}` is not in the README's rule: {rule}");
    }
    words.into_iter().filter(|w| !without.contains(&w.as_str())).collect()
}

fn set_user(server: &RedisServer, args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(redis_cli(server, &args).unwrap().trim(), "OK", "{args:?}");
}

fn acl(server: &RedisServer, change: &[&str]) {
    let mut args = vec!["ACL", "SETUSER", USER];
    args.extend_from_slice(change);
    assert_eq!(redis_cli(server, &args).unwrap().trim(), "OK", "{args:?}");
}

/// The objects (command or key names) of the server's ACL LOG: what was denied.
fn acl_denials(server: &RedisServer) -> Vec<String> {
    let log = redis_cli(server, &["ACL", "LOG"]).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    lines.windows(2).filter(|w| w[0] == "object").map(|w| w[1].to_string()).collect()
}

fn user_url(server: &RedisServer) -> String {
    format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}", server.port())
}

type Seen = Arc<Mutex<Vec<u64>>>;

/// A consumer of `orders` (group `billing`) that records each job's number; the jobs in
/// `fail_once` fail on their first delivery.
fn recorder(fail_once: &'static [u64]) -> (Consumer, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = Consumer::new("orders", "billing", move |msg: Message<Job>| {
        let s = s.clone();
        async move {
            if fail_once.contains(&msg.payload().n) && msg.attempt() == 1 {
                return Err(HandlerError::from("fails once on purpose"));
            }
            s.lock().unwrap().push(msg.payload().n);
            Ok(())
        }
    });
    (consumer, seen)
}

fn builder(server: &RedisServer, consumer: Consumer) -> streamx::RuntimeBuilder {
    Runtime::builder()
        .redis_url(server.url())
        .credentials(USER, PASSWORD)
        .registered_consumers(false)
        .consumer(consumer)
        .connect_timeout(Duration::ZERO)
}

/// Starting fails (within 3 s): the error.
async fn start_fails(server: &RedisServer) -> Error {
    let t0 = Instant::now();
    let err = match builder(server, recorder(&[]).0).build().unwrap().start().await {
        Ok(running) => {
            running.shutdown().await.unwrap();
            panic!("the runtime started")
        }
        Err(e) => e,
    };
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}: {err}", t0.elapsed());
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_time_fails_at_start_naming_the_command_and_the_rule() {
    let server = common::start_server();
    // The README's rule from before the engine read the Redis clock.
    set_user(&server, &rule_args("orders", &["+time"]));
    let err = start_fails(&server).await;
    let text = err.to_string();
    let Error::MissingPermissions(missing) = &err else { panic!("{text}") };
    assert_eq!(
        (&missing.streams[..], &missing.commands[..], &missing.keys[..]),
        (&["orders".to_string()][..], &["TIME".to_string()][..], &[][..])
    );
    assert!(text.contains("`orders`"), "names the stream: {text}");
    assert!(text.contains("TIME"), "names the command: {text}");
    assert!(text.contains(&readme_rule().replace("orders-worker", USER)), "gives the README's rule: {text}");
    assert!(text.contains(&format!("ACL SETUSER {USER} +time")), "gives the fix: {text}");
    // Nothing was created: the check runs before the group is.
    assert_eq!(redis_cli(&server, &["EXISTS", "orders"]).unwrap().trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_the_derived_keys_fails_at_start_naming_them() {
    let server = common::start_server();
    // `~orders` only: the dead-letter stream and the group's keys are `{orders}:...`.
    set_user(&server, &rule_args("orders", &["~{orders}:*"]));
    let err = start_fails(&server).await;
    let text = err.to_string();
    for key in ["{orders}:dlq", "{orders}:retries:billing", "{orders}:consumers:billing", "{orders}:takeovers:billing"]
    {
        assert!(text.contains(&format!("`{key}`")), "names {key}: {text}");
    }
    assert!(!text.contains("`orders`,"), "the stream itself is allowed: {text}");
    assert!(text.contains(&format!("ACL SETUSER {USER} ~{{orders}}:*")), "gives the fix: {text}");
    assert!(text.contains(&readme_rule().replace("orders-worker", USER)), "gives the README's rule: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_without_a_subscriber_prints_the_refusal_and_exits() {
    let server = common::start_server();
    set_user(&server, &rule_args("app.jobs", &["+time"]));
    let mut worker = spawn_worker(&user_url(&server), "jobs", &[]);
    let status = wait_exit(&mut worker, Duration::from_secs(10)).await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("`app.jobs`") && stderr.contains("TIME"), "{stderr}");
    assert!(stderr.contains("ACL SETUSER orders-worker on >PASSWORD resetkeys ~app.jobs ~{app.jobs}:*"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_rule_passes_the_check_and_consumes_without_a_denial() {
    let server = common::start_server();
    set_user(&server, &rule_args("orders", &[]));
    assert_eq!(redis_cli(&server, &["ACL", "LOG", "RESET"]).unwrap().trim(), "OK");
    let (consumer, seen) = recorder(&[3]);
    let running = builder(&server, consumer).build().unwrap().start().await.unwrap();
    let producer = Producer::connect(&user_url(&server)).await.unwrap();
    producer.publish_batch("orders", &(0..20).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(20), "20 handled", || async { seen.lock().unwrap().len() >= 20 }).await.unwrap();
    assert!(running.not_ready().is_empty(), "{:?}", running.not_ready());
    running.shutdown().await.unwrap();
    // Neither the check nor the engine was refused anything.
    assert_eq!(acl_denials(&server), Vec::<String>::new());
}

/// A user from before the registry of stream names (the README's rule without
/// `~streamx:streams`) still starts and consumes: the registry is written best effort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_the_registry_of_stream_names_still_starts_and_consumes() {
    let server = common::start_server();
    set_user(&server, &rule_args("orders", &["~streamx:streams"]));
    let (consumer, seen) = recorder(&[]);
    let running = builder(&server, consumer).build().unwrap().start().await.unwrap();
    let producer = Producer::connect(&user_url(&server)).await.unwrap();
    producer.publish_batch("orders", &(0..5).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(20), "5 handled", || async { seen.lock().unwrap().len() >= 5 }).await.unwrap();
    assert!(running.not_ready().is_empty(), "{:?}", running.not_ready());
    running.shutdown().await.unwrap();
    assert_eq!(redis_cli(&server, &["EXISTS", "streamx:streams"]).unwrap().trim(), "0", "nothing registered");
}

/// Everything logged in this test binary (a subscriber is installed once, for all tests).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(logs: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

/// Waits until the runtime is ready (`/readyz` 200) or not (503, with a reason containing
/// `naming`); returns the body.
async fn wait_readyz(running: &RunningRuntime, ready: bool, naming: &str, what: &str) -> String {
    let addr = running.http_addr().unwrap();
    let body = Arc::new(Mutex::new(String::new()));
    let result = wait_until(Duration::from_secs(20), what, || {
        let body = body.clone();
        async move {
            let (status, text) = http_get(addr, "/readyz").await;
            *body.lock().unwrap() = text.clone();
            if ready {
                status == 200
            } else {
                status == 503 && text.contains(naming)
            }
        }
    })
    .await;
    let body = body.lock().unwrap().clone();
    result.unwrap_or_else(|e| panic!("{e}: last /readyz: {body}; not ready: {:?}", running.not_ready()));
    body
}

async fn denials_counted(running: &RunningRuntime) -> f64 {
    let (_, text) = http_get(running.http_addr().unwrap(), "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("streamx_permission_denied_total{") && l.contains(r#"stream="orders""#))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_user_loses_a_command_is_not_ready_until_it_is_granted_again() {
    let logs = logs();
    let server = common::start_server();
    set_user(&server, &rule_args("orders", &[]));
    let (consumer, seen) = recorder(&[7]);
    let consumer = consumer.claim_idle(Duration::from_millis(300)).max_retries(5);
    let running = builder(&server, consumer).http("127.0.0.1:0").build().unwrap().start().await.unwrap();
    let producer = Producer::connect(&user_url(&server)).await.unwrap();
    wait_readyz(&running, true, "", "ready at first").await;

    // No script at all: the heartbeat fails within claim_idle / 3.
    acl(&server, &["-evalsha"]);
    let body = wait_readyz(&running, false, "may not run EVALSHA", "not ready without EVALSHA").await;
    assert!(body.contains("consumer orders/billing: the Redis user `orders-worker` may not"), "{body}");
    assert!(denials_counted(&running).await >= 1.0);
    let (_, metrics) = http_get(running.http_addr().unwrap(), "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("streamx_permission_denied_total{") && l.contains(r#"command="EVALSHA""#)),
        "{metrics}"
    );
    acl(&server, &["+evalsha"]);
    wait_readyz(&running, true, "", "ready again with EVALSHA").await;

    // No XCLAIM: job 7 fails once, and parking it for its retry claims it.
    acl(&server, &["-xclaim"]);
    producer.publish_batch("orders", &(0..10).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_readyz(&running, false, "may not run XCLAIM", "not ready without XCLAIM").await;
    let counted = denials_counted(&running).await;
    assert!(counted >= 2.0, "{counted}");
    // Logged: first what was refused (Redis 7.0 says only which script), then what is missing.
    let fix = format!("may not run XCLAIM; grant it with `ACL SETUSER {USER} +xclaim`");
    wait_until(Duration::from_secs(5), "the fix logged", || async {
        logged(&logs).lines().any(|l| l.contains("ERROR") && l.contains(&fix))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", logged(&logs)));
    assert!(logged(&logs)
        .lines()
        .any(|l| l.contains("ERROR") && l.contains("script (which calls") && l.contains("XCLAIM")));
    acl(&server, &["+xclaim"]);
    wait_readyz(&running, true, "", "ready again with XCLAIM").await;
    wait_until(Duration::from_secs(20), "every job handled, 7 on its retry", || async {
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        seen == (0..10).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(logged(&logs).contains("permissions"), "the recovery is logged");
    running.shutdown().await.unwrap();
}

#[test]
fn the_readme_rule_is_the_one_the_runtime_gives() {
    let (consumer, _) = recorder(&[]);
    let runtime =
        Runtime::builder().redis_url("redis://127.0.0.1:6379").registered_consumers(false).consumer(consumer).build();
    assert_eq!(runtime.unwrap().acl_rule(USER), readme_rule());
}

/// On a server and on a cluster (ACL users are per node: the rule is set on each): the rule
/// `acl_rule` gives (with `+cluster|info +cluster|slots` on a cluster) passes the check and
/// consumes; without `+time` the start fails naming it.
async fn the_rule_the_runtime_gives_passes_and_without_time_fails(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let (consumer, seen) = recorder(&[]);
    let builder = || {
        Runtime::builder()
            .redis_url(redis.url())
            .credentials(USER, PASSWORD)
            .registered_consumers(false)
            .consumer(consumer.clone())
            .connect_timeout(Duration::ZERO)
    };
    let rule = builder().build().unwrap().acl_rule(USER);
    assert_eq!(rule.contains("+cluster|slots"), topology == Topology::Cluster, "{rule}");
    let set = |without: &str| {
        let password = format!(">{PASSWORD}");
        let args: Vec<&str> = rule
            .split_whitespace()
            .map(|w| if w == ">PASSWORD" { password.as_str() } else { w })
            .filter(|w| *w != without)
            .collect();
        for out in redis.cli_all(&args).unwrap() {
            assert_eq!(out.trim(), "OK", "{args:?}");
        }
    };

    set("+time");
    let err = builder().build().unwrap().start().await.err().expect("refused without TIME");
    assert!(matches!(&err, Error::MissingPermissions(m) if m.commands == ["TIME"] && m.keys.is_empty()), "{err}");

    set("");
    let running = builder().build().unwrap().start().await.unwrap();
    let producer = running.producer().await.unwrap();
    producer.publish_batch("orders", &(0..10).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(20), "10 handled", || async { seen.lock().unwrap().len() >= 10 }).await.unwrap();
    assert!(running.not_ready().is_empty(), "{:?}", running.not_ready());
    running.shutdown().await.unwrap();
}

on_both_topologies!(the_rule_the_runtime_gives_passes_and_without_time_fails);
