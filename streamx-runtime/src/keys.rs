//! Redis key names: the one place that decides them, so cluster hash slots are right.
//!
//! A consumer's stream is the user's key as given. Every key streamx derives from it (see
//! [`KeyKind`]) shares the stream's hash slot, so scripts touching both stay legal on Redis
//! Cluster, and no two (stream, kind, group) give the same key, whatever the names.
//!
//! A stream whose name has no `}` (almost every name) gets its keys in the form
//! `{<stream>}:<kind>[:<group>]`. Redis Cluster hashes only the text inside the first
//! `{...}`, so `{orders}:dlq` lives in the slot of `orders`:
//! - `{orders}:dlq`: the default dead-letter stream;
//! - `{orders}:retries:<group>`: the retry schedule, a sorted set of entry ids scored by
//!   the time (Unix ms, Redis clock) their next attempt is due;
//! - `{orders}:consumers:<group>`: consumer heartbeats, a sorted set of consumer names
//!   scored by their last heartbeat (Unix ms, Redis clock);
//! - `{orders}:takeovers:<group>`: the take-over marks: ids taken over from a stopped
//!   member and not settled yet, `i:<id>` for one run alone, `c:<id>` for one that crashed
//!   its worker alone (crash-loop isolation, see the worker's take-over);
//! - `{orders}:members:<group>`: see [`member_deadlines`];
//! - `{orders}:replays:<group>`: see [`replay_marks`] (written by operator tools, not the
//!   engine);
//! - `{orders}:scheduled` and `{orders}:scheduled-payloads`: see [`scheduled`] and
//!   [`scheduled_payloads`] (delayed messages, not per group);
//! - `{orders}:published:<idempotency key>`: see [`published`] (idempotent publishes);
//! - `{orders}:handled:<group>`: see [`handled`] (idempotent consumption);
//! - `{orders}:trimmer`: see [`trim_lease`] (safe retention, not per group);
//! - `{orders}:promoter`: see [`promoter_lease`] (delayed messages, not per group);
//! - `{orders}:periodic:<job>`: see [`periodic_state`] (periodic jobs publishing to the
//!   stream, per job name).
//! - `{orders}:paused:<group>`: see [`paused`] (the group is paused while it exists).
//!
//! The stream's name is the text between the first `{` and the first `}`, and the kind
//! words are fixed, so this form never gives two streams (or kinds, or groups) one key.
//!
//! A name with a `}` (`{shop}.orders`, `orders}`) cannot be put inside braces: the tag
//! would end at its `}`, in another slot, and `x` and `{x}` would share `{x}:...`. Such a
//! name (and the empty name) gets `{<tag>}#<escaped name>:<kind>[:<group>]`:
//! - `<tag>` is the name's own hash tag when it has one (`shop` for `{shop}.orders`), else
//!   the first of `s0`, `s1`, `s2`, ... in the name's slot (`orders}` hashes whole);
//! - `<escaped name>` is the name with `%` written `%25` and `:` written `%3A`, so it ends
//!   at the first `:` after the `#`.
//!
//! So `{shop}.orders` has `{shop}#{shop}.orders:dlq` and `{shop}#{shop}.orders:retries:<group>`.
//! The `#` right after the first `}` tells this form from the first (where a `:` follows), and
//! the escaped name gives the name back, so this form is one-to-one too. Keys of such names
//! before this form (`{shop}.orders:retries:<group>`) are moved to it when a consumer starts
//! (see `migrate`).

mod migrate;

pub(crate) use migrate::move_legacy_keys;

use std::sync::OnceLock;

use crate::policy::DeadLetterTarget;

/// What a key derived from a stream holds; each kind has a fixed word in the key, and every
/// kind but the dead-letter stream is per consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind<'a> {
    /// The default dead-letter stream (`dlq`).
    DeadLetters,
    /// The retry schedule of a group (`retries`); see [`retry_schedule`].
    RetrySchedule(&'a str),
    /// The consumer heartbeats of a group (`consumers`); see [`heartbeats`].
    Heartbeats(&'a str),
    /// The take-over marks of a group (`takeovers`); see [`takeover_marks`].
    TakeoverMarks(&'a str),
    /// The members' liveness deadlines of a group (`members`); see [`member_deadlines`].
    MemberDeadlines(&'a str),
    /// The dead letters replayed to a group lately (`replays`); see [`replay_marks`].
    ReplayMarks(&'a str),
    /// The schedule of delayed messages of the stream (`scheduled`); see [`scheduled`].
    Scheduled,
    /// The payloads of the stream's delayed messages (`scheduled-payloads`); see
    /// [`scheduled_payloads`].
    ScheduledPayloads,
    /// The record of one idempotent publish (`published`), per idempotency key (the `&str`);
    /// see [`published`].
    Published(&'a str),
    /// The idempotency keys a group handled lately (`handled`); see [`handled`].
    Handled(&'a str),
    /// The lease of the stream's retention trimmer (`trimmer`); see [`trim_lease`].
    TrimLease,
    /// The lease of the promoter of the stream's delayed messages (`promoter`); see
    /// [`promoter_lease`].
    PromoterLease,
    /// The lease of a topic shard for a group (`shard-lease`): which process reads the shard
    /// now, with its fencing token; see [`shard_lease`].
    ShardLease(&'a str),
    /// The fencing epochs of a topic shard for a group (`shard-epoch`): a counter, one up per
    /// lease taken; see [`shard_epoch`].
    ShardEpoch(&'a str),
    /// The state of a periodic job publishing to the stream (`periodic`), per job name (the
    /// `&str`); see [`periodic_state`].
    PeriodicState(&'a str),
    /// The pause flag of a group (`paused`): present while the group is paused; see
    /// [`paused`].
    Paused(&'a str),
    /// The log of rate-limit grants of a group (`ratelimit`); see [`rate_limit`].
    RateLimit(&'a str),
}

impl<'a> KeyKind<'a> {
    /// Every kind of key of a stream and its `group`: the stream's own kinds and those per
    /// group for `group`. [`Published`](Self::Published) is not among them: there is one such
    /// key per idempotency key (each expires on its own).
    pub fn all(group: &'a str) -> [KeyKind<'a>; 15] {
        [
            KeyKind::DeadLetters,
            KeyKind::RetrySchedule(group),
            KeyKind::Heartbeats(group),
            KeyKind::TakeoverMarks(group),
            KeyKind::MemberDeadlines(group),
            KeyKind::ReplayMarks(group),
            KeyKind::Scheduled,
            KeyKind::ScheduledPayloads,
            KeyKind::Handled(group),
            KeyKind::TrimLease,
            KeyKind::PromoterLease,
            KeyKind::ShardLease(group),
            KeyKind::ShardEpoch(group),
            KeyKind::Paused(group),
            KeyKind::RateLimit(group),
        ]
    }

    /// The word that names the kind in the key (`dlq`, `retries`, ...).
    pub fn word(&self) -> &'static str {
        match self {
            KeyKind::DeadLetters => "dlq",
            KeyKind::RetrySchedule(_) => "retries",
            KeyKind::Heartbeats(_) => "consumers",
            KeyKind::TakeoverMarks(_) => "takeovers",
            KeyKind::MemberDeadlines(_) => "members",
            KeyKind::ReplayMarks(_) => "replays",
            KeyKind::Scheduled => "scheduled",
            KeyKind::ScheduledPayloads => "scheduled-payloads",
            KeyKind::Published(_) => "published",
            KeyKind::Handled(_) => "handled",
            KeyKind::TrimLease => "trimmer",
            KeyKind::PromoterLease => "promoter",
            KeyKind::ShardLease(_) => "shard-lease",
            KeyKind::ShardEpoch(_) => "shard-epoch",
            KeyKind::PeriodicState(_) => "periodic",
            KeyKind::Paused(_) => "paused",
            KeyKind::RateLimit(_) => "ratelimit",
        }
    }

    /// The group the key belongs to; `None` for the kinds of the whole stream.
    pub fn group(&self) -> Option<&'a str> {
        match *self {
            KeyKind::DeadLetters
            | KeyKind::Scheduled
            | KeyKind::ScheduledPayloads
            | KeyKind::TrimLease
            | KeyKind::PromoterLease
            | KeyKind::Published(_)
            | KeyKind::PeriodicState(_) => None,
            KeyKind::RetrySchedule(group)
            | KeyKind::Heartbeats(group)
            | KeyKind::TakeoverMarks(group)
            | KeyKind::MemberDeadlines(group)
            | KeyKind::ReplayMarks(group)
            | KeyKind::Handled(group)
            | KeyKind::ShardLease(group)
            | KeyKind::ShardEpoch(group)
            | KeyKind::Paused(group)
            | KeyKind::RateLimit(group) => Some(group),
        }
    }

    /// What the key ends with after its word: the group, the idempotency key of
    /// [`Published`](Self::Published) or the job name of
    /// [`PeriodicState`](Self::PeriodicState); `None` for the other kinds of the whole stream.
    pub fn suffix(&self) -> Option<&'a str> {
        match *self {
            KeyKind::Published(key) | KeyKind::PeriodicState(key) => Some(key),
            other => other.group(),
        }
    }
}

/// The text Redis Cluster hashes for `key`: the first non-empty `{...}` section, or the
/// whole key.
pub fn hash_tag(key: &str) -> &str {
    // The tag is delimited by ASCII braces, so the range falls on char boundaries.
    &key[hash_tag_range(key.as_bytes())]
}

/// The key of `kind` derived from `stream` (see the module docs): in the slot of `stream`,
/// and different for every different (stream, kind, group).
///
/// ```
/// use streamx_runtime::keys::{derived_key, slot, KeyKind};
/// assert_eq!(derived_key("orders", KeyKind::DeadLetters), "{orders}:dlq");
/// assert_eq!(derived_key("orders", KeyKind::RetrySchedule("billing")), "{orders}:retries:billing");
/// assert_eq!(derived_key("{shop}.orders", KeyKind::DeadLetters), "{shop}#{shop}.orders:dlq");
/// assert_eq!(slot(derived_key("orders}", KeyKind::DeadLetters)), slot("orders}"));
/// ```
pub fn derived_key(stream: &str, kind: KeyKind<'_>) -> String {
    let word = kind.word();
    let group = kind.suffix().unwrap_or_default();
    let mut key = String::with_capacity(stream.len() + word.len() + group.len() + 8);
    if !stream.is_empty() && !stream.contains('}') {
        key.push('{');
        key.push_str(stream);
        key.push('}');
    } else {
        key.push('{');
        match own_tag(stream) {
            Some(tag) => key.push_str(tag),
            None => key.push_str(&filler_tag(slot(stream))),
        }
        key.push_str("}#");
        for c in stream.chars() {
            match c {
                '%' => key.push_str("%25"),
                ':' => key.push_str("%3A"),
                c => key.push(c),
            }
        }
    }
    key.push(':');
    key.push_str(word);
    if let Some(group) = kind.suffix() {
        key.push(':');
        key.push_str(group);
    }
    key
}

/// The default dead-letter stream of `stream`: `{orders}:dlq` for `orders`.
pub fn default_dead_letter_stream(stream: &str) -> String {
    derived_key(stream, KeyKind::DeadLetters)
}

/// The dead-letter stream for `stream` under `target`; `None` when dead letters are off.
pub fn dead_letter_stream(stream: &str, target: &DeadLetterTarget) -> Option<String> {
    match target {
        DeadLetterTarget::Default => Some(default_dead_letter_stream(stream)),
        DeadLetterTarget::Disabled => None,
        DeadLetterTarget::Stream(name) => Some((*name).to_string()),
    }
}

/// The retry schedule of `group` on `stream` (see the module docs).
pub fn retry_schedule(stream: &str, group: &str) -> String {
    derived_key(stream, KeyKind::RetrySchedule(group))
}

/// The consumer heartbeats of `group` on `stream` (see the module docs).
pub fn heartbeats(stream: &str, group: &str) -> String {
    derived_key(stream, KeyKind::Heartbeats(group))
}

/// The take-over marks of `group` on `stream` (see the module docs).
pub fn takeover_marks(stream: &str, group: &str) -> String {
    derived_key(stream, KeyKind::TakeoverMarks(group))
}

/// The members' liveness deadlines of `group` on `stream`: a sorted set of member names,
/// each scored by the time (Unix ms, Redis clock) until which that member promised to be
/// alive: the member's own `claim_idle` after its last heartbeat.
pub fn member_deadlines(stream: &str, group: &str) -> String {
    derived_key(stream, KeyKind::MemberDeadlines(group))
}

/// The dead letters lately replayed to `group` on `stream`: a sorted set of
/// `<dead-letter stream>\0<dead-letter id>` scored by the replay's time (Unix ms, Redis
/// clock), kept a day. A replay writes it only when the dead-letter stream is in another
/// hash slot than `stream` (a custom one on a cluster), where the letter cannot be removed in
/// the same script: a second replay of the same letter finds its mark and delivers nothing.
pub fn replay_marks(stream: &str, group: &str) -> String {
    derived_key(stream, KeyKind::ReplayMarks(group))
}

/// The schedule of `stream`'s delayed messages: a sorted set of schedule ids scored by the
/// time (Unix ms) each is due; their payloads are in [`scheduled_payloads`].
pub fn scheduled(stream: &str) -> String {
    derived_key(stream, KeyKind::Scheduled)
}

/// The payloads of `stream`'s delayed messages: a hash from schedule id to the entry's
/// encoded fields (see [`scheduled`]).
pub fn scheduled_payloads(stream: &str) -> String {
    derived_key(stream, KeyKind::ScheduledPayloads)
}

/// The record of an idempotent publish to `stream` with idempotency key `key`: the id of the
/// entry that publish wrote, expiring when the idempotency window ends.
pub fn published(stream: &str, key: &str) -> String {
    derived_key(stream, KeyKind::Published(key))
}

/// The idempotency keys `group` handled successfully on `stream` lately: a sorted set of keys
/// (the `idempotency-key` header, else the entry id) scored by the time (Unix ms, Redis
/// clock) their dedupe window ends.
pub fn handled(stream: &str, group: &str) -> String {
    derived_key(stream, KeyKind::Handled(group))
}

/// The lease of `stream`'s retention trimmer: the name of the process that trims the stream
/// now, expiring unless renewed, so one trimmer runs per stream at a time.
pub fn trim_lease(stream: &str) -> String {
    derived_key(stream, KeyKind::TrimLease)
}

/// The lease of the promoter of `stream`'s delayed messages: the name of the runtime that
/// promotes them now, expiring unless renewed, so one runtime polls the schedule at a time.
pub fn promoter_lease(stream: &str) -> String {
    derived_key(stream, KeyKind::PromoterLease)
}

/// The state of the periodic job `job` publishing to `stream`: the tick (Unix ms) of the last
/// entry the job published, a string written by the same script as the entry (see the
/// README's "Periodic jobs"). Never expires: it is what makes each tick publish once, and
/// what a job with `catch_up` resumes from.
///
/// ```
/// use streamx_runtime::keys::{periodic_state, slot};
/// assert_eq!(periodic_state("reports", "daily"), "{reports}:periodic:daily");
/// assert_eq!(slot(periodic_state("{shop}.reports", "daily")), slot("{shop}.reports"));
/// ```
pub fn periodic_state(stream: &str, job: &str) -> String {
    derived_key(stream, KeyKind::PeriodicState(job))
}

/// The lease of a topic shard (the stream `shard`) for `group`: `<epoch>:<member>` of the
/// process that reads the shard now, expiring unless renewed. The whole value is the fencing
/// token the worker's acknowledgement, claim and dead-letter scripts check (see the README's
/// "Topics and ordering").
pub fn shard_lease(shard: &str, group: &str) -> String {
    derived_key(shard, KeyKind::ShardLease(group))
}

/// The epoch counter of a topic shard (the stream `shard`) for `group`: incremented each time
/// a process takes the shard's lease, never reset, so a later owner's token always differs.
pub fn shard_epoch(shard: &str, group: &str) -> String {
    derived_key(shard, KeyKind::ShardEpoch(group))
}

/// The pause flag of `group` on `stream`: while the key exists, no consumer of the group
/// starts a handler (see [`crate::Inspector::pause`]); its value says who paused the group and
/// when, for display. A plain string key, so it survives restarts as the stream does (AOF or
/// RDB). For a topic, `stream` is the topic's name: one flag pauses every shard.
pub fn paused(stream: &str, group: &str) -> String {
    derived_key(stream, KeyKind::Paused(group))
}

/// The grant log of `group`'s rate limit on `stream` (see [`crate::RateLimit`]): a sorted set
/// of grants (member `<count>:<unique>`, score the grant's Redis time in µs) covering the last
/// window, expiring a window after the last grant.
pub fn rate_limit(stream: &str, group: &str) -> String {
    derived_key(stream, KeyKind::RateLimit(group))
}

/// The record of a topic: a hash with its shard count (`shards`), layout version (`layout`)
/// and creation time (`created_ms`), written once when the topic is first declared. In the
/// slot of `{<topic>}` (topic names have no braces).
pub fn topic_record(topic: &str) -> String {
    format!("{{{topic}}}:topic")
}

/// The processes of `group` reading the topic `topic`: a sorted set of member names scored
/// by their liveness deadline (Unix ms, Redis clock), from which each computes its fair share
/// of the shards.
pub fn topic_members(topic: &str, group: &str) -> String {
    format!("{{{topic}}}:topic-members:{group}")
}

/// The registry of topic names: a set, so tools can list topics without scanning the
/// keyspace. One key, written once per topic per process.
pub const TOPIC_NAMES: &str = "streamx:topics";

/// Every key the engine touches for every consumer of `group` on `stream`, each with what it
/// is: the stream, its dead-letter stream (`dead_letters`, `None` when off) and the group's
/// bookkeeping keys above. A key every consumer needs is added here too: the start-up
/// permission check (see [`crate::Runtime::start`] and the README's "TLS and ACL") asks Redis
/// about each. The keys of features a consumer turns on (`dedupe`, `retention`) and of the
/// promotion of delayed messages (which degrades to a warning when refused) are not here;
/// the rule grants them all with the stream's `{orders}:*` pattern.
pub fn engine_keys(stream: &str, group: &str, dead_letters: Option<&str>) -> Vec<(&'static str, String)> {
    let mut keys = vec![("stream", stream.to_string())];
    keys.extend(dead_letters.map(|dlq| ("dead-letter stream", dlq.to_string())));
    keys.extend([
        ("retry schedule", retry_schedule(stream, group)),
        ("heartbeats", heartbeats(stream, group)),
        ("take-over marks", takeover_marks(stream, group)),
        ("member deadlines", member_deadlines(stream, group)),
        ("pause flag", paused(stream, group)),
    ]);
    keys
}

/// The registry of stream names: a set of every stream a streamx consumer has started on or a
/// streamx producer has published to, so tools can list streams without scanning the keyspace
/// (see [`crate::Inspector::registered_streams`]). One key, in one slot of a cluster: it is
/// written once per stream per process, so one slot carries the load easily.
pub const STREAM_NAMES: &str = "streamx:streams";

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// The Redis Cluster hash slot of `key`, as `CLUSTER KEYSLOT` computes it: CRC16/XMODEM of
/// its hash tag (the first non-empty `{...}`) or of the whole key, modulo 16384 (fred's
/// `redis_keyslot`, the hash its cluster routing uses).
///
/// ```
/// use streamx_runtime::keys::slot;
/// assert_eq!(slot("foo"), 12182);
/// assert_eq!(slot("{orders}:dlq"), slot("orders"));
/// ```
pub fn slot(key: impl AsRef<[u8]>) -> u16 {
    fred::util::redis_keyslot(key.as_ref())
}

/// The hash tag of `key` when it has one (a non-empty `{...}`); `None` when Redis Cluster
/// hashes the whole key.
fn own_tag(key: &str) -> Option<&str> {
    let range = hash_tag_range(key.as_bytes());
    (range.len() != key.len()).then(|| &key[range])
}

/// The first of `s0`, `s1`, `s2`, ... whose slot is `slot`: a hash tag for the keys of a
/// name that has none of its own and cannot be put in braces. Every slot has one below
/// `s155594` (checked by a test); the table of the first per slot is built once, when a
/// process first needs one (some 155,000 CRC16s of a few bytes: about a millisecond).
fn filler_tag(target: u16) -> String {
    static FIRST: OnceLock<Vec<u32>> = OnceLock::new();
    let first = FIRST.get_or_init(|| {
        let mut first = vec![u32::MAX; usize::from(SLOT_COUNT)];
        let mut missing = first.len();
        let mut n: u32 = 0;
        while missing > 0 {
            let found = &mut first[usize::from(slot(filler(n)))];
            if *found == u32::MAX {
                *found = n;
                missing -= 1;
            }
            n += 1;
        }
        first
    });
    filler(first[usize::from(target % SLOT_COUNT)])
}

fn filler(n: u32) -> String {
    format!("s{n}")
}

/// Where the hashed part of `key` is: inside the first `{...}` if non-empty, else all of it.
fn hash_tag_range(key: &[u8]) -> std::ops::Range<usize> {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return open + 1..open + 1 + len;
            }
        }
    }
    0..key.len()
}

#[cfg(test)]
mod tests;
