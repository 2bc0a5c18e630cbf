//! Webhook delivery: events of a stream POSTed to a subscriber's HTTP endpoint (a local one
//! the recipe starts, which fails sometimes). A 5xx is retried with backoff, a 429 after
//! its `Retry-After` (`HandlerError::retry_after`), another 4xx is permanent and
//! dead-lettered at once; once the subscriber is fixed the dead letters are inspected and
//! replayed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use streamx::{Backoff, Consumer, FailureKind, HandlerError, Message, Producer, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{dead_letters_of, letter_payload, wait_settled, wait_until, RecipeError, RECIPE_LIMIT};

/// An event to deliver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Event number.
    pub event: u64,
    /// What happened.
    pub kind: String,
}

/// The subscriber's endpoint, where the consumer delivers.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint(pub SocketAddr);

/// How the subscriber answered a response's `Retry-After` header, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// What the subscriber's endpoint does: answers per event, logs every request.
#[derive(Debug, Default)]
pub struct Subscriber {
    /// Once true, the subscriber's bugs are fixed: events 4 and 5 are accepted.
    pub fixed: AtomicBool,
    log: Mutex<Vec<Request>>,
}

/// One request the subscriber received.
#[derive(Debug, Clone)]
pub struct Request {
    /// The event number.
    pub event: u64,
    /// The `X-Webhook-Id` header (the stream entry id: the subscriber's idempotency key).
    pub webhook_id: String,
    /// What it answered.
    pub status: u16,
    /// When.
    pub at: Instant,
}

impl Subscriber {
    /// The answer to this request: event 2 fails once with 500, event 3 is rate-limited
    /// once (429), event 4 answers 410 and event 5 400 until fixed; the rest 200.
    fn answer(&self, event: u64) -> u16 {
        let earlier = self.requests().iter().filter(|r| r.event == event).count();
        let fixed = self.fixed.load(Ordering::SeqCst);
        match event {
            2 if earlier == 0 => 500,
            3 if earlier == 0 => 429,
            4 if !fixed => 410,
            5 if !fixed => 400,
            _ => 200,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Serves the subscriber on `listener` until the task is aborted.
async fn serve(listener: TcpListener, subscriber: Arc<Subscriber>) {
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
    let (head, body) = read_request(&mut socket).await?;
    let event: WebhookEvent = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
    let webhook_id = header(&head, "x-webhook-id").unwrap_or_default().to_string();
    let status = subscriber.answer(event.event);
    let request = Request { event: event.event, webhook_id, status, at: Instant::now() };
    subscriber.log.lock().unwrap_or_else(|e| e.into_inner()).push(request);
    let retry_after = if status == 429 { format!("Retry-After: {RETRY_AFTER_SECS}\r\n") } else { String::new() };
    let response =
        format!("HTTP/1.1 {status} {}\r\n{retry_after}Content-Length: 0\r\nConnection: close\r\n\r\n", reason(status));
    socket.write_all(response.as_bytes()).await
}

/// Reads one HTTP/1.1 request: its head (request line and headers) and its body.
async fn read_request(socket: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
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
            return Ok((head, body));
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

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        410 => "Gone",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
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

/// The delivery handler: the status decides between success, retry and dead letter.
async fn deliver(msg: Message<WebhookEvent>) -> Result<(), HandlerError> {
    let endpoint = *msg.state::<Endpoint>().ok_or("no endpoint in the state")?;
    let body = serde_json::to_vec(msg.payload())?;
    // Connection errors are transient: `?` makes them a retried failure.
    let (status, retry_after) = post(endpoint, &msg.id().to_string(), &body).await?;
    match status {
        200..=299 => Ok(()),
        429 => {
            let wait = Duration::from_secs(retry_after.unwrap_or(RETRY_AFTER_SECS));
            Err(HandlerError::retry_after(format!("HTTP 429, retry after {wait:?}"), wait))
        }
        408 | 500..=599 => Err(format!("HTTP {status}").into()),
        _ => Err(HandlerError::permanent(format!("HTTP {status}"))),
    }
}

/// What the recipe did.
#[derive(Debug)]
pub struct Report {
    /// Events published.
    pub events: u64,
    /// Every request the subscriber received: `(event, status)`, in order per event.
    pub requests: BTreeMap<u64, Vec<u16>>,
    /// Time between the 429 and the next request for that event.
    pub waited_after_429: Option<Duration>,
    /// The dead letters after the first pass: `(event, kind, error)`.
    pub dead_letters: Vec<(u64, Option<FailureKind>, String)>,
    /// Dead letters replayed after the fix.
    pub replayed: u64,
    /// Dead letters left at the end.
    pub dead_letters_left: u64,
    /// Events the subscriber finally accepted (answered 200).
    pub delivered: Vec<u64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} events; what the subscriber answered, per event:", self.events)?;
        for (event, statuses) in &self.requests {
            writeln!(f, "  event {event}: {statuses:?}")?;
        }
        writeln!(f, "after the 429 the next attempt came {:?} later", self.waited_after_429)?;
        for (event, kind, error) in &self.dead_letters {
            writeln!(f, "dead letter: event {event}, kind {}, {error}", kind.map(|k| k.as_str()).unwrap_or("?"))?;
        }
        writeln!(f, "subscriber fixed; replayed {} dead letter(s), {} left", self.replayed, self.dead_letters_left)?;
        write!(f, "delivered events: {:?}", self.delivered)
    }
}

/// Events published.
pub const EVENTS: u64 = 6;

/// Runs the recipe against `url`, with the stream `<prefix>.webhooks`.
pub async fn run(url: String, prefix: String) -> Result<Report, RecipeError> {
    let stream = format!("{prefix}.webhooks");
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(RecipeError::io("binding the subscriber"))?;
    let endpoint = Endpoint(listener.local_addr().map_err(RecipeError::io("the subscriber's address"))?);
    let subscriber = Arc::new(Subscriber::default());
    let server = tokio::spawn(serve(listener, subscriber.clone()));

    let consumer = Consumer::new(stream.clone(), "subscriber-1", deliver)
        .name_as("webhooks")
        .concurrency(4)
        .max_retries(4)
        .backoff(Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(2)));
    let running = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(consumer)
        .state(endpoint)
        .build()?
        .start()
        .await?;
    let producer = Producer::connect(&url).await?;
    for event in 1..=EVENTS {
        producer.publish(&stream, &WebhookEvent { event, kind: "invoice.paid".into() }).await?;
    }
    wait_settled(&running, EVENTS, "every event to be delivered or dead-lettered").await?;

    // Inspect what could not be delivered.
    let dlq = dead_letters_of(&url, &stream).await?;
    let mut dead_letters = Vec::new();
    for letter in dlq.list(None, 100).await?.entries {
        let event: WebhookEvent = letter_payload(&letter)?;
        dead_letters.push((event.event, letter.kind, letter.error));
    }
    // Delivered 4 at a time, they are listed in the order they failed: sort by event.
    dead_letters.sort_by_key(|d| d.0);
    // The subscriber fixes its endpoint; put the dead letters back on the stream.
    subscriber.fixed.store(true, Ordering::SeqCst);
    let delivered_before: u64 = running.stats_all().values().map(|s| s.succeeded).sum();
    let replayed = dlq.replay_all().await?;
    wait_until(RECIPE_LIMIT, "the replayed events to be delivered", || {
        let succeeded: u64 = running.stats_all().values().map(|s| s.succeeded).sum();
        async move { Ok(succeeded >= delivered_before + replayed) }
    })
    .await?;
    running.shutdown().await?;
    server.abort();

    let requests = subscriber.requests();
    let mut by_event: BTreeMap<u64, Vec<u16>> = BTreeMap::new();
    for r in &requests {
        by_event.entry(r.event).or_default().push(r.status);
    }
    let of_event_3: Vec<&Request> = requests.iter().filter(|r| r.event == 3).collect();
    let waited_after_429 = match of_event_3.as_slice() {
        [first, second, ..] if first.status == 429 => Some(second.at.duration_since(first.at)),
        _ => None,
    };
    let mut delivered: Vec<u64> = requests.iter().filter(|r| r.status == 200).map(|r| r.event).collect();
    delivered.sort();
    Ok(Report {
        events: EVENTS,
        requests: by_event,
        waited_after_429,
        dead_letters,
        replayed,
        dead_letters_left: dlq.count().await?,
        delivered,
    })
}
