//! Lua fragments shared by the engine's scripts, and how a script is assembled from them.
//!
//! Every script runs atomically, but Redis does not roll back what a script already wrote
//! when a later command in it fails. Each script therefore checks first (ownership,
//! existence), writes what must not be lost next (a dead letter, a schedule entry), and does
//! the destructive step (XACK, handing an entry to another consumer) last.

use fred::types::scripts::Script;
use fred::types::Value;

/// `now_ms()`: the Redis server's clock in Unix milliseconds. Every time the engine compares
/// (heartbeats, retry due times) comes from this one clock, so client clocks may drift.
pub(crate) const NOW_MS: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// `dead_letter_add(dlq, cap, fields)`: every dead letter is written by this function (or,
/// for an entry too wide for Lua, by the client followed by the same trim): XADD `fields`
/// to `dlq`, then trim it to about `cap` entries (`XTRIM MAXLEN ~`, whole stream nodes only;
/// `cap` 0: unbounded). Returns the new id; what the trim removed is added to
/// `dlq_trimmed`, which a script returns with its result (see [`split_trimmed`]).
pub(crate) const DEAD_LETTER_ADD: &str = r#"
local dlq_trimmed = 0
local function dead_letter_add(dlq, cap, fields)
  local id = redis.call('XADD', dlq, '*', unpack(fields))
  if cap > 0 then
    dlq_trimmed = dlq_trimmed + redis.call('XTRIM', dlq, 'MAXLEN', '~', cap)
  end
  return id
end
"#;

/// `dead_letter_trimmed(stream, dlq, cap, group, id, owner, deliveries, now)` (needs
/// [`DEAD_LETTER_ADD`] before it): an entry deleted from the stream (trimmed or XDEL) while
/// it was pending becomes a dead letter of kind `trimmed` (no payload is left to copy), then
/// leaves the PEL. `dlq` is `false` when dead letters are off (the entry is only
/// acknowledged). The dead letter is written before the XACK: a failed XADD leaves the entry
/// pending.
pub(crate) const DEAD_LETTER_TRIMMED: &str = r#"
local function dead_letter_trimmed(stream, dlq, cap, group, id, owner, deliveries, now)
  if dlq then
    dead_letter_add(dlq, cap, {'dlq:stream', stream, 'dlq:id', id, 'dlq:group', group,
      'dlq:consumer', owner, 'dlq:deliveries', deliveries, 'dlq:kind', 'trimmed',
      'dlq:error', 'the entry was deleted from the stream (trimmed or XDEL) while it was pending',
      'dlq:at', now})
  end
  redis.call('XACK', stream, group, id)
end
"#;

/// `claim_by_count(stream, group, consumer, by_count)`: gives the entries of `by_count` (a
/// table from a delivery count to the ids to set it on) to `consumer`, in one
/// `XCLAIM ... JUSTID RETRYCOUNT n` per count and page of 1,000 ids: the count is
/// set, not incremented, so a re-sent script cannot count twice, and one XCLAIM of many ids
/// costs Redis half what one per id does. Returns the ids XCLAIM answered with: an id whose
/// entry was deleted from the stream is not claimed but dropped from the PEL by XCLAIM
/// (Redis 7.0+), so a caller that did not check existence first learns of it here.
pub(crate) const CLAIM_BY_COUNT: &str = r#"
local function claim_by_count(stream, group, consumer, by_count)
  local all = {}
  for n, ids in pairs(by_count) do
    for from = 1, #ids, 1000 do
      -- (`unpack` must come last in an argument list, or Lua keeps only its first value.)
      local args = {'XCLAIM', stream, group, consumer, 0}
      for i = from, math.min(from + 999, #ids) do table.insert(args, ids[i]) end
      table.insert(args, 'JUSTID'); table.insert(args, 'RETRYCOUNT'); table.insert(args, n)
      for _, id in ipairs(redis.call(unpack(args))) do table.insert(all, id) end
    end
  end
  return all
end
"#;

/// `redis_paused(deadlines, now, stale)`: whether no member may be judged stopped now,
/// because Redis itself stood still (an `appendfsync always` write on a busy disk, a
/// restart, a machine stall) within the last `stale` ms. Every heartbeat and every
/// take-over script of the group writes its time as the score of `streamx:clock` in the
/// deadlines set; one that finds that time more than `stale / 2` old records
/// `streamx:paused`, `stale` later. (Take-over ticks come every `claim_idle / 4`, at most a
/// second apart, so a live group never leaves such a gap; a stall shorter than it cannot
/// push a live member, which beats every `claim_idle / 3`, past its deadline.) During a stall every member's heartbeats are held up alike, so every deadline
/// looks past when Redis resumes; judging nobody until the paused time lets the
/// heartbeats queued behind the stall land first. (A group whose last member stopped long
/// ago pauses its next member's first judgement by `stale`.)
pub(crate) const REDIS_PAUSED: &str = r#"
local function redis_paused(deadlines, now, stale)
  local last = redis.call('ZSCORE', deadlines, 'streamx:clock')
  redis.call('ZADD', deadlines, now, 'streamx:clock')
  if last and now - tonumber(last) > stale / 2 then
    redis.call('ZADD', deadlines, now + stale, 'streamx:paused')
    return true
  end
  local paused = redis.call('ZSCORE', deadlines, 'streamx:paused')
  return paused ~= false and now < tonumber(paused)
end
"#;

/// `id_less(a, b)` and `next_id(id)` (the smallest id after `id`) on stream ids as decimal
/// strings (`<ms>-<seq>`, no leading zeros): never as Lua numbers, which lose the low bits of
/// ids above 2^53.
pub(crate) const IDS: &str = r#"
local function num_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function id_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then return num_less(am, bm) end
  return num_less(as, bs)
end
local function inc(s)
  local i = #s
  while i > 0 do
    local d = string.byte(s, i) - 48
    if d < 9 then return string.sub(s, 1, i - 1) .. string.char(49 + d) .. string.rep('0', #s - i) end
    i = i - 1
  end
  return '1' .. string.rep('0', #s)
end
local function next_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if seq == '18446744073709551615' then return inc(ms) .. '-0' end
  return ms .. '-' .. inc(seq)
end
"#;

/// `paged(command, key, values)`: `command key v1 v2 ...` over `values` in pages of 1,000
/// (Lua's `unpack` takes at most ~8,000 values: every list a script builds from Redis state
/// or from its arguments goes through here). `values` of `ZADD` are score/member pairs: a
/// page of 1,000 never splits one.
pub(crate) const PAGED: &str = r#"
local function paged(command, key, values)
  for from = 1, #values, 1000 do
    local args = {command, key}
    for i = from, math.min(from + 999, #values) do table.insert(args, values[i]) end
    redis.call(unpack(args))
  end
end
"#;

/// `consumers(stream, group)`: the group's consumers from `XINFO CONSUMERS` as
/// `{name, pending, idle}` tables (idle: ms since the consumer's last command).
pub(crate) const CONSUMERS: &str = r#"
local function consumers(stream, group)
  local out = {}
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
    local row = {}
    for i = 1, #c, 2 do row[c[i]] = c[i + 1] end
    table.insert(out, {name = row['name'], pending = row['pending'], idle = row['idle']})
  end
  return out
end
"#;

/// A script's `{result, dlq_trimmed}` reply (scripts that may write dead letters return
/// what [`DEAD_LETTER_ADD`] trimmed beside their result): the result, and the count.
pub(crate) fn split_trimmed(reply: Value) -> (Value, u64) {
    let mut parts = reply.into_array().into_iter();
    let result = parts.next().unwrap_or(Value::Null);
    let trimmed = parts.next().and_then(|v| v.as_u64()).unwrap_or(0);
    (result, trimmed)
}

/// The `cap` argument of [`DEAD_LETTER_ADD`]: the dead-letter stream's length cap, 0 for
/// none.
pub(crate) fn cap_arg(cap: Option<u64>) -> String {
    cap.unwrap_or(0).to_string()
}

/// A script made of shared fragments followed by its body.
pub(crate) fn assemble(fragments: &[&str], body: &str) -> Script {
    let mut text = fragments.concat();
    text.push_str(body);
    Script::from_lua(text)
}
