//! The dashboard in a real headless Chromium (chromedriver + fantoccini): the page loads and
//! shows the seeded groups with their lag, a chart moves as messages are published, the
//! pending entries of a group, a replay button moves a dead letter back, read-only refuses.
//! Without chromedriver these tests skip loudly, unless STREAMX_REQUIRE_BROWSER is set.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::browser::{http, http_response, Browser, Dashboard};
use common::{run_ok, start_runtime, wait_until, TestRedis, Topology};
use fantoccini::{Client, Locator};
use serde_json::Value;
use streamx_runtime::{
    Consumer, ConsumerOptions, DeadLetterTarget, HandlerError, Message, Producer, RetryPolicy, SCHEDULED_CONSUMER,
};
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

/// The text of the alert (or confirm) the page shows, once it shows one.
async fn alert(client: &Client) -> String {
    wait_until(WAIT, "a question from the page", || async { client.get_alert_text().await.is_ok() }).await.unwrap();
    client.get_alert_text().await.unwrap()
}

/// Whether the element `css` is displayed.
async fn shown(client: &Client, css: &str) -> bool {
    let script = "const e = document.querySelector(arguments[0]); return !!e && !e.hidden && e.offsetParent !== null;";
    client.execute(script, vec![Value::from(css)]).await.ok().and_then(|v| v.as_bool()).unwrap_or(false)
}

/// The number of elements matching `css`.
async fn count(client: &Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.map(|r| r.len()).unwrap_or(0)
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
    // Delayed messages not due for an hour: the overview counts them.
    for n in 0..4u64 {
        producer.publish_after(&stream, &n, Duration::from_secs(3_600)).await.unwrap();
    }
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
    let scheduled = format!("tr.stream[data-stream=\"{s}\"] td.scheduled");
    assert_eq!(text(client, &scheduled).await.as_deref(), Some("4"), "the delayed messages");

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

    // Replay the first one: confirm, then it is back in the failed group's queue (its retry
    // schedule, due now; not published again) and the count drops.
    let id = attr(client, "#dead-letters tbody tr", "data-id").await.unwrap();
    let letter = redis.cli_json(&["XRANGE", &dlq_key, &id, &id]).unwrap();
    let letter_fields: Vec<&str> = letter[0][1].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let origin = letter_fields.chunks(2).find(|f| f[0] == "dlq:id").unwrap()[1].to_string();
    click(client, &format!("#dead-letters tbody tr[data-id=\"{id}\"] button.replay")).await;
    let question = client.get_alert_text().await.unwrap();
    assert!(question.contains(&id), "{question}");
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "the count drops to 2", || async { text(client, "#dlq-total").await.as_deref() == Some("2") })
        .await
        .unwrap();
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 2);
    assert_eq!(redis.xlen(&failing).unwrap(), 3, "nothing published again");
    let pending = redis.cli_json(&["XPENDING", &failing, "charge", "-", "+", "10"]).unwrap();
    assert_eq!(pending[0][0], origin.as_str(), "{pending}");
    assert_eq!(pending[0][1], SCHEDULED_CONSUMER);

    // Dismissing the question changes nothing.
    click(client, "#dead-letters tbody tr button.replay").await;
    client.dismiss_alert().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 2);

    // Replay all: the server counts what it will replay, the question shows it, the rest
    // goes back too.
    click(client, "#replay-all").await;
    let question = alert(client).await;
    assert_eq!(question, format!("Replay 2 dead letters of {failing}?"));
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "no dead letter left", || async { text(client, "#dlq-total").await.as_deref() == Some("0") })
        .await
        .unwrap();
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 0);
    assert_eq!(redis.xlen(&failing).unwrap(), 3, "nothing published again");
    assert_eq!(redis.cli(&["ZCARD", &format!("{{{failing}}}:retries:charge")]).unwrap().trim(), "3");
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
    // The overview counts the delayed messages once a sample has read the stream.
    wait_until(WAIT, "the seeded stream with its 4 delayed messages", || async {
        let body = http(dashboard.addr, "GET", "/api/overview?token=s3cret", &[]).1;
        let overview: Value = serde_json::from_str(&body).unwrap();
        let streams = overview["streams"].as_array().cloned().unwrap_or_default();
        streams.iter().any(|v| v["stream"] == seeded.stream.as_str() && v["scheduled"] == 4)
    })
    .await
    .unwrap();
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

/// Sets a form control of the page and tells the page it changed.
async fn set(client: &Client, css: &str, value: &str) {
    let script = "const e = document.querySelector(arguments[0]); e.value = arguments[1]; \
                  e.dispatchEvent(new Event('change')); return true;";
    client.execute(script, vec![Value::from(css), Value::from(value)]).await.unwrap();
}

/// The `group` field of every letter in the dead-letter stream `key` (redis-cli's view).
fn letter_groups(redis: &TestRedis, key: &str) -> Vec<String> {
    let letters = redis.cli_json(&["XRANGE", key, "-", "+"]).unwrap();
    letters
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let fields: Vec<&str> = l[1].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            fields.chunks(2).find(|f| f[0] == "dlq:group").map(|f| f[1].to_string()).unwrap_or_default()
        })
        .collect()
}

const DOTS: &str = "..";
const DOTS_DLQ: &str = "{..}:dlq";
const AUDIT_DLQ: &str = "audit-dead-letters";

/// Dead letters of the streams `..` and `.`: on `..`, the groups `charge` and `ship` refuse
/// 6 orders and cannot decode one entry (14 letters: 12 permanent, 2 invalid_json), and
/// `audit` refuses them into its own dead-letter stream (7 letters); on `.`, one letter.
async fn seed_dot_streams(redis: &TestRedis) {
    let url = redis.url();
    let refuse = |stream: &'static str, group: &'static str| {
        Consumer::new(stream, group, move |msg: Message<Value>| async move {
            Err::<(), _>(HandlerError::permanent(format!("{group} refused order {}", msg.payload()["order"])))
        })
    };
    let audit = refuse(DOTS, "audit").with_options(ConsumerOptions {
        retry: RetryPolicy { dead_letter: DeadLetterTarget::Stream(AUDIT_DLQ), ..RetryPolicy::DEFAULT },
        ..ConsumerOptions::DEFAULT
    });
    let runtime =
        start_runtime(&url, vec![refuse(DOTS, "charge"), refuse(DOTS, "ship"), audit, refuse(".", "charge")]).await;
    for order in 1..=6 {
        run_ok(&url, &["publish", DOTS, &format!(r#"{{"order":{order}}}"#)]);
    }
    redis.cli(&["XADD", DOTS, "*", "data", "not json"]).unwrap();
    run_ok(&url, &["publish", ".", r#"{"order":7}"#]);
    wait_until(WAIT, "the dead letters", || async {
        redis.xlen(DOTS_DLQ).unwrap() == 14
            && redis.xlen(AUDIT_DLQ).unwrap() == 7
            && redis.xlen("{.}:dlq").unwrap() == 1
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_page_filter_delete_replay_and_purge_even_on_a_stream_named_dot_dot() {
    let Some(browser) = Browser::start().await else { return };
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    seed_dot_streams(&redis).await;
    let dashboard = Dashboard::start(&redis.url(), &[]);
    let client = &browser.client;
    client.goto(&dashboard.url()).await.unwrap();
    let rows = "#dead-letters tbody tr";

    // `.` and `..` open their own dead letters (a browser would drop a plain `.`/`..` segment).
    click(client, "tr.stream[data-stream=\".\"] button.show-dlq").await;
    wait_until(WAIT, "the dead letter of `.`", || async {
        text(client, "#dlq-key").await.as_deref() == Some("{.}:dlq") && count(client, rows).await == 1
    })
    .await
    .unwrap();
    click(client, "tr.stream[data-stream=\"..\"] button.show-dlq").await;
    wait_until(WAIT, "the 14 dead letters of `..`", || async {
        text(client, "#dlq-key").await.as_deref() == Some(DOTS_DLQ)
            && text(client, "#dlq-total").await.as_deref() == Some("14")
            && count(client, rows).await == 14
    })
    .await
    .unwrap();

    // Pages of 10: the second page starts at the 11th letter.
    set(client, "#dlq-limit", "10").await;
    wait_until(WAIT, "a page of 10", || async { count(client, rows).await == 10 }).await.unwrap();
    click(client, "#dlq-next").await;
    wait_until(WAIT, "the last 4", || async { count(client, rows).await == 4 }).await.unwrap();
    let all = redis.cli_json(&["XRANGE", DOTS_DLQ, "-", "+"]).unwrap();
    assert_eq!(attr(client, rows, "data-id").await.unwrap(), all[10][0].as_str().unwrap());
    click(client, "#dlq-first").await;
    wait_until(WAIT, "the first page again", || async { count(client, rows).await == 10 }).await.unwrap();
    set(client, "#dlq-limit", "50").await;

    // Filters: the one letter of `ship` that could not be decoded; delete it.
    set(client, "#dlq-group", "ship").await;
    set(client, "#dlq-kind", "invalid_json").await;
    wait_until(WAIT, "one letter of ship, invalid_json", || async {
        count(client, rows).await == 1
            && text(client, &format!("{rows} td.group")).await.as_deref() == Some("ship")
            && text(client, &format!("{rows} td.kind")).await.as_deref() == Some("invalid_json")
    })
    .await
    .unwrap();
    let id = attr(client, rows, "data-id").await.unwrap();
    click(client, &format!("{rows}[data-id=\"{id}\"] button.delete")).await;
    assert_eq!(alert(client).await, format!("Delete dead letter {id} of ..? This cannot be undone."));
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "the letter deleted", || async { count(client, rows).await == 0 }).await.unwrap();
    assert_eq!(redis.xlen(DOTS_DLQ).unwrap(), 13);
    assert_eq!(redis.cli_json(&["XRANGE", DOTS_DLQ, &id, &id]).unwrap(), Value::Array(vec![]));

    // Purge what matches group `ship`: the count shown first, then only those go.
    set(client, "#dlq-kind", "").await;
    wait_until(WAIT, "the 6 letters of ship", || async { count(client, rows).await == 6 }).await.unwrap();
    click(client, "#purge-all").await;
    assert_eq!(alert(client).await, "Delete 6 dead letters of .. (group ship)? This cannot be undone.");
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "ship's letters purged", || async { redis.xlen(DOTS_DLQ).unwrap() == 7 }).await.unwrap();
    assert!(letter_groups(&redis, DOTS_DLQ).iter().all(|g| g == "charge"), "{:?}", letter_groups(&redis, DOTS_DLQ));

    // Replay what matches group `charge`, kind `permanent`: 6 of charge's 7.
    set(client, "#dlq-group", "charge").await;
    set(client, "#dlq-kind", "permanent").await;
    wait_until(WAIT, "charge's 6 refusals", || async { count(client, rows).await == 6 }).await.unwrap();
    click(client, "#replay-all").await;
    assert_eq!(alert(client).await, "Replay 6 dead letters of .. (group charge, kind permanent)?");
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "charge's refusals replayed", || async { redis.xlen(DOTS_DLQ).unwrap() == 1 }).await.unwrap();
    let left = redis.cli_json(&["XRANGE", DOTS_DLQ, "-", "+"]).unwrap();
    let fields: Vec<&str> = left[0][1].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(fields.windows(2).any(|w| w == ["dlq:kind", "invalid_json"]), "{fields:?}");
    wait_until(WAIT, "the page up to date", || async { text(client, "#dlq-total").await.as_deref() == Some("1") })
        .await
        .unwrap();

    // A consumer's own dead-letter stream, named in the form; replay one letter of it.
    set(client, "#dlq-group", "").await;
    set(client, "#dlq-kind", "").await;
    set(client, "#dlq-stream", AUDIT_DLQ).await;
    click(client, "#dlq-apply").await;
    wait_until(WAIT, "audit's 7 letters", || async {
        text(client, "#dlq-key").await.as_deref() == Some(AUDIT_DLQ) && count(client, rows).await == 7
    })
    .await
    .unwrap();
    assert_eq!(text(client, &format!("{rows} td.group")).await.as_deref(), Some("audit"));
    let id = attr(client, rows, "data-id").await.unwrap();
    click(client, &format!("{rows}[data-id=\"{id}\"] button.replay")).await;
    assert!(alert(client).await.contains(&id));
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "one audit letter replayed", || async { redis.xlen(AUDIT_DLQ).unwrap() == 6 }).await.unwrap();
    assert_eq!(redis.cli_json(&["XRANGE", AUDIT_DLQ, &id, &id]).unwrap(), Value::Array(vec![]));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warning_banner_clears_once_sampling_works_and_idle_times_read_as_minutes() {
    let Some(browser) = Browser::start().await else { return };
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let stream = unique_name("idle");
    let id = redis.cli(&["XADD", &stream, "*", "data", "{}"]).unwrap().trim().to_string();
    redis.cli(&["XGROUP", "CREATE", &stream, "billing", "0"]).unwrap();
    redis.cli(&["XREADGROUP", "GROUP", "billing", "worker-1", "STREAMS", &stream, ">"]).unwrap();
    // 544.9 s idle, as if delivered nine minutes ago.
    redis.cli(&["XCLAIM", &stream, "billing", "worker-1", "0", &id, "IDLE", "544900"]).unwrap();
    let dashboard = Dashboard::start(&redis.url(), &[]);
    let client = &browser.client;
    client.goto(&dashboard.url()).await.unwrap();

    click(client, &format!("tr.group[data-stream=\"{stream}\"][data-group=\"billing\"] button.show-pending")).await;
    let idle = "#pending tbody tr td.idle";
    wait_until(WAIT, "the idle time", || async { text(client, idle).await.is_some() }).await.unwrap();
    let shown_idle = text(client, idle).await.unwrap();
    let seconds: Option<u32> =
        shown_idle.strip_prefix("9m ").and_then(|s| s.strip_suffix('s')).and_then(|s| s.parse().ok());
    assert!(
        seconds.is_some_and(|s| (4..60).contains(&s)) && shown_idle.len() == "9m 05s".len(),
        "idle shown as {shown_idle:?}"
    );

    // Sampling fails (Redis refuses every read): a warning with the figures' age...
    assert!(!shown(client, "#banner").await);
    redis.cli(&["ACL", "SETUSER", "default", "-@read"]).unwrap();
    wait_until(WAIT, "the warning", || async { shown(client, "#banner").await }).await.unwrap();
    let warning = text(client, "#banner").await.unwrap();
    assert!(warning.contains("figures from"), "{warning}");
    // ...which goes away on its own once sampling works again.
    redis.cli(&["ACL", "SETUSER", "default", "+@all"]).unwrap();
    wait_until(WAIT, "the warning gone", || async { !shown(client, "#banner").await }).await.unwrap();
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumers_view_shows_members_heartbeats_and_the_retry_schedule() {
    let Some(browser) = Browser::start().await else { return };
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("members");
    let consumer = Consumer::new(stream.clone(), "billing", |msg: Message<Value>| async move {
        if msg.payload()["order"] == 1 {
            return Err(HandlerError::retry_after("card network down", Duration::from_secs(600)));
        }
        Ok(())
    });
    let runtime = start_runtime(&url, vec![consumer]).await;
    run_ok(&url, &["publish", &stream, r#"{"order":1}"#]);
    run_ok(&url, &["publish", &stream, r#"{"order":2}"#]);
    let consumers = || redis.cli_json(&["XINFO", "CONSUMERS", &stream, "billing"]).unwrap();
    wait_until(WAIT, "the entry in the retry schedule", || async {
        consumers().as_array().unwrap().iter().any(|c| c["name"] == SCHEDULED_CONSUMER && c["pending"] == 1)
    })
    .await
    .unwrap();
    let member = consumers()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .find(|n| n != SCHEDULED_CONSUMER)
        .unwrap();

    let dashboard = Dashboard::start(&url, &[]);
    let client = &browser.client;
    client.goto(&dashboard.url()).await.unwrap();
    click(client, &format!("tr.group[data-stream=\"{stream}\"][data-group=\"billing\"] button.show-consumers")).await;
    let member_row = "#consumers tbody tr[data-role=\"member\"]";
    wait_until(WAIT, "the member with its heartbeat", || async {
        text(client, &format!("{member_row} td.heartbeat")).await.is_some_and(|h| h != "-")
    })
    .await
    .unwrap();
    assert_eq!(count(client, member_row).await, 1);
    assert_eq!(attr(client, member_row, "data-name").await.as_deref(), Some(member.as_str()));
    assert_eq!(text(client, &format!("{member_row} td.name")).await.as_deref(), Some(member.as_str()));
    let beat = text(client, &format!("{member_row} td.heartbeat")).await.unwrap();
    assert!(beat.ends_with("ms") || beat.ends_with('s'), "heartbeat age {beat:?}");
    assert!(text(client, &format!("{member_row} td.deadline")).await.unwrap().starts_with("in "));
    // The schedule's placeholder is shown as the retry schedule, not as a member.
    let schedule = "#consumers tbody tr[data-role=\"retry_schedule\"]";
    assert_eq!(text(client, &format!("{schedule} td.name")).await.as_deref(), Some("(retry schedule)"));
    assert_eq!(text(client, &format!("{schedule} td.pending")).await.as_deref(), Some("1"));
    assert_eq!(text(client, "#consumers-total").await.as_deref(), Some("1 member"));
    runtime.shutdown().await.unwrap();
    browser.close().await;
}

/// Runs `streamx dashboard extra...` with `env`; waits for its first line (it serves) or
/// its exit. Returns the exit code (`None`: it serves, and is killed), stdout's first line
/// and stderr.
fn dashboard_start(url: &str, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_streamx"));
    command.args(["--url", url, "dashboard"]).args(extra).env_remove("STREAMX_DASHBOARD_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let mut process =
        command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(process.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let code = if line.is_empty() {
        process.wait().unwrap().code()
    } else {
        process.kill().unwrap();
        process.wait().unwrap();
        None
    };
    let mut stderr = String::new();
    process.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (code, line, stderr)
}

#[test]
fn off_loopback_the_dashboard_needs_credentials_or_says_it_is_open() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let (code, _, stderr) = dashboard_start(&url, &["--listen", "0.0.0.0:0"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--token") && stderr.contains("--insecure-no-auth"), "{stderr}");

    let (code, line, stderr) = dashboard_start(&url, &["--listen", "0.0.0.0:0", "--insecure-no-auth"], &[]);
    assert_eq!(code, None, "{stderr}");
    assert!(line.starts_with("streamx dashboard on http://0.0.0.0:"), "{line}");
    assert!(stderr.contains("warning") && stderr.contains("no authentication"), "{stderr}");

    let (code, _, stderr) = dashboard_start(&url, &["--listen", "0.0.0.0:0"], &[("STREAMX_DASHBOARD_TOKEN", "s3cret")]);
    assert_eq!(code, None, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (code, _, stderr) = dashboard_start(&url, &["--listen", "0.0.0.0:0", "--basic-auth", "ops:pw"], &[]);
    assert_eq!(code, None, "{stderr}");
    // Loopback needs nothing.
    let (code, _, stderr) = dashboard_start(&url, &["--listen", "127.0.0.1:0"], &[]);
    assert_eq!(code, None, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_origin_are_checked_and_every_response_forbids_framing() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let seeded = seed(&redis).await;
    let dlq_key = format!("{{{}}}:dlq", seeded.failing);
    let dashboard = Dashboard::start(&redis.url(), &["--allowed-host", "dash.example.com"]);
    let (addr, port) = (dashboard.addr, dashboard.addr.port());
    let get = |host: String| http_response(addr, "GET", "/api/overview", &[("Host", host.as_str())]).status;

    // DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends its own name.
    assert_eq!(get(format!("evil.example:{port}")), 421);
    assert_eq!(http_response(addr, "GET", "/", &[("Host", &format!("evil.example:{port}"))]).status, 421);
    assert_eq!(get(format!("localhost:{}", port.wrapping_add(1))), 421);
    for ours in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "dash.example.com".to_string(),
    ] {
        assert_eq!(get(ours.clone()), 200, "{ours}");
    }

    // A change from another origin is refused, from the page's own accepted.
    let purge = format!("/api/streams/{}/dead-letters/purge", seeded.failing);
    let action = ("x-streamx-action", "1");
    let evil = format!("http://evil.example:{port}");
    let refused = http_response(addr, "POST", &purge, &[action, ("Origin", evil.as_str())]);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 3);
    let own = format!("http://127.0.0.1:{port}");
    let done = http_response(addr, "POST", &purge, &[action, ("Origin", own.as_str())]);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(redis.xlen(&dlq_key).unwrap(), 0);

    // No framing, a strict CSP (no inline script), no sniffing, no referrer: on every response.
    for (path, host) in
        [("/", addr.to_string()), ("/app.js", addr.to_string()), ("/api/overview", format!("evil.example:{port}"))]
    {
        let r = http_response(addr, "GET", path, &[("Host", host.as_str())]);
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
    }

    // The bearer scheme in any case.
    let with_token = Dashboard::start(&redis.url(), &["--token", "s3cret"]);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let authorization = format!("{scheme} s3cret");
        let (status, body) = http(with_token.addr, "GET", "/api/overview", &[("Authorization", &authorization)]);
        assert_eq!(status, 200, "{scheme}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_schedule_panel_runs_one_now_and_deletes_one() {
    let Some(browser) = Browser::start().await else { return };
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("retries");
    let schedule_key = format!("{{{stream}}}:retries:billing");
    // Every order fails its first run (retry in 10 minutes) and succeeds after.
    let done: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let handled = done.clone();
    let consumer = Consumer::new(stream.clone(), "billing", move |msg: Message<Value>| {
        let handled = handled.clone();
        async move {
            if msg.attempt() == 1 {
                return Err(HandlerError::retry_after("card network down", Duration::from_secs(600)));
            }
            handled.lock().unwrap().insert(msg.payload()["order"].as_u64().unwrap());
            Ok(())
        }
    });
    let runtime = start_runtime(&url, vec![consumer]).await;
    run_ok(&url, &["publish", &stream, r#"{"order":1}"#]);
    run_ok(&url, &["publish", &stream, r#"{"order":2}"#]);
    wait_until(WAIT, "2 retries scheduled", || async { redis.cli(&["ZCARD", &schedule_key]).unwrap().trim() == "2" })
        .await
        .unwrap();
    let ids = redis.cli_json(&["XRANGE", &stream, "-", "+"]).unwrap();
    let (first, second) = (ids[0][0].as_str().unwrap().to_string(), ids[1][0].as_str().unwrap().to_string());

    let dashboard = Dashboard::start(&url, &[]);
    let client = &browser.client;
    client.goto(&dashboard.url()).await.unwrap();
    click(client, &format!("tr.group[data-stream=\"{stream}\"][data-group=\"billing\"] button.show-consumers")).await;
    click(client, "#show-retries").await;
    let rows = "#retries tbody tr";
    wait_until(WAIT, "the 2 scheduled retries", || async {
        count(client, rows).await == 2 && text(client, "#retries-total").await.as_deref() == Some("2")
    })
    .await
    .unwrap();
    let row = |id: &str| format!("{rows}[data-id=\"{id}\"]");
    let due = text(client, &format!("{} td.due", row(&first))).await.unwrap();
    assert!(due.starts_with("in 9m ") || due.starts_with("in 10m "), "due {due:?}");
    assert_eq!(text(client, &format!("{} td.attempts", row(&first))).await.as_deref(), Some("1"));
    assert_eq!(text(client, &format!("{} td.payload", row(&first))).await.as_deref(), Some(r#"{"order":1}"#));

    // Run the first now: the running consumer handles it (its second attempt).
    click(client, &format!("{} button.run", row(&first))).await;
    assert_eq!(alert(client).await, format!("Run retry {first} of billing now?"));
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "order 1 handled", || async { done.lock().unwrap().contains(&1) }).await.unwrap();
    wait_until(WAIT, "one retry left on the page", || async { count(client, rows).await == 1 }).await.unwrap();

    // Delete the second: out of the schedule and acknowledged, never handled.
    click(client, &format!("{} button.delete", row(&second))).await;
    assert!(alert(client).await.contains("will never handle this entry"));
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "the schedule empty", || async { redis.cli(&["ZCARD", &schedule_key]).unwrap().trim() == "0" })
        .await
        .unwrap();
    assert_eq!(redis.cli_json(&["XPENDING", &stream, "billing", "-", "+", "10"]).unwrap(), Value::Array(vec![]));
    wait_until(WAIT, "the page empty", || async { shown(client, "#retries-empty").await }).await.unwrap();
    assert_eq!(*done.lock().unwrap(), BTreeSet::from([1]));
    runtime.shutdown().await.unwrap();
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_show_their_totals_and_each_shard_on_a_click() {
    let Some(browser) = Browser::start().await else { return };
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let topic = unique_name("dashtopic");
    let producer = Producer::connect(&url).await.unwrap();
    let layout = producer.topic(&topic, 4).await.unwrap();
    let entries: Vec<(String, u64)> = (0..40u64).map(|n| (format!("k{}", n % 11), n)).collect();
    producer.publish_batch_keyed(&topic, &entries).await.unwrap();
    for stream in layout.shard_streams() {
        redis.cli(&["XGROUP", "CREATE", stream, "billing", "0"]).unwrap();
    }
    let lease = streamx_runtime::keys::shard_lease(layout.shard_stream(2), "billing");
    redis.cli(&["SET", &lease, "5:proc-x"]).unwrap();
    let lengths: Vec<u64> = layout.shard_streams().iter().map(|s| redis.xlen(s).unwrap()).collect();

    let dashboard = Dashboard::start(&url, &[]);
    let client = &browser.client;
    client.goto(&dashboard.url()).await.unwrap();
    let topic_row = format!("tr.topic[data-topic=\"{topic}\"]");
    wait_until(WAIT, "the topic with its totals", || async {
        text(client, &format!("{topic_row} td.length")).await.as_deref() == Some("40")
    })
    .await
    .unwrap();
    assert_eq!(text(client, &format!("{topic_row} td.shards")).await.as_deref(), Some("4"));
    assert_eq!(text(client, &format!("{topic_row} td.lag")).await.as_deref(), Some("40"), "nothing read yet");
    assert!(text(client, &format!("{topic_row} td.owners")).await.unwrap().contains("billing 1/4 owned"));
    assert_eq!(count(client, "tr.shard").await, 0, "shards hidden until asked");

    click(client, &format!("{topic_row} button.show-shards")).await;
    wait_until(WAIT, "the four shards", || async { count(client, "tr.shard").await == 4 }).await.unwrap();
    for (i, len) in lengths.iter().enumerate() {
        let shard = format!("tr.shard[data-topic=\"{topic}\"][data-shard=\"{i}\"]");
        assert_eq!(text(client, &format!("{shard} td.length")).await, Some(len.to_string()), "shard {i}");
        assert!(text(client, &format!("{shard} td.name")).await.unwrap().ends_with(layout.shard_stream(i as u32)));
    }
    let owner = |shard: usize| format!("tr.shard-group[data-shard=\"{shard}\"][data-group=\"billing\"] td.owner");
    assert_eq!(text(client, &owner(2)).await.as_deref(), Some("proc-x (epoch 5)"));
    assert_eq!(text(client, &owner(0)).await.as_deref(), Some("-"));

    // The figures follow Redis: a group reads shard 0, its lag there drops to 0.
    redis
        .cli(&["XREADGROUP", "GROUP", "billing", "w", "COUNT", "1000", "STREAMS", layout.shard_stream(0), ">"])
        .unwrap();
    let lag0 = "tr.shard-group[data-shard=\"0\"][data-group=\"billing\"] td.lag";
    wait_until(WAIT, "shard 0 read", || async { text(client, lag0).await.as_deref() == Some("0") }).await.unwrap();
    let pending0 = "tr.shard-group[data-shard=\"0\"][data-group=\"billing\"] td.pending";
    assert_eq!(text(client, pending0).await, Some(lengths[0].to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_paused_and_resumed_with_its_button() {
    let Some(browser) = Browser::start().await else { return };
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("pausing");
    run_ok(&url, &["group", "create", &stream, "billing", "--mkstream"]);
    let key = format!("{{{stream}}}:paused:billing");
    let dashboard = Dashboard::start(&url, &[]);
    let client = &browser.client;
    client.goto(&dashboard.url()).await.unwrap();
    let row = format!("tr.group[data-stream=\"{stream}\"][data-group=\"billing\"]");
    let toggle = format!("{row} button.pause-group");
    wait_until(WAIT, "the Pause button", || async { text(client, &toggle).await.as_deref() == Some("Pause") })
        .await
        .unwrap();
    assert_eq!(count(client, &format!("{row} .badge.paused")).await, 0);

    click(client, &toggle).await;
    assert!(alert(client).await.starts_with("Pause billing on "));
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "the pause key written", || async { redis.cli(&["EXISTS", &key]).unwrap().trim() == "1" })
        .await
        .unwrap();
    assert!(redis.cli(&["GET", &key]).unwrap().trim().ends_with(" dashboard"));
    wait_until(WAIT, "the paused badge and the Resume button", || async {
        count(client, &format!("{row} .badge.paused")).await == 1
            && text(client, &toggle).await.as_deref() == Some("Resume")
    })
    .await
    .unwrap();

    click(client, &toggle).await;
    assert!(alert(client).await.starts_with("Resume billing on "));
    client.accept_alert().await.unwrap();
    wait_until(WAIT, "the pause key deleted", || async { redis.cli(&["EXISTS", &key]).unwrap().trim() == "0" })
        .await
        .unwrap();
    wait_until(WAIT, "the badge gone", || async {
        count(client, &format!("{row} .badge.paused")).await == 0
            && text(client, &toggle).await.as_deref() == Some("Pause")
    })
    .await
    .unwrap();
    browser.close().await;
}

/// The pause endpoints without a browser: a change like the others (action header), the
/// overview's group gains `paused`, a missing group is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pause_endpoints_pause_and_resume_a_group() {
    let redis = TestRedis::start(Topology::Standalone).unwrap();
    let url = redis.url();
    let stream = unique_name("pausing");
    run_ok(&url, &["group", "create", &stream, "billing", "--mkstream"]);
    let key = format!("{{{stream}}}:paused:billing");
    let dashboard = Dashboard::start(&url, &[]);
    let action = ("x-streamx-action", "1");
    let pause = format!("/api/streams/{stream}/groups/billing/pause");
    assert_eq!(http(dashboard.addr, "POST", &pause, &[]).0, 403, "without the action header");
    assert_eq!(redis.cli(&["EXISTS", &key]).unwrap().trim(), "0");
    let (status, body) = http(dashboard.addr, "POST", &pause, &[action]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(redis.cli(&["EXISTS", &key]).unwrap().trim(), "1");
    let paused_in_overview = |paused: bool| {
        let stream = stream.clone();
        let addr = dashboard.addr;
        async move {
            let overview: Value = serde_json::from_str(&http(addr, "GET", "/api/overview", &[]).1).unwrap();
            overview["streams"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .any(|s| s["stream"] == stream.as_str() && s["groups"][0]["paused"] == paused)
        }
    };
    wait_until(WAIT, "the overview shows the pause", || paused_in_overview(true)).await.unwrap();
    let missing = format!("/api/streams/{stream}/groups/nope/pause");
    assert_eq!(http(dashboard.addr, "POST", &missing, &[action]).0, 404);
    let resume = format!("/api/streams/{stream}/groups/billing/resume");
    let (status, body) = http(dashboard.addr, "POST", &resume, &[action]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["was_paused"], true);
    assert_eq!(redis.cli(&["EXISTS", &key]).unwrap().trim(), "0");
    wait_until(WAIT, "the overview shows the resume", || paused_in_overview(false)).await.unwrap();
}
