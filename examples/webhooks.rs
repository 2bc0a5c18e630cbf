//! Run with: `cargo run --example webhooks` (the delivery worker, with a stand-in for the
//! subscriber's HTTP endpoint in the same process; needs Redis on 127.0.0.1:6379, or set
//! `STREAMX_REDIS_URL`), then in another terminal `cargo run --example webhooks -- publish`.
//! Events 4 and 5 are refused for good and dead-lettered; the subscriber "fixes" its
//! endpoint when the worker restarts with `-- worker --subscriber-fixed`, and
//! `cargo run --example webhooks -- replay` delivers them. `-- cleanup` deletes the keys.
//!
//! Webhook delivery: events of a stream POSTed to a subscriber's endpoint. A 5xx is retried
//! with backoff, a 429 after its `Retry-After` (`HandlerError::retry_after`), another 4xx is
//! permanent and dead-lettered at once. Set `WEBHOOK_ENDPOINT=host:port` to deliver to a
//! real endpoint instead of the stand-in.
//!
//! Rate-limited per destination: each subscriber is a consumer group of its own, with its own
//! `rate_limit` (here `subscriber-1`, at most 5 requests a second across every worker process,
//! retries included), so a slow or strict endpoint is never flooded and the events beyond the
//! limit wait unread in Redis. A second destination is a second `#[stream_consumer]` on the
//! same stream with another group and its own limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx::{DeadLetters, RedisUrl};
use streamx_examples::{delete_stream_keys, exit, has_flag, init_logging, subcommand, RecipeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WEBHOOKS: &str = "webhooks";

/// An event to deliver.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WebhookEvent {
    event: u64,
    kind: String,
}

/// Where the worker delivers: the application state its handler reads.
#[derive(Debug, Clone, Copy)]
struct Endpoint(SocketAddr);

/// The `Retry-After` the stand-in subscriber sends with a 429, in seconds.
const RETRY_AFTER_SECS: u64 = 1;

/// The delivery handler: the status decides between success, retry and dead letter.
#[stream_consumer(
    stream = "webhooks",
    group = "subscriber-1",
    name = "webhooks",
    concurrency = 4,
    max_retries = 4,
    backoff(initial = "100ms", max = "2s"),
    rate_limit = "5/s"
)]
async fn deliver(msg: Message<WebhookEvent>) -> Result<(), HandlerError> {
    let endpoint = *msg.state::<Endpoint>().ok_or("no endpoint in the state")?;
    let body = serde_json::to_vec(msg.payload())?;
    // Connection errors are transient: `?` makes them a retried failure.
    let (status, retry_after) = post(endpoint, &msg.id().to_string(), &body).await?;
    let event = msg.payload().event;
    match status {
        200..=299 => {
            println!("delivery: event {event} delivered (attempt {})", msg.attempt());
            Ok(())
        }
        429 => {
            let wait = Duration::from_secs(retry_after.unwrap_or(RETRY_AFTER_SECS));
            println!("delivery: event {event} rate-limited, retrying after {wait:?}");
            Err(HandlerError::retry_after(format!("HTTP 429, retry after {wait:?}"), wait))
        }
        408 | 500..=599 => {
            println!("delivery: event {event} got HTTP {status}, retrying with backoff");
            Err(format!("HTTP {status}").into())
        }
        _ => {
            println!("delivery: event {event} got HTTP {status}, dead-lettered");
            Err(HandlerError::permanent(format!("HTTP {status}")))
        }
    }
}

/// POSTs `body` to `endpoint`; the status and the `Retry-After` seconds, if any.
async fn post(endpoint: Endpoint, webhook_id: &str, body: &[u8]) -> std::io::Result<(u16, Option<u64>)> {
    let mut socket = TcpStream::connect(endpoint.0).await?;
    let head = format!(
        "POST /hooks HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nX-Webhook-Id: {webhook_id}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.0,
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body).await?;
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    Ok((status, header(&text, "retry-after").and_then(|v| v.parse().ok())))
}

/// The stand-in subscriber: event 2 fails once with 500, event 3 is rate-limited once
/// (429), event 4 answers 410 and event 5 400 until fixed; the rest 200. It prints every
/// request, with the time since the previous one for the same event.
struct Subscriber {
    fixed: bool,
    /// Per event: how many requests, and when the last one came.
    seen: Mutex<HashMap<u64, (u32, Instant)>>,
    /// When the subscriber started, for the `arrival:` lines.
    started: Instant,
}

impl Subscriber {
    fn answer(&self, event: u64) -> u16 {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        println!("arrival: {} ms", (now - self.started).as_millis());
        let (earlier, previous) = seen.get(&event).copied().unwrap_or((0, now));
        seen.insert(event, (earlier + 1, now));
        let status = match event {
            2 if earlier == 0 => 500,
            3 if earlier == 0 => 429,
            4 if !self.fixed => 410,
            5 if !self.fixed => 400,
            _ => 200,
        };
        if earlier == 0 {
            println!("subscriber: event {event} -> {status}");
        } else {
            println!(
                "subscriber: event {event} -> {status} ({} ms after the previous request)",
                (now - previous).as_millis()
            );
        }
        status
    }
}

/// Serves the stand-in subscriber on `listener`.
async fn serve(listener: TcpListener, subscriber: Subscriber) {
    let subscriber = std::sync::Arc::new(subscriber);
    while let Ok((socket, _)) = listener.accept().await {
        let subscriber = subscriber.clone();
        tokio::spawn(async move {
            if let Err(e) = respond(socket, &subscriber).await {
                tracing::warn!(error = %e, "subscriber: bad request");
            }
        });
    }
}

async fn respond(mut socket: TcpStream, subscriber: &Subscriber) -> std::io::Result<()> {
    let body = read_body(&mut socket).await?;
    let event: WebhookEvent = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
    let status = subscriber.answer(event.event);
    let retry_after = if status == 429 { format!("Retry-After: {RETRY_AFTER_SECS}\r\n") } else { String::new() };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        410 => "Gone",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    };
    let response = format!("HTTP/1.1 {status} {reason}\r\n{retry_after}Content-Length: 0\r\nConnection: close\r\n\r\n");
    socket.write_all(response.as_bytes()).await
}

/// Reads one HTTP/1.1 request and returns its body.
async fn read_body(socket: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = buf[end + 4..].to_vec();
            while body.len() < len {
                let n = socket.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            return Ok(body);
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-request"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The value of header `name` (case-insensitive) in an HTTP head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let (command, args) = subcommand("worker");
    let result = match command.as_str() {
        "worker" => worker(has_flag(&args, "--subscriber-fixed")).await,
        "publish" => publish().await,
        "replay" => replay().await,
        "cleanup" => delete_stream_keys(&[(WEBHOOKS, &["subscriber-1"])]).await.map(drop),
        other => Err(RecipeError::Usage(format!(
            "unknown command `{other}`: worker [--subscriber-fixed], publish, replay or cleanup"
        ))),
    };
    exit("webhooks", result)
}

/// Delivers until Ctrl-C or SIGTERM, to `WEBHOOK_ENDPOINT` or to the stand-in subscriber.
async fn worker(fixed: bool) -> Result<(), RecipeError> {
    let endpoint = match std::env::var("WEBHOOK_ENDPOINT") {
        Ok(addr) => Endpoint(addr.parse().map_err(|e| RecipeError::Usage(format!("WEBHOOK_ENDPOINT {addr:?}: {e}")))?),
        Err(_) => {
            let listener = TcpListener::bind("127.0.0.1:0").await.map_err(RecipeError::io("binding the subscriber"))?;
            let addr = listener.local_addr().map_err(RecipeError::io("the subscriber's address"))?;
            tokio::spawn(serve(listener, Subscriber { fixed, seen: Mutex::default(), started: Instant::now() }));
            let state = if fixed { "fixed" } else { "buggy" };
            println!("webhooks: stand-in subscriber ({state}) listening on {addr}");
            Endpoint(addr)
        }
    };
    let runtime = streamx::Runtime::builder().state(endpoint).build()?;
    println!("webhooks: delivering `{WEBHOOKS}` to {} from {}; Ctrl-C to stop", endpoint.0, runtime.url());
    runtime.run().await?;
    println!("webhooks: stopped");
    Ok(())
}

async fn publish() -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    for event in 1..=6 {
        let id = producer.publish(WEBHOOKS, &WebhookEvent { event, kind: "invoice.paid".into() }).await?;
        println!("published event {event} as {id}");
    }
    Ok(())
}

/// Lists the dead letters, then puts them back on the stream.
async fn replay() -> Result<(), RecipeError> {
    let dlq = streamx::keys::default_dead_letter_stream(WEBHOOKS);
    let dlq = DeadLetters::connect_with(&RedisUrl::from_env()?, &dlq).await?;
    for letter in dlq.list(None, 100).await?.entries {
        println!("replaying dead letter {}: {}", letter.id, letter.error);
    }
    println!("replayed {} dead letter(s)", dlq.replay_all().await?);
    Ok(())
}
