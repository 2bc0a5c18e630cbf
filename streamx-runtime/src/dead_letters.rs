//! Dead letters: moving a failed entry to the dead-letter stream, and the operator API
//! ([`DeadLetters`]) to inspect, replay and purge them.
//!
//! A dead-letter entry keeps every field of the original entry unchanged (`data`, `h:*`,
//! anything else) and adds:
//!
//! | field | meaning |
//! |---|---|
//! | `dlq:stream` | the stream the message came from |
//! | `dlq:id` | its id there |
//! | `dlq:group` | the consumer group that gave up on it |
//! | `dlq:consumer` | the consumer that moved it |
//! | `dlq:deliveries` | how many times it was delivered |
//! | `dlq:kind` | why: `error`, `permanent`, `panic`, `missing_payload`, `payload_too_large`, `invalid_json`, `wrong_shape`, `delivery_limit`, `trimmed`, `timeout` |
//! | `dlq:error` | the last error text |
//! | `dlq:at` | when it was moved (Unix milliseconds) |
//!
//! The move is one Lua script: only if the entry is still pending for the consumer giving up
//! on it, copy it with XADD, then XACK it. Both keys share a hash slot (see
//! [`crate::keys`]), so the script is legal on Redis Cluster, and it runs atomically: a crash
//! cannot lose the message or write two dead-letter entries for it, and a failing XADD
//! leaves the entry pending. (Entries too wide for Lua are copied by the client; see
//! the engine's `move_to_dead_letters`.)

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::scripts::Script;
use fred::types::Value;

use crate::error::{Error, Result};
use crate::handler::FailureKind;
use crate::message::{Headers, MessageId};
use crate::wire::{field, parse_entries, split_entry, value_bytes, Field};

mod replay;

pub use crate::wire::REPLAY_GROUP_FIELD;
pub use replay::Replayed;

/// Prefix of the fields a dead-letter entry adds.
pub const DLQ_FIELD_PREFIX: &str = "dlq:";

/// The header a replayed message carries: the id it had in the dead-letter stream.
pub const REPLAYED_FROM_HEADER: &str = "streamx-replayed-from";

/// Moves one failed entry to the dead-letter stream, only if it is still pending for the
/// consumer that gives up on it. The dead letter is written first and the XACK comes last, so
/// an error (a dead-letter key of the wrong type, say) leaves the entry pending and writes
/// nothing; a crash before the script runs changes nothing, after it both happened.
///
/// Lua cannot pass more than about 8,000 values to one command (`unpack`), so an entry with
/// more fields than [`WIDE_ENTRY_FIELDS`] is not copied here: the script answers
/// `STREAMX_WIDE` and [`move_to_dead_letters`] copies it from the client instead.
pub(crate) static MOVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    crate::scripts::assemble(
        &[crate::topic::fence::FENCE, crate::scripts::DEAD_LETTER_ADD],
        r#"
-- KEYS: origin stream, dead-letter stream, take-over marks
-- ARGV: group, id, consumer, deliveries, kind, error, at, max fields, dead-letter cap
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if not mine[1] then return false end
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local fields = {}
if found[1] then fields = found[1][2] end
if #fields > tonumber(ARGV[8]) then return 'STREAMX_WIDE' end
table.insert(fields, 'dlq:stream');     table.insert(fields, KEYS[1])
table.insert(fields, 'dlq:id');         table.insert(fields, ARGV[2])
table.insert(fields, 'dlq:group');      table.insert(fields, ARGV[1])
table.insert(fields, 'dlq:consumer');   table.insert(fields, ARGV[3])
table.insert(fields, 'dlq:deliveries'); table.insert(fields, ARGV[4])
table.insert(fields, 'dlq:kind');       table.insert(fields, ARGV[5])
table.insert(fields, 'dlq:error');      table.insert(fields, ARGV[6])
table.insert(fields, 'dlq:at');         table.insert(fields, ARGV[7])
local id = dead_letter_add(KEYS[2], tonumber(ARGV[9]), fields)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[2], 'i:' .. ARGV[2], 'c:' .. ARGV[2])
return {id, dlq_trimmed}
"#,
    )
});

/// Second step of the client-side move of a wide entry: acknowledges it if it is still
/// pending for this consumer and trims the dead-letter stream to its cap (as
/// `dead_letter_add` does), returning how many letters the trim removed; else removes the
/// dead letter just written (someone else took the entry over and will decide its fate) and
/// returns -1.
pub(crate) static ACK_WIDE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    crate::scripts::assemble(
        &[crate::topic::fence::FENCE],
        r#"
-- KEYS: origin stream, dead-letter stream, take-over marks
-- ARGV: group, id, consumer, dead-letter id, dead-letter cap
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if not mine[1] then
  redis.call('XDEL', KEYS[2], ARGV[4])
  return -1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[2], 'i:' .. ARGV[2], 'c:' .. ARGV[2])
local cap = tonumber(ARGV[5])
if cap > 0 then return redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', cap) end
return 0
"#,
    )
});

/// Entries with more fields than this are dead-lettered by the client (see [`MOVE_SCRIPT`]):
/// `unpack` fails at about 8,000 values, and the dead letter adds 16.
const WIDE_ENTRY_FIELDS: usize = 7_900;

/// Counts and deletes a stream in one step, so the count is exactly what was deleted; only
/// a dead-letter stream (its first entry has `dlq:stream`): a wrong name (a live stream
/// typed as a custom dead-letter stream) is refused, not deleted.
static PURGE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
-- KEYS: dead-letter stream
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if first then
  local letter = false
  for i = 1, #first[2], 2 do
    if first[2][i] == 'dlq:stream' then letter = true end
  end
  if not letter then
    return redis.error_reply('STREAMX not a dead-letter stream: its first entry has no dlq:stream field')
  end
end
local removed = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return removed
"#,
    )
});

/// The scripts of the dead-letter move, which the consumer loop runs (see
/// [`crate::permissions`]).
pub(crate) fn engine_scripts() -> [crate::permissions::EngineScript; 2] {
    use crate::permissions::EngineScript;
    [
        EngineScript {
            serves: crate::permissions::Serves::All,
            name: "dead-letter move",
            ident: "MOVE_SCRIPT",
            script: &MOVE_SCRIPT,
        },
        EngineScript {
            serves: crate::permissions::Serves::All,
            name: "dead-letter acknowledgement",
            ident: "ACK_WIDE_SCRIPT",
            script: &ACK_WIDE_SCRIPT,
        },
    ]
}

/// A dead letter written: its id in the dead-letter stream, and how many of the oldest
/// letters the stream's length cap trimmed to make room.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moved {
    pub id: MessageId,
    pub trimmed: u64,
}

/// What the consumer loop knows when it gives up on a message.
pub(crate) struct Failure<'a> {
    pub stream: &'a str,
    pub group: &'a str,
    pub consumer: &'a str,
    pub id: MessageId,
    pub deliveries: u32,
    pub kind: FailureKind,
    pub error: &'a str,
}

impl Failure<'_> {
    fn dlq_fields(&self, at: u128) -> Vec<(String, String)> {
        vec![
            ("dlq:stream".into(), self.stream.to_string()),
            ("dlq:id".into(), self.id.to_string()),
            ("dlq:group".into(), self.group.to_string()),
            ("dlq:consumer".into(), self.consumer.to_string()),
            ("dlq:deliveries".into(), self.deliveries.to_string()),
            ("dlq:kind".into(), self.kind.as_str().to_string()),
            ("dlq:error".into(), self.error.to_string()),
            ("dlq:at".into(), at.to_string()),
        ]
    }
}

/// Moves a failed entry to `dlq` and acknowledges it, only if it is still pending for
/// `f.consumer` (see [`MOVE_SCRIPT`]), then trims `dlq` to about `cap` entries (`None`:
/// unbounded). Returns the dead-letter entry's id and what the trim removed, or `None` when
/// the entry was no longer this consumer's (someone else finished or took it over). On an
/// error nothing was acknowledged: the entry stays pending.
pub(crate) async fn move_to_dead_letters(
    client: &Client,
    dlq: &str,
    cap: Option<u64>,
    marks: &str,
    f: &Failure<'_>,
    fence: Option<&crate::topic::fence::Fence>,
) -> Result<Option<Moved>> {
    let at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let mut keys = vec![f.stream.to_string(), dlq.to_string(), marks.to_string()];
    let mut args = vec![
        f.group.to_string(),
        f.id.to_string(),
        f.consumer.to_string(),
        f.deliveries.to_string(),
        f.kind.as_str().to_string(),
        f.error.to_string(),
        at.to_string(),
        WIDE_ENTRY_FIELDS.to_string(),
        crate::scripts::cap_arg(cap),
    ];
    crate::topic::fence::append_opt(fence, &mut keys, &mut args);
    let reply: Value = MOVE_SCRIPT
        .evalsha_with_reload(client, keys, args)
        .await
        .map_err(|e| Error::redis("EVALSHA (dead-letter move)", f.stream, e))?;
    if reply.as_str().is_some_and(|s| s == "STREAMX_WIDE") {
        return Box::pin(move_wide_entry(client, dlq, cap, marks, f, at, fence)).await;
    }
    if reply.is_null() {
        return Ok(None);
    }
    let (id, trimmed) = crate::scripts::split_trimmed(reply);
    Ok(value_bytes(id).and_then(|b| MessageId::parse_bytes(&b)).map(|id| Moved { id, trimmed }))
}

/// The move of an entry too wide for Lua: the client copies it with its own XADD, then a
/// script acknowledges it if it is still this consumer's. A crash between the two leaves the
/// entry pending and its dead letter written; the next attempt writes a second one (the only
/// case where a message can have two dead letters).
async fn move_wide_entry(
    client: &Client,
    dlq: &str,
    cap: Option<u64>,
    marks: &str,
    f: &Failure<'_>,
    at: u128,
    fence: Option<&crate::topic::fence::Fence>,
) -> Result<Option<Moved>> {
    let id = f.id.to_string();
    let reply: Value = client
        .xrange(f.stream, id.as_str(), id.as_str(), Some(1))
        .await
        .map_err(|e| Error::redis("XRANGE", f.stream, e))?;
    let mut fields: Vec<(Value, Value)> = raw_entries(reply)
        .into_iter()
        .next()
        .map(|(_, fields)| fields.into_iter().map(|(k, v)| (Value::Bytes(k), Value::Bytes(v))).collect())
        .unwrap_or_default();
    fields.extend(f.dlq_fields(at).into_iter().map(|(k, v)| (Value::from(k), Value::from(v))));
    let args: Vec<(fred::types::Key, Value)> =
        fields.into_iter().filter_map(|(k, v)| value_bytes(k).map(|k| (fred::types::Key::from(k), v))).collect();
    let written: Value =
        client.xadd(dlq, false, None::<()>, "*", args).await.map_err(|e| Error::redis("XADD (dead letter)", dlq, e))?;
    let Some(dlq_id) = value_bytes(written).and_then(|b| MessageId::parse_bytes(&b)) else {
        return Ok(None);
    };
    let mut keys = vec![f.stream.to_string(), dlq.to_string(), marks.to_string()];
    let mut args =
        vec![f.group.to_string(), id, f.consumer.to_string(), dlq_id.to_string(), crate::scripts::cap_arg(cap)];
    crate::topic::fence::append_opt(fence, &mut keys, &mut args);
    let trimmed: i64 = ACK_WIDE_SCRIPT
        .evalsha_with_reload(client, keys, args)
        .await
        .map_err(|e| Error::redis("EVALSHA (dead-letter ack)", f.stream, e))?;
    Ok(u64::try_from(trimmed).ok().map(|trimmed| Moved { id: dlq_id, trimmed }))
}

/// One entry of a dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: MessageId,
    /// The stream it came from.
    pub origin_stream: String,
    /// Its id there.
    pub origin_id: Option<MessageId>,
    /// The group that gave up on it.
    pub group: String,
    /// The consumer that moved it.
    pub consumer: String,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// Why it failed.
    pub kind: Option<FailureKind>,
    /// The last error text.
    pub error: String,
    /// When it was moved (Unix ms).
    pub dead_lettered_at_ms: u64,
    /// The original payload bytes (`data`), unchanged.
    pub payload: Option<bytes::Bytes>,
    /// The original headers, unchanged.
    pub headers: Headers,
}

impl DeadLetter {
    fn from_fields(id: MessageId, fields: Vec<(bytes::Bytes, bytes::Bytes)>) -> Self {
        let mut d = DeadLetter {
            id,
            origin_stream: String::new(),
            origin_id: None,
            group: String::new(),
            consumer: String::new(),
            deliveries: 0,
            kind: None,
            error: String::new(),
            dead_lettered_at_ms: 0,
            payload: None,
            headers: Headers::new(),
        };
        for (k, v) in fields {
            let text = || String::from_utf8_lossy(&v).into_owned();
            match &k[..] {
                b"dlq:stream" => d.origin_stream = text(),
                b"dlq:id" => d.origin_id = MessageId::parse_bytes(&v),
                b"dlq:group" => d.group = text(),
                b"dlq:consumer" => d.consumer = text(),
                b"dlq:deliveries" => d.deliveries = text().parse().unwrap_or(0),
                b"dlq:kind" => d.kind = FailureKind::parse(&text()),
                b"dlq:error" => d.error = text(),
                b"dlq:at" => d.dead_lettered_at_ms = text().parse().unwrap_or(0),
                k => match field(k) {
                    Field::Data => d.payload = Some(v.clone()),
                    Field::Header(name) => {
                        d.headers.insert(String::from_utf8_lossy(name), text());
                    }
                    Field::Other => {}
                },
            }
        }
        d
    }
}

/// A page of dead letters with the stream's total length.
#[derive(Debug, Clone)]
pub struct DeadLetterPage {
    /// The entries of this page, oldest first.
    pub entries: Vec<DeadLetter>,
    /// How many entries the dead-letter stream holds in all.
    pub total: u64,
    /// Pass this as `after` to get the next page; `None` on the last page.
    pub next: Option<MessageId>,
}

/// Inspect, replay and purge a dead-letter stream.
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// use streamx_runtime::DeadLetters;
/// let dlq = DeadLetters::connect("redis://127.0.0.1:6379", "{orders}:dlq").await?;
/// let page = dlq.list(None, 50).await?;
/// println!("{} dead letters", page.total);
/// for letter in &page.entries {
///     println!("{} from {}: {} ({:?})", letter.id, letter.origin_stream, letter.error, letter.kind);
/// }
/// let replayed = dlq.replay_all().await?;
/// println!("replayed {replayed}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DeadLetters {
    client: Client,
    stream: String,
}

impl DeadLetters {
    /// Connects to `url` and opens the dead-letter stream `stream`. For a `rediss://` URL
    /// the CA file in `STREAMX_REDIS_TLS_CA` and the client certificate in
    /// `STREAMX_REDIS_TLS_CERT` / `STREAMX_REDIS_TLS_KEY` are used when set, as by the
    /// runtime (see [`RedisUrl`](crate::RedisUrl)).
    pub async fn connect(url: &str, stream: &str) -> Result<Self> {
        Self::connect_with(&crate::connection::RedisUrl::parse(url)?, stream).await
    }

    /// Connects with a parsed URL (with TLS or credentials options). TLS files it does not
    /// set are taken from the environment, as for [`connect`](Self::connect); its own
    /// settings win.
    pub async fn connect_with(url: &crate::connection::RedisUrl, stream: &str) -> Result<Self> {
        Ok(Self::with_client(crate::connection::tool_client(url).await?, stream))
    }

    /// Uses an existing client.
    pub fn with_client(client: Client, stream: &str) -> Self {
        DeadLetters { client, stream: stream.to_string() }
    }

    /// The dead-letter stream's key.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// How many dead letters there are.
    pub async fn count(&self) -> Result<u64> {
        self.client.xlen(&self.stream).await.map_err(|e| Error::redis("XLEN", &self.stream, e))
    }

    /// Up to `limit` dead letters with ids greater than `after` (from the start when `None`).
    pub async fn list(&self, after: Option<MessageId>, limit: u64) -> Result<DeadLetterPage> {
        let (entries, next) = self.page(after, limit).await?;
        Ok(DeadLetterPage { total: self.count().await?, entries, next })
    }

    /// Up to `limit` dead letters after `after`, and the cursor of the next page.
    async fn page(&self, after: Option<MessageId>, limit: u64) -> Result<(Vec<DeadLetter>, Option<MessageId>)> {
        let start = match after {
            Some(id) => format!("({id}"),
            None => "-".to_string(),
        };
        let reply: Value = self
            .client
            .xrange(&self.stream, start, "+", Some(limit.max(1)))
            .await
            .map_err(|e| Error::redis("XRANGE", &self.stream, e))?;
        let entries: Vec<DeadLetter> =
            raw_entries(reply).into_iter().map(|(id, fields)| DeadLetter::from_fields(id, fields)).collect();
        let next = if entries.len() as u64 >= limit.max(1) { entries.last().map(|e| e.id) } else { None };
        Ok((entries, next))
    }

    /// One dead letter by its id.
    pub async fn get(&self, id: MessageId) -> Result<Option<DeadLetter>> {
        let reply: Value = self
            .client
            .xrange(&self.stream, id.to_string(), id.to_string(), Some(1))
            .await
            .map_err(|e| Error::redis("XRANGE", &self.stream, e))?;
        Ok(raw_entries(reply).into_iter().next().map(|(id, f)| DeadLetter::from_fields(id, f)))
    }

    /// Replays one dead letter to the group that gave up on it, and no other (see
    /// [`replay_letters`](Self::replay_letters)). Returns the id the group gets the message
    /// under (the original entry's, or a new one when the entry was trimmed), or `None` if
    /// no such dead letter exists.
    pub async fn replay(&self, id: MessageId) -> Result<Option<MessageId>> {
        match self.get(id).await? {
            Some(letter) => self.replay_letter(&letter).await,
            None => Ok(None),
        }
    }

    /// Replays `letter` (as [listed](Self::list)) like [`replay`](Self::replay), without
    /// reading it again. Returns `None` if the letter is gone meanwhile (replayed or purged
    /// by someone else).
    ///
    /// Fails, keeping the letter, when it cannot be replayed now ([`Replayed::Held`],
    /// [`Replayed::NoGroup`]): the error says why.
    pub async fn replay_letter(&self, letter: &DeadLetter) -> Result<Option<MessageId>> {
        let outcomes = self.replay_letters(std::slice::from_ref(letter)).await?;
        let outcome = outcomes.first().copied().unwrap_or(Replayed::Gone);
        let reason = match outcome {
            Replayed::Held(id) => format!(
                "a consumer of group `{}` holds its entry {id} now (read again, or being dead-lettered again); \
                 replay it later if it is still wanted",
                letter.group
            ),
            Replayed::NoGroup => format!(
                "its group `{}` does not exist on stream `{}` (create the group again, or purge the letter)",
                letter.group, letter.origin_stream
            ),
            other => return Ok(other.id()),
        };
        Err(Error::Replay { dlq: self.stream.clone(), letter: letter.id.to_string(), reason })
    }

    /// Replays every dead letter present when the call starts, oldest first, each to its
    /// group (see [`replay_letters`](Self::replay_letters)); an interruption leaves each
    /// letter either replayed or still here. Letters that cannot be replayed now (their
    /// group is gone, or a consumer holds their entry) are kept and skipped. Returns how
    /// many were replayed.
    pub async fn replay_all(&self) -> Result<u64> {
        let mut replayed = 0;
        let mut after = None;
        let end = self.last_id().await?;
        loop {
            let (mut letters, next) = self.page(after, 100).await?;
            let past_end = end.is_none_or(|end| letters.iter().any(|l| l.id > end));
            letters.retain(|l| end.is_some_and(|end| l.id <= end));
            let outcomes = self.replay_letters(&letters).await?;
            replayed += outcomes.iter().filter(|o| o.id().is_some()).count() as u64;
            match next {
                Some(next) if !past_end => after = Some(next),
                _ => return Ok(replayed),
            }
        }
    }

    /// Deletes the dead letters with these ids (XDEL); returns how many existed and were
    /// removed. Ids that are not in the dead-letter stream are ignored.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), streamx_runtime::Error> {
    /// use streamx_runtime::{DeadLetters, FailureKind};
    /// let dlq = DeadLetters::connect("redis://127.0.0.1:6379", "{orders}:dlq").await?;
    /// let page = dlq.list(None, 100).await?;
    /// let poison: Vec<_> =
    ///     page.entries.iter().filter(|l| l.kind == Some(FailureKind::InvalidJson)).map(|l| l.id).collect();
    /// println!("deleted {}", dlq.delete(&poison).await?);
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, ids: &[MessageId]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = ids.iter().map(MessageId::to_string).collect();
        self.client.xdel(&self.stream, ids).await.map_err(|e| Error::redis("XDEL", &self.stream, e))
    }

    /// Deletes every dead letter; returns how many messages were removed. The count and the
    /// delete are one atomic script, so letters that arrive meanwhile are either counted and
    /// removed or left in place. A stream that is not a dead-letter stream (its first entry
    /// has no `dlq:stream` field: a live stream named by mistake) is refused with an error
    /// and left alone.
    pub async fn purge(&self) -> Result<u64> {
        PURGE_SCRIPT
            .evalsha_with_reload(&self.client, vec![self.stream.clone()], Vec::<String>::new())
            .await
            .map_err(|e| Error::redis("EVALSHA (dead-letter purge)", &self.stream, e))
    }

    async fn last_id(&self) -> Result<Option<MessageId>> {
        let reply: Value = self
            .client
            .xrevrange(&self.stream, "+", "-", Some(1))
            .await
            .map_err(|e| Error::redis("XREVRANGE", &self.stream, e))?;
        Ok(parse_entries(reply).first().map(|e| e.id))
    }
}

/// Entries as `(id, all fields)` pairs, keeping every field.
fn raw_entries(reply: Value) -> Vec<(MessageId, Vec<(bytes::Bytes, bytes::Bytes)>)> {
    if reply.is_null() {
        return Vec::new();
    }
    reply
        .into_array()
        .into_iter()
        .filter_map(split_entry)
        .map(|(id, fields)| (id, fields.map(Iterator::collect).unwrap_or_default()))
        .collect()
}
