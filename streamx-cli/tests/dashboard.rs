//! The dashboard in a real headless Chromium (chromedriver + fantoccini): the page loads and
//! shows the seeded groups with their lag, a chart moves as messages are published, the
//! pending entries of a group, a replay button moves a dead letter back, read-only refuses.
//! Without chromedriver these tests skip loudly, unless STREAMX_REQUIRE_BROWSER is set.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::browser::{http, Browser, Dashboard};
use common::{run_ok, start_runtime, wait_until, TestRedis, Topology};
use fantoccini::{Client, Locator};
use serde_json::Value;
use streamx_runtime::{Consumer, HandlerError, Message, Producer};
use streamx_testing::unique_name;

const WAIT: Duration = Duration::from_secs(30);

/// Text of the first element matching `css`, or `None`. Read by one script in the page, so
/// a refresh cannot redraw the element between finding it and reading it.
async fn text(client: &Client, css: &str) -> Option<String> {
    let script = "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;";
    client.execute(script, vec![Value::from(css)]).await.ok()?.as_str().map(str::to_owned)
}

/// Clicks the element `css` once it is there. The page redraws its tables on every refresh,
/// so an element found just before a redraw is stale by the click: find and click again.
async fn click(client: &Client, css: &str) {
    wait_until(WAIT, &format!("a click on {css}"), || async {
        match client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await.is_ok(),
            Err(_) => false,
        }
    })
    .await
    .unwrap();
}

/// An attribute of the first element matching `css` (one script, as [`text`]).
async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    let script = "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;";
    client.execute(script, vec![Value::from(css), Value::from(name)]).await.ok()?.as_str().map(str::to_owned)
}

/// A `data-*` attribute of `css`, parsed as JSON.
async fn data(client: &Client, css: &str, name: &str) -> Option<Value> {
    serde_json::from_str(&attr(client, css, name).await?).ok()
}

/// A stream with two groups (lag 20 and 30) and a stream whose 3 messages a runtime
/// dead-lettered with its handler's error.
struct Seeded {
    stream: String,
    failing: String,
}

async fn seed(redis: &TestRedis) -> Seeded {
    let url = redis.url();
    let stream = unique_name("board");
    let failing = unique_name("payments");
    let producer = Producer::connect(&url).await.unwrap();
    producer.publish_batch(&stream, &(0..30).collect::<Vec<u64>>()).await.unwrap();
    redis.cli(&["XGROUP", "CREATE", &stream, "billing", "0"]).unwrap();
    redis.cli(&["XGROUP", "CREATE", &stream, "audit", "0"]).unwrap();
    redis.cli(&["XREADGROUP", "GROUP", "billing", "worker-1", "COUNT", "10", "STREAMS", &stream, ">"]).unwrap();
    let consumer = Consumer::new(failing.clone(), "charge", |msg: Message<Value>| async move {
        Err::<(), _>(HandlerError::permanent(format!("card declined for order {}", msg.payload()["order"])))
    });
    let runtime = start_runtime(&url, vec![consumer]).await;
    for order in 1..=3 {
        run_ok(&url, &["publish", &failing, &format!(r#"{{"order":{order},"cents":1299}}"#)]);
    }
    let dlq = format!("{{{failing}}}:dlq");
    wait_until(WAIT, "3 dead letters", || async { redis.xlen(&dlq).unwrap() == 3 }).await.unwrap();
    runtime.shutdown().await.unwrap();
    Seeded { stream, failing }
}

fn lag(redis: &TestRedis, stream: &str, group: &str) -> u64 {
    let groups = redis.cli_json(&["XINFO", "GROUPS", stream]).unwrap();
    groups.as_array().unwrap().iter().find(|g| g["name"] == group).unwrap()["lag"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_groups_charts_pending_and_replays_a_dead_letter() {
    let Some(browser) = Browser::start().await else { return };
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let seeded = seed(&redis).await;
    let dashboard = Dashboard::start(&redis.url(), &[]);
    let client = &browser.client;
    client.goto(&dashboard.url()).await.unwrap();

    // The seeded groups, with the lag Redis reports.
    let (s, billing_lag, audit_lag) =
        (seeded.stream.clone(), lag(&redis, &seeded.stream, "billing"), lag(&redis, &seeded.stream, "audit"));
    assert_eq!((billing_lag, audit_lag), (20, 30));
    let lag_cell = |group: &str| format!("tr.group[data-stream=\"{s}\"][data-group=\"{group}\"] td.lag");
    wait_until(WAIT, "the billing group with lag 20", || async {
        text(client, &lag_cell("billing")).await.as_deref() == Some("20")
    })
    .await
    .unwrap();
    assert_eq!(text(client, &lag_cell("audit")).await.as_deref(), Some("30"));
    let length = format!("tr.stream[data-stream=\"{s}\"] td.length");
    assert_eq!(text(client, &length).await.as_deref(), Some("30"));

    // The pending entries of a group, oldest first.
    let pending_button = format!("tr.group[data-stream=\"{s}\"][data-group=\"billing\"] button.show-pending");
    click(client, &pending_button).await;
    wait_until(WAIT, "10 pending entries listed", || async {
        client.find_all(Locator::Css("#pending tbody tr")).await.map(|r| r.len()).unwrap_or(0) == 10
    })
    .await
    .unwrap();
    let xpending = redis.cli_json(&["XPENDING", &s, "billing", "-", "+", "1"]).unwrap();
    assert_eq!(text(client, "#pending tbody tr td.id").await.unwrap(), xpending[0][0].as_str().unwrap());

    // The charts move as messages are published: throughput in > 0, lag up by what was added.
    // The charts draw from a fetch of their own, which may come after the tables'.
    wait_until(WAIT, "the throughput chart drawn", || async {
        data(client, "#chart-throughput", "data-max").await.is_some()
    })
    .await
    .unwrap();
    let before = data(client, "#chart-throughput", "data-max").await.unwrap();
    assert_eq!(before["in"].as_f64().unwrap_or(0.0), 0.0, "nothing published yet: {before}");
    // Refreshes patch rows in place: the billing row and its pending button stay the same
    // elements while their figures change (a click between mouse down and up is not lost).
    let billing_row = format!("tr.group[data-stream=\"{s}\"][data-group=\"billing\"]");
    let mark = "document.querySelector(arguments[0]).querySelector('button').dataset.mark = 'kept'; return true;";
    client.execute(mark, vec![Value::from(billing_row.clone())]).await.unwrap();
    let producer = Producer::connect(&redis.url()).await.unwrap();
    for _ in 0..4 {
        producer.publish_batch(&s, &(0..500).collect::<Vec<u64>>()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_until(WAIT, "the throughput chart shows the publishing", || async {
        data(client, "#chart-throughput", "data-max").await.and_then(|m| m["in"].as_f64()).unwrap_or(0.0) > 0.0
    })
    .await
    .unwrap();
    let expected_lag = lag(&redis, &s, "billing") + lag(&redis, &s, "audit");
    assert_eq!(expected_lag, 20 + 30 + 2 * 2000);
    wait_until(WAIT, "the lag chart shows the new lag", || async {
        data(client, "#chart-lag", "data-latest").await.and_then(|l| l["lag"].as_u64()) == Some(expected_lag)
    })
    .await
    .unwrap();
    assert_eq!(text(client, &lag_cell("billing")).await.as_deref(), Some("2020"));
    assert_eq!(attr(client, &format!("{billing_row} button"), "data-mark").await.as_deref(), Some("kept"));

    // The dead letters of a stream, with error and payload.
    let failing = seeded.failing.clone();
    let dlq_key = format!("{{{failing}}}:dlq");
    let show = format!("tr.stream[data-stream=\"{failing}\"] button.show-dlq");
    click(client, &show).await;
    wait_until(WAIT, "3 dead letters listed", || async {
        text(client, "#dlq-total").await.as_deref() == Some("3")
            && client.find_all(Locator::Css("#dead-letters tbody tr")).await.map(|r| r.len()).unwrap_or(0) == 3
    })
    .await
    .unwrap();
    let error = text(client, "#dead-letters tbody tr td.error").await.unwrap();
    assert_eq!(error, "card declined for order 1");
    let payload = text(client, "#dead-letters tbody tr td.payload").await.unwrap();
    assert_eq!(payload, r#"{"order":1,"cents":1299}"#);

    save_screenshot(client).await;

    // Replay the first one: confirm, then it is back on its stream and the count drops.
    let id = attr(client, "#dead-letters tbody tr", "data-id").await.unwrap();
    click(client, &format!("#dead-letters tbody tr[data-id=\"{id}\"] button.replay")).await;
    let question = client.get_alert_text().await.unwrap();
    assert!(question.contains(&id), "{question}");
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "the count drops to 2", || async { text(client, "#dlq-total").await.as_deref() == Some("2") })
        .await
        .unwrap();
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 2);
    assert_eq!(redis.xlen(&failing).unwrap(), 4);
    let last = redis.cli_json(&["XREVRANGE", &failing, "+", "-", "COUNT", "1"]).unwrap();
    let fields: Vec<&str> = last[0][1].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(fields.windows(2).any(|w| w == ["h:streamx-replayed-from", id.as_str()]), "{fields:?}");
    assert!(fields.windows(2).any(|w| w == ["data", r#"{"order":1,"cents":1299}"#]), "{fields:?}");

    // Dismissing the question changes nothing.
    click(client, "#dead-letters tbody tr button.replay").await;
    client.dismiss_alert().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 2);

    // Replay all: the rest goes back too.
    click(client, "#replay-all").await;
    assert!(client.get_alert_text().await.unwrap().contains("Replay every dead letter"));
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "no dead letter left", || async { text(client, "#dlq-total").await.as_deref() == Some("0") })
        .await
        .unwrap();
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 0);
    assert_eq!(redis.xlen(&failing).unwrap(), 6);
    browser.close().await;
}

/// Saves the page as `dashboard.png` in the test's target directory (a test artifact), and
/// at `STREAMX_DASHBOARD_SCREENSHOT` when set (how `docs/dashboard.png` is made).
async fn save_screenshot(client: &Client) {
    // Tall enough for the charts, the tables and the dead letters at once.
    client.set_window_size(1280, 1500).await.unwrap();
    let png = client.screenshot().await.unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&artifact, &png).unwrap();
    eprintln!("dashboard screenshot: {}", artifact.display());
    if let Some(path) = std::env::var_os("STREAMX_DASHBOARD_SCREENSHOT") {
        std::fs::write(&path, &png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_dashboard_shows_but_refuses_changes() {
    let Some(browser) = Browser::start().await else { return };
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let seeded = seed(&redis).await;
    let dlq_key = format!("{{{}}}:dlq", seeded.failing);
    let dashboard = Dashboard::start(&redis.url(), &["--read-only"]);
    let client = &browser.client;
    client.goto(&dashboard.url()).await.unwrap();

    let show = format!("tr.stream[data-stream=\"{}\"] button.show-dlq", seeded.failing);
    wait_until(WAIT, "the streams are listed", || async { client.find(Locator::Css(&show)).await.is_ok() })
        .await
        .unwrap();
    assert!(client.find(Locator::Css("#mode")).await.unwrap().is_displayed().await.unwrap(), "read-only badge");
    click(client, &show).await;
    wait_until(WAIT, "3 dead letters listed", || async {
        client.find_all(Locator::Css("#dead-letters tbody tr")).await.map(|r| r.len()).unwrap_or(0) == 3
    })
    .await
    .unwrap();
    assert!(client.find_all(Locator::Css("button.replay")).await.unwrap().is_empty(), "no replay buttons");
    assert!(!client.find(Locator::Css("#replay-all")).await.unwrap().is_displayed().await.unwrap());
    assert!(!client.find(Locator::Css("#purge-all")).await.unwrap().is_displayed().await.unwrap());

    // The server refuses too, whatever the page shows: from the page's own origin...
    let status = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/streams/' + encodeURIComponent(arguments[0]) + '/dead-letters/purge',
                   { method: 'POST', headers: { 'x-streamx-action': '1' } })
               .then(r => done(r.status), e => done(String(e)));",
            vec![Value::from(seeded.failing.clone())],
        )
        .await
        .unwrap();
    assert_eq!(status, Value::from(403));
    // ...and from anywhere else.
    let letter = redis.cli_json(&["XRANGE", &dlq_key, "-", "+", "COUNT", "1"]).unwrap();
    let id = letter[0][0].as_str().unwrap();
    let path = format!("/api/streams/{}/dead-letters/{id}/replay", seeded.failing);
    let (status, body) = http(dashboard.addr, "POST", &path, &[("x-streamx-action", "1")]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 3, "nothing changed");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_asks_for_the_token_and_changes_need_the_action_header() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let seeded = seed(&redis).await;
    let dlq_key = format!("{{{}}}:dlq", seeded.failing);
    let dashboard = Dashboard::start(&redis.url(), &["--token", "s3cret"]);
    assert_eq!(http(dashboard.addr, "GET", "/", &[]).0, 200, "the page itself holds no data");
    assert_eq!(http(dashboard.addr, "GET", "/api/overview", &[]).0, 401);
    assert_eq!(http(dashboard.addr, "GET", "/api/overview", &[("Authorization", "Bearer nope")]).0, 401);
    let (status, body) = http(dashboard.addr, "GET", "/api/overview?token=s3cret", &[]);
    assert_eq!(status, 200);
    let overview: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(overview["read_only"], false);
    let bearer = ("Authorization", "Bearer s3cret");
    let purge = format!("/api/streams/{}/dead-letters/purge", seeded.failing);
    let (status, body) = http(dashboard.addr, "POST", &purge, &[bearer]);
    assert_eq!(status, 403, "a change without the action header (a cross-site form) is refused: {body}");
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 3);
    let (status, body) = http(dashboard.addr, "POST", &purge, &[bearer, ("x-streamx-action", "1")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["done"], 3);
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 0);
    let (status, body) = http(dashboard.addr, "GET", "/api/streams/nope/groups/g/pending", &[bearer]);
    assert_eq!(status, 404, "{body}");

    // Basic authentication: the browser is asked for credentials, and only the right ones pass.
    let basic = Dashboard::start(&redis.url(), &["--basic-auth", "ops:pa ss"]);
    let (status, _) = http(basic.addr, "GET", "/api/overview", &[]);
    assert_eq!(status, 401);
    let (status, _) = http(basic.addr, "GET", "/api/overview", &[("Authorization", "Basic b3BzOndyb25n")]);
    assert_eq!(status, 401, "ops:wrong");
    let (status, body) = http(basic.addr, "GET", "/api/overview", &[("Authorization", "Basic b3BzOnBhIHNz")]);
    assert_eq!(status, 200, "ops:pa ss: {body}");
}
