//! Notification fan-out: one `signed_up` event read by three consumer groups (email, SMS,
//! push), each with its own retry policy; what a channel cannot deliver lands in the
//! stream's dead letters, marked with the group that gave up.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamx::{Backoff, Consumer, FailureKind, HandlerError, Message, Producer, Runtime};

use crate::{dead_letters_of, letter_payload, wait_settled, RecipeError};

/// A user signed up: the one event every channel reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedUp {
    /// User id.
    pub user: u64,
    /// Always present.
    pub email: String,
    /// For SMS, when given.
    pub phone: Option<String>,
    /// For push, when the app is installed.
    pub device_token: Option<String>,
}

/// What was sent: `(channel, user)`.
#[derive(Debug, Default)]
struct Outbox(Mutex<Vec<(&'static str, u64)>>);

impl Outbox {
    fn sent(&self, channel: &'static str, user: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push((channel, user));
    }
}

fn outbox<T>(msg: &Message<T>) -> Result<&Arc<Outbox>, HandlerError> {
    Ok(msg.state::<Arc<Outbox>>().ok_or("no outbox in the state")?)
}

/// Email: the provider is flaky for users 4 and 8 (fails twice); retried up to 5 times.
async fn send_email(msg: Message<SignedUp>) -> Result<(), HandlerError> {
    let user = msg.payload();
    if matches!(user.user, 4 | 8) && msg.attempt() <= 2 {
        return Err(format!("smtp: 451 try again later ({})", user.email).into());
    }
    outbox(&msg)?.sent("email", user.user);
    Ok(())
}

/// SMS: nothing to do without a phone; an invalid number is permanent; user 5's carrier is
/// down for the whole run. One retry.
async fn send_sms(msg: Message<SignedUp>) -> Result<(), HandlerError> {
    let user = msg.payload();
    let Some(phone) = &user.phone else { return Ok(()) };
    if !phone.starts_with('+') || phone.len() < 8 {
        return Err(HandlerError::permanent(format!("invalid phone number {phone:?}")));
    }
    if user.user == 5 {
        return Err("carrier gateway: 503 service unavailable".into());
    }
    outbox(&msg)?.sent("sms", user.user);
    Ok(())
}

/// Push: only worth it now, so no retries; nothing to do without a device token.
async fn send_push(msg: Message<SignedUp>) -> Result<(), HandlerError> {
    let user = msg.payload();
    let Some(token) = &user.device_token else { return Ok(()) };
    if user.user == 7 {
        return Err(format!("push gateway: token {token} rejected by the platform").into());
    }
    outbox(&msg)?.sent("push", user.user);
    Ok(())
}

/// The users who sign up during the recipe.
pub fn signups() -> Vec<SignedUp> {
    (1..=8)
        .map(|user| SignedUp {
            user,
            email: format!("user{user}@example.com"),
            phone: match user {
                2 => None,
                6 => Some("12".into()),
                _ => Some(format!("+4470000000{user:02}")),
            },
            device_token: (user != 3 && user != 6).then(|| format!("tok-{user}")),
        })
        .collect()
}

/// One channel's outcome.
#[derive(Debug, Default, PartialEq)]
pub struct Channel {
    /// Users notified.
    pub sent: Vec<u64>,
    /// Failed runs retried.
    pub retried: u64,
    /// Dead letters of this channel's group: `(user, kind, deliveries)`.
    pub dead_letters: Vec<(u64, Option<FailureKind>, u32)>,
}

/// What the recipe did, by channel (`email`, `sms`, `push`).
#[derive(Debug)]
pub struct Report {
    /// Events published.
    pub signups: usize,
    /// Each channel's outcome.
    pub channels: BTreeMap<&'static str, Channel>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} sign-ups fanned out to {} channels", self.signups, self.channels.len())?;
        for (name, c) in &self.channels {
            writeln!(f, "  {name:5}: sent to users {:?}, {} retried run(s)", c.sent, c.retried)?;
            for (user, kind, deliveries) in &c.dead_letters {
                let kind = kind.map(|k| k.as_str()).unwrap_or("?");
                writeln!(f, "         dead letter: user {user}, kind {kind}, after {deliveries} deliveries")?;
            }
        }
        Ok(())
    }
}

/// Runs the recipe against `url`, with the stream `<prefix>.signups`.
pub async fn run(url: String, prefix: String) -> Result<Report, RecipeError> {
    let stream = format!("{prefix}.signups");
    let quick = |initial_ms| Backoff::new(Duration::from_millis(initial_ms), 2.0, Duration::from_secs(1));
    let outbox = Arc::new(Outbox::default());
    let running = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(Consumer::new(stream.clone(), "email", send_email).name_as("email").max_retries(5).backoff(quick(20)))
        .consumer(Consumer::new(stream.clone(), "sms", send_sms).name_as("sms").max_retries(1).backoff(quick(50)))
        .consumer(Consumer::new(stream.clone(), "push", send_push).name_as("push").max_retries(0))
        .state(outbox.clone())
        .build()?
        .start()
        .await?;
    let producer = Producer::connect(&url).await?;
    let signups = signups();
    for signup in &signups {
        producer.publish(&stream, signup).await?;
    }
    wait_settled(&running, signups.len() as u64, "every channel to settle every sign-up").await?;
    let stats = running.stats_all();
    running.shutdown().await?;

    let mut channels: BTreeMap<&'static str, Channel> = BTreeMap::new();
    for name in ["email", "sms", "push"] {
        let channel = channels.entry(name).or_default();
        channel.retried = stats.get(name).map(|s| s.retried).unwrap_or(0);
    }
    for (name, user) in outbox.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        channels.entry(name).or_default().sent.push(*user);
    }
    for letter in dead_letters_of(&url, &stream).await?.list(None, 100).await?.entries {
        let user: SignedUp = letter_payload(&letter)?;
        // One dead-letter stream per stream; each letter names the group that gave up.
        if let Some((_, channel)) = channels.iter_mut().find(|(name, _)| **name == letter.group) {
            channel.dead_letters.push((user.user, letter.kind, letter.deliveries));
        }
    }
    for channel in channels.values_mut() {
        channel.sent.sort();
        channel.dead_letters.sort_by_key(|d| d.0);
    }
    Ok(Report { signups: signups.len(), channels })
}
