//! Deleting a drained topic: the procedure to change a topic's shard count is to drain it,
//! delete it, and create it again with the new count.

use std::sync::LazyLock;

use fred::clients::Client;
use fred::interfaces::{KeysInterface, SetsInterface};
use fred::types::scripts::Script;
use fred::types::Value;

use crate::error::{Error, Result};
use crate::keys::{derived_key, shard_lease, topic_record, KeyKind, STREAM_NAMES, TOPIC_NAMES};
use crate::topic::TopicLayout;

/// Deletes one shard of a topic if it is drained, in one script (all its keys share the
/// shard's slot). Drained means: the groups are exactly those the caller listed (`ARGV`),
/// each has read every entry (lag 0; when Redis cannot tell, its last delivered id is the
/// stream's last id) and holds none pending (scheduled retries are pending entries, so none
/// is scheduled either); no delayed message waits for the shard; the shard's dead-letter
/// stream is empty; and no process holds a shard lease (no consumer runs on it). Then it
/// deletes the shard's stream (with its groups) and every key streamx derived from it, except
/// the shard epochs: kept so that a process of the old topic never holds an epoch the new
/// topic hands out again.
///
/// A crash before the script deletes nothing; the script runs whole or not at all, so a
/// shard is either left as it was or fully deleted; a crash after it leaves the other shards
/// and the topic's record for the next attempt (the record is deleted last, see
/// [`TopicAdmin::delete_drained`]). Re-sent after a reconnect, the script finds the shard
/// gone (an empty, drained shard) and deletes nothing more.
///
/// KEYS: stream, scheduled, dlq, then per group its leases (`ARGV` order), then the other
/// keys to delete. ARGV: the group names.
/// Returns `ok`, or the reason it is not drained.
static DELETE_SHARD: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local stream = KEYS[1]
local groups = {}
if redis.call('EXISTS', stream) == 1 then
  local info = redis.call('XINFO', 'STREAM', stream)
  local last
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    groups[f['name']] = true
    if tonumber(f['pending']) > 0 then
      return 'group ' .. f['name'] .. ' has ' .. f['pending'] .. ' pending entries'
    end
    local lag = f['lag']
    if lag == nil or lag == false then
      if f['last-delivered-id'] ~= last then return 'group ' .. f['name'] .. ' has unread entries' end
    elseif tonumber(lag) > 0 then
      return 'group ' .. f['name'] .. ' has ' .. lag .. ' unread entries'
    end
  end
end
for i = 1, #ARGV do
  if redis.call('EXISTS', stream) == 1 and not groups[ARGV[i]] then return 'the groups changed' end
  groups[ARGV[i]] = nil
end
if next(groups) ~= nil then return 'the groups changed' end
if redis.call('ZCARD', KEYS[2]) > 0 then return 'delayed messages wait for it' end
if redis.call('XLEN', KEYS[3]) > 0 then return 'its dead-letter stream is not empty' end
for i = 1, #ARGV do
  if redis.call('EXISTS', KEYS[3 + i]) == 1 then return 'a consumer of group ' .. ARGV[i] .. ' holds its lease' end
end
for i = 1, #KEYS do
  redis.call('DEL', KEYS[i])
end
return 'ok'
"#,
    )
});

/// What [`TopicAdmin::delete_drained`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDeleted {
    /// The topic as it was recorded.
    pub layout: TopicLayout,
    /// The keys deleted (shard streams and their derived keys, the record); keys that did
    /// not exist count too.
    pub keys: usize,
}

/// Topic administration: delete a drained topic (to change its shard count: drain, delete,
/// create again).
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// use streamx_runtime::admin::TopicAdmin;
/// // Stop the producers, let the consumers drain every shard, stop them, then:
/// let deleted = TopicAdmin::connect("redis://127.0.0.1:6379").await?.delete_drained("orders").await?;
/// println!("deleted {} of {} shards", deleted.layout.name(), deleted.layout.shards());
/// // Now create it again with the new count (a consumer's start or `Producer::topic` does).
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TopicAdmin {
    client: Client,
}

impl TopicAdmin {
    /// Uses an existing client.
    pub fn new(client: Client) -> Self {
        TopicAdmin { client }
    }

    /// Connects to `url` (see [`RedisUrl::parse`](crate::RedisUrl::parse); TLS files from
    /// the environment as for [`Inspector::connect`](crate::Inspector::connect)).
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(TopicAdmin { client: crate::connection::tool_client(&crate::RedisUrl::parse(url)?).await? })
    }

    /// Deletes topic `name` if every shard is drained (see below): each shard's stream and
    /// the keys derived from it, then the topic's record and its entry in the registry of
    /// topics. Fails with [`Error::UnknownTopic`] when there is no such topic and with
    /// [`Error::TopicNotDrained`] naming the first shard that is not drained; the shards
    /// before it are deleted already (each was drained, and a deleted shard is drained), the
    /// record stays, so the topic keeps working with its count and the command can be run
    /// again once the rest is drained.
    ///
    /// A shard is drained when every group has read and acknowledged every entry, no retry
    /// or delayed message waits, its dead-letter stream is empty (replay or purge dead
    /// letters first) and no consumer holds its lease. Producers that still know the topic
    /// would publish to the deleted shards' names again: stop them first.
    pub async fn delete_drained(&self, name: &str) -> Result<TopicDeleted> {
        let Some(layout) = crate::topic::layout::lookup(&self.client, name).await? else {
            return Err(Error::UnknownTopic { topic: name.to_string() });
        };
        let mut deleted = 0;
        for index in 0..layout.shards() {
            deleted += self.delete_shard(&layout, index).await?;
            // The runtime registered the shard in the registry of stream names: forget it, or
            // the tools go on listing a deleted stream. Best effort, as the registering is
            // (a user without SREM on it leaves a stale name, which the tools show as empty).
            let shard = layout.shard_stream(index);
            if let Err(e) = self.client.srem::<i64, _, _>(STREAM_NAMES, shard).await {
                tracing::warn!(stream = %shard, error = %e, "cannot remove the shard from the registry of stream names");
            }
        }
        // The record last: until it goes, the topic keeps its count whatever happened above.
        let record = topic_record(name);
        let _: i64 = self.client.del(&record).await.map_err(|e| Error::redis("DEL", &record, e))?;
        let _: i64 = self.client.srem(TOPIC_NAMES, name).await.map_err(|e| Error::redis("SREM", TOPIC_NAMES, e))?;
        deleted += 1;
        Ok(TopicDeleted { layout, keys: deleted })
    }

    /// Deletes shard `index` if drained (see [`DELETE_SHARD`]); the keys it deleted.
    async fn delete_shard(&self, layout: &TopicLayout, index: u32) -> Result<usize> {
        let stream = layout.shard_stream(index).to_string();
        let groups: Vec<String> = crate::Inspector::with_client(self.client.clone())
            .groups(&stream)
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect();
        let mut keys =
            vec![stream.clone(), derived_key(&stream, KeyKind::Scheduled), derived_key(&stream, KeyKind::DeadLetters)];
        keys.extend(groups.iter().map(|g| shard_lease(&stream, g)));
        keys.extend([
            derived_key(&stream, KeyKind::ScheduledPayloads),
            derived_key(&stream, KeyKind::TrimLease),
            derived_key(&stream, KeyKind::PromoterLease),
        ]);
        for group in &groups {
            keys.extend(
                KeyKind::all(group)
                    .into_iter()
                    .filter(|kind| kind.group().is_some() && !matches!(kind, KeyKind::ShardEpoch(_)))
                    .map(|kind| derived_key(&stream, kind)),
            );
        }
        let count = keys.len();
        let reply: Value = DELETE_SHARD
            .evalsha_with_reload(&self.client, keys, groups)
            .await
            .map_err(|e| Error::redis("EVALSHA (delete a drained shard)", &stream, e))?;
        match reply.as_str().as_deref() {
            Some("ok") => Ok(count),
            other => Err(Error::TopicNotDrained {
                topic: layout.name().to_string(),
                shard: stream,
                reason: other.unwrap_or("unexpected reply").to_string(),
            }),
        }
    }
}
