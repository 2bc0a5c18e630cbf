//! What the CLI and the dashboard refuse or survive: a `--dlq-stream` / `dlq_stream` that is
//! a live stream, an id past the year 9999, a frozen Redis under the dashboard's panels, an
//! unbounded pending page, reading as the engine's placeholder consumers, a `top --once`
//! failure's exit code, a `dlq overview` over a key the user may not read.
//! Each was a review finding; `STREAMX_TEST_BIN=<older streamx>` shows the old behaviour.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::browser::{http, Dashboard};
use common::{run_fails, run_json, run_ok, wait_until, TestRedis, Topology};
use serde_json::Value;
use streamx_testing::{redis_cli, unique_name, RedisServer};

const WAIT: Duration = Duration::from_secs(30);
const CHANGE: (&str, &str) = ("x-streamx-action", "1");

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?}: {e}"))
}

/// A live stream of 3 entries and a custom dead-letter stream of 2 letters from it.
fn live_and_letters(redis: &TestRedis) -> (String, String, String) {
    let live = unique_name("orders");
    let other = unique_name("payments");
    let letters = unique_name("custom-dlq");
    for n in 0..3 {
        redis.cli(&["XADD", &live, "*", "data", &format!(r#"{{"n":{n}}}"#)]).unwrap();
        redis.cli(&["XADD", &other, "*", "data", "{}"]).unwrap();
    }
    for _ in 0..2 {
        redis.cli(&["XADD", &letters, "*", "dlq:stream", &live, "dlq:group", "billing", "data", "{}"]).unwrap();
    }
    (live, other, letters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_stream_that_is_no_dead_letter_stream_is_refused() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let (live, other, letters) = live_and_letters(&redis);

    // The CLI: the stream itself, or another live stream, as --dlq-stream: exit 2, untouched.
    for dlq in [&live, &other] {
        let err = run_fails(&url, &["dlq", "purge", &live, "--dlq-stream", dlq, "--all", "--yes"], 2);
        assert!(err.contains("dead-letter stream"), "{err}");
        run_fails(&url, &["dlq", "replay", &live, "--dlq-stream", dlq, "--all", "--yes"], 2);
    }
    assert_eq!(redis.xlen(&live).unwrap(), 3);
    assert_eq!(redis.xlen(&other).unwrap(), 3);

    // The dashboard: 400 on every dead-letter endpoint, reads included.
    let dashboard = Dashboard::start(&url, &[]);
    for dlq in [&live, &other] {
        let q = format!("?dlq_stream={dlq}");
        for (method, path) in [
            ("POST", format!("/api/streams/{live}/dead-letters/purge{q}")),
            ("POST", format!("/api/streams/{live}/dead-letters/replay{q}")),
            ("GET", format!("/api/streams/{live}/dead-letters{q}")),
        ] {
            let (status, body) = http(dashboard.addr, method, &path, &[CHANGE]);
            assert_eq!(status, 400, "{method} {path}: {body}");
            assert!(json(&body)["error"].as_str().unwrap().contains("dead-letter stream"), "{body}");
        }
        let id = redis.cli(&["XRANGE", dlq, "-", "+", "COUNT", "1"]).unwrap();
        let id = id.lines().next().unwrap().trim();
        let (status, body) =
            http(dashboard.addr, "POST", &format!("/api/streams/{live}/dead-letters/{id}/delete{q}"), &[CHANGE]);
        assert_eq!(status, 400, "{body}");
    }
    assert_eq!(redis.xlen(&live).unwrap(), 3);
    assert_eq!(redis.xlen(&other).unwrap(), 3);

    // A real custom dead-letter stream, and a missing one, still work.
    let (status, body) = http(
        dashboard.addr,
        "POST",
        &format!("/api/streams/{live}/dead-letters/purge?dlq_stream={letters}"),
        &[CHANGE],
    );
    assert_eq!((status, json(&body)["done"].as_u64()), (200, Some(2)), "{body}");
    let missing = unique_name("nothing-yet");
    let (status, body) =
        http(dashboard.addr, "GET", &format!("/api/streams/{live}/dead-letters?dlq_stream={missing}"), &[]);
    assert_eq!(status, 200, "{body}");
    redis.cli(&["XADD", &letters, "*", "dlq:stream", &live, "dlq:group", "billing", "data", "{}"]).unwrap();
    let purged = run_json(&url, &["dlq", "purge", &live, "--dlq-stream", &letters, "--all", "--yes"]);
    assert_eq!(purged["done"], 1, "{purged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_past_the_year_9999_is_shown_not_a_crash() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("far-future");
    redis.cli(&["XADD", &stream, "1712000000000000-0", "data", "{}"]).unwrap();

    let listed = run_json(&url, &["streams"]);
    assert!(listed.as_array().unwrap().iter().any(|r| r["stream"] == stream.as_str()), "{listed}");
    assert!(run_ok(&url, &["streams"]).contains(&stream));
    let human = run_ok(&url, &["top", "--once"]);
    assert!(human.contains(&stream), "{human}");
    let info = run_json(&url, &["info", &stream]);
    assert_eq!(info["first_entry"]["time"], "1712000000000000 ms", "{info}");
    assert!(run_ok(&url, &["info", &stream]).contains("1712000000000000 ms"));
    let tailed = run_ok(&url, &["--json", "tail", &stream, "--from", "0", "--no-follow"]);
    assert!(tailed.contains(r#""time":"1712000000000000 ms""#), "{tailed}");

    // The dashboard's sampler goes on: the stream is on the page, with no error, not stale.
    let dashboard = Dashboard::start(&url, &[]);
    wait_until(WAIT, "the stream in the overview", || async {
        let (status, body) = http(dashboard.addr, "GET", "/api/overview", &[]);
        status == 200 && json(&body)["streams"].as_array().unwrap().iter().any(|s| s["stream"] == stream.as_str())
    })
    .await
    .unwrap();
    // And samples again after that one: the sampler survived it.
    let first = json(&http(dashboard.addr, "GET", "/api/overview", &[]).1)["time_ms"].as_u64().unwrap();
    wait_until(WAIT, "a later sample", || async {
        json(&http(dashboard.addr, "GET", "/api/overview", &[]).1)["time_ms"].as_u64().unwrap() > first
    })
    .await
    .unwrap();
    let overview = json(&http(dashboard.addr, "GET", "/api/overview", &[]).1);
    assert!(overview["error"].is_null(), "{overview}");
    assert_eq!(overview["stale"], false, "{overview}");
    assert!(overview["age_ms"].as_u64().unwrap() < 2_000, "fresh figures: {overview}");
}

/// Sends `signal` (`-STOP`, `-CONT`) to the test's own redis-server.
fn signal(server: &RedisServer, signal: &str) {
    let pid = server.pid().unwrap().to_string();
    assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_panels_answer_504_within_five_seconds_when_redis_hangs() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    redis_cli(&server, &["XADD", "orders", "*", "data", "{}"]).unwrap();
    redis_cli(&server, &["XGROUP", "CREATE", "orders", "billing", "0"]).unwrap();
    let dashboard = Dashboard::start(&url, &[]);
    let pending = "/api/streams/orders/groups/billing/pending";
    assert_eq!(http(dashboard.addr, "GET", pending, &[]).0, 200);

    signal(&server, "-STOP");
    for path in [pending, "/api/streams/orders/groups/billing/consumers", "/api/streams/orders/dead-letters"] {
        let started = Instant::now();
        let (status, body) = http(dashboard.addr, "GET", path, &[]);
        let took = started.elapsed();
        assert_eq!(status, 504, "{path}: {body}");
        assert!(json(&body)["error"].as_str().unwrap().contains("did not answer"), "{body}");
        assert!(took < Duration::from_secs(8), "{path} took {took:?}");
    }
    // The overview answers at once, from the samples, saying why they stopped.
    let started = Instant::now();
    let (status, body) = http(dashboard.addr, "GET", "/api/overview", &[]);
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    // 15 s of no sample, 250 ms apart: stale, with the error.
    let overview = json(&body);
    assert_eq!(overview["stale"], true, "{overview}");
    assert!(overview["age_ms"].as_u64().unwrap() > 10_000 && !overview["error"].is_null(), "{overview}");
    signal(&server, "-CONT");
    wait_until(WAIT, "the panel back", || async { http(dashboard.addr, "GET", pending, &[]).0 == 200 }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_panel_reads_at_most_a_thousand_rows() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let stream = unique_name("many");
    let add = "for i = 1, tonumber(ARGV[1]) do redis.call('XADD', KEYS[1], '*', 'data', '{}') end";
    redis.cli(&["EVAL", add, "1", &stream, "1500"]).unwrap();
    redis.cli(&["XGROUP", "CREATE", &stream, "billing", "0"]).unwrap();
    redis.cli(&["XREADGROUP", "GROUP", "billing", "w1", "COUNT", "2000", "STREAMS", &stream, ">"]).unwrap();
    let dashboard = Dashboard::start(&redis.url(), &[]);
    let path = format!("/api/streams/{stream}/groups/billing/pending?limit=1000000");
    let (status, body) = http(dashboard.addr, "GET", &path, &[]);
    assert_eq!(status, 200, "{body}");
    let page = json(&body);
    assert_eq!(page["total"], 1500);
    assert_eq!(page["entries"].as_array().unwrap().len(), 1000);
    let one =
        json(&http(dashboard.addr, "GET", &format!("/api/streams/{stream}/groups/billing/pending?limit=0"), &[]).1);
    assert_eq!(one["entries"].as_array().unwrap().len(), 1, "at least one row: {one}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_refuses_to_read_as_the_engines_placeholder_consumers() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("tail-placeholder");
    redis.cli(&["XADD", &stream, "*", "data", "{}"]).unwrap();
    redis.cli(&["XGROUP", "CREATE", &stream, "billing", "0"]).unwrap();
    for placeholder in [streamx_runtime::SCHEDULED_CONSUMER, streamx_runtime::SUSPECTS_CONSUMER] {
        let err = run_fails(
            &url,
            &["tail", &stream, "--group", "billing", "--consumer", placeholder, "--no-follow", "--count", "1"],
            2,
        );
        assert!(err.contains("placeholder"), "{err}");
    }
    let pending = redis.cli(&["XPENDING", &stream, "billing"]).unwrap();
    assert!(pending.starts_with('0'), "nothing delivered: {pending}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_keeps_the_failures_exit_code() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    redis.cli(&["XADD", &unique_name("s"), "*", "data", "{}"]).unwrap();
    // Connected, but every read refused: NOPERM is exit 5, not 1.
    redis.cli(&["ACL", "SETUSER", "default", "-@read"]).unwrap();
    let err = run_fails(&url, &["top", "--once"], 5);
    assert!(err.contains("NOPERM"), "{err}");
    redis.cli(&["ACL", "SETUSER", "default", "+@all"]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_overview_skips_a_stream_the_user_may_not_read() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let (live, other, letters) = live_and_letters(&redis);
    let secret = unique_name("secret");
    redis.cli(&["XADD", &secret, "*", "dlq:stream", "x", "data", "{}"]).unwrap();
    // `ops` may read every key but `secret`.
    let keys = [&live, &other, &letters].map(|k| format!("~{k}"));
    let mut setuser = vec!["ACL", "SETUSER", "ops", "on", ">pw", "+@all", "~streamx:*"];
    setuser.extend(keys.iter().map(String::as_str));
    redis.cli(&setuser).unwrap();
    let url = redis.url().replacen("redis://", "redis://ops:pw@", 1);
    let overview = run_json(&url, &["dlq", "overview"]);
    let denied: Vec<&str> = overview["no_permission"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(denied.contains(&secret.as_str()), "{overview}");
    let streams = overview["dead_letter_streams"].as_array().unwrap();
    assert!(streams.iter().any(|s| s["dead_letter_stream"] == letters.as_str()), "{overview}");
    let human = run_ok(&url, &["dlq", "overview"]);
    assert!(human.contains("no permission to read") && human.contains(&secret), "{human}");
}

/// Whether `css` is displayed in the page, and its text.
async fn shown_text(client: &fantoccini::Client, css: &str) -> Option<String> {
    let script = "const e = document.querySelector(arguments[0]); \
                  return e && !e.hidden && e.offsetParent !== null ? e.textContent : null;";
    client.execute(script, vec![Value::from(css)]).await.ok()?.as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_warns_at_once_while_an_open_panel_waits_on_a_hung_redis() {
    let Some(browser) = common::browser::Browser::start().await else { return };
    let server = RedisServer::start().unwrap();
    redis_cli(&server, &["XADD", "orders", "*", "data", "{}"]).unwrap();
    redis_cli(&server, &["XGROUP", "CREATE", "orders", "billing", "0"]).unwrap();
    redis_cli(&server, &["XREADGROUP", "GROUP", "billing", "w1", "STREAMS", "orders", ">"]).unwrap();
    let dashboard = Dashboard::start(&server.url(), &[]);
    let client = &browser.client;
    client.goto(&dashboard.url()).await.unwrap();
    let show = r#"tr.group[data-stream="orders"][data-group="billing"] button.show-pending"#;
    wait_until(WAIT, "the pending panel open", || async {
        if let Ok(button) = client.find(fantoccini::Locator::Css(show)).await {
            let _ = button.click().await;
        }
        shown_text(client, "#pending tbody tr").await.is_some()
    })
    .await
    .unwrap();
    assert!(shown_text(client, "#banner").await.is_none());

    signal(&server, "-STOP");
    let stopped = Instant::now();
    // The sample times out after 5 s; the page says so on its next refresh, without
    // waiting for the pending panel (which the server answers with 504 after 5 s too).
    wait_until(Duration::from_secs(12), "the warning", || async {
        shown_text(client, "#banner").await.is_some_and(|t| t.contains("unreachable"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e} after {:?}", stopped.elapsed()));
    signal(&server, "-CONT");
    wait_until(WAIT, "the warning gone", || async { shown_text(client, "#banner").await.is_none() }).await.unwrap();
    browser.close().await;
}
