//! What the Redis user must be allowed to run the consumers: checked when the runtime
//! starts, before any group is created, and watched while the consumers run.
//!
//! # What the engine needs
//! - **Commands**: every command the engine's Lua scripts call, read from the scripts' own
//!   text when the check runs ([`needs::lua_commands`]: each `redis.call('XCLAIM', ...)`, and
//!   for a call whose command is built at run time, `redis.call(unpack(args))`, the table
//!   literal the arguments start from, `{'XCLAIM', stream, ...}`), plus the commands the engine
//!   sends itself ([`needs::DIRECT`]). So the list cannot drift from the scripts; unit tests
//!   fail when a script's commands cannot be read, when a script is missing from the index,
//!   when a worker file sends a command that is not listed, and when the list changes (so the
//!   README's rule is updated: a test compares it with [`acl_rule`]).
//! - **Keys**: [`crate::keys::engine_keys`] of every consumer: the stream, its dead-letter
//!   stream and the group's keys (`{orders}:*`).
//!
//! # How the start-up check asks Redis ([`probe`])
//! It must not change any data, and Redis's `NOPERM` does not say which key it refused.
//! - **Keys**: one `EVALSHA` per key, of a script that does nothing, declaring that key.
//!   Redis checks a script's declared keys (for reading and writing, as for the engine's own
//!   scripts) before running it.
//! - **Commands**: one script with the `no-writes` flag `redis.pcall`s each command. Redis
//!   (7.0 and newer) checks permissions *before* it refuses a write in a read-only script, so
//!   a permitted write command is answered "Write commands are not allowed from read-only
//!   scripts" and never runs, and a refused one with the ACL error. Read commands do run, on
//!   the stream with arguments that are no valid id or number: tiny reads at most. The stream
//!   (whose permission the key check just asked about) stands for every key, rather than a
//!   scratch key: for a user whose rule is right, nothing is refused, so the check adds nothing
//!   to `ACL LOG`, where a scratch key outside the user's patterns would add one denial per
//!   command at every start. `CLIENT ID` and `CLIENT UNBLOCK`, which Redis does not run from
//!   scripts, are sent directly (`CLIENT UNBLOCK` of a client id that does not exist);
//!   `SCRIPT LOAD` and `EVALSHA` are checked by loading and running the check's scripts.
//! - **Not `ACL DRYRUN`**: it needs `+acl|dryrun` (and the user's name, `ACL WHOAMI`), which a
//!   least-privilege user does not have.
//! - **Limits**: a user with selectors (`(...)` rules, several key patterns each with its own
//!   commands) is checked command by command on the stream and key by key, not pair by pair;
//!   what slips through is caught at run time. On a server older than 7.0 (no script flags)
//!   or one that answers otherwise, what cannot be checked is logged as a warning and the
//!   runtime starts.
//!
//! # At run time ([`watch`])
//! A refused command makes its consumer not ready, is counted
//! ([`crate::observe::names::PERMISSION_DENIED`]) and logged, and the consumer is ready again
//! once a re-check finds nothing missing.

mod denial;
mod needs;
mod probe;
mod watch;

use std::collections::BTreeSet;

use fred::clients::Client;

use crate::error::{Error, Result};
pub(crate) use needs::{required_commands, ConsumerKeys, EngineScript, Serves, Uses};
pub(crate) use watch::PermissionWatch;

/// The smallest `ACL SETUSER` rule for `user` to run `consumers` (and producers on their
/// streams): their keys, no channels, `commands` only.
pub(crate) fn acl_rule<'a>(
    user: &str,
    consumers: impl IntoIterator<Item = &'a ConsumerKeys>,
    commands: &[String],
) -> String {
    needs::acl_rule(user, consumers, commands)
}

/// Checks that the user of `client` may do what `consumers` need (see the module docs):
/// [`Error::MissingPermissions`] when Redis refuses anything; what cannot be checked is logged
/// and let through.
pub(crate) async fn check_consumers(
    client: &Client,
    user: &str,
    consumers: &[ConsumerKeys],
    cluster: bool,
    uses: Uses,
) -> Result<()> {
    let commands = required_commands(cluster, uses);
    let mut report = probe::Report::default();
    let mut streams: Vec<String> = Vec::new();
    let mut probed = BTreeSet::new();
    for c in consumers {
        // Commands once per stream (they stand on the stream's key); keys per consumer.
        let first = probed.insert(c.stream.clone());
        let found = probe::check(client, &c.stream, &c.all(), if first { &commands } else { &[] }).await;
        if !found.keys.is_empty() && !streams.contains(&c.stream) {
            streams.push(c.stream.clone());
        }
        report.merge(found);
    }
    for what in &report.unchecked {
        tracing::warn!(user, "cannot check the Redis user's permissions for {what}; starting anyway");
    }
    if !report.unknown.is_empty() {
        let unknown: Vec<&str> = report.unknown.iter().map(String::as_str).collect();
        tracing::warn!(
            user,
            "Redis does not know the commands {}: the consumers need a newer server",
            unknown.join(", ")
        );
    }
    if !report.refused() {
        return Ok(());
    }
    if !report.commands.is_empty() {
        streams = probed.into_iter().collect();
    }
    let commands_refused: Vec<String> = report.commands.into_iter().collect();
    Err(Error::MissingPermissions(Box::new(MissingPermissions {
        user: user.to_string(),
        grant: grant(user, consumers, &commands_refused, &report.keys),
        rule: acl_rule(user, consumers, &required_commands(cluster, Uses::ALL)),
        streams,
        commands: commands_refused,
        keys: report.keys,
    })))
}

/// What the Redis user may not do that the consumers need: the details of
/// [`Error::MissingPermissions`]. Its `Display` is the error's message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingPermissions {
    /// The user (`default` when none was given).
    pub user: String,
    /// The streams whose consumers cannot run.
    pub streams: Vec<String>,
    /// The commands refused, as Redis names them (`TIME`, `XINFO CONSUMERS`).
    pub commands: Vec<String>,
    /// The keys refused.
    pub keys: Vec<String>,
    /// The `ACL SETUSER` that adds what is missing.
    pub grant: String,
    /// The smallest `ACL SETUSER` rule for the runtime's consumers (password `>PASSWORD`):
    /// [`Runtime::acl_rule`](crate::Runtime::acl_rule).
    pub rule: String,
}

impl std::fmt::Display for MissingPermissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}. Grant it with `{}`, or give the user the smallest rule for these consumers (see the README's \
             \"TLS and ACL\"): {}",
            describe_refusal(&self.user, &self.streams, &self.commands, &self.keys),
            self.grant,
            self.rule
        )
    }
}

/// What Redis refuses `user` for the consumers of `streams`, in words.
pub(crate) fn describe_refusal(user: &str, streams: &[String], commands: &[String], keys: &[String]) -> String {
    let quoted = |items: &[String]| items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ");
    let mut text = format!("the Redis user `{user}` may not do what the consumers of {} need:", quoted(streams));
    if !commands.is_empty() {
        text.push_str(&format!(" it may not run {}", commands.join(", ")));
    }
    if !keys.is_empty() {
        if !commands.is_empty() {
            text.push(';');
        }
        text.push_str(&format!(" it may not touch the keys {}", quoted(keys)));
    }
    text
}

/// The `ACL SETUSER` that adds what was refused: the commands, and the README's pattern of
/// each refused key (`~{orders}:*` for a derived key).
pub(crate) fn grant<'a>(
    user: &str,
    consumers: impl IntoIterator<Item = &'a ConsumerKeys>,
    commands: &[String],
    keys: &[String],
) -> String {
    let mut parts: Vec<String> = commands.iter().map(|c| format!("+{}", needs::acl_name(c))).collect();
    for c in consumers {
        for key in c.all().iter().filter(|k| keys.contains(k)) {
            let pattern = needs::key_pattern(&c.stream, key);
            if !parts.contains(&pattern) {
                parts.push(pattern);
            }
        }
    }
    format!("ACL SETUSER {user} {}", parts.join(" "))
}
