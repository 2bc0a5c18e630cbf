//! Permissions refused while a consumer runs (its user's ACL changed under a running worker).
//!
//! Every failed command of the consumer loop is shown to [`PermissionWatch::failed`]. A
//! permission error counts [`PERMISSION_DENIED`] and makes the consumer not ready (`/readyz`
//! 503). The first of a run of them is logged at once, naming what Redis refused (the
//! command, or the script it ran in and the commands that script calls: Redis 7.0 does not say
//! which), and starts a re-check: the start-up check of this consumer's commands and keys,
//! every 100 ms to 2 s. It logs exactly what is missing and how to grant it, and keeps the
//! `/readyz` reason up to date; once it finds nothing missing and no command was refused
//! meanwhile, the consumer is ready again (where the check cannot run, once no command was
//! refused for a round of it).
//!
//! Readiness comes back from the re-check rather than from the next command that succeeds:
//! the loop's tasks run different commands (a refused `XCLAIM` only shows when something is
//! claimed, while the heartbeat's `ZADD` keeps succeeding), so one success says nothing about
//! the command that was refused.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::denial::{denial, Denial, Refused};
use super::needs::{engine_scripts, required_commands, script_commands, ConsumerKeys, Uses};
use super::probe::{check, Report};
use super::{describe_refusal, grant};
use crate::connection::{HealingClient, RedisUrl};
use crate::consumer::Consumer;
use crate::observe::names::{LABEL_COMMAND, LABEL_CONSUMER, LABEL_GROUP, LABEL_STREAM, PERMISSION_DENIED};
use crate::observe::Readiness;
use crate::retry_delay::RetryDelay;

/// The engine's scripts by sha1: their name and the commands they call.
static SCRIPTS: LazyLock<HashMap<String, (&'static str, Vec<String>)>> = LazyLock::new(|| {
    engine_scripts()
        .into_iter()
        .map(|s| {
            let commands = script_commands(s.script).unwrap_or_else(|e| e.found).into_iter().collect();
            (s.script.sha1().to_ascii_lowercase(), (s.name, commands))
        })
        .collect()
});

/// What one consumer loop needs to watch its permissions.
pub(crate) struct PermissionWatch {
    inner: Arc<Inner>,
}

struct Inner {
    /// The consumer's registration name.
    consumer: String,
    user: String,
    keys: ConsumerKeys,
    commands: Vec<String>,
    client: HealingClient,
    readiness: Arc<Readiness>,
    stopping: CancellationToken,
    tasks: TaskTracker,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A re-check runs.
    checking: bool,
    /// Permission errors seen so far.
    denials: u64,
}

impl PermissionWatch {
    /// The watch of `consumer`'s loop, connected by `url`, whose dead letters go to
    /// `dead_letters`: it sets `readiness`, re-checks on `client`, and its re-checks end at
    /// `stopping` (tracked by `tasks`).
    pub fn new(
        consumer: &Consumer,
        url: &RedisUrl,
        dead_letters: Option<String>,
        client: HealingClient,
        readiness: Arc<Readiness>,
        stopping: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let keys = ConsumerKeys::consumer(consumer.stream(), consumer.group(), dead_letters);
        let inner = Inner {
            consumer: consumer.name().to_string(),
            user: url.username().to_string(),
            keys,
            commands: required_commands(url.is_cluster(), Uses::of(consumer)),
            client,
            readiness,
            stopping,
            tasks,
            state: Mutex::new(State::default()),
        };
        PermissionWatch { inner: Arc::new(inner) }
    }

    /// After a failed command of the loop: if Redis refused it for lack of permission,
    /// counts it, makes the consumer not ready and starts a re-check (see the module docs).
    pub fn failed(&self, err: &fred::error::Error) {
        let Some(d) = denial(err.details()) else { return };
        let inner = &self.inner;
        let (label, what) = refused_what(&d);
        metrics::counter!(PERMISSION_DENIED,
            LABEL_STREAM => inner.keys.stream.clone(), LABEL_GROUP => inner.keys.group.clone(),
            LABEL_CONSUMER => inner.consumer.clone(), LABEL_COMMAND => label)
        .increment(1);
        let start = {
            let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.denials += 1;
            let start = !state.checking && !inner.stopping.is_cancelled();
            state.checking |= start;
            start
        };
        if !start {
            tracing::debug!(consumer = %inner.consumer, refused = %what, error = %err, "Redis refused a command (permissions)");
            return;
        }
        tracing::error!(consumer = %inner.consumer, stream = %inner.keys.stream, group = %inner.keys.group, error = %err,
            "the Redis user `{}` was refused {what}: the consumer is not ready until it is granted; checking what is missing",
            inner.user);
        inner.readiness.refused(format!("the Redis user `{}` was refused {what}", inner.user));
        inner.tasks.spawn(recheck(inner.clone()));
    }
}

/// The metric label and the words for what `d` refused.
fn refused_what(d: &Denial) -> (String, String) {
    let script = d.script.as_ref().map(|sha| match SCRIPTS.get(sha) {
        Some((name, commands)) => {
            (format!("script:{name}"), format!("the {name} script (which calls {})", commands.join(", ")))
        }
        None => ("script:unknown".to_string(), format!("the script {sha}")),
    });
    match (&d.refused, script) {
        (Refused::Command(Some(command)), Some((_, in_script))) => {
            (command.clone(), format!("{command} in {in_script}"))
        }
        (Refused::Command(Some(command)), None) => (command.clone(), command.clone()),
        (Refused::Command(None), Some((label, in_script))) => (label, format!("a command in {in_script}")),
        (Refused::Key, Some((label, in_script))) => (label, format!("a key of a command in {in_script}")),
        (Refused::Key, None) => ("key".to_string(), "a key of a command".to_string()),
        (Refused::Command(None), None) => ("unknown".to_string(), "a command".to_string()),
    }
}

/// Checks the consumer's permissions until nothing is missing (see the module docs). Where
/// the check cannot run (a server older than 7.0), the consumer is ready again once no
/// command was refused for a whole round (up to 2 s and two checks).
async fn recheck(inner: Arc<Inner>) {
    let mut delay = RetryDelay::up_to(Duration::from_secs(2));
    let mut logged: Option<Report> = None;
    let mut previous: Option<u64> = None;
    loop {
        let seen = inner.state.lock().unwrap_or_else(PoisonError::into_inner).denials;
        let (client, keys) = (inner.client.get(), inner.keys.all());
        let checked = check(&client, &inner.keys.stream, &keys, &inner.commands);
        let report = tokio::select! {
            report = checked => report,
            // (a check waiting on a Redis that does not answer must not hold up shutdown)
            _ = inner.stopping.cancelled() => Report::default(),
        };
        if inner.stopping.is_cancelled() {
            inner.state.lock().unwrap_or_else(PoisonError::into_inner).checking = false;
            return;
        }
        if report.refused() {
            if logged.as_ref() != Some(&report) {
                let streams = [inner.keys.stream.clone()];
                let commands: Vec<String> = report.commands.iter().cloned().collect();
                let text = describe_refusal(&inner.user, &streams, &commands, &report.keys);
                let fix = grant(&inner.user, [&inner.keys], &commands, &report.keys);
                tracing::error!(consumer = %inner.consumer, "{text}; grant it with `{fix}`");
                inner.readiness.refused(text);
                logged = Some(report);
            }
        } else {
            let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            // Nothing refused since this check started; or, when it could not check
            // everything, since the one before.
            let quiet = if report.unchecked.is_empty() { seen } else { previous.unwrap_or(u64::MAX) };
            if state.denials == quiet {
                state.checking = false;
                inner.readiness.permitted();
                tracing::info!(consumer = %inner.consumer, "the Redis user `{}` has the permissions the consumer needs again; it is ready", inner.user);
                return;
            }
        }
        previous = Some(seen);
        if !delay.wait(&inner.stopping).await {
            inner.state.lock().unwrap_or_else(PoisonError::into_inner).checking = false;
            return;
        }
    }
}
