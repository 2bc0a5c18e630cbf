//! [`Scheduled`]: the operator API of delayed messages: list, count, cancel.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::ClientLike as _;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Value};

use super::{decode, schedule_keys, ScheduleId};
use crate::connection::RedisUrl;
use crate::error::{Error, Result};
use crate::keys;
use crate::message::Headers;
use crate::wire::{field, value_bytes, Field};

/// Cancels one delayed message: `ZREM` and `HDEL` in one script, so a message is either
/// cancelled or promoted, never both (the promotion is one script too). A process that dies
/// before it cancels nothing, after it the message is gone; run twice (a re-send after a
/// reconnect), the second finds nothing and answers 0 — the first's answer is what counts.
///
/// KEYS: schedule, payloads. ARGV: schedule ids. Returns how many were still scheduled.
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local removed = 0
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], id) == 1 then removed = removed + 1 end
  redis.call('HDEL', KEYS[2], id)
end
return removed
"#,
    )
});

/// Cancels every delayed message of a stream: counts and deletes both keys in one script,
/// so the count is exactly what was cancelled (crash or re-send: as [`CANCEL`]).
///
/// KEYS: schedule, payloads. Returns how many were scheduled.
static CANCEL_ALL: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local n = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return n
"#,
    )
});

/// One delayed message waiting to be promoted.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScheduledMessage {
    /// Its schedule id (to [cancel](Scheduled::cancel) it).
    pub id: ScheduleId,
    /// When it is due (Redis clock for `publish_after`).
    pub due: SystemTime,
    /// Its headers.
    pub headers: Headers,
    /// Its payload, as it will be stored in the `data` field.
    pub data: Bytes,
}

impl ScheduledMessage {
    /// When it is due, in Unix milliseconds.
    pub fn due_ms(&self) -> u64 {
        self.due.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
    }

    fn from_fields(id: ScheduleId, due_ms: u64, fields: Vec<(Bytes, Bytes)>) -> Self {
        let mut message = ScheduledMessage {
            id,
            due: UNIX_EPOCH + Duration::from_millis(due_ms),
            headers: Headers::new(),
            data: Bytes::new(),
        };
        for (name, value) in fields {
            match field(&name) {
                Field::Data => message.data = value,
                Field::Header(header) => {
                    message.headers.insert(String::from_utf8_lossy(header), String::from_utf8_lossy(&value));
                }
                Field::Other => {}
            }
        }
        message
    }
}

/// Where a page of [`Scheduled::list_page`] ended: pass it back to get the next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleCursor {
    /// The due time of the page's last message (Unix ms).
    pub due_ms: u64,
    /// Its id.
    pub id: ScheduleId,
}

/// A page of delayed messages, in due order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScheduledPage {
    /// The messages of this page, soonest due first.
    pub entries: Vec<ScheduledMessage>,
    /// Pass this to [`Scheduled::list_page`] for the next page; `None` on the last page.
    pub next: Option<ScheduleCursor>,
}

/// Lists, counts and cancels the delayed messages of streams (see
/// [`Producer::publish_after`](crate::Producer::publish_after)).
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// use streamx_runtime::Scheduled;
/// let scheduled = Scheduled::connect("redis://127.0.0.1:6379").await?;
/// println!("{} waiting", scheduled.count("reminders").await?);
/// for message in scheduled.list("reminders", 20).await? {
///     println!("{} due {:?}: {}", message.id, message.due, String::from_utf8_lossy(&message.data));
///     scheduled.cancel("reminders", &message.id).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Scheduled {
    client: Client,
}

impl Scheduled {
    /// Connects to `url`. For a `rediss://` URL the CA file in `STREAMX_REDIS_TLS_CA` and the
    /// client certificate in `STREAMX_REDIS_TLS_CERT` / `STREAMX_REDIS_TLS_KEY` are used when
    /// set, as by the runtime (see [`RedisUrl`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(&RedisUrl::parse(url)?).await
    }

    /// Connects with a parsed URL (with TLS or credentials options).
    pub async fn connect_with(url: &RedisUrl) -> Result<Self> {
        Ok(Self::with_client(crate::connection::tool_client(url).await?))
    }

    /// Uses an existing client (e.g. [`Producer::client`](crate::Producer::client)).
    pub fn with_client(client: Client) -> Self {
        Scheduled { client }
    }

    /// How many delayed messages of `stream` wait (`ZCARD`).
    pub async fn count(&self, stream: &str) -> Result<u64> {
        let key = keys::scheduled(stream);
        let reply: Value = self.command("ZCARD", &key, vec![Value::from(key.as_str())]).await?;
        Ok(reply.as_u64().unwrap_or(0))
    }

    /// The first `limit` delayed messages of `stream`, soonest due first.
    pub async fn list(&self, stream: &str, limit: usize) -> Result<Vec<ScheduledMessage>> {
        Ok(self.list_page(stream, None, limit).await?.entries)
    }

    /// Up to `limit` delayed messages of `stream` after `after` (from the soonest when
    /// `None`), in due order (ties by id), and the cursor of the next page. Messages promoted
    /// or cancelled meanwhile are left out; a page costs `O(log n + limit)`.
    pub async fn list_page(&self, stream: &str, after: Option<ScheduleCursor>, limit: usize) -> Result<ScheduledPage> {
        let limit = limit.max(1);
        let key = keys::scheduled(stream);
        let min = after.map_or_else(|| "-inf".to_string(), |c| c.due_ms.to_string());
        let mut ids: Vec<(ScheduleId, u64)> = Vec::with_capacity(limit);
        let mut offset = 0usize;
        let mut exhausted = false;
        while ids.len() < limit {
            let want = limit - ids.len() + 1;
            let args = vec![
                Value::from(key.as_str()),
                Value::from(min.as_str()),
                Value::from("+inf"),
                Value::from("WITHSCORES"),
                Value::from("LIMIT"),
                Value::from(offset as i64),
                Value::from(want as i64),
            ];
            let reply: Value = self.command("ZRANGEBYSCORE", &key, args).await?;
            let items = reply.into_array();
            let got = items.len() / 2;
            let mut it = items.into_iter();
            while let (Some(member), Some(score)) = (it.next(), it.next()) {
                let Some(id) = value_bytes(member).and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok()) else {
                    continue;
                };
                let due = score_ms(score);
                // Ties at the cursor's due time come in id order: skip those up to it.
                if after.is_some_and(|c| (due, id) <= (c.due_ms, c.id)) {
                    continue;
                }
                if ids.len() < limit {
                    ids.push((id, due));
                } else {
                    break;
                }
            }
            offset += got;
            if got < want {
                exhausted = true;
                break;
            }
        }
        let entries = self.payloads(stream, &ids).await?;
        let next = if exhausted || ids.len() < limit {
            None
        } else {
            ids.last().map(|&(id, due_ms)| ScheduleCursor { due_ms, id })
        };
        Ok(ScheduledPage { entries, next })
    }

    /// One delayed message by its id; `None` when it is not scheduled (promoted, cancelled,
    /// or never was).
    pub async fn get(&self, stream: &str, id: &ScheduleId) -> Result<Option<ScheduledMessage>> {
        let key = keys::scheduled(stream);
        let reply: Value =
            self.command("ZSCORE", &key, vec![Value::from(key.as_str()), Value::from(id.to_string())]).await?;
        if reply.is_null() {
            return Ok(None);
        }
        Ok(self.payloads(stream, &[(*id, score_ms(reply))]).await?.pop())
    }

    /// Cancels the delayed message `id` of `stream`: true if it was still scheduled (it will
    /// never be delivered), false if it was not (promoted already, cancelled, or unknown). A
    /// message being promoted at this moment is either cancelled or delivered, never both.
    pub async fn cancel(&self, stream: &str, id: &ScheduleId) -> Result<bool> {
        Ok(self.cancel_many(stream, std::slice::from_ref(id)).await? == 1)
    }

    /// Cancels the delayed messages `ids` of `stream` in one script; returns how many were
    /// still scheduled.
    pub async fn cancel_many(&self, stream: &str, ids: &[ScheduleId]) -> Result<u64> {
        let mut cancelled = 0;
        // Pages of 1,000: a script's work is bounded, Redis serves others in between.
        for page in ids.chunks(1_000) {
            let args: Vec<String> = page.iter().map(ScheduleId::to_string).collect();
            let n: u64 = CANCEL
                .evalsha_with_reload(&self.client, schedule_keys(stream), args)
                .await
                .map_err(|e| Error::redis("EVALSHA (cancel scheduled)", stream, e))?;
            cancelled += n;
        }
        Ok(cancelled)
    }

    /// Cancels every delayed message of `stream`; returns how many there were.
    pub async fn cancel_all(&self, stream: &str) -> Result<u64> {
        CANCEL_ALL
            .evalsha_with_reload(&self.client, schedule_keys(stream), Vec::<String>::new())
            .await
            .map_err(|e| Error::redis("EVALSHA (cancel all scheduled)", stream, e))
    }

    /// The messages of `ids` with their payloads (`HMGET`); those promoted meanwhile are
    /// left out.
    async fn payloads(&self, stream: &str, ids: &[(ScheduleId, u64)]) -> Result<Vec<ScheduledMessage>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = keys::scheduled_payloads(stream);
        let mut args = vec![Value::from(key.as_str())];
        args.extend(ids.iter().map(|(id, _)| Value::from(id.to_string())));
        let reply: Value = self.command("HMGET", &key, args).await?;
        Ok(ids
            .iter()
            .zip(reply.into_array())
            .filter_map(|(&(id, due), v)| {
                let fields = decode(&value_bytes(v)?)?;
                Some(ScheduledMessage::from_fields(id, due, fields))
            })
            .collect())
    }

    async fn command(&self, name: &'static str, key: &str, args: Vec<Value>) -> Result<Value> {
        let command = CustomCommand::new_static(name, ClusterHash::Custom(keys::slot(key)), false);
        self.client.custom(command, args).await.map_err(|e| Error::redis(name, key, e))
    }
}

/// A sorted-set score (Unix ms) as Redis sends it: an integer, or text.
fn score_ms(score: Value) -> u64 {
    match score {
        Value::Double(f) => f.max(0.0) as u64,
        other => value_bytes(other)
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<f64>().ok())
            .map_or(0, |f| f.max(0.0) as u64),
    }
}
