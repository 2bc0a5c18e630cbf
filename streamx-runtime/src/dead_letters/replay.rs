//! Replaying dead letters to the group that gave up on them, and to no other.
//!
//! A dead letter names its origin stream, the entry's id there and its group. Replaying it:
//! - **The entry is still in the stream** (the usual case): it goes back into that group's
//!   pending list, under the retry schedule's placeholder consumer and due now
//!   (`XCLAIM ... FORCE JUSTID RETRYCOUNT 0`, then the group's running consumers promote it
//!   as any due retry). Same id, same fields; its attempts count from 1 again. The stream
//!   does not grow, and the other groups, which read the entry long ago, see nothing.
//! - **The entry is pending in the group already, or not read by it yet** (its position was
//!   reset): it will be delivered anyway; the letter is only removed.
//! - **The entry was trimmed or deleted**: the letter's fields are published again as a new
//!   entry with the header `streamx-replayed-from: <dead-letter id>` and the field
//!   `streamx:replay-group: <group>`. The consumers of every other group acknowledge it
//!   without running their handler (see [`REPLAY_GROUP_FIELD`]): a field, not a header, so
//!   a handler forwarding the headers it got never carries it to another stream.
//! - A letter with no group (written by hand) is published again for every group.
//!
//! **Never delivered twice.** When the dead-letter stream shares the origin stream's hash
//! slot (the default `{orders}:dlq` always does, and every key does on a standalone
//! server), one script checks that the letter is still there, re-delivers it and deletes it:
//! a crash before it changes nothing, after it both happened, and a second replay of the
//! same letter finds nothing. A custom dead-letter stream in another slot cannot be in that
//! script: the script then records the letter in the group's replay marks
//! ([`crate::keys::replay_marks`], kept a day) with the re-delivery, and the client deletes
//! the letter after it. A crash between the two leaves the letter and its mark; replaying it
//! again finds the mark, delivers nothing and deletes the letter.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use fred::interfaces::{ClientLike, StreamsInterface};
use fred::types::scripts::Script;
use fred::types::Value;

use super::{raw_entries, DeadLetter, DeadLetters, DLQ_FIELD_PREFIX, REPLAYED_FROM_HEADER};
use crate::error::{Error, Result};
use crate::keys::{self, KeyKind};
use crate::message::MessageId;
use crate::scripts::{assemble, IDS, NOW_MS};
use crate::wire::{value_bytes, HEADER_PREFIX, REPLAY_GROUP_FIELD};
use crate::worker::{SCHEDULED_CONSUMER, SUSPECTS_CONSUMER};

/// Letters replayed per script (each is a few commands; the re-published ones carry their
/// fields).
const PER_SCRIPT: usize = 100;

/// How long the replay marks of a custom dead-letter stream in another slot are kept.
const MARK_KEPT_MS: u64 = 24 * 60 * 60 * 1000;

/// Fields a letter re-published by the script may have: Lua's `unpack` fails at about 8,000
/// values.
const MOST_FIELDS: usize = 7_900;

/// What became of one dead letter asked to be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replayed {
    /// The original entry (this id) is back in the group's pending list, due now.
    Requeued(MessageId),
    /// The entry was gone from the stream: published again as this new entry, for the
    /// letter's group only.
    Republished(MessageId),
    /// The entry (this id) is pending in the group already, or not read by it yet: it will
    /// be delivered without a replay. The letter was removed.
    AlreadyDue(MessageId),
    /// The letter was gone: replayed or purged by someone else meanwhile (or it was
    /// asked twice in one call: the first is answered, the second is `Gone`).
    Gone,
    /// Not replayed, the letter is kept: a consumer of the group holds the entry (this id)
    /// now, still deciding its fate (it was read again after a reset, or is being
    /// dead-lettered again); replay the letter later if it is still wanted.
    Held(MessageId),
    /// Not replayed, the letter is kept: its group no longer exists on its stream (create
    /// the group again, or purge the letter).
    NoGroup,
}

impl Replayed {
    /// The id the group will get the message under; `None` when nothing was replayed.
    pub fn id(self) -> Option<MessageId> {
        match self {
            Replayed::Requeued(id) | Replayed::Republished(id) | Replayed::AlreadyDue(id) => Some(id),
            Replayed::Gone | Replayed::Held(_) | Replayed::NoGroup => None,
        }
    }

    /// Whether the letter was left in the dead-letter stream, not replayed
    /// ([`Held`](Self::Held), [`NoGroup`](Self::NoGroup)).
    pub fn kept(self) -> bool {
        matches!(self, Replayed::Held(_) | Replayed::NoGroup)
    }
}

/// Replays letters of one origin stream and group (see the module docs).
///
/// Per letter, an answer `{letter id, outcome, id}`: `requeued`, `due`, `held`, `republished`,
/// `gone`, `marked` (replayed before: the client deletes the letter), `need_fields` (the entry is gone, the dead-letter stream is not in this script:
/// call again with the letter's fields), or `wide` (too many fields to publish from Lua).
/// `nogroup` alone when the group does not exist. Writes, in order: the schedule, the claim
/// (or the new entry), then the mark or the deletion of the letter; a failure part-way leaves
/// at worst a schedule entry the promoter drops, never a letter gone undelivered.
static REPLAY_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS, IDS],
        r#"
-- KEYS: stream, schedule, take-over marks, replay marks, [dead-letter stream]
-- ARGV: group, scheduled consumer, dead-letter stream name, replayed-from field,
--       replay-group field, mark kept ms, most fields, suspects consumer,
--       then per letter: letter id, origin id or '', field count or -1, fields...
local dlq = KEYS[5]
local group = ARGV[1]
local now = now_ms()
local last_delivered = nil
if group ~= '' then
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
  if not ok then return 'nogroup' end
  for _, g in ipairs(groups) do
    local name, last = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then last_delivered = last end
  end
  if not last_delivered then return 'nogroup' end
end
if not dlq then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[6])) end
local skip = {[ARGV[4]] = true, [ARGV[5]] = true}
local function republish(letter, fields)
  local out = {}
  for i = 1, #fields, 2 do
    local k = fields[i]
    if string.sub(k, 1, 4) ~= 'dlq:' and not skip[k] then
      table.insert(out, k); table.insert(out, fields[i + 1])
    end
  end
  if #out > tonumber(ARGV[7]) then return nil end
  table.insert(out, ARGV[4]); table.insert(out, letter)
  if group ~= '' then table.insert(out, ARGV[5]); table.insert(out, group) end
  return redis.call('XADD', KEYS[1], '*', unpack(out))
end
local answers = {}
local i = 9
while i <= #ARGV do
  local letter, origin, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local fields = nil
  if n >= 0 then
    fields = {}
    for j = 1, n do fields[j] = ARGV[i + 2 + j] end
    i = i + 3 + n
  else
    i = i + 3
  end
  local mark = ARGV[3] .. '\0' .. letter
  local found = nil
  if dlq then found = redis.call('XRANGE', dlq, letter, letter)[1] end
  local outcome, id = nil, ''
  if dlq and not found then
    outcome = 'gone'
  elseif not dlq and redis.call('ZSCORE', KEYS[4], mark) then
    outcome = 'marked'
  elseif group ~= '' and origin ~= '' and redis.call('XRANGE', KEYS[1], origin, origin)[1] then
    id = origin
    local holder = redis.call('XPENDING', KEYS[1], group, origin, origin, 1)[1]
    if holder and holder[2] ~= ARGV[2] and holder[2] ~= ARGV[8] then
      -- A consumer holds it (dead-lettering it again, or it was read again after a reset):
      -- its fate is that consumer's; the letter stays.
      outcome = 'held'
    elseif holder or id_less(last_delivered, origin) then
      outcome = 'due'
    else
      redis.call('ZADD', KEYS[2], now, origin)
      redis.call('XCLAIM', KEYS[1], group, ARGV[2], 0, origin, 'FORCE', 'JUSTID', 'RETRYCOUNT', 0)
      redis.call('SREM', KEYS[3], origin, 'i:' .. origin, 'c:' .. origin)
      outcome = 'requeued'
    end
  else
    if not fields and found then fields = found[2] end
    if not fields then
      outcome = 'need_fields'
    else
      id = republish(letter, fields)
      if id then outcome = 'republished' else outcome = 'wide'; id = '' end
    end
  end
  if outcome == 'requeued' or outcome == 'due' or outcome == 'republished' then
    if dlq then redis.call('XDEL', dlq, letter) else redis.call('ZADD', KEYS[4], now, mark) end
  end
  table.insert(answers, {letter, outcome, id})
end
return answers
"#,
    )
});

/// One letter in a call of the script: its id, origin id, and its fields when sent.
struct Asked<'a> {
    letter: &'a DeadLetter,
    fields: Option<Vec<(bytes::Bytes, bytes::Bytes)>>,
}

impl DeadLetters {
    /// Replays `letters` (as [listed](Self::list)), each to the group that gave up on it and
    /// no other (see [`Replayed`] and the module docs of `dead_letters::replay`). Returns one
    /// outcome per letter, in order. A letter is never delivered twice, however often it is
    /// replayed, and an interrupted call leaves each letter replayed or still here.
    ///
    /// A letter that cannot be replayed now is kept and answered [`Replayed::Held`] or
    /// [`Replayed::NoGroup`]; the others are replayed. Fails when a letter whose entry was
    /// trimmed has too many fields to publish again from a script (more than 7,900).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), streamx_runtime::Error> {
    /// use streamx_runtime::dead_letters::Replayed;
    /// use streamx_runtime::DeadLetters;
    /// let dlq = DeadLetters::connect("redis://127.0.0.1:6379", "{orders}:dlq").await?;
    /// let page = dlq.list(None, 10).await?;
    /// for (letter, outcome) in page.entries.iter().zip(dlq.replay_letters(&page.entries).await?) {
    ///     match outcome {
    ///         Replayed::Requeued(id) => println!("{} back in {}'s queue as {id}", letter.id, letter.group),
    ///         other => println!("{}: {other:?}", letter.id),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn replay_letters(&self, letters: &[DeadLetter]) -> Result<Vec<Replayed>> {
        let mut outcomes: HashMap<MessageId, Replayed> = HashMap::with_capacity(letters.len());
        // A letter asked twice is replayed (and answered) once.
        let mut seen = HashSet::with_capacity(letters.len());
        let unique: Vec<&DeadLetter> = letters.iter().filter(|l| seen.insert(l.id)).collect();
        // Consecutive letters of one origin and group go in one script, at most PER_SCRIPT.
        let mut start = 0;
        while start < unique.len() {
            let first = unique[start];
            let end = unique[start..]
                .iter()
                .take(PER_SCRIPT)
                .position(|l| l.origin_stream != first.origin_stream || l.group != first.group)
                .map_or((start + PER_SCRIPT).min(unique.len()), |n| start + n);
            let asked: Vec<Asked> = unique[start..end].iter().map(|&letter| Asked { letter, fields: None }).collect();
            self.replay_run(&first.origin_stream, &first.group, asked, &mut outcomes).await?;
            start = end;
        }
        Ok(letters.iter().map(|l| outcomes.remove(&l.id).unwrap_or(Replayed::Gone)).collect())
    }

    /// One script for letters of `origin` and `group`; a second one with the fields of the
    /// letters whose entries are gone, when the dead-letter stream is not in the script.
    async fn replay_run(
        &self,
        origin: &str,
        group: &str,
        asked: Vec<Asked<'_>>,
        outcomes: &mut HashMap<MessageId, Replayed>,
    ) -> Result<()> {
        if origin.is_empty() {
            let id = asked.first().map(|a| a.letter.id.to_string()).unwrap_or_default();
            return Err(Error::Replay {
                dlq: self.stream.clone(),
                letter: id,
                reason: "it names no origin stream (dlq:stream)".to_string(),
            });
        }
        let dlq_in_script = !self.client.is_clustered() || keys::slot(&self.stream) == keys::slot(origin);
        let mut keys = vec![
            origin.to_string(),
            keys::derived_key(origin, KeyKind::RetrySchedule(group)),
            keys::derived_key(origin, KeyKind::TakeoverMarks(group)),
            keys::replay_marks(origin, group),
        ];
        let asked = if dlq_in_script {
            keys.push(self.stream.clone());
            asked
        } else {
            // The script cannot see the letters: those deleted since they were listed (a
            // purge by someone else) are not replayed from the caller's copy. (One deleted
            // between this read and the script still is: the marks stop only a second
            // delivery.)
            self.still_here(asked, outcomes).await?
        };
        if asked.is_empty() {
            return Ok(());
        }
        let mut args: Vec<Value> = vec![
            group.into(),
            SCHEDULED_CONSUMER.into(),
            self.stream.as_str().into(),
            format!("{HEADER_PREFIX}{REPLAYED_FROM_HEADER}").into(),
            REPLAY_GROUP_FIELD.into(),
            MARK_KEPT_MS.to_string().into(),
            MOST_FIELDS.to_string().into(),
            SUSPECTS_CONSUMER.into(),
        ];
        for a in &asked {
            args.push(a.letter.id.to_string().into());
            args.push(a.letter.origin_id.map(|id| id.to_string()).unwrap_or_default().into());
            match &a.fields {
                None => args.push("-1".into()),
                Some(fields) => {
                    args.push((fields.len() * 2).to_string().into());
                    for (k, v) in fields {
                        args.push(Value::Bytes(k.clone()));
                        args.push(Value::Bytes(v.clone()));
                    }
                }
            }
        }
        let reply: Value = REPLAY_SCRIPT
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(|e| Error::redis("EVALSHA (dead-letter replay)", origin, e))?;
        if reply.as_str().is_some_and(|s| s == "nogroup") {
            outcomes.extend(asked.iter().map(|a| (a.letter.id, Replayed::NoGroup)));
            return Ok(());
        }
        let mut needing = Vec::new();
        let mut deleted = Vec::new();
        for answer in reply.into_array() {
            let mut parts = answer.into_array().into_iter().map(|v| value_bytes(v).unwrap_or_default());
            let (Some(letter), Some(outcome), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Some(letter) = MessageId::parse_bytes(&letter) else { continue };
            let id = MessageId::parse_bytes(&id);
            let replayed = match (&outcome[..], id) {
                (b"requeued", Some(id)) => Replayed::Requeued(id),
                (b"republished", Some(id)) => Replayed::Republished(id),
                (b"due", Some(id)) => Replayed::AlreadyDue(id),
                (b"held", Some(id)) => Replayed::Held(id),
                (b"need_fields", _) => {
                    needing.push(letter);
                    continue;
                }
                (b"wide", _) => {
                    let reason = format!("its entry is gone from `{origin}` and it has over {MOST_FIELDS} fields");
                    return Err(Error::Replay { dlq: self.stream.clone(), letter: letter.to_string(), reason });
                }
                (b"marked", _) => {
                    deleted.push(letter.to_string());
                    Replayed::Gone
                }
                _ => Replayed::Gone,
            };
            if replayed.id().is_some() {
                crate::observe::dead_letter_replayed(origin);
                if !dlq_in_script {
                    deleted.push(letter.to_string());
                }
            }
            outcomes.insert(letter, replayed);
        }
        if !deleted.is_empty() {
            // The marks written with the re-delivery make this step safe to lose.
            let _: u64 =
                self.client.xdel(&self.stream, deleted).await.map_err(|e| Error::redis("XDEL", &self.stream, e))?;
        }
        if needing.is_empty() {
            return Ok(());
        }
        let mut with_fields = Vec::with_capacity(needing.len());
        for a in asked.into_iter().filter(|a| needing.contains(&a.letter.id)) {
            match self.raw_letter(a.letter.id).await? {
                Some(fields) => with_fields.push(Asked { letter: a.letter, fields: Some(fields) }),
                None => {
                    outcomes.insert(a.letter.id, Replayed::Gone);
                }
            }
        }
        if with_fields.is_empty() {
            return Ok(());
        }
        Box::pin(self.replay_run(origin, group, with_fields, outcomes)).await
    }

    /// The letters of `asked` still in the dead-letter stream; the others are answered
    /// [`Replayed::Gone`].
    async fn still_here<'a>(
        &self,
        asked: Vec<Asked<'a>>,
        outcomes: &mut HashMap<MessageId, Replayed>,
    ) -> Result<Vec<Asked<'a>>> {
        let checks = asked.iter().map(|a| async move {
            let id = a.letter.id.to_string();
            let reply: Value = self
                .client
                .xrange(&self.stream, id.as_str(), id.as_str(), Some(1))
                .await
                .map_err(|e| Error::redis("XRANGE", &self.stream, e))?;
            Ok::<bool, Error>(!raw_entries(reply).is_empty())
        });
        let present = futures_util::future::try_join_all(checks).await?;
        let mut kept = Vec::with_capacity(asked.len());
        for (a, here) in asked.into_iter().zip(present) {
            if here {
                kept.push(a);
            } else {
                outcomes.insert(a.letter.id, Replayed::Gone);
            }
        }
        Ok(kept)
    }

    /// Every field of one letter but those the dead-lettering added.
    async fn raw_letter(&self, id: MessageId) -> Result<Option<Vec<(bytes::Bytes, bytes::Bytes)>>> {
        let reply: Value = self
            .client
            .xrange(&self.stream, id.to_string(), id.to_string(), Some(1))
            .await
            .map_err(|e| Error::redis("XRANGE", &self.stream, e))?;
        Ok(raw_entries(reply).into_iter().next().map(|(_, fields)| {
            fields.into_iter().filter(|(k, _)| !k.starts_with(DLQ_FIELD_PREFIX.as_bytes())).collect()
        }))
    }
}
