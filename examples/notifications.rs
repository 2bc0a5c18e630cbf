//! Run with: `cargo run --example notifications` (the worker; needs Redis on
//! 127.0.0.1:6379, or set `STREAMX_REDIS_URL`), then in another terminal
//! `cargo run --example notifications -- publish`; stop the worker with Ctrl-C and delete
//! the recipe's keys with `cargo run --example notifications -- cleanup`.
//!
//! Notification fan-out: one `signed_up` event read by three consumer groups (email, SMS,
//! push), each with its own retry policy. What a channel cannot deliver lands in the
//! stream's dead letters (`{notifications.signups}:dlq`), marked with the group that gave
//! up: `streamx dlq list notifications.signups` shows them.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx_examples::{delete_stream_keys, exit, init_logging, subcommand, RecipeError};

/// The stream every channel reads.
const SIGNUPS: &str = "notifications.signups";

/// A user signed up: the one event every channel reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignedUp {
    user: u64,
    email: String,
    /// For SMS, when given.
    phone: Option<String>,
    /// For push, when the app is installed.
    device_token: Option<String>,
}

/// Email: the provider is flaky for users 4 and 8 (fails twice); retried up to 5 times.
#[stream_consumer(
    stream = "notifications.signups",
    group = "email",
    name = "email",
    max_retries = 5,
    backoff(initial = "20ms", max = "1s")
)]
async fn send_email(msg: Message<SignedUp>) -> Result<(), HandlerError> {
    let user = msg.payload();
    if matches!(user.user, 4 | 8) && msg.attempt() <= 2 {
        println!("email: user {}: SMTP 451, will retry (attempt {})", user.user, msg.attempt());
        return Err(format!("smtp: 451 try again later ({})", user.email).into());
    }
    println!("email: sent to user {} <{}>", user.user, user.email);
    Ok(())
}

/// SMS: nothing to do without a phone; an invalid number is permanent; user 5's carrier is
/// down for the whole run. One retry.
#[stream_consumer(
    stream = "notifications.signups",
    group = "sms",
    name = "sms",
    max_retries = 1,
    backoff(initial = "50ms", max = "1s")
)]
async fn send_sms(msg: Message<SignedUp>) -> Result<(), HandlerError> {
    let user = msg.payload();
    let Some(phone) = &user.phone else {
        println!("sms: user {} has no phone, skipped", user.user);
        return Ok(());
    };
    if !phone.starts_with('+') || phone.len() < 8 {
        println!("sms: user {}: invalid number {phone:?}, dead-lettered", user.user);
        return Err(HandlerError::permanent(format!("invalid phone number {phone:?}")));
    }
    if user.user == 5 {
        println!("sms: user {}: carrier gateway down (attempt {})", user.user, msg.attempt());
        return Err("carrier gateway: 503 service unavailable".into());
    }
    println!("sms: sent to user {} at {phone}", user.user);
    Ok(())
}

/// Push: only worth it now, so no retries; nothing to do without a device token.
#[stream_consumer(stream = "notifications.signups", group = "push", name = "push", max_retries = 0)]
async fn send_push(msg: Message<SignedUp>) -> Result<(), HandlerError> {
    let user = msg.payload();
    let Some(token) = &user.device_token else {
        println!("push: user {} has no device, skipped", user.user);
        return Ok(());
    };
    if user.user == 7 {
        println!("push: user {}: token rejected, dead-lettered (no retries)", user.user);
        return Err(format!("push gateway: token {token} rejected by the platform").into());
    }
    println!("push: sent to user {} ({token})", user.user);
    Ok(())
}

/// The users who sign up when `publish` runs.
fn signups() -> Vec<SignedUp> {
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

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let (command, _) = subcommand("worker");
    let result = match command.as_str() {
        "worker" => worker().await,
        "publish" => publish().await,
        "cleanup" => delete_stream_keys(&[(SIGNUPS, &["email", "sms", "push"])]).await.map(drop),
        other => Err(RecipeError::Usage(format!("unknown command `{other}`: worker, publish or cleanup"))),
    };
    exit("notifications", result)
}

/// Runs the three channels until Ctrl-C (SIGINT) or SIGTERM.
async fn worker() -> Result<(), RecipeError> {
    let runtime = streamx::Runtime::builder().build()?;
    println!("notifications: email, sms and push reading `{SIGNUPS}` on {}; Ctrl-C to stop", runtime.url());
    runtime.run().await?;
    println!("notifications: stopped");
    Ok(())
}

/// Publishes the sign-ups.
async fn publish() -> Result<(), RecipeError> {
    let producer = Producer::from_env().await?;
    for signup in signups() {
        let id = producer.publish(SIGNUPS, &signup).await?;
        println!("published the sign-up of user {} as {id}", signup.user);
    }
    Ok(())
}
