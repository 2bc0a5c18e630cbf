//! TLS (`rediss://` with a CA made at test time) and ACL users (a user limited to one
//! stream and the commands streamx needs), against real servers.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{redis_cli, spawn_worker, start_error, tls_or_skip, wait_exit, wait_until, Job};
use streamx::testing::RedisServer;
use streamx::{
    Consumer, DeadLetters, Error, HandlerError, Inspector, Message, MessageId, PeriodicJob, Producer, Runtime,
};

/// The ACL rule of a user that may run streamx consumers and producers on `orders` only:
/// the stream, its dead-letter stream and the group bookkeeping keys next to it, stream
/// commands, the engine's scripts and what they call, and what the client sends when it
/// connects (the README's rule, with the `{orders}:*` keys spelled out one by one and
/// `+@stream` for the stream commands; `acl_checks.rs` runs the README's rule itself).
const ORDERS_USER_RULES: &[&str] = &[
    "on",
    "resetkeys",
    "~orders",
    "~{orders}:dlq",
    "~{orders}:retries:*",
    "~{orders}:consumers:*",
    "~{orders}:takeovers:*",
    "~{orders}:members:*",
    // The registry of stream names, written best effort at start and at a first publish.
    "~streamx:streams",
    // The topic record a producer reads once per name at its first publish (is `orders` a
    // topic?); without it the producer publishes to the stream, and the ACL LOG has a denial.
    "~{orders}:topic",
    // The promotion of delayed messages (see `PROMOTION_RULES`; its commands below).
    "~{orders}:scheduled",
    "~{orders}:scheduled-payloads",
    "~{orders}:promoter",
    // The groups' pause flags (`streamx pause`), read by every consumer (EXISTS).
    "~{orders}:paused:*",
    "resetchannels",
    "-@all",
    "+@stream",
    "+evalsha",
    // The producer's append script (batches and coalesced publishes; without it the producer
    // falls back to pipelined XADDs after one denial).
    "+eval",
    "+script|load",
    "+time",
    "+zadd",
    "+zrangebyscore",
    "+zrem",
    "+zscore",
    "+sadd",
    "+srem",
    "+smismember",
    "+exists",
    "+ping",
    "+info",
    "+client|id",
    "+client|unblock",
    "+get",
    "+set",
    "+del",
    "+hget",
    "+hdel",
    "+zcard",
];
/// What [`ORDERS_USER_RULES`] grants for the promotion of delayed messages alone: a rule
/// without them (written before delayed messages existed) still runs the consumers.
const PROMOTION_RULES: &[&str] = &[
    "~{orders}:scheduled",
    "~{orders}:scheduled-payloads",
    "~{orders}:promoter",
    "+get",
    "+set",
    "+del",
    "+hget",
    "+hdel",
    "+zcard",
];
const ORDERS_USER: &str = "orders-worker";
const ORDERS_PASSWORD: &str = "correct-horse-battery";

type Seen = Arc<Mutex<Vec<MessageId>>>;

/// A server with TLS, or `None` where the binary has none (see [`tls_or_skip`]).
fn tls_server() -> Option<RedisServer> {
    tls_or_skip(RedisServer::builder().tls(true).start())
}

/// A consumer that records every id it handles; the job with `n == fail_n` fails for good.
fn recorder(stream: &str, fail_n: Option<u64>) -> (Consumer, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = Consumer::new(stream.to_string(), "billing".to_string(), move |msg: Message<Job>| {
        let s = s.clone();
        async move {
            if Some(msg.payload().n) == fail_n {
                return Err(HandlerError::permanent("refused on purpose"));
            }
            s.lock().unwrap().push(msg.id());
            Ok(())
        }
    });
    (consumer, seen)
}

fn len(seen: &Seen) -> usize {
    seen.lock().unwrap().len()
}

/// Client connections whose server-side address is `port` (`laddr` in CLIENT LIST).
fn clients_on_port(server: &RedisServer, port: u16) -> usize {
    redis_cli(server, &["CLIENT", "LIST"]).unwrap().matches(&format!("laddr=127.0.0.1:{port} ")).count()
}

fn add_orders_user(server: &RedisServer) {
    let mut args = vec!["ACL", "SETUSER", ORDERS_USER];
    let password = format!(">{ORDERS_PASSWORD}");
    args.push(&password);
    args.extend_from_slice(ORDERS_USER_RULES);
    assert_eq!(redis_cli(server, &args).unwrap().trim(), "OK");
    assert_eq!(redis_cli(server, &["ACL", "LOG", "RESET"]).unwrap().trim(), "OK");
}

/// The objects (command or key names) of the server's ACL LOG: what was denied.
fn acl_denials(server: &RedisServer) -> Vec<String> {
    let log = redis_cli(server, &["ACL", "LOG"]).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    lines.windows(2).filter(|w| w[0] == "object").map(|w| w[1].to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca_publishes_and_consumes() {
    let Some(server) = tls_server() else { return };
    let files = server.tls_files().unwrap();
    let (consumer, seen) = recorder("orders", None);
    let runtime = Runtime::builder()
        .redis_url(server.tls_url().unwrap())
        .tls_ca_file(&files.ca_cert)
        .registered_consumers(false)
        .consumer(consumer.concurrency(4))
        .connect_timeout(Duration::ZERO)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let producer = runtime.producer().await.unwrap();
    let published = producer.publish_batch("orders", &(0..200).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(20), "200 handled over TLS", || async { len(&seen) >= 200 }).await.unwrap();

    // Every client of the runtime (command, publish, reader) came in on the TLS port.
    let tls_clients = clients_on_port(&server, server.tls_port().unwrap());
    assert!(tls_clients >= 3, "{tls_clients} clients on the TLS port");
    runtime.shutdown().await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 200, "each handled once");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), published.into_iter().collect::<HashSet<_>>());
    let group = Inspector::connect(&server.url()).await.unwrap().group("orders", "billing").await.unwrap().unwrap();
    assert_eq!(group.pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_can_be_given_as_pem_and_a_client_certificate_when_required() {
    let Some(server) = tls_or_skip(RedisServer::builder().tls(true).arg("tls-auth-clients", "yes").start()) else {
        return;
    };
    let files = server.tls_files().unwrap();
    let ca_pem = files.ca_pem().unwrap();
    let builder = || {
        Runtime::builder()
            .redis_url(server.tls_url().unwrap())
            .tls_ca_pem(ca_pem.clone())
            .registered_consumers(false)
            .connect_timeout(Duration::from_secs(10))
    };

    // Without a client certificate the server refuses, at once and saying what is missing.
    let t0 = Instant::now();
    let err = builder().consumer(recorder("orders", None).0).build().unwrap().start().await.err().expect("refused");
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(text.contains("requires a client certificate"), "{text}");
    assert!(text.contains("STREAMX_REDIS_TLS_CERT"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(3), "not retried for the connect timeout: {:?}", t0.elapsed());

    let (consumer, seen) = recorder("orders", None);
    let runtime = builder()
        .tls_client_cert_files(&files.client_cert, &files.client_key)
        .consumer(consumer)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let id = runtime.producer().await.unwrap().publish("orders", &Job::ok(1)).await.unwrap();
    wait_until(Duration::from_secs(10), "handled with a client certificate", || async { len(&seen) >= 1 })
        .await
        .unwrap();
    runtime.shutdown().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_rejected_at_once_with_a_hint() {
    let Some(server) = tls_server() else { return };
    let Some(other) = tls_server() else { return };
    let start = |ca: Option<std::path::PathBuf>| {
        let mut builder = Runtime::builder()
            .redis_url(server.tls_url().unwrap())
            .registered_consumers(false)
            .consumer(recorder("orders", None).0);
        if let Some(ca) = ca {
            builder = builder.tls_ca_file(ca);
        }
        async move { builder.build().unwrap().start().await.err().expect("the certificate is rejected") }
    };
    // The system's CAs (no CA given), then another server's CA: neither signed this
    // server's certificate. The default connect timeout (10 s) is not waited out.
    for ca in [None, Some(other.tls_files().unwrap().ca_cert.clone())] {
        let t0 = Instant::now();
        let err = start(ca.clone()).await;
        let text = err.to_string();
        assert!(matches!(err, Error::Connect { .. }), "{text}");
        assert!(text.contains(&server.tls_url().unwrap()), "{text}");
        assert!(text.contains("certificate was rejected (UnknownIssuer)"), "{ca:?}: {text}");
        // The hint says what was used: no CA (set one), or the CA file that was given.
        match &ca {
            None => assert!(text.contains("no CA was configured") && text.contains("STREAMX_REDIS_TLS_CA"), "{text}"),
            Some(ca) => assert!(text.contains(&format!("the CA file {} (tls_ca_file", ca.display())), "{text}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{ca:?}: took {:?}", t0.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_tls_mixed_up_fail_clearly_without_hanging() {
    let Some(server) = tls_server() else { return };
    let ca = server.tls_files().unwrap().ca_cert.clone();
    let start = |url: String| {
        let ca = ca.clone();
        async move {
            let t0 = Instant::now();
            let err = Runtime::builder()
                .redis_url(url)
                .tls_ca_file(ca)
                .registered_consumers(false)
                .consumer(recorder("orders", None).0)
                .connect_timeout(Duration::ZERO)
                .build()
                .map(|b| async move { b.start().await.err() });
            let err = match err {
                Ok(start) => start.await.expect("the connect fails"),
                Err(e) => e,
            };
            (err, t0.elapsed())
        }
    };

    // A TLS option on a plain URL is a configuration error, before any connect.
    let plain_to_tls_port = format!("redis://127.0.0.1:{}", server.tls_port().unwrap());
    let (err, _) = start(plain_to_tls_port.clone()).await;
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("use rediss://"), "{err}");

    // Plain TCP to the TLS port: the server drops the connection.
    let t0 = Instant::now();
    let err = start_error(&plain_to_tls_port, recorder("orders", None).0).await;
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(text.contains("if it only accepts TLS, use a rediss:// URL"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());

    // TLS to the plain port: no handshake ever comes; bounded by the client's 5 s
    // connection timeout.
    let (err, took) = start(format!("rediss://127.0.0.1:{}", server.port())).await;
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(text.contains("if the port does not speak TLS, use a redis:// URL"), "{text}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_takes_the_ca_from_the_environment() {
    let Some(server) = tls_server() else { return };
    let ca = server.tls_files().unwrap().ca_cert.to_str().unwrap().to_string();
    let tls_url = server.tls_url().unwrap();

    // Without the CA the worker exits with a clear error.
    let mut refused = spawn_worker(&tls_url, "jobs", &[]);
    let status = wait_exit(&mut refused, Duration::from_secs(20)).await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(refused.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("UnknownIssuer") && stderr.contains("STREAMX_REDIS_TLS_CA"), "{stderr}");

    let mut worker = spawn_worker(&tls_url, "jobs", &[("STREAMX_REDIS_TLS_CA", &ca)]);
    // Published on the admin (plain) port, consumed and recorded by the worker over TLS.
    let producer = Producer::connect(&server.url()).await.unwrap();
    let ids = producer.publish_batch("app.jobs", &(0..50).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(30), "50 jobs recorded by the worker", || async {
        common::handled(&server.url()).await.len() >= 50
    })
    .await
    .unwrap();
    assert!(clients_on_port(&server, server.tls_port().unwrap()) >= 2);
    common::sigterm(&worker);
    assert!(wait_exit(&mut worker, Duration::from_secs(20)).await.success());
    let handled: HashSet<String> = common::handled(&server.url()).await.into_iter().map(|h| h.id).collect();
    assert_eq!(handled, common::id_strings(&ids).into_iter().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_limited_to_orders_runs_a_consumer_with_dead_letters() {
    let server = common::start_server();
    add_orders_user(&server);
    let (consumer, seen) = recorder("orders", Some(13));
    let runtime = Runtime::builder()
        .redis_url(server.url())
        .credentials(ORDERS_USER, ORDERS_PASSWORD)
        .registered_consumers(false)
        .consumer(consumer.concurrency(4))
        .connect_timeout(Duration::ZERO)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    // The producer takes the credentials from the URL.
    let url = format!("redis://{ORDERS_USER}:{ORDERS_PASSWORD}@127.0.0.1:{}", server.port());
    let producer = Producer::connect(&url).await.unwrap();
    let ids = producer.publish_batch("orders", &(0..50).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    let dlq = DeadLetters::connect(&url, "{orders}:dlq").await.unwrap();
    let denied = || redis_cli(&server, &["ACL", "LOG"]).unwrap();
    wait_until(Duration::from_secs(20), "49 handled and 1 dead-lettered", || async {
        let done = len(&seen) >= 49 && dlq.list(None, 10).await.map(|p| p.total).unwrap_or(0) >= 1;
        if !done && !acl_denials(&server).is_empty() {
            panic!("the ACL rule denied something: {}", denied());
        }
        done
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();

    let page = dlq.list(None, 10).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.entries[0].origin_id, Some(ids[13]));
    assert_eq!(seen.lock().unwrap().len(), 49);
    let group = Inspector::connect(&server.url()).await.unwrap().group("orders", "billing").await.unwrap().unwrap();
    assert_eq!(group.pending, 0, "everything acknowledged or dead-lettered");
    // The rule was enough: the server denied nothing.
    assert_eq!(acl_denials(&server), Vec::<String>::new(), "{}", redis_cli(&server, &["ACL", "LOG"]).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stream_is_a_permission_error_naming_the_keys() {
    let server = common::start_server();
    add_orders_user(&server);
    let err = Runtime::builder()
        .redis_url(server.url())
        .credentials(ORDERS_USER, ORDERS_PASSWORD)
        .registered_consumers(false)
        .consumer(recorder("payments", None).0)
        .connect_timeout(Duration::ZERO)
        .build()
        .unwrap()
        .start()
        .await
        .err()
        .expect("no access to `payments`");
    // Refused by the start-up check, before the group is created: every key is named.
    let text = err.to_string();
    let Error::MissingPermissions(missing) = &err else { panic!("{text}") };
    assert_eq!(missing.streams, ["payments"], "{text}");
    assert!(missing.commands.is_empty(), "{text}");
    assert_eq!(missing.keys[..2], ["payments", "{payments}:dlq"], "{text}");
    assert!(missing.keys.contains(&"{payments}:retries:billing".to_string()), "{text}");
    assert_eq!(missing.grant, format!("ACL SETUSER {ORDERS_USER} ~payments ~{{payments}}:*"), "{text}");
    assert!(text.contains("`payments`, `{payments}:dlq`"), "{text}");
    assert!(!format!("{text} {err:?}").contains(ORDERS_PASSWORD));

    let url = format!("redis://{ORDERS_USER}:{ORDERS_PASSWORD}@127.0.0.1:{}", server.port());
    let producer = Producer::connect(&url).await.unwrap();
    let err = producer.publish("payments", &Job::ok(1)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("Redis XADD on `payments` failed:"), "{text}");
    assert!(text.contains("NOPERM"), "{text}");
    assert!(!format!("{text} {err:?}").contains(ORDERS_PASSWORD));
    // `orders` is still fine for the same user.
    producer.publish("orders", &Job::ok(2)).await.unwrap();
}

/// A periodic job's stream and state are checked at start and granted by `acl_rule` like a
/// consumer's keys: a job publishing outside the user's keys fails the start, naming them,
/// instead of failing every tick later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_job_outside_the_users_keys_is_a_permission_error_at_start() {
    let server = common::start_server();
    add_orders_user(&server);
    let job = PeriodicJob::new("daily", "0 0 * * * *", "reports", |_| async { 1 });
    let runtime = Runtime::builder()
        .redis_url(server.url())
        .credentials(ORDERS_USER, ORDERS_PASSWORD)
        .registered_consumers(false)
        .registered_periodic_jobs(false)
        .consumer(recorder("orders", None).0)
        .periodic(job)
        .connect_timeout(Duration::ZERO)
        .build()
        .unwrap();
    let rule = runtime.acl_rule(ORDERS_USER);
    assert!(rule.contains(" ~reports ~{reports}:* "), "{rule}");
    let err = runtime.start().await.err().expect("no access to `reports`");
    let text = err.to_string();
    let Error::MissingPermissions(missing) = &err else { panic!("{text}") };
    assert_eq!(missing.keys, ["reports", "{reports}:periodic:daily"], "{text}");
    assert_eq!(missing.grant, format!("ACL SETUSER {ORDERS_USER} ~reports ~{{reports}}:*"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_stream_outside_the_users_keys_loses_nothing() {
    let server = common::start_server();
    // `~orders*` does not match `{orders}:dlq`.
    let without_dlq: Vec<&str> = ORDERS_USER_RULES
        .iter()
        .copied()
        .filter(|r| r.starts_with('~') && *r != "~{orders}:dlq")
        .chain(["~orders*"])
        .collect();
    let mut args = vec!["ACL", "SETUSER", ORDERS_USER];
    let password = format!(">{ORDERS_PASSWORD}");
    args.push(&password);
    args.extend(ORDERS_USER_RULES.iter().copied().filter(|r| *r != "~{orders}:dlq"));
    args.push("~orders*");
    assert_eq!(redis_cli(&server, &args).unwrap().trim(), "OK");
    let (consumer, _) = recorder("orders", Some(0));
    let consumer = consumer.claim_idle(Duration::from_millis(200)).max_retries(100);
    let builder = || {
        Runtime::builder()
            .redis_url(server.url())
            .credentials(ORDERS_USER, ORDERS_PASSWORD)
            .registered_consumers(false)
            .consumer(consumer.clone())
    };

    // At start: refused, naming the key.
    let err = builder().build().unwrap().start().await.err().expect("refused at start");
    assert!(matches!(&err, Error::MissingPermissions(m) if m.keys == ["{orders}:dlq"]), "{err}");

    // Taken away under a running worker: the dead-letter move is refused, the message stays.
    add_orders_user(&server);
    let runtime = builder().build().unwrap().start().await.unwrap();
    let mut revoke = vec!["ACL", "SETUSER", ORDERS_USER, "resetkeys"];
    revoke.extend(&without_dlq);
    assert_eq!(redis_cli(&server, &revoke).unwrap().trim(), "OK");
    let producer = runtime.producer().await.unwrap();
    let id = producer.publish("orders", &Job::ok(0)).await.unwrap();
    let dlq = DeadLetters::connect(&server.url(), "{orders}:dlq").await.unwrap();
    let inspector = Inspector::connect(&server.url()).await.unwrap();
    let stats = runtime.stats("orders/billing").unwrap();
    wait_until(Duration::from_secs(10), "the dead-letter move denied, and the consumer not ready", || async {
        acl_denials(&server).iter().any(|o| o == "{orders}:dlq")
            && stats.snapshot().dead_letter_failures >= 1
            && runtime.not_ready().iter().any(|r| r.contains("may not touch the keys `{orders}:dlq`"))
    })
    .await
    .unwrap();
    assert_eq!(dlq.list(None, 10).await.unwrap().total, 0);
    assert_eq!(inspector.group("orders", "billing").await.unwrap().unwrap().pending, 1, "still pending, not lost");

    // Granting the key lets the next attempt through.
    assert_eq!(redis_cli(&server, &["ACL", "SETUSER", ORDERS_USER, "~{orders}:dlq"]).unwrap().trim(), "OK");
    wait_until(Duration::from_secs(10), "dead-lettered once allowed, and ready", || async {
        dlq.list(None, 10).await.map(|p| p.total).unwrap_or(0) == 1 && runtime.not_ready().is_empty()
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    assert_eq!(dlq.list(None, 10).await.unwrap().entries[0].origin_id, Some(id));
    assert_eq!(inspector.group("orders", "billing").await.unwrap().unwrap().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_once_and_is_never_shown() {
    let server = common::start_server();
    add_orders_user(&server);
    let wrong = "not-the-password-42";

    let builder = Runtime::builder()
        .redis_url(format!("redis://someone:{wrong}@127.0.0.1:{}", server.port()))
        .credentials(ORDERS_USER, wrong)
        .registered_consumers(false)
        .consumer(recorder("orders", None).0);
    let builder_debug = format!("{builder:?}");
    assert!(builder_debug.contains(&format!("{ORDERS_USER}:***")), "{builder_debug}");
    let runtime = builder.build().unwrap();
    let runtime_debug = format!("{runtime:?} {}", runtime.url());
    let t0 = Instant::now();
    let err = runtime.start().await.err().expect("wrong password");
    let text = err.to_string();
    assert!(t0.elapsed() < Duration::from_secs(3), "not retried for the connect timeout: {:?}", t0.elapsed());
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(text.contains(&format!("redis://{ORDERS_USER}:***@127.0.0.1:{}", server.port())), "{text}");
    assert!(text.contains("Authentication Error: WRONGPASS"), "{text}");
    for shown in [builder_debug, runtime_debug, text, format!("{err:?}")] {
        assert!(!shown.contains(wrong), "password shown: {shown}");
    }

    // The same through the &str API, and through a worker process's output.
    let url = format!("redis://{ORDERS_USER}:{wrong}@127.0.0.1:{}", server.port());
    let err = Producer::connect(&url).await.err().expect("wrong password");
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
    assert!(!format!("{err} {err:?}").contains(wrong), "{err:?}");
    let mut worker = spawn_worker(&url, "jobs", &[("RUST_LOG", "debug")]);
    assert!(!wait_exit(&mut worker, Duration::from_secs(20)).await.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("WRONGPASS") && stderr.contains(&format!("{ORDERS_USER}:***@")), "{stderr}");
    assert!(!stderr.contains(wrong), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_cluster_urls_use_tls_with_the_custom_ca_too() {
    // A one-node cluster that speaks TLS to clients and on its bus.
    let bus_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = RedisServer::builder()
        .tls(true)
        .arg("cluster-enabled", "yes")
        .arg("tls-cluster", "yes")
        .arg("cluster-port", bus_port.to_string())
        // Alone, a node does not know its own address; CLUSTER SLOTS would give "".
        .arg("cluster-announce-ip", "127.0.0.1")
        .start();
    let Some(server) = tls_or_skip(started) else { return };
    assert_eq!(redis_cli(&server, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).unwrap().trim(), "OK");
    wait_until(Duration::from_secs(10), "cluster_state:ok", || async {
        redis_cli(&server, &["CLUSTER", "INFO"]).unwrap().contains("cluster_state:ok")
    })
    .await
    .unwrap();

    let url = format!("rediss-cluster://127.0.0.1:{}", server.tls_port().unwrap());
    let (consumer, seen) = recorder("{orders}.eu", None);
    let runtime = Runtime::builder()
        .redis_url(&url)
        .tls_ca_file(&server.tls_files().unwrap().ca_cert)
        .registered_consumers(false)
        .consumer(consumer)
        .connect_timeout(Duration::ZERO)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let ids = runtime
        .producer()
        .await
        .unwrap()
        .publish_batch("{orders}.eu", &(0..20).map(Job::ok).collect::<Vec<_>>())
        .await
        .unwrap();
    wait_until(Duration::from_secs(20), "20 handled over TLS in cluster mode", || async { len(&seen) >= 20 })
        .await
        .unwrap();
    assert!(clients_on_port(&server, server.tls_port().unwrap()) >= 3);
    runtime.shutdown().await.unwrap();
    assert_eq!(seen.lock().unwrap().iter().copied().collect::<HashSet<_>>(), ids.into_iter().collect::<HashSet<_>>());

    // Without the CA, refused like a standalone server.
    let err = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(recorder("{orders}.eu", None).0)
        .build()
        .unwrap()
        .start()
        .await
        .err()
        .expect("untrusted");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

/// A rule written before delayed messages existed (without what their promotion needs) still
/// starts plain consumers, which consume as before: only the promotion is refused (a warning,
/// retried a minute later), never a consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_from_before_delayed_messages_still_runs_the_consumers() {
    let server = common::start_server();
    let mut args = vec!["ACL", "SETUSER", ORDERS_USER];
    let password = format!(">{ORDERS_PASSWORD}");
    args.push(&password);
    args.extend(ORDERS_USER_RULES.iter().copied().filter(|r| !PROMOTION_RULES.contains(r)));
    assert_eq!(redis_cli(&server, &args).unwrap().trim(), "OK");
    let (consumer, seen) = recorder("orders", None);
    let runtime = Runtime::builder()
        .redis_url(server.url())
        .credentials(ORDERS_USER, ORDERS_PASSWORD)
        .registered_consumers(false)
        .consumer(consumer.concurrency(4))
        .connect_timeout(Duration::ZERO)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let producer = Producer::connect(&server.url()).await.unwrap();
    producer.publish_batch("orders", &(0..20).map(Job::ok).collect::<Vec<_>>()).await.unwrap();
    wait_until(Duration::from_secs(20), "20 handled", || async { len(&seen) >= 20 }).await.unwrap();
    runtime.shutdown().await.unwrap();
    let denied = acl_denials(&server);
    assert!(!denied.is_empty(), "the promotion was refused (so this rule really lacks it)");
    assert!(
        denied.iter().all(|d| [
            "get",
            "evalsha",
            "{orders}:promoter",
            "{orders}:scheduled",
            "{orders}:scheduled-payloads"
        ]
        .contains(&d.as_str())),
        "only the promotion was refused: {denied:?}"
    );
}
