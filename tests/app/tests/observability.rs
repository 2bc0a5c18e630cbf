//! Observability: `/metrics` after a known workload (successes, retries, dead letters, a
//! poison entry, take-overs, a backlog) matches what happened and what Redis reports;
//! `/readyz` follows Redis going away and coming back.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use streamx::testing::{unique_name, RedisServer};
use streamx::{Backoff, Consumer, DeadLetters, HandlerError, Message, PublishOptions};

/// Every sample interval of these tests.
const INTERVAL: Duration = Duration::from_millis(200);

async fn work(msg: Message<serde_json::Value>) -> Result<(), HandlerError> {
    match msg.payload().as_str() {
        Some("fail_once") if msg.attempt() == 1 => Err("first delivery fails".into()),
        Some("always") => Err("always fails".into()),
        Some("permanent") => Err(HandlerError::permanent("cannot ever work")),
        _ => Ok(()),
    }
}

async fn stuck(_msg: Message<serde_json::Value>) {
    std::future::pending::<()>().await
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_workload_and_gauges_match_redis() {
    let server = start_server();
    let url = server.url();
    let (stream, backlog) = (unique_name("obs"), unique_name("obs-backlog"));
    let dlq = format!("{{{stream}}}:dlq");

    // Three entries held by a consumer that stopped before the runtime starts: taken over.
    redis_cli(&server, &["XGROUP", "CREATE", &stream, "g", "$", "MKSTREAM"]).unwrap();
    for _ in 0..3 {
        redis_cli(&server, &["XADD", &stream, "*", "data", "\"ok\""]).unwrap();
    }
    redis_cli(&server, &["XREADGROUP", "GROUP", "g", "ghost", "COUNT", "10", "STREAMS", &stream, ">"]).unwrap();

    let worker = Consumer::new(stream.clone(), "g", work)
        .name_as("obs-work")
        .concurrency(4)
        .max_retries(1)
        .backoff(Backoff::new(Duration::from_millis(50), 1.0, Duration::from_millis(50)))
        .claim_idle(Duration::from_millis(200));
    let slow = Consumer::new(backlog.clone(), "slow", stuck).name_as("obs-slow").concurrency(1);
    let running = start_runtime_with(&url, vec![worker, slow], |b| {
        b.http("127.0.0.1:0").metrics_interval(INTERVAL).shutdown_timeout(Duration::from_millis(300))
    })
    .await;
    let addr = running.http_addr().expect("the endpoint is on");
    let producer = running.producer().await.unwrap();

    // 5 successes, 2 that succeed on their retry, 1 that fails both deliveries, 1 permanent
    // failure, 1 poison entry that cannot decode; and 300 entries behind a stuck handler.
    for payload in ["ok", "ok", "ok", "ok", "ok", "fail_once", "fail_once", "always", "permanent"] {
        producer.publish(&stream, &payload).await.unwrap();
    }
    producer.publish_raw(&stream, Bytes::from_static(b"{not json"), &PublishOptions::new()).await.unwrap();
    producer.publish_batch(&backlog, &vec!["queued"; 300]).await.unwrap();

    let work = [("stream", stream.as_str()), ("group", "g"), ("consumer", "obs-work")];
    let consumed = |text: &str, outcome: &str| {
        let mut labels = work.to_vec();
        labels.push(("outcome", outcome));
        prometheus_value(text, "streamx_messages_consumed_total", &labels).unwrap_or(0.0)
    };
    // success: 5 + 2 retried + 3 taken over; retry: 2 + 1; dead_letter: `always` and
    // `permanent`; rejected: the poison entry.
    let expected = [("success", 10.0), ("retry", 3.0), ("dead_letter", 2.0), ("rejected", 1.0)];
    wait_until(Duration::from_secs(20), "every outcome counted", || async {
        let text = scrape(addr).await;
        expected.iter().all(|(outcome, n)| consumed(&text, outcome) >= *n)
    })
    .await
    .unwrap();
    let text = scrape(addr).await;
    for (outcome, n) in expected {
        assert_eq!(consumed(&text, outcome), n, "outcome {outcome}:\n{text}");
    }
    assert_eq!(prometheus_value(&text, "streamx_takeovers_total", &work), Some(3.0));
    // 13 handler runs (the poison entry's decode counts as one); end-to-end latency for runs
    // at attempt 1: the 10 entries this runtime read and the 3 taken over (a take-over keeps
    // the attempt number: their holder may never have started them), not the retries.
    assert_eq!(prometheus_value(&text, "streamx_handler_duration_seconds_count", &work), Some(13.0 + 3.0));
    assert_eq!(prometheus_value(&text, "streamx_end_to_end_latency_seconds_count", &work), Some(13.0));
    let published = |s: &str| prometheus_value(&text, "streamx_messages_published_total", &[("stream", s)]);
    assert_eq!(published(&stream), Some(10.0));
    assert_eq!(published(&backlog), Some(300.0));
    assert_eq!(
        prometheus_value(&text, "streamx_publish_duration_seconds_count", &[("stream", backlog.as_str())]),
        Some(1.0),
        "a batch is one observation"
    );
    let stats = running.stats_all();
    assert_eq!(stats["obs-work"].succeeded, 10);
    assert_eq!(stats["obs-work"].dead_lettered, 3);
    assert_eq!(stats["obs-work"].claimed, 3);

    // The gauges match Redis within one sampling interval (plus its jitter).
    let cli_int = |args: &[&str]| redis_cli(&server, args).unwrap().trim().parse::<f64>().unwrap();
    let group_field = |key: &str, group: &str, field: &str| -> f64 {
        let info = redis_cli(&server, &["XINFO", "GROUPS", key]).unwrap();
        let lines: Vec<&str> = info.lines().collect();
        let at = lines.iter().position(|l| *l == group).unwrap();
        let field_at = lines[at..].iter().position(|l| *l == field).unwrap() + at;
        lines[field_at + 1].parse().unwrap()
    };
    let slow_group = [("stream", backlog.as_str()), ("group", "slow")];
    let g_group = [("stream", stream.as_str()), ("group", "g")];
    wait_until(INTERVAL * 3, "gauges sampled to Redis's values", || async {
        let text = scrape(addr).await;
        let gauge = |name: &str, labels: &[(&str, &str)]| prometheus_value(&text, name, labels);
        let lag = group_field(&backlog, "slow", "lag");
        let pending = group_field(&backlog, "slow", "pending");
        lag > 0.0
            && gauge("streamx_group_lag", &slow_group) == Some(lag)
            && gauge("streamx_group_pending", &slow_group) == Some(pending)
            && gauge("streamx_group_lag", &g_group) == Some(0.0)
            && gauge("streamx_group_pending", &g_group) == Some(0.0)
            && gauge("streamx_dead_letter_stream_length", &g_group) == Some(cli_int(&["XLEN", &dlq]))
            && gauge("streamx_handlers_in_flight", &[("consumer", "obs-slow")]) == Some(1.0)
    })
    .await
    .unwrap();
    // The oldest pending entry of the backlog was added when the batch was published; its
    // age, as Redis's clock sees it now, is what the gauge says, give or take an interval.
    let oldest = redis_cli(&server, &["XPENDING", &backlog, "slow", "-", "+", "1"]).unwrap();
    let oldest_ms: f64 = oldest.lines().next().unwrap().split('-').next().unwrap().parse().unwrap();
    let now_ms = {
        let time = redis_cli(&server, &["TIME"]).unwrap();
        let mut parts = time.lines().map(|l| l.parse::<f64>().unwrap());
        parts.next().unwrap() * 1000.0 + (parts.next().unwrap() / 1000.0).floor()
    };
    let age = (now_ms - oldest_ms) / 1000.0;
    let text = scrape(addr).await;
    let sampled = prometheus_value(&text, "streamx_group_oldest_pending_age_seconds", &slow_group).unwrap();
    let slack = (INTERVAL * 2).as_secs_f64();
    assert!(sampled <= age + 0.01 && sampled >= age - slack, "oldest pending age {sampled} s, Redis says {age} s");
    assert_eq!(prometheus_value(&text, "streamx_group_oldest_pending_age_seconds", &g_group), Some(0.0));

    // Replaying the dead letters is counted per origin stream.
    let replayed = DeadLetters::connect(&url, &dlq).await.unwrap().replay_all().await.unwrap();
    assert_eq!(replayed, 3);
    let text = scrape(addr).await;
    assert_eq!(prometheus_value(&text, "streamx_dead_letter_replays_total", &[("stream", stream.as_str())]), Some(3.0));

    let (status, body) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_redis_is_down_and_200_after() {
    let mut server = RedisServer::start().unwrap();
    let stream = unique_name("obs-ready");
    let consumer = Consumer::new(stream.clone(), "g", work).name_as("obs-ready").block(Duration::from_millis(200));
    let running = start_runtime_with(server.url(), vec![consumer], |b| b.http("127.0.0.1:0")).await;
    let addr = running.http_addr().unwrap();
    let status = |code: u16| move |(got, _): &(u16, String)| *got == code;

    wait_until(Duration::from_secs(10), "ready", || async { status(200)(&http_get(addr, "/readyz").await) })
        .await
        .unwrap();
    let (_, body) = http_get(addr, "/readyz").await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), serde_json::json!({ "ready": true }));

    server.stop().unwrap();
    wait_until(Duration::from_secs(10), "not ready while Redis is down", || async {
        status(503)(&http_get(addr, "/readyz").await)
    })
    .await
    .unwrap();
    let (_, body) = http_get(addr, "/readyz").await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], false);
    let reasons = body["reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r.as_str().unwrap().starts_with("consumer obs-ready:")), "{body}");
    assert_eq!(running.not_ready().len(), 1);
    // Alive all along.
    assert_eq!(http_get(addr, "/healthz").await.0, 200);

    server.restart().unwrap();
    wait_until(Duration::from_secs(20), "ready again after Redis is back", || async {
        status(200)(&http_get(addr, "/readyz").await)
    })
    .await
    .unwrap();
    assert!(running.not_ready().is_empty());
    running.shutdown().await.unwrap();
}
