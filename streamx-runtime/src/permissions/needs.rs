//! What the engine needs the Redis user to be allowed: the commands (read from the Lua text
//! of the engine's scripts, plus those it sends itself) and, per consumer, the keys; and the
//! `ACL SETUSER` rule that grants exactly that.

use std::collections::BTreeSet;

use fred::types::scripts::Script;

use crate::keys::{derived_key, engine_keys, KeyKind, STREAM_NAMES};

/// The commands the consumer loop sends itself, outside scripts (the unit tests check every
/// command a worker file sends is here).
pub(crate) const DIRECT: &[&str] = &[
    // Creating the groups (at start, and again after a restart without persistence).
    "XGROUP CREATE",
    // The reader.
    "XREADGROUP",
    // The acker, and clearing take-over marks.
    "XACK",
    "SREM",
    // The registry of stream names (`stream_names`), at start.
    "SADD",
    // Reconciliation and the hand-back at shutdown.
    "XPENDING",
    // The runtime's poll of its groups' pause flags (`crate::pause`).
    "EXISTS",
    // Dead letters too wide for Lua are copied by the client.
    "XRANGE",
    "XADD",
    // Every script runs as `EVALSHA`, loaded with `SCRIPT LOAD` when Redis does not have it.
    "EVALSHA",
    "SCRIPT LOAD",
    // The client on connect; `CLIENT UNBLOCK` ends a blocked read at shutdown; `PING` is sent
    // instead of `AUTH` without a password.
    "CLIENT ID",
    "CLIENT UNBLOCK",
    "INFO",
    "PING",
];

/// Commands the consumer loop sends only where the server has them (see
/// [`crate::Capabilities`]), and only for consumers that ask for them: left out of the check
/// and of the ACL rule (a Redis 7 server refuses an `ACL SETUSER` naming a command it does not
/// know). A refusal makes the engine fall back to the 7.0 path: `XACKDEL` (work-queue mode on
/// Redis 8.2+) falls back to `XACK` and the trimmer.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const OPTIONAL: &[&str] = &["XACKDEL"];

/// Commands producers send, not the consumer loop: in the ACL rule (which is for consumers
/// and producers on the streams), left out of the consumers' start-up check. `EVAL` runs the
/// producer's append script (batches and coalesced publishes); a producer refused it falls
/// back to pipelined `XADD`s.
pub(crate) const PRODUCER: &[&str] = &["EVAL"];

/// Commands a rate-limited consumer's reader sends beside its grant scripts: `XREAD` waits
/// for entries on a stream its last read found empty (see `crate::rate_limit`).
pub(crate) const RATE_LIMITED: &[&str] = &["XREAD"];

/// What the client sends to learn a cluster's layout (only on Redis Cluster).
pub(crate) const CLUSTER: &[&str] = &["CLUSTER INFO", "CLUSTER SLOTS"];

/// Commands whose first argument is a subcommand (`XINFO CONSUMERS`): ACL rules name both.
const CONTAINERS: &[&str] = &[
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "FUNCTION", "LATENCY", "MEMORY", "MODULE", "OBJECT", "PUBSUB",
    "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

/// Which consumers a script of the engine serves: every one, or only those with a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serves {
    /// Every consumer loop runs it.
    All,
    /// Consumers with `dedupe`.
    Dedupe,
    /// Consumers with `retention` or `delete_on_ack` (the stream's trimmer).
    Retention,
    /// The promotion of delayed messages, which every runtime runs for its consumers' streams
    /// but which is never required: a user refused it gets a warning, and the stream's
    /// delayed messages wait for a runtime that may promote them (so a rule written before
    /// delayed messages existed still starts its consumers).
    Promotion,
    /// Runtimes with periodic jobs (the publish of a tick).
    Periodic,
    /// Consumers with a `rate_limit`.
    RateLimit,
}

/// What the consumers of a runtime (or one consumer) use beyond every consumer's needs: the
/// scripts whose commands the start-up check requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Uses {
    pub dedupe: bool,
    pub retention: bool,
    pub promotion: bool,
    pub periodic: bool,
    pub rate_limit: bool,
}

impl Uses {
    /// Every feature: what the ACL rule grants (the README's rule), so a user given it may
    /// turn any feature on.
    pub const ALL: Uses = Uses { dedupe: true, retention: true, promotion: true, periodic: true, rate_limit: true };

    /// What `consumer` uses that the check must require (promotion never is).
    pub fn of(consumer: &crate::consumer::Consumer) -> Uses {
        let o = &consumer.options;
        Uses {
            dedupe: o.dedupe.is_some(),
            retention: o.retention.is_some() || o.delete_on_ack,
            promotion: false,
            periodic: false,
            rate_limit: o.rate_limit.is_some(),
        }
    }

    /// What any of `consumers` uses.
    pub fn any<'a>(consumers: impl IntoIterator<Item = &'a crate::consumer::Consumer>) -> Uses {
        consumers.into_iter().map(Uses::of).fold(Uses::default(), |a, b| Uses {
            dedupe: a.dedupe || b.dedupe,
            retention: a.retention || b.retention,
            promotion: a.promotion || b.promotion,
            periodic: a.periodic || b.periodic,
            rate_limit: a.rate_limit || b.rate_limit,
        })
    }

    fn needs(&self, serves: Serves) -> bool {
        match serves {
            Serves::All => true,
            Serves::Dedupe => self.dedupe,
            Serves::Retention => self.retention,
            Serves::Promotion => self.promotion,
            Serves::Periodic => self.periodic,
            Serves::RateLimit => self.rate_limit,
        }
    }
}

/// One Lua script of the engine, by name.
#[derive(Clone, Copy)]
pub(crate) struct EngineScript {
    /// What it does, for logs (`take-over`).
    pub name: &'static str,
    /// Which consumers need it.
    pub serves: Serves,
    /// The name of its `static` in the source (the unit tests find every script static).
    #[cfg_attr(not(test), allow(dead_code))]
    pub ident: &'static str,
    pub script: &'static Script,
}

/// Every script the consumer loop runs.
pub(crate) fn engine_scripts() -> Vec<EngineScript> {
    let mut scripts = crate::worker::scripts();
    scripts.extend(crate::dead_letters::engine_scripts());
    scripts.extend(crate::retention::engine_scripts());
    scripts.extend(crate::scheduler::engine_scripts());
    scripts.push(crate::periodic::engine_script());
    scripts.extend(crate::rate_limit::engine_scripts());
    scripts
}

/// The commands the consumer loop needs for consumers that use `uses`: those its scripts
/// call and those it sends itself (and on Redis Cluster the client's `CLUSTER` commands), as
/// Redis names them (`XINFO CONSUMERS`), sorted. A script whose commands cannot be read is a
/// bug the unit tests catch; here its commands are simply those that could be read.
pub(crate) fn required_commands(cluster: bool, uses: Uses) -> Vec<String> {
    let mut all: BTreeSet<String> = DIRECT.iter().map(|c| c.to_string()).collect();
    if cluster {
        all.extend(CLUSTER.iter().map(|c| c.to_string()));
    }
    for s in engine_scripts().into_iter().filter(|s| uses.needs(s.serves)) {
        all.extend(script_commands(s.script).unwrap_or_else(|e| e.found));
    }
    if uses.rate_limit {
        all.extend(RATE_LIMITED.iter().map(|c| c.to_string()));
    }
    all.into_iter().collect()
}

/// The commands of `script` (see [`lua_commands`]).
///
/// The fence of topic shard loops ([`crate::topic::fence::FENCE`]) is left out: only a topic
/// consumer runs it, and the start-up check does not cover topic consumers (their shards'
/// names are known only from the topic's record), so a stream's consumer needs no `GET` for
/// it.
pub(crate) fn script_commands(script: &Script) -> Result<BTreeSet<String>, Unresolved> {
    let text = script.lua().map(|l| &**l).unwrap_or_default();
    lua_commands(&text.replacen(crate::topic::fence::FENCE, "", 1))
}

/// A script calls `redis.call` with a command built at run time, and no table literal in it
/// starts with a command name: the commands it could call cannot be read from its text.
#[derive(Debug)]
pub(crate) struct Unresolved {
    /// The commands that could be read.
    pub found: BTreeSet<String>,
}

/// The Redis commands a Lua script calls: the first argument of every `redis.call` and
/// `redis.pcall` that is a string literal (with the subcommand for `XINFO`, `XGROUP`, ...).
/// A call whose command is not a literal (`redis.call(unpack(args))`) takes it from a table
/// built beforehand: then every table literal of the script that starts with an upper-case
/// name (`{'XCLAIM', stream, ...}`) names a command it may call. Comments are skipped.
pub(crate) fn lua_commands(lua: &str) -> Result<BTreeSet<String>, Unresolved> {
    let tokens = tokens(lua);
    let mut found = BTreeSet::new();
    let mut dynamic = false;
    let mut tables = BTreeSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let next = |n: usize| tokens.get(i + n);
        match t {
            Token::Name(redis) if redis == "redis" => {
                let call = matches!(next(2), Some(Token::Name(c)) if c == "call" || c == "pcall");
                if next(1) == Some(&Token::Punct('.')) && call && next(3) == Some(&Token::Punct('(')) {
                    match command_at(&tokens, i + 4) {
                        Some(command) => {
                            found.insert(command);
                        }
                        None => dynamic = true,
                    }
                }
            }
            Token::Punct('{') => {
                if let Some(Token::Str(first)) = next(1) {
                    if !first.is_empty() && first.bytes().all(|b| b.is_ascii_uppercase()) {
                        tables.extend(command_at(&tokens, i + 1));
                    }
                }
            }
            _ => {}
        }
    }
    if dynamic {
        if tables.is_empty() {
            return Err(Unresolved { found });
        }
        found.extend(tables);
    }
    Ok(found)
}

/// The command named by the string literal at `at` (and the subcommand after it, for a
/// container command).
fn command_at(tokens: &[Token], at: usize) -> Option<String> {
    let Some(Token::Str(name)) = tokens.get(at) else { return None };
    let name = name.to_ascii_uppercase();
    if CONTAINERS.contains(&name.as_str()) {
        if let (Some(Token::Punct(',')), Some(Token::Str(sub))) = (tokens.get(at + 1), tokens.get(at + 2)) {
            return Some(format!("{name} {}", sub.to_ascii_uppercase()));
        }
    }
    Some(name)
}

#[derive(Debug, PartialEq)]
enum Token {
    Name(String),
    Str(String),
    Punct(char),
}

/// The tokens of Lua text that matter here: names, string literals (short and long), and
/// single punctuation characters; comments, numbers and spaces are dropped.
fn tokens(lua: &str) -> Vec<Token> {
    let chars: Vec<char> = lua.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            i += 2;
            if let Some(end) = long_bracket(&chars, i) {
                i = end;
            } else {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
        } else if c == '\'' || c == '"' {
            let mut text = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    text.push(ch);
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Str(text));
        } else if c == '[' && matches!(chars.get(i + 1), Some('[' | '=')) {
            match long_bracket(&chars, i) {
                Some(end) => {
                    let level = chars[i + 1..].iter().take_while(|&&ch| ch == '=').count();
                    out.push(Token::Str(chars[i + level + 2..end - level - 2].iter().collect()));
                    i = end;
                }
                None => {
                    out.push(Token::Punct(c));
                    i += 1;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Name(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            if !c.is_whitespace() {
                out.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    out
}

/// If a long bracket (`[[`, `[==[`) opens at `at`: the index just past its closing bracket
/// (or the end of the text).
fn long_bracket(chars: &[char], at: usize) -> Option<usize> {
    if chars.get(at) != Some(&'[') {
        return None;
    }
    let level = chars[at + 1..].iter().take_while(|&&c| c == '=').count();
    if chars.get(at + 1 + level) != Some(&'[') {
        return None;
    }
    let close: Vec<char> =
        std::iter::once(']').chain(std::iter::repeat_n('=', level)).chain(std::iter::once(']')).collect();
    let body = at + level + 2;
    let end = chars[body..].windows(close.len()).position(|w| w == close.as_slice());
    Some(end.map_or(chars.len(), |p| body + p + close.len()))
}

/// A command as an ACL rule names it: `xinfo|consumers`.
pub(crate) fn acl_name(command: &str) -> String {
    command.to_ascii_lowercase().replace(' ', "|")
}

/// A command as Redis's ACL errors name it (`client|unblock`) as this module writes it
/// (`CLIENT UNBLOCK`).
pub(crate) fn from_acl_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('|', " ")
}

/// The keys of one consumer (or periodic job) the check asks about, and whose patterns the
/// rule grants.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerKeys {
    pub stream: String,
    pub group: String,
    pub dead_letters: Option<String>,
    /// `Some(job)`: the keys of the periodic job `job` publishing to `stream` (the stream and
    /// the job's state), not of a consumer (`group` and `dead_letters` are then unused).
    pub periodic_job: Option<String>,
}

impl ConsumerKeys {
    /// The keys of a consumer of `group` on `stream`.
    pub fn consumer(stream: &str, group: &str, dead_letters: Option<String>) -> Self {
        ConsumerKeys { stream: stream.to_string(), group: group.to_string(), dead_letters, periodic_job: None }
    }

    /// The keys of the periodic job `job` publishing to `stream`.
    pub fn periodic(stream: &str, job: &str) -> Self {
        ConsumerKeys {
            stream: stream.to_string(),
            group: String::new(),
            dead_letters: None,
            periodic_job: Some(job.to_string()),
        }
    }

    /// Every key the engine touches for this consumer (see [`engine_keys`]) or periodic job:
    /// what the start-up check requires. (The registry of stream names is granted by the rule
    /// too, but only written best effort: a user without it runs, and the tools find its
    /// streams by scanning.)
    pub fn all(&self) -> Vec<String> {
        if let Some(job) = &self.periodic_job {
            return vec![self.stream.clone(), crate::keys::periodic_state(&self.stream, job)];
        }
        engine_keys(&self.stream, &self.group, self.dead_letters.as_deref()).into_iter().map(|(_, k)| k).collect()
    }
}

/// The key pattern that grants `key` the way the README's rule does: `~orders` for the
/// stream, `~{orders}:*` for every key derived from it, the key itself otherwise (a custom
/// dead-letter stream).
pub(crate) fn key_pattern(stream: &str, key: &str) -> String {
    let derived = derived_prefix(stream);
    if key == stream {
        format!("~{}", glob_escape(stream))
    } else if key.starts_with(&derived) {
        format!("~{}*", glob_escape(&derived))
    } else {
        format!("~{}", glob_escape(key))
    }
}

/// What every key derived from `stream` starts with (`{orders}:`, `{shop}#{shop}.orders:`):
/// a derived key is this prefix and the kind's word.
fn derived_prefix(stream: &str) -> String {
    let kind = KeyKind::DeadLetters;
    let mut prefix = derived_key(stream, kind);
    prefix.truncate(prefix.len() - kind.word().len());
    prefix
}

/// `text` with Redis's glob characters escaped, so a key pattern matches it literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The key patterns that grant what `consumers` touch, in order, without duplicates.
pub(crate) fn key_patterns<'a>(consumers: impl IntoIterator<Item = &'a ConsumerKeys>) -> Vec<String> {
    let mut patterns: Vec<String> = Vec::new();
    for c in consumers {
        // The registry of stream names ([`STREAM_NAMES`]) the runtime writes at start.
        for key in c.all().into_iter().chain([STREAM_NAMES.to_string()]) {
            let pattern = key_pattern(&c.stream, &key);
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
    }
    patterns
}

/// The smallest rule for `user` to run `consumers` (and producers on their streams): their
/// keys, no channels, only `commands`.
pub(crate) fn acl_rule<'a>(
    user: &str,
    consumers: impl IntoIterator<Item = &'a ConsumerKeys>,
    commands: &[String],
) -> String {
    let mut commands: Vec<String> = commands
        .iter()
        .map(String::as_str)
        .chain(PRODUCER.iter().copied())
        .map(|c| format!("+{}", acl_name(c)))
        .collect();
    commands.sort();
    commands.dedup();
    format!(
        "ACL SETUSER {user} on >PASSWORD resetkeys {} resetchannels -@all {}",
        key_patterns(consumers).join(" "),
        commands.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_are_read_from_calls_and_from_the_tables_of_dynamic_calls() {
        let lua = r#"
-- redis.call('DEL', KEYS[1]) in a comment does not count
--[[ nor redis.call('FLUSHALL') in a long one ]]
local t = redis.call('TIME')
redis.pcall("xinfo", "consumers", KEYS[1], ARGV[1])
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
local args = {'XCLAIM', KEYS[1], 'g', 'c', 0}
local row = {name = 'x'}
local fields = {'dlq:stream', KEYS[1]}
redis.call(unpack(args))
local s = [[redis.call('SET')]]
"#;
        assert_eq!(lua_commands(lua).unwrap(), set(&["TIME", "XINFO CONSUMERS", "XGROUP DELCONSUMER", "XCLAIM"]));
        let unresolved = lua_commands("local c = ARGV[1]\nredis.call(c, KEYS[1])\nredis.call('GET', KEYS[1])");
        assert_eq!(unresolved.unwrap_err().found, set(&["GET"]));
    }

    #[test]
    fn every_engine_script_s_commands_can_be_read() {
        for s in engine_scripts() {
            let commands = script_commands(s.script).unwrap_or_else(|e| {
                panic!("the {} script calls redis.call with a command built at run time from no table literal starting with the command's name (found {:?})", s.name, e.found)
            });
            assert!(!commands.is_empty(), "{}", s.name);
        }
    }

    /// A consumer without `dedupe` or `retention` needs what it needed before they (and
    /// delayed messages) existed: a rule written for the previous release still starts it.
    #[test]
    fn plain_consumers_need_no_more_than_before_the_new_features() {
        let before = [
            "CLIENT ID",
            "CLIENT UNBLOCK",
            "EVALSHA",
            "EXISTS",
            "INFO",
            "PING",
            "SADD",
            "SCRIPT LOAD",
            "SMISMEMBER",
            "SREM",
            "TIME",
            "XACK",
            "XADD",
            "XCLAIM",
            "XDEL",
            "XGROUP CREATE",
            "XGROUP DELCONSUMER",
            "XINFO CONSUMERS",
            "XINFO GROUPS",
            "XINFO STREAM",
            "XLEN",
            "XPENDING",
            "XRANGE",
            "XREADGROUP",
            "XTRIM",
            "ZADD",
            "ZRANGEBYSCORE",
            "ZREM",
            "ZSCORE",
        ];
        assert_eq!(required_commands(false, Uses::default()), before);
        let dedupe = required_commands(false, Uses { dedupe: true, ..Uses::default() });
        for c in ["ZMSCORE", "PEXPIRE", "PTTL"] {
            assert!(dedupe.iter().any(|d| d == c), "{c} in {dedupe:?}");
        }
        let retention = required_commands(false, Uses { retention: true, ..Uses::default() });
        for c in ["GET", "SET", "DEL"] {
            assert!(retention.iter().any(|d| d == c), "{c} in {retention:?}");
        }
        let all = required_commands(false, Uses::ALL);
        for c in ["HGET", "HDEL", "ZCARD"] {
            assert!(all.iter().any(|d| d == c) && !dedupe.iter().any(|d| d == c), "{c}: promotion only");
        }
    }

    /// The commands the engine needs today. When a script starts calling another command,
    /// this fails: update it, and the README's rule (the `acl_checks` test compares them).
    #[test]
    fn the_commands_the_engine_needs() {
        assert_eq!(
            required_commands(false, Uses::ALL),
            [
                "CLIENT ID",
                "CLIENT UNBLOCK",
                // The retention trimmer's lease (`retention`).
                "DEL",
                "EVALSHA",
                "EXISTS",
                "GET",
                "HDEL",
                "HGET",
                "INFO",
                // The dedupe ack script's expiry of the group's handled set (`dedupe`).
                "PEXPIRE",
                "PING",
                "PTTL",
                "SADD",
                "SCRIPT LOAD",
                "SET",
                "SMISMEMBER",
                "SREM",
                "TIME",
                "XACK",
                "XADD",
                "XCLAIM",
                "XDEL",
                "XGROUP CREATE",
                "XGROUP DELCONSUMER",
                "XINFO CONSUMERS",
                "XINFO GROUPS",
                "XINFO STREAM",
                "XLEN",
                "XPENDING",
                "XRANGE",
                // A rate-limited reader's wait on an empty stream (`rate_limit`).
                "XREAD",
                "XREADGROUP",
                "XTRIM",
                "ZADD",
                "ZCARD",
                // The rate-limit grant script's running sum (`rate_limit`).
                "ZINCRBY",
                "ZMSCORE",
                "ZRANGEBYSCORE",
                "ZREM",
                // The rate-limit grant script's log (`rate_limit`).
                "ZREMRANGEBYSCORE",
                "ZSCORE",
            ]
        );
        let cluster = required_commands(true, Uses::ALL);
        assert!(cluster.contains(&"CLUSTER SLOTS".to_string()) && cluster.contains(&"CLUSTER INFO".to_string()));
    }

    /// Every `LazyLock<Script>` static of the crate's source is a known script (the engine's,
    /// or one of the operator API's, which the check does not demand, or the check's own).
    #[test]
    fn every_script_static_is_known() {
        // The operator API's scripts, the permission check's own, and the one-time move of a
        // braced stream's keys from their old names (run only where the names changed; a
        // refusal is logged and the move skipped: see `keys::migrate`).
        // The operator tools' scripts (dead letters, the admin module): not run by workers.
        const OPERATOR: &[&str] = &[
            "REPLAY_SCRIPT",
            "PURGE_SCRIPT",
            "KEY_PROBE",
            "COMMAND_PROBE",
            "MOVE_KEY",
            "RUN_NOW",
            "DELETE",
            "DELETE_GROUP",
            "HAND_OVER",
            // The producer's safe trim (`PublishOptions::max_len_acked` without ACKED).
            "PUBLISH_ACKED",
            // The producer's idempotent publish (not the consumer loop's).
            "PUBLISH_ONCE",
            // Delayed messages: scheduling (producers) and cancelling (operators).
            "SCHEDULE",
            "CANCEL",
            "CANCEL_ALL",
            // Topics: the record (declared by producers and at start), the operators'
            // delete, and the shard ownership of topic consumers (which the start-up check
            // does not cover: a topic's shard names are known only from its record).
            "DECLARE",
            "DELETE_SHARD",
            "MEMBERS",
            "ACQUIRE",
            "RENEW",
            "FENCED_READ",
        ];
        let known: Vec<&str> = engine_scripts().iter().map(|s| s.ident).chain(OPERATOR.iter().copied()).collect();
        let mut statics = Vec::new();
        // (This file is skipped: its tests name what they look for.)
        let files = sources(&format!("{}/src", env!("CARGO_MANIFEST_DIR")));
        for (path, text) in files.into_iter().filter(|(path, _)| !path.ends_with("needs.rs")) {
            let declarations =
                text.lines().map(str::trim_start).filter(|l| !l.starts_with("//") && l.contains(": LazyLock<Script>"));
            for line in declarations {
                let name = line.split("static ").nth(1).and_then(|r| r.split(':').next()).unwrap_or_default().trim();
                statics.push(name.to_string());
                assert!(known.contains(&name), "{path}: the script `{name}` is not in `engine_scripts()` (worker::scripts or dead_letters::engine_scripts)");
            }
        }
        assert!(statics.len() >= known.len(), "{statics:?}");
    }

    /// Every command a worker file (or the engine's side of the dead letters) sends outside
    /// a script is in [`DIRECT`].
    #[test]
    fn every_command_sent_directly_is_listed() {
        const FRED: &[(&str, &[&str])] = &[
            ("xadd", &["XADD"]),
            ("xrange", &["XRANGE"]),
            ("xrevrange", &["XREVRANGE"]),
            ("xpending", &["XPENDING"]),
            ("xack", &["XACK"]),
            ("xclaim", &["XCLAIM"]),
            ("xautoclaim", &["XAUTOCLAIM"]),
            ("xdel", &["XDEL"]),
            ("xlen", &["XLEN"]),
            ("xtrim", &["XTRIM"]),
            ("xgroup_create", &["XGROUP CREATE"]),
            ("xgroup_delconsumer", &["XGROUP DELCONSUMER"]),
            ("xinfo_groups", &["XINFO GROUPS"]),
            ("xinfo_consumers", &["XINFO CONSUMERS"]),
            ("xinfo_stream", &["XINFO STREAM"]),
            ("xreadgroup", &["XREADGROUP"]),
            ("xreadgroup_map", &["XREADGROUP"]),
            ("sadd", &["SADD"]),
            ("srem", &["SREM"]),
            ("zadd", &["ZADD"]),
            ("zrem", &["ZREM"]),
            ("del", &["DEL"]),
            ("exists", &["EXISTS"]),
            ("evalsha", &["EVALSHA"]),
            ("evalsha_with_reload", &["EVALSHA", "SCRIPT LOAD"]),
            ("eval", &["EVAL"]),
            ("script_load", &["SCRIPT LOAD"]),
        ];
        let root = format!("{}/src", env!("CARGO_MANIFEST_DIR"));
        let mut files = sources(&format!("{root}/worker"));
        files.push((format!("{root}/runtime.rs"), std::fs::read_to_string(format!("{root}/runtime.rs")).unwrap()));
        // The dead letters' operator API (`self.client....`) is not the engine's.
        let dead_letters =
            std::fs::read_to_string(format!("{root}/dead_letters.rs")).unwrap().replace("self.client.", "");
        files.push((format!("{root}/dead_letters.rs"), dead_letters));
        let listed = |c: &str| {
            DIRECT.contains(&c)
                || RATE_LIMITED.contains(&c)
                || OPTIONAL.contains(&c)
                || (c == "CLIENT" && DIRECT.iter().any(|d| d.starts_with("CLIENT ")))
        };
        for (path, text) in files {
            for (method, commands) in FRED {
                if text.contains(&format!("client.{method}("))
                    || text.contains(&format!(".get().{method}("))
                    || text.contains(&format!(".{method}(&client"))
                {
                    for c in *commands {
                        assert!(listed(c), "{path} sends {c} (`{method}`): add it to permissions::needs::DIRECT");
                    }
                }
            }
            for part in text.split("CustomCommand::new_static(\"").skip(1) {
                let command = part.split('"').next().unwrap_or_default();
                assert!(listed(command), "{path} sends {command}: add it to permissions::needs::DIRECT");
            }
        }
    }

    /// `(path, text)` of every `.rs` file under `dir`.
    fn sources(dir: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(sources(path.to_str().unwrap()));
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
            }
        }
        out
    }

    #[test]
    fn the_rule_grants_the_stream_its_derived_keys_and_the_commands() {
        let orders = ConsumerKeys::consumer("orders", "billing", Some("{orders}:dlq".into()));
        let shop = ConsumerKeys::consumer("{shop}.orders", "g", Some("shop-dead*".into()));
        // A periodic job publishing to a stream no consumer reads: its stream and state.
        let reports = ConsumerKeys::periodic("reports", "daily");
        let rule = acl_rule("w", [&orders, &shop, &reports], &["XACK".to_string(), "CLIENT ID".to_string()]);
        assert_eq!(
            rule,
            r"ACL SETUSER w on >PASSWORD resetkeys ~orders ~{orders}:* ~streamx:streams ~{shop}.orders ~shop-dead\* ~{shop}#{shop}.orders:* ~reports ~{reports}:* resetchannels -@all +client|id +eval +xack"
        );
        assert_eq!(reports.all(), ["reports", "{reports}:periodic:daily"]);
        assert_eq!(key_pattern("orders", "{orders}:retries:billing"), "~{orders}:*");
        assert_eq!(from_acl_name("client|unblock"), "CLIENT UNBLOCK");
    }
}
