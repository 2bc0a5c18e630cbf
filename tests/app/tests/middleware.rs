//! Middleware (issue 27) against spawned servers: the order of runtime-wide and per-consumer
//! layers, each short-circuit outcome asserted in Redis (acknowledged, retried,
//! dead-lettered), a panicking layer, a layer turning the handler's error into a skip, and
//! publish layers (a header the consumer sees; a refusal that writes nothing).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_both_topologies, redis_cli, start_runtime_with, start_server, wait_until, TestRedis, Topology};
use streamx::testing::{unique_name, RedisServer};
use streamx::{
    Backoff, Consumer, DeadLetters, Delivery, Error, FailureKind, HandlerError, Message, Next, Outcome, Outgoing,
    Producer, PublishRefused,
};

type Log = Arc<Mutex<Vec<String>>>;

/// What a handler saw: its payload and the `correlation-id` header.
type Seen = Arc<Mutex<Vec<(u64, Option<String>)>>>;

/// A layer recording `<name> in` / `<name> out` around the rest of the chain.
fn recording(
    name: &'static str,
    log: Log,
) -> impl Fn(Delivery, Next) -> futures_util::future::BoxFuture<'static, Outcome> {
    move |delivery, next| {
        let log = log.clone();
        Box::pin(async move {
            log.lock().unwrap().push(format!("{name} in"));
            let outcome = next.run(delivery).await;
            log.lock().unwrap().push(format!("{name} out"));
            outcome
        })
    }
}

/// How many entries of `group` on `stream` are pending.
fn pending(server: &RedisServer, stream: &str, group: &str) -> u64 {
    pending_in(&redis_cli(server, &["XPENDING", stream, group]).unwrap())
}

/// The count of an `XPENDING stream group` reply as redis-cli prints it.
fn pending_in(out: &str) -> u64 {
    out.lines().next().unwrap_or("0").trim().parse().unwrap()
}

fn fast_retries(consumer: Consumer) -> Consumer {
    consumer.backoff(Backoff::new(Duration::from_millis(20), 1.0, Duration::from_millis(20)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_layers_wrap_the_consumers_own_in_the_order_added() {
    let server = start_server();
    let stream = unique_name("mw.order");
    let log: Log = Arc::default();
    let consumer = Consumer::new(stream.clone(), "g", {
        let log = log.clone();
        move |_msg: Message<u64>| {
            let log = log.clone();
            async move { log.lock().unwrap().push("handler".into()) }
        }
    })
    .layer(recording("consumer", log.clone()));
    let runtime = start_runtime_with(server.url(), vec![consumer], |b| {
        b.layer(recording("runtime-1", log.clone())).layer(recording("runtime-2", log.clone()))
    })
    .await;
    Producer::connect(&server.url()).await.unwrap().publish(&stream, &1u64).await.unwrap();

    wait_until(Duration::from_secs(20), "the message handled and acknowledged", || async {
        log.lock().unwrap().len() == 7 && pending(&server, &stream, "g") == 0
    })
    .await
    .unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["runtime-1 in", "runtime-2 in", "consumer in", "handler", "consumer out", "runtime-2 out", "runtime-1 out"]
    );
    runtime.shutdown().await.unwrap();
}

/// What a short-circuiting layer does with each payload (the handler records what it ran).
async fn deciding(delivery: Delivery, next: Next) -> Outcome {
    let payload = delivery.payload_bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    match (payload.trim_matches('"'), delivery.attempt()) {
        ("skip", _) => Outcome::skip(),
        ("retry", 1) => Outcome::retry_after("not yet", Duration::from_millis(50)),
        ("dead", _) => Outcome::dead_letter("blocked tenant"),
        ("panic-once", 1) => panic!("layer panicked on purpose"),
        ("panic-always", _) => panic!("layer always panics"),
        ("fail", _) => match next.run(delivery).await {
            Outcome::Failed { .. } => Outcome::skip(),
            other => other,
        },
        _ => next.run(delivery).await,
    }
}

async fn short_circuits_are_acknowledged_retried_or_dead_lettered_in_redis(topology: Topology) {
    let server = TestRedis::start(topology).unwrap();
    let stream = unique_name("mw.short");
    let ran: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let consumer = Consumer::new(stream.clone(), "g", {
        let ran = ran.clone();
        move |msg: Message<String>| {
            ran.lock().unwrap().push((msg.payload().clone(), msg.attempt()));
            let fail = msg.payload() == "fail";
            async move {
                if fail {
                    return Err(HandlerError::from("the handler failed"));
                }
                Ok(())
            }
        }
    })
    .layer(deciding)
    .max_retries(1);
    let runtime = start_runtime_with(server.url(), vec![fast_retries(consumer)], |b| b).await;
    let producer = Producer::connect(&server.url()).await.unwrap();
    let mut ids = std::collections::HashMap::new();
    for p in ["skip", "retry", "dead", "panic-once", "panic-always", "fail", "after"] {
        ids.insert(p, producer.publish(&stream, &p).await.unwrap());
    }

    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    wait_until(Duration::from_secs(30), "every message settled", || async {
        let handled = ran.lock().unwrap().iter().any(|(p, _)| p == "after");
        handled
            && stats.dead_lettered.load(Ordering::Relaxed) == 2
            && ran.lock().unwrap().iter().any(|(p, _)| p == "retry")
            && pending_in(&server.cli(&["XPENDING", &stream, "g"]).unwrap()) == 0
    })
    .await
    .unwrap();
    let ran = ran.lock().unwrap().clone();
    // Skip: acknowledged (nothing pending), the handler never ran.
    assert!(!ran.iter().any(|(p, _)| p == "skip"), "{ran:?}");
    // Retry: re-delivered, run at its second attempt, then acknowledged.
    assert!(ran.contains(&("retry".into(), 2)) && !ran.contains(&("retry".into(), 1)), "{ran:?}");
    // A panic at the first attempt: retried like a handler's panic, run at the second.
    assert!(ran.contains(&("panic-once".into(), 2)), "{ran:?}");
    // The handler's error turned into a skip: run once, acknowledged, never retried.
    assert_eq!(ran.iter().filter(|(p, _)| p == "fail").count(), 1, "{ran:?}");
    assert_eq!(stats.retried.load(Ordering::Relaxed), 3, "retry, panic-once and panic-always at their 1st delivery");
    // Dead-letter and the layer that always panics: in the dead-letter stream, not pending.
    let dlq = DeadLetters::connect(&server.url(), &streamx::keys::default_dead_letter_stream(&stream)).await.unwrap();
    let letters = dlq.list(None, 10).await.unwrap().entries;
    let letter =
        |p: &str| letters.iter().find(|l| l.origin_id == Some(ids[p])).unwrap_or_else(|| panic!("{p}: {letters:?}"));
    assert_eq!(letter("dead").kind, Some(FailureKind::Permanent));
    assert_eq!(letter("dead").error, "blocked tenant");
    assert!(!ran.iter().any(|(p, _)| p == "dead" || p == "panic-always"), "{ran:?}");
    assert_eq!(letter("panic-always").kind, Some(FailureKind::Panic));
    assert!(letter("panic-always").error.contains("middleware panicked: layer always panics"));
    assert_eq!(letter("panic-always").deliveries, 2);
    assert_eq!(letters.len(), 2);
    // The worker lived on: the message after the panics was handled.
    assert!(ran.contains(&("after".into(), 1)));
    runtime.shutdown().await.unwrap();
}

on_both_topologies!(short_circuits_are_acknowledged_retried_or_dead_lettered_in_redis);

fn correlation(counter: Arc<AtomicU64>) -> impl Fn(&mut Outgoing<'_>) -> Result<(), PublishRefused> + Send + Sync {
    move |msg| {
        if msg.headers().get("correlation-id").is_none() {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            msg.headers_mut().insert("correlation-id", format!("corr-{n}"));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_layers_header_reaches_the_handler_and_a_refusal_writes_nothing() {
    let server = start_server();
    let stream = unique_name("mw.publish");
    let seen: Seen = Arc::default();
    let consumer = Consumer::new(stream.clone(), "g", {
        let seen = seen.clone();
        move |msg: Message<u64>| {
            seen.lock().unwrap().push((*msg.payload(), msg.headers().get("correlation-id").map(str::to_string)));
            async {}
        }
    });
    let counter = Arc::new(AtomicU64::new(0));
    let runtime =
        start_runtime_with(server.url(), vec![consumer], |b| b.publish_layer(correlation(counter.clone()))).await;
    // The runtime's producer carries the runtime's publish layer; a producer of its own, its own.
    let from_runtime = runtime.producer().await.unwrap();
    from_runtime.publish(&stream, &1u64).await.unwrap();
    from_runtime.publish_batch(&stream, &[2u64, 3]).await.unwrap();
    let own = Producer::connect(&server.url()).await.unwrap().with_layer(correlation(counter.clone()));
    own.publish(&stream, &4u64).await.unwrap();
    wait_until(Duration::from_secs(20), "4 messages handled", || async { seen.lock().unwrap().len() >= 4 })
        .await
        .unwrap();
    let mut seen_now = seen.lock().unwrap().clone();
    seen_now.sort();
    assert_eq!(
        seen_now,
        [
            (1, Some("corr-0".into())),
            (2, Some("corr-1".into())),
            (3, Some("corr-1".into())),
            (4, Some("corr-2".into()))
        ],
        "once per publish: a batch's messages share its header"
    );

    // A refusing layer: a typed error, nothing written (single and batch).
    let refusing = Producer::connect(&server.url()).await.unwrap().with_layer(|msg: &mut Outgoing<'_>| {
        if msg.headers().get("tenant").is_none() {
            return Err(PublishRefused::new("no tenant"));
        }
        Ok(())
    });
    let len_before = redis_cli(&server, &["XLEN", &stream]).unwrap();
    for refused in [
        refusing.publish(&stream, &9u64).await.map(|_| ()).unwrap_err(),
        refusing.publish_batch(&stream, &[9u64, 10]).await.map(|_| ()).unwrap_err(),
    ] {
        match refused {
            Error::PublishRefused { stream: s, reason } => {
                assert_eq!((s.as_str(), reason.as_str()), (&*stream, "no tenant"))
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(redis_cli(&server, &["XLEN", &stream]).unwrap(), len_before, "nothing written");
    let with_tenant = streamx::PublishOptions::new().headers(streamx::Headers::new().with("tenant", "acme"));
    refusing.publish_with(&stream, &11u64, &with_tenant).await.unwrap();
    runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attributes_middleware_runs_in_a_worker_process() {
    let server = start_server();
    let url = server.url();
    let mut worker = common::spawn_worker(&url, "guarded", &[]);
    let producer = Producer::connect(&url).await.unwrap();
    let with_tenant = streamx::PublishOptions::new().headers(streamx::Headers::new().with("tenant", "acme"));
    let kept = producer.publish_with("app.guarded", &common::Job::ok(1), &with_tenant).await.unwrap();
    let refused = producer.publish("app.guarded", &common::Job::ok(2)).await.unwrap();

    let dlq = DeadLetters::connect(&url, &streamx::keys::default_dead_letter_stream("app.guarded")).await.unwrap();
    wait_until(Duration::from_secs(30), "one handled, one dead-lettered, none pending", || async {
        let handled = common::handled(&url).await;
        handled.iter().any(|h| h.consumer == "guarded")
            && dlq.count().await.unwrap() == 1
            && pending(&server, "app.guarded", "guards") == 0
    })
    .await
    .unwrap();
    let handled: Vec<_> = common::handled(&url).await.into_iter().filter(|h| h.consumer == "guarded").collect();
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].id, kept.to_string(), "handled with the STAMP header (else dead-lettered as permanent)");
    let letters = dlq.list(None, 10).await.unwrap().entries;
    let letter = letters.iter().find(|l| l.origin_id == Some(refused)).unwrap();
    assert_eq!((letter.kind, letter.error.as_str()), (Some(FailureKind::Permanent), "no tenant header"));
    common::sigterm(&worker);
    common::wait_exit(&mut worker, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_consumers_layers_run_per_message() {
    let server = start_server();
    let stream = unique_name("mw.batch");
    let batched: Arc<Mutex<Vec<u64>>> = Arc::default();
    let skip_odd = |delivery: Delivery, next: Next| async move {
        let odd = delivery.payload_bytes().is_some_and(|b| b.last().is_some_and(|d| (d - b'0') % 2 == 1));
        if odd {
            return Outcome::skip();
        }
        next.run(delivery).await
    };
    let consumer = Consumer::batch(stream.clone(), "g", {
        let batched = batched.clone();
        move |batch: Vec<Message<u64>>| {
            batched.lock().unwrap().extend(batch.iter().map(|m| *m.payload()));
            async {}
        }
    })
    .max_batch(50)
    .layer(skip_odd);
    let runtime = start_runtime_with(server.url(), vec![consumer], |b| b).await;
    Producer::connect(&server.url())
        .await
        .unwrap()
        .publish_batch(&stream, &(0..100u64).collect::<Vec<_>>())
        .await
        .unwrap();

    let stats = runtime.stats(&format!("{stream}/g")).unwrap();
    wait_until(Duration::from_secs(20), "100 acknowledged", || async {
        stats.succeeded.load(Ordering::Relaxed) == 100 && pending(&server, &stream, "g") == 0
    })
    .await
    .unwrap();
    let mut batched = batched.lock().unwrap().clone();
    batched.sort_unstable();
    assert_eq!(batched, (0..100).filter(|n| n % 2 == 0).collect::<Vec<_>>(), "only the even ones reached the batches");
    runtime.shutdown().await.unwrap();
}
