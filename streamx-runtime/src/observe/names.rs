//! The names of the metrics streamx records, and of their labels. Every metric is
//! registered under these names only, here: see the README's "Monitoring" section for what
//! each one means.

/// Counter, labels `stream`: messages a [`Producer`](crate::Producer) published.
pub const MESSAGES_PUBLISHED: &str = "streamx_messages_published_total";
/// Counter, labels `stream`: publishes that failed (a batch counts each message it did not
/// write).
pub const PUBLISH_ERRORS: &str = "streamx_publish_errors_total";
/// Histogram (seconds), labels `stream`: how long one publish call took (a batch is one
/// observation).
pub const PUBLISH_DURATION: &str = "streamx_publish_duration_seconds";
/// Counter, labels `stream`, `group`, `consumer`, `outcome`: handled deliveries by what
/// became of them ([`OUTCOME_SUCCESS`], [`OUTCOME_RETRY`], [`OUTCOME_DEAD_LETTER`],
/// [`OUTCOME_REJECTED`]).
pub const MESSAGES_CONSUMED: &str = "streamx_messages_consumed_total";
/// Counter, labels `stream`, `group`, `consumer`: handler runs cancelled at the consumer's
/// `timeout` (each delivery is also counted in [`MESSAGES_CONSUMED`], as a `retry` or a
/// `dead_letter`).
pub const HANDLER_TIMEOUTS: &str = "streamx_handler_timeouts_total";
/// Counter, labels `stream`, `group`, `consumer`: dead letters deleted from the dead-letter
/// stream by its length cap (`dlq_max_len`) when the consumer wrote new ones; they are gone.
pub const DEAD_LETTERS_TRIMMED: &str = "streamx_dead_letters_trimmed_total";
/// Counter, labels `stream`, `group`, `consumer`: entries taken over from consumers that
/// stopped.
pub const TAKEOVERS: &str = "streamx_takeovers_total";
/// Counter, labels `stream`, `group`, `consumer`, `command`: commands of the consumer loop
/// that Redis refused for lack of permission (the user's ACL changed under a running
/// worker); the consumer is not ready meanwhile (`/readyz`). `command` is the refused command
/// when Redis names it (`XACK`, `EVALSHA`), else the script it ran in (`script:take-over`),
/// else `key` (a key of a command sent outside a script).
pub const PERMISSION_DENIED: &str = "streamx_permission_denied_total";
/// Counter, labels `stream` (the origin stream): dead letters replayed onto their stream.
pub const DEAD_LETTER_REPLAYS: &str = "streamx_dead_letter_replays_total";
/// Histogram (seconds), labels `stream`, `group`, `consumer`: how long handlers ran.
pub const HANDLER_DURATION: &str = "streamx_handler_duration_seconds";
/// Histogram (seconds), labels `stream`, `group`, `consumer`: from the time in an entry's id
/// (when Redis added it) to the start of its first handler run.
pub const END_TO_END_LATENCY: &str = "streamx_end_to_end_latency_seconds";
/// Gauge, labels `stream`, `group`: entries of the stream the group has not read yet
/// (`XINFO GROUPS` `lag`, estimated when Redis cannot tell).
pub const GROUP_LAG: &str = "streamx_group_lag";
/// Gauge, labels `stream`, `group`: entries read but not acknowledged (the group's PEL,
/// scheduled retries included).
pub const GROUP_PENDING: &str = "streamx_group_pending";
/// Gauge (seconds), labels `stream`, `group`: age of the oldest pending entry (now minus
/// the time in its id); 0 when nothing is pending.
pub const OLDEST_PENDING_AGE: &str = "streamx_group_oldest_pending_age_seconds";
/// Gauge, labels `stream`, `group`: length of the group's dead-letter stream.
pub const DEAD_LETTER_LENGTH: &str = "streamx_dead_letter_stream_length";
/// Gauge, labels `stream`, `group`, `consumer`: handlers running (or about to) in this
/// process.
pub const IN_FLIGHT: &str = "streamx_handlers_in_flight";
/// Counter, labels `stream`: delayed messages a runtime added to their stream when due.
pub const SCHEDULED_PROMOTED: &str = "streamx_scheduled_promoted_total";
/// Counter, labels `stream`: delayed messages dropped from the schedule at promotion because
/// their payload was missing or unreadable (written or deleted by hand; logged as a warning).
pub const SCHEDULED_DROPPED: &str = "streamx_scheduled_dropped_total";
/// Gauge, labels `stream`: delayed messages waiting to be promoted, as of the last promotion
/// tick of this runtime.
pub const SCHEDULED_PENDING: &str = "streamx_scheduled_messages";
/// Counter, labels `stream`, `job`: ticks of a periodic job this process published.
pub const PERIODIC_PUBLISHED: &str = "streamx_periodic_published_total";
/// Counter, labels `stream`, `job`, `reason`: ticks of a periodic job this process did not
/// publish: [`SKIPPED_PUBLISHED_ELSEWHERE`] (another process did: a lost race, the normal
/// case with several processes), [`SKIPPED_MISSED`] (no process ran at the tick, or this one
/// stalled, and the job does not catch up or the gap is beyond its bound),
/// [`SKIPPED_FAILED`] (the job's fn returned an error or panicked).
pub const PERIODIC_SKIPPED: &str = "streamx_periodic_skipped_total";

/// Gauge, labels `stream`, `group`: 1 while the group is paused (its pause key exists, see
/// [`crate::Inspector::pause`]), 0 otherwise, as this runtime last saw it.
pub const CONSUMER_PAUSED: &str = "streamx_consumer_paused";

/// Counter, labels `stream`, `group`: handler starts a rate-limited consumer was granted
/// (see [`crate::RateLimit`]; what a short read returned unused is not deducted).
pub const RATE_LIMIT_GRANTED: &str = "streamx_rate_limit_granted_total";

/// Counter, labels `stream`, `group`: times a rate-limited consumer was refused a grant and
/// waited (the limit bound).
pub const RATE_LIMIT_WAITS: &str = "streamx_rate_limit_waits_total";

/// Histogram, labels `stream`, `group`: how long a rate-limited consumer's refused requests
/// waited until granted (its throttling; its sum is the time spent throttled).
pub const RATE_LIMIT_WAIT_SECONDS: &str = "streamx_rate_limit_wait_seconds";

/// Label: the stream.
pub const LABEL_STREAM: &str = "stream";
/// Label: the consumer group.
pub const LABEL_GROUP: &str = "group";
/// Label: the consumer's registration name.
pub const LABEL_CONSUMER: &str = "consumer";
/// Label of [`PERMISSION_DENIED`]: what Redis refused.
pub const LABEL_COMMAND: &str = "command";
/// Label: a periodic job's name.
pub const LABEL_JOB: &str = "job";
/// Label of [`PERIODIC_SKIPPED`]: why the tick was not published by this process.
pub const LABEL_REASON: &str = "reason";
/// Label of [`MESSAGES_CONSUMED`]: what became of the delivery.
pub const LABEL_OUTCOME: &str = "outcome";

/// The handler succeeded; the entry was acknowledged.
pub const OUTCOME_SUCCESS: &str = "success";
/// A `dedupe` consumer's group had handled the message's key already: acknowledged without
/// running the handler.
pub const OUTCOME_DEDUPLICATED: &str = "deduplicated";
/// The handler failed (or panicked) and the entry was scheduled for another delivery.
pub const OUTCOME_RETRY: &str = "retry";
/// The entry goes to the dead-letter stream (or is dropped when dead letters are off): its
/// last allowed delivery failed, the handler returned a permanent error, it reached the
/// delivery limit, or it was trimmed while pending.
pub const OUTCOME_DEAD_LETTER: &str = "dead_letter";
/// Poison: the entry could not be decoded (no payload, not JSON, wrong shape, too large)
/// and goes to the dead-letter stream without a handler run.
pub const OUTCOME_REJECTED: &str = "rejected";

/// A periodic tick another process published first.
pub const SKIPPED_PUBLISHED_ELSEWHERE: &str = "published_elsewhere";
/// A periodic tick nobody published when it was due, skipped.
pub const SKIPPED_MISSED: &str = "missed";
/// A periodic tick whose payload fn failed in this process.
pub const SKIPPED_FAILED: &str = "failed";
