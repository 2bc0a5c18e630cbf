//! Idempotency: publishing a fact once ([`PublishOptions::idempotency_key`]) and handling it
//! once per group ([`ConsumerOptions::dedupe`]).
//!
//! - **Idempotent publish**: a script GETs [`keys::published`]`(stream, key)`; when it holds
//!   an id, that id is the reply and nothing is written; otherwise it XADDs the entry (with
//!   the header [`IDEMPOTENCY_KEY_HEADER`]) and SETs the record to the new id, expiring when
//!   the window ends (`PX`). Both keys are in the stream's hash slot.
//! - **Idempotent consume**: a group records the keys it handled successfully (the
//!   `idempotency-key` header, else the entry id) in the sorted set [`keys::handled`], each
//!   scored by the end of its window, in the same script as the XACK ([`ack_and_record`]);
//!   before running a batch of entries, one script ([`handled_among`]) tells which of their
//!   keys are recorded and not expired. The consumer loop's side (in-flight duplicates in one
//!   process, counting) lives in the worker.
//!
//! Why not `XADD ... IDMP` (Redis 8.6): its window is the stream's (`XCFGSET IDMP-DURATION`,
//! at most 86,400 s, 100 s unless configured), not the publish's; each producer id keeps at
//! most 10,000 keys (100 unless configured), evicting the oldest before their window ends;
//! and `XCFGSET` clears every map of the stream. A publish can neither know nor ensure that
//! the stream's settings keep its promise, so streamx keeps the script on every server (see
//! the README's "Idempotency").
//!
//! [`PublishOptions::idempotency_key`]: crate::PublishOptions::idempotency_key
//! [`ConsumerOptions::dedupe`]: crate::ConsumerOptions::dedupe
//! [`keys::published`]: crate::keys::published
//! [`keys::handled`]: crate::keys::handled

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::Client;
use fred::types::scripts::Script;
use fred::types::Value;

use crate::message::{Headers, MessageId};
use crate::scripts::{assemble, NOW_MS};
use crate::wire::{value_bytes, DATA_FIELD, HEADER_PREFIX};

/// The header an idempotent publish writes its key to, and the header a
/// [`dedupe`](crate::ConsumerOptions::dedupe) consumer reads the key of a message from (an
/// entry without it is known by its id). Any producer may set it: a webhook receiver that
/// publishes the provider's event id under this header gets duplicates deduplicated by the
/// consumers, whether or not it publishes idempotently.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// How long an idempotent publish is remembered unless
/// [`idempotency_window`](crate::PublishOptions::idempotency_window) says otherwise: 24 hours.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// The window in whole milliseconds, at least 1 (`PX 0` is refused by Redis).
pub(crate) fn window_ms(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The idempotent publish. KEYS: stream, its `published` record. ARGV: window ms,
/// NOMKSTREAM (`1`/`0`), `MAXLEN ~` (0: none), the id (`*` or explicit), then the entry's
/// fields and values. Replies `{1, id}` when it wrote the entry, `{0, id}` when the record
/// held the id of an earlier one (nothing written), `{2}` when NOMKSTREAM found no stream.
///
/// If the process dies before the script, nothing is written; the script is atomic, so the
/// entry and its record are written together or not at all (the GET comes first and the XADD
/// is the first write: an XADD refused, e.g. an explicit id not above the stream's last, fails
/// the script having written nothing). If it dies after, the publish is done; the caller's
/// retry with the same key gets the same id back. A script fred re-sends after a reconnect
/// finds the record its first run wrote and replies with the same id: the re-send that
/// duplicates a plain XADD is harmless here.
///
/// The XADD's arguments go through Lua's `unpack`, which takes about 8,000 values: an
/// idempotent publish with more than about 3,000 headers fails with the script's error
/// (`Error::Redis`), having written nothing (the error comes before the XADD).
static PUBLISH_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
-- KEYS: stream, published record
-- ARGV: window ms, nomkstream, maxlen, id, field, value, ...
local known = redis.call('GET', KEYS[2])
if known then return {0, known} end
local args = {'XADD', KEYS[1]}
if ARGV[2] == '1' then table.insert(args, 'NOMKSTREAM') end
if ARGV[3] ~= '0' then
  table.insert(args, 'MAXLEN'); table.insert(args, '~'); table.insert(args, ARGV[3])
end
table.insert(args, ARGV[4])
for i = 5, #ARGV do table.insert(args, ARGV[i]) end
local id = redis.call(unpack(args))
if not id then return {2} end
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {1, id}
"#,
    )
});

/// What [`publish_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    /// The entry was written with this id.
    Added(MessageId),
    /// An earlier publish with the key, within its window, wrote this entry; nothing was
    /// written now.
    Known(MessageId),
    /// NOMKSTREAM, and the stream does not exist: nothing was written.
    NoStream,
}

/// Runs the idempotent publish (see [`PUBLISH_ONCE`]); the fields are `data` and `headers`
/// (which carry the key, see [`IDEMPOTENCY_KEY_HEADER`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn publish_once(
    client: &Client,
    stream: &str,
    record: String,
    window: Duration,
    no_mkstream: bool,
    max_len: Option<u64>,
    id: Option<MessageId>,
    data: Bytes,
    headers: &Headers,
) -> Result<Published, fred::error::Error> {
    let mut args: Vec<Value> = Vec::with_capacity(6 + 2 * headers.len());
    args.push(Value::from(window_ms(window).to_string()));
    args.push(Value::from_static_str(if no_mkstream { "1" } else { "0" }));
    args.push(Value::from(max_len.unwrap_or(0).to_string()));
    args.push(Value::from(id.map_or_else(|| "*".to_string(), |id| id.to_string())));
    args.push(Value::from_static_str(DATA_FIELD));
    args.push(Value::Bytes(data));
    for (name, value) in headers.iter() {
        args.push(Value::from(format!("{HEADER_PREFIX}{name}")));
        args.push(Value::from(value));
    }
    let reply: Value = PUBLISH_ONCE.evalsha_with_reload(client, vec![stream.to_string(), record], args).await?;
    let mut parts = reply.into_array().into_iter();
    let status = parts.next().and_then(|v| v.as_u64());
    let id = parts.next().and_then(value_bytes).and_then(|b| MessageId::parse_bytes(&b));
    match (status, id) {
        (Some(1), Some(id)) => Ok(Published::Added(id)),
        (Some(0), Some(id)) => Ok(Published::Known(id)),
        (Some(2), _) => Ok(Published::NoStream),
        _ => Err(fred::error::Error::new(
            fred::error::ErrorKind::Parse,
            "the idempotent publish script replied with something unexpected",
        )),
    }
}

/// Which keys a group handled lately. KEYS: the group's `handled` set. ARGV: the keys.
/// Replies with the 1-based positions of the keys recorded with a window that has not ended
/// (scores against the Redis clock, the clock [`ACK_AND_RECORD`] scored them with).
///
/// Reads only: dying before, during or after it changes nothing, and a re-send reads again.
pub(crate) static HANDLED_AMONG: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS],
        r#"
-- KEYS: handled; ARGV: keys
local now = now_ms()
local out = {}
for from = 1, #ARGV, 1000 do
  local args = {'ZMSCORE', KEYS[1]}
  for i = from, math.min(from + 999, #ARGV) do table.insert(args, ARGV[i]) end
  local scores = redis.call(unpack(args))
  for i, score in ipairs(scores) do
    if score and tonumber(score) > now then table.insert(out, from + i - 1) end
  end
end
return out
"#,
    )
});

/// The positions (0-based) of those of `keys` that `handled` records as handled within their
/// window (see [`HANDLED_AMONG`]).
pub(crate) async fn handled_among(
    client: &Client,
    handled: &str,
    keys: Vec<Bytes>,
) -> Result<Vec<usize>, fred::error::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let args: Vec<Value> = keys.into_iter().map(Value::Bytes).collect();
    let reply: Value = HANDLED_AMONG.evalsha_with_reload(client, vec![handled.to_string()], args).await?;
    Ok(reply.into_array().into_iter().filter_map(|v| v.as_u64()).filter_map(|n| (n as usize).checked_sub(1)).collect())
}

/// The acknowledgement of a dedupe consumer. KEYS: stream, the group's `handled` set. ARGV:
/// group, window ms, delete-when-acked-by-all (`1`: `XACKDEL ... ACKED`, Redis 8.2; `0`:
/// `XACK`), then `id, key` pairs: a key records the id's message as handled (scored by the
/// end of its window), an empty key acknowledges only (a message acknowledged without
/// running, or dropped). Trims expired keys, at most `2 × recorded + 100` per call: the
/// work per call stays bounded and, as every key expires once, the trim keeps up. The set
/// itself expires when the last window recorded in it ends (`PEXPIRE`, only ever extended),
/// so a group that stopped for good leaves nothing behind. Replies with the number of ids
/// acknowledged.
///
/// The keys are written first and the XACK last (the destructive step), in one atomic
/// script: a message is never acknowledged without its record nor recorded without its
/// acknowledgement. If the process dies before the script, the messages stay pending and are
/// redelivered (their handlers ran: at-least-once). If it dies after, the ack is done. A
/// re-sent script (fred after a reconnect, or the acker's retry after a lost reply) writes
/// the same keys again (a later window end, by the retry's delay) and acknowledges nothing
/// new.
pub(crate) static ACK_AND_RECORD: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS],
        r#"
-- KEYS: stream, handled; ARGV: group, window ms, delete flag, id, key, id, key, ...
local stream, handled = KEYS[1], KEYS[2]
local group, window, delete = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local now = now_ms()
local ids, record = {}, {}
for i = 4, #ARGV, 2 do
  table.insert(ids, ARGV[i])
  if ARGV[i + 1] ~= '' then
    table.insert(record, now + window); table.insert(record, ARGV[i + 1])
  end
end
for from = 1, #record, 1000 do
  local args = {'ZADD', handled}
  for i = from, math.min(from + 999, #record) do table.insert(args, record[i]) end
  redis.call(unpack(args))
end
-- The set expires when the last window recorded in it ends (never shortened: a member with
-- a longer window keeps its keys), so a group whose consumers stopped for good leaves nothing.
if #record > 0 and redis.call('PTTL', handled) < window then redis.call('PEXPIRE', handled, window) end
local expired = redis.call('ZRANGEBYSCORE', handled, '-inf', now, 'LIMIT', 0, #record + 100)
for from = 1, #expired, 1000 do
  local args = {'ZREM', handled}
  for i = from, math.min(from + 999, #expired) do table.insert(args, expired[i]) end
  redis.call(unpack(args))
end
-- XACKDEL is named by concatenation: the start-up permission check reads the commands of
-- the engine's scripts from their text and would demand it on servers without it (7.0,
-- 8.0, Valkey 8), where `ACL SETUSER +xackdel` fails. The flag is 1 only in work-queue
-- mode on a server with XACKDEL; a user refused it falls back to 0 (`worker::dedupe::ack`).
local xackdel = 'XACK' .. 'DEL'
local acked = 0
for from = 1, #ids, 1000 do
  local page = {}
  for i = from, math.min(from + 999, #ids) do table.insert(page, ids[i]) end
  if delete then
    for _, r in ipairs(redis.call(xackdel, stream, group, 'ACKED', 'IDS', #page, unpack(page))) do
      if r ~= -1 then acked = acked + 1 end
    end
  else
    acked = acked + redis.call('XACK', stream, group, unpack(page))
  end
end
return acked
"#,
    )
});

/// Acknowledges `ids` of `group` on `stream` and records as handled those with a key (see
/// [`ACK_AND_RECORD`]); `delete` deletes each entry once every group has acknowledged it
/// (`XACKDEL ... ACKED`, Redis 8.2+; the work-queue mode passes it, others `false`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ack_and_record(
    client: &Client,
    stream: &str,
    group: &str,
    handled: &str,
    window: Duration,
    delete: bool,
    ids: &[MessageId],
    keys: Vec<Option<Bytes>>,
) -> Result<u64, fred::error::Error> {
    let mut args: Vec<Value> = Vec::with_capacity(3 + 2 * ids.len());
    args.push(Value::from(group));
    args.push(Value::from(window_ms(window).to_string()));
    args.push(Value::from_static_str(if delete { "1" } else { "0" }));
    for (id, key) in crate::message::id_args(ids).into_iter().zip(keys) {
        args.push(id);
        args.push(key.map_or_else(|| Value::from_static_str(""), Value::Bytes));
    }
    ACK_AND_RECORD.evalsha_with_reload(client, vec![stream.to_string(), handled.to_string()], args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_whole_milliseconds_and_never_zero() {
        assert_eq!(window_ms(Duration::ZERO), 1);
        assert_eq!(window_ms(Duration::from_micros(1500)), 1);
        assert_eq!(window_ms(DEFAULT_IDEMPOTENCY_WINDOW), 86_400_000);
    }
}
