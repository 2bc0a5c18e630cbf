//! The command line: every command, option and help text (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use streamx_runtime::{MessageId, ScheduleId, DEFAULT_REDIS_URL, REDIS_URL_ENV};

/// The exit codes, as shown at the end of `--help` (and in the README).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  a Redis command failed (the message names the command and the key)
  2  invalid arguments or input: a bad option, URL, JSON payload, header or id, or a
     topic's shard count other than its recorded one
  3  cannot connect to Redis (unreachable, wrong password, TLS), with the URL redacted,
     or the connection broke or Redis did not answer in time during a command
  4  not found: unknown stream, group, dead letter or topic
  5  permission denied: NOPERM (the message names the command and the key)
  6  confirmation needed: more than one dead letter to replay or purge (or a retry or
     group to delete, or a delayed message to cancel), no --yes, and standard input is not a terminal (or the answer
     was no); or a consumer to remove looks alive and --force was not given; or a topic to
     delete is not drained";

/// Operate streamx: inspect streams, groups and dead letters, tail and publish, replay,
/// watch live with `top` or the web dashboard.
#[derive(Debug, Parser)]
#[command(name = "streamx", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The Redis URL: redis://, rediss:// (TLS), redis-cluster://host:port?node=host:port,
    /// redis-sentinel://sentinel:port?sentinelServiceName=name&node=sentinel2:port
    /// (rediss-cluster://, rediss-sentinel:// for TLS), with an optional user:password@. TLS files come from STREAMX_REDIS_TLS_CA,
    /// STREAMX_REDIS_TLS_CERT and STREAMX_REDIS_TLS_KEY, as for the runtime.
    #[arg(long, global = true, env = REDIS_URL_ENV, hide_env_values = true, default_value = DEFAULT_REDIS_URL)]
    pub url: String,

    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every stream: length, groups, dead letters. Streams come from the registry that
    /// streamx's runtime and producers keep (`streamx:streams`, one SMEMBERS) and a full
    /// SCAN TYPE stream on every master, which costs one SCAN call per 1,000 keys of the
    /// keyspace (`--no-scan` skips it: registered streams only).
    Streams {
        /// Only streams whose name matches this glob (`orders*`, `[ab]?`, as Redis's MATCH).
        #[arg(long = "match", value_name = "GLOB")]
        pattern: Option<String>,
        /// List only the registry's streams, without scanning the keyspace.
        #[arg(long)]
        no_scan: bool,
    },
    /// One stream: length, first and last entry, groups with lag, pending, consumers; or
    /// one topic (a name recorded as a topic): its totals and every shard with its length,
    /// dead letters, delayed messages and per group lag, pending and lease holder.
    Info {
        /// The stream key, or a topic's name.
        stream: String,
    },
    /// Every topic (from the registry `streamx:topics`): shards, length, dead letters,
    /// delayed messages, per group lag/pending and how many shards a process owns; or
    /// delete a drained topic.
    Topics {
        /// What to do; without one, list the topics.
        #[command(subcommand)]
        command: Option<TopicsCommand>,
    },
    /// The pending entries of a group, oldest first: id, owner, idle time, deliveries.
    Pending {
        /// The stream key.
        stream: String,
        /// The consumer group.
        group: String,
        /// Only the entries of this consumer.
        #[arg(long)]
        consumer: Option<String>,
        /// Show at most this many entries (the oldest), 100 unless given; only these rows are
        /// read from Redis, and the total comes from XPENDING's summary. `--limit 0` prints
        /// only the total.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Follow a stream: id, headers and payload of every new entry (XREAD, no group, nothing
    /// changes; or as a group member with --group).
    Tail(TailArgs),
    /// Publish one JSON payload, or every line of a JSON Lines file, in streamx's wire format.
    Publish(PublishArgs),
    /// Dead letters: list, show, replay or purge them.
    Dlq {
        /// What to do with them.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// A live view of every group's lag, pending entries and rates; quit with q or Ctrl-C.
    Top(TopArgs),
    /// Serve the web dashboard: streams, groups, live charts, pending entries, dead letters.
    Dashboard(DashboardArgs),
    /// The retry schedule of a group: list scheduled retries, run one now, delete one.
    Retries {
        /// What to do.
        #[command(subcommand)]
        command: RetriesCommand,
    },
    /// Delayed messages (`publish_after` / `publish_at`) of a stream: list them, cancel some.
    Scheduled {
        /// What to do.
        #[command(subcommand)]
        command: ScheduledCommand,
    },
    /// Pause a consumer group: within a second every consumer of it, in every process, stops
    /// starting handlers (those running finish and are acknowledged; what the consumers hold
    /// waits, pending); lasts until `streamx resume`, across process and Redis restarts (with
    /// AOF or RDB). The group need not exist yet.
    Pause {
        /// The stream key (a topic's name for a topic consumer).
        stream: String,
        /// The consumer group.
        group: String,
        /// Who paused it, shown by `info` and the dashboard (default: `<host>-<pid>` of this
        /// process).
        #[arg(long)]
        by: Option<String>,
    },
    /// Resume a paused consumer group: within a second its consumers start what they held,
    /// then read on.
    Resume {
        /// The stream key (a topic's name for a topic consumer).
        stream: String,
        /// The consumer group.
        group: String,
    },
    /// Consumer groups: create, delete, reset the position, remove a stopped consumer.
    Group {
        /// What to do.
        #[command(subcommand)]
        command: GroupCommand,
    },
}

/// `streamx tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The stream key.
    pub stream: String,
    /// Start at this id (inclusive); `0` for the beginning. Default: only new entries.
    #[arg(long, value_parser = parse_id_or_zero, conflicts_with_all = ["last", "since"])]
    pub from: Option<MessageId>,
    /// Start with the last N entries already in the stream, then follow (unless --no-follow).
    #[arg(long, value_name = "N", conflicts_with = "since")]
    pub last: Option<u64>,
    /// Start at the entries added since this long ago (`10m`, `2h`, `1d`): from the id
    /// `<now - DURATION>-0`.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub since: Option<Duration>,
    /// Stop after this many entries.
    #[arg(long)]
    pub count: Option<u64>,
    /// Print what is there and stop instead of waiting for new entries (an unknown stream
    /// is then an error, exit 4).
    #[arg(long)]
    pub no_follow: bool,
    /// Print each entry with this line template instead of `id name=value ... payload`.
    /// Placeholders: {id}, {time} (the id's time, RFC 3339), {stream}, {payload} (the `data`
    /// field as text), {headers} (every `name=value`, space-separated), {h:NAME} (the value
    /// of header NAME, empty when absent); `{{` and `}}` for braces. Values are printed with
    /// control characters escaped.
    #[arg(long, value_name = "TEMPLATE", value_parser = crate::template::Template::parse, conflicts_with = "json")]
    pub format: Option<crate::template::Template>,
    /// Read as a member of this consumer group (XREADGROUP ... >), from the group's
    /// position instead of the stream's end. WITHOUT --ack THIS CHANGES THE GROUP: every
    /// entry printed is delivered to the group and stays pending under --consumer (not
    /// processed by the group's real consumers until claimed from it; see `streamx pending`).
    #[arg(long, value_name = "GROUP", conflicts_with_all = ["from", "last", "since"])]
    pub group: Option<String>,
    /// The consumer name to read as, with --group (created in the group if new); not the
    /// engine's placeholders `streamx:scheduled` and `streamx:suspects` (exit 2).
    #[arg(long, value_name = "NAME", requires = "group", default_value = "streamx-tail")]
    pub consumer: String,
    /// With --group: acknowledge (XACK) every entry once printed, so it is done for the
    /// group, as if a consumer had handled it.
    #[arg(long, requires = "group")]
    pub ack: bool,
}

/// `streamx publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The stream key, or a topic's name (each message goes to a shard: its key's, else the
    /// next in turn).
    pub stream: String,
    /// The JSON payload.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub payload: Option<String>,
    /// A JSON Lines file: one payload per non-empty line, published as one batch.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// A header, `name=value` (repeat for more).
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// The message key (the `streamx-key` header) of every message published: an ordered
    /// consumer handles a key's messages in order, and a topic keeps them in one shard.
    #[arg(short = 'k', long)]
    pub key: Option<String>,
}

/// Which dead letters a `dlq` command acts on.
#[derive(Debug, Args, Clone)]
pub struct DlqSelection {
    /// The origin stream (its dead letters are in `{STREAM}:dlq`, `{TAG}#STREAM:dlq` for a
    /// name with a `}`; see --dlq-stream).
    pub stream: String,
    /// The dead-letter stream, when a consumer names its own (`dlq = "..."`).
    #[arg(long)]
    pub dlq_stream: Option<String>,
    /// Only the letters of this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only the letters of this kind.
    #[arg(long, value_parser = failure_kinds())]
    pub kind: Option<String>,
    /// At most this many letters (oldest first).
    #[arg(long, conflicts_with = "all")]
    pub limit: Option<u64>,
    /// Every letter (that matches --group and --kind).
    #[arg(long)]
    pub all: bool,
}

/// `streamx dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first (20 unless --limit or --all).
    List(DlqSelection),
    /// Show one dead letter: origin, error, headers and payload.
    Show {
        /// The origin stream.
        stream: String,
        /// The dead letter's id.
        id: MessageId,
        /// The dead-letter stream, when a consumer names its own.
        #[arg(long)]
        dlq_stream: Option<String>,
    },
    /// Move dead letters back to their stream (with the header streamx-replayed-from).
    Replay(DlqAction),
    /// Delete dead letters.
    Purge(DlqAction),
    /// Every dead-letter stream (found among the streams by its letters' `dlq:stream`
    /// field): its letters counted by origin stream, group and kind.
    Overview {
        /// Read at most this many letters per dead-letter stream (oldest first); the counts
        /// then cover those. Default: every letter (the cost grows with the letters).
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// `dlq replay` and `dlq purge`: the letters by id, or a selection.
#[derive(Debug, Args)]
pub struct DlqAction {
    /// Which letters.
    #[command(flatten)]
    pub selection: DlqSelection,
    /// These dead letters (by id) instead of a selection.
    #[arg(long = "id", conflicts_with_all = ["all", "limit", "group", "kind"])]
    pub ids: Vec<MessageId>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `streamx top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Time between refreshes.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub interval: Duration,
    /// Print one view and stop (rates need two: they show `-`).
    #[arg(long, conflicts_with = "iterations")]
    pub once: bool,
    /// Print this many views and stop.
    #[arg(long)]
    pub iterations: Option<u64>,
}

/// `streamx dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The address to serve on (loopback unless you say otherwise; port 0 picks a free one).
    /// A non-loopback address needs --token or --basic-auth (or --insecure-no-auth).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Serve a non-loopback address without a token or basic authentication: anyone who
    /// can reach it sees every stream and can replay and purge dead letters. Prints a warning.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Also answer requests for this host name (`Host` header), e.g. the name a reverse
    /// proxy or DNS gives the dashboard: `dash.example.com` (any port) or
    /// `dash.example.com:8443`. Repeat for more. Without it only the listen address (and,
    /// on loopback, localhost) is answered, so a web page cannot reach the dashboard
    /// through a DNS name it controls (DNS rebinding).
    #[arg(long = "allowed-host", value_name = "HOST[:PORT]")]
    pub allowed_hosts: Vec<String>,
    /// Show, never change: no replay or purge (the server refuses them too).
    #[arg(long)]
    pub read_only: bool,
    /// Require this token: `Authorization: Bearer TOKEN`, or `?token=TOKEN` on the page's URL.
    #[arg(long, env = "STREAMX_DASHBOARD_TOKEN", hide_env_values = true, conflicts_with = "basic_auth")]
    pub token: Option<String>,
    /// Require HTTP basic authentication with `user:password`.
    #[arg(long, env = "STREAMX_DASHBOARD_BASIC_AUTH", hide_env_values = true)]
    pub basic_auth: Option<String>,
    /// Time between samples for the charts.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub sample_every: Duration,
}

/// `streamx retries ...`.
#[derive(Debug, Subcommand)]
pub enum RetriesCommand {
    /// The scheduled retries of a group, soonest first: id, when due, attempts so far.
    List {
        /// The stream key.
        stream: String,
        /// The consumer group.
        group: String,
        /// Show at most this many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Skip this many first (the soonest due).
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Show each entry's payload too (one more read per entry).
        #[arg(long)]
        payloads: bool,
    },
    /// Make a scheduled retry due now: a running consumer of the group delivers it at its
    /// next promotion tick.
    Run {
        /// The stream key.
        stream: String,
        /// The consumer group.
        group: String,
        /// The entry's id.
        id: MessageId,
    },
    /// Delete a scheduled retry: it is acknowledged, so the group never handles that entry
    /// (other groups and the stream keep it).
    Delete {
        /// The stream key.
        stream: String,
        /// The consumer group.
        group: String,
        /// The entry's id.
        id: MessageId,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `streamx scheduled ...`.
#[derive(Debug, Subcommand)]
pub enum ScheduledCommand {
    /// The delayed messages of a stream, soonest due first: schedule id, when due, payload.
    List {
        /// The stream key.
        stream: String,
        /// Show at most this many (`--limit 0` prints only the count).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Cancel delayed messages by schedule id: each is either cancelled (never delivered) or
    /// was promoted already, never both.
    Cancel {
        /// The stream key.
        stream: String,
        /// The schedule ids (as `scheduled list` shows them).
        #[arg(required = true)]
        ids: Vec<ScheduleId>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `streamx topics ...`.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic with N shards (or check that it has N): its record `{TOPIC}:topic`.
    /// Exit 2 when it exists with another count (see `topics delete` to change it).
    Create {
        /// The topic's name (no `{` or `}`).
        topic: String,
        /// The shard count (1 to 1024).
        #[arg(long)]
        shards: u32,
    },
    /// Delete a drained topic: every shard's stream and keys, then its record, so that it can
    /// be created again with another shard count. Refused (exit 6) while a shard is not
    /// drained: entries unread or pending in a group, retries or delayed messages waiting,
    /// dead letters (replay or purge them first), or a consumer holding a shard's lease.
    /// Stop the producers first; let the consumers drain the topic, then stop them.
    Delete {
        /// The topic's name.
        topic: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `streamx group ...`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a consumer group.
    Create {
        /// The stream key.
        stream: String,
        /// The group's name.
        group: String,
        /// Where it starts: `0` (every entry), `$` (only new ones), an id (entries after
        /// it) or an RFC 3339 time (`2026-12-07T10:00:00Z`: entries added from then on).
        #[arg(long, default_value = "$", value_parser = crate::commands::group::parse_start)]
        from: streamx_runtime::admin::GroupStart,
        /// Create the stream (empty) if it does not exist.
        #[arg(long)]
        mkstream: bool,
    },
    /// Delete a consumer group with its retry schedule, heartbeats, take-over marks and
    /// member deadlines (its dead letters stay). Stop its consumers first.
    Delete {
        /// The stream key.
        stream: String,
        /// The group.
        group: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Move a group's position (XGROUP SETID), like kafka-consumer-groups --reset-offsets;
    /// prints how many entries it delivers again or skips.
    Reset(GroupResetArgs),
    /// Remove a stopped consumer: its pending entries go to the group's retry schedule,
    /// due now (a running member delivers them), then the consumer is deleted.
    RemoveConsumer {
        /// The stream key.
        stream: String,
        /// The group.
        group: String,
        /// The consumer.
        consumer: String,
        /// Remove it even if it looks alive (its entries may then run twice).
        #[arg(long)]
        force: bool,
        /// A consumer that read, claimed or beat within this long looks alive.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        alive_within: Duration,
    },
}

/// `streamx group reset`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true)))]
pub struct GroupResetArgs {
    /// The stream key.
    pub stream: String,
    /// The group.
    pub group: String,
    /// Just after this id: the next delivery is the first entry after it.
    #[arg(long, group = "target")]
    pub to_id: Option<MessageId>,
    /// To this time (RFC 3339, `2026-12-07T10:00:00Z`): entries added from then on are
    /// delivered.
    #[arg(long, group = "target", value_parser = crate::commands::group::parse_time_ms)]
    pub to_datetime: Option<u64>,
    /// To the beginning: every entry is delivered again.
    #[arg(long, group = "target")]
    pub to_earliest: bool,
    /// To the end: every entry is skipped.
    #[arg(long, group = "target")]
    pub to_latest: bool,
    /// This long before now (`1h`, `30m`), on the Redis clock.
    #[arg(long, group = "target", value_parser = humantime::parse_duration)]
    pub by_duration: Option<Duration>,
    /// Print what the reset would do, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The dead-letter kinds `--kind` accepts (and lists in its help): every
/// [`FailureKind`](streamx_runtime::FailureKind).
fn failure_kinds() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(streamx_runtime::FailureKind::ALL.map(|k| k.as_str()))
}

/// A header given as `name=value`.
fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not name=value")),
    }
}

/// A duration above zero (`500ms`, `2s`).
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// A message id, or `0` for the very beginning.
fn parse_id_or_zero(text: &str) -> Result<MessageId, String> {
    if text == "0" {
        return Ok(MessageId::MIN);
    }
    text.parse().map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn headers_and_ids_parse() {
        assert_eq!(parse_header("a=b=c"), Ok(("a".to_string(), "b=c".to_string())));
        assert!(parse_header("=b").is_err());
        assert!(parse_header("novalue").is_err());
        assert_eq!(parse_id_or_zero("0"), Ok(MessageId::MIN));
        assert_eq!(parse_id_or_zero("5-1"), Ok(MessageId::new(5, 1)));
        assert!(parse_id_or_zero("x").is_err());
        assert_eq!(positive_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(positive_duration("0s").is_err());
    }

    #[test]
    fn kind_help_lists_every_failure_kind() {
        let mut cmd = Cli::command();
        let help = cmd.find_subcommand_mut("dlq").unwrap().find_subcommand_mut("list").unwrap().render_long_help();
        for kind in streamx_runtime::FailureKind::ALL {
            assert!(help.to_string().contains(kind.as_str()), "{kind:?} missing from {help}");
        }
    }
}
