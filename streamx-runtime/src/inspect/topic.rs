//! Figures of a topic, per shard and in total: what `streamx topics`, `streamx info <topic>`
//! and the dashboard show.

use std::collections::BTreeMap;

use fred::interfaces::{ClientLike, KeysInterface, SetsInterface};
use fred::types::{ClusterHash, CustomCommand, Value};

use super::{GroupInfo, Inspector};
use crate::error::{Error, Result};
use crate::keys::{derived_key, shard_lease, KeyKind, TOPIC_NAMES};
use crate::topic::TopicLayout;

/// The process that owns a shard for a group now, read from the shard's lease
/// ([`KeyKind::ShardLease`]), whose value is `<epoch>:<member>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardOwner {
    /// The lease's fencing epoch: it grows each time the shard changes hands.
    pub epoch: u64,
    /// The member (process) holding the lease.
    pub member: String,
}

impl ShardOwner {
    /// Reads a lease value `<epoch>:<member>`; `None` for anything else.
    ///
    /// ```
    /// use streamx_runtime::ShardOwner;
    /// let owner = ShardOwner::parse("7:host-1:4242").unwrap();
    /// assert_eq!((owner.epoch, owner.member.as_str()), (7, "host-1:4242"));
    /// assert!(ShardOwner::parse("no epoch").is_none());
    /// ```
    pub fn parse(value: &str) -> Option<ShardOwner> {
        let (epoch, member) = value.split_once(':')?;
        Some(ShardOwner { epoch: epoch.parse().ok()?, member: member.to_string() })
    }
}

/// One consumer group on one shard of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardGroup {
    /// The group's figures on the shard's stream (lag, pending, consumers), as
    /// [`Inspector::groups`] gives them.
    pub group: GroupInfo,
    /// Who owns the shard for this group now; `None` when no lease is held.
    pub owner: Option<ShardOwner>,
}

/// One shard of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard's index, `0..shards`.
    pub index: u32,
    /// The shard's stream key ([`TopicLayout::shard_stream`]).
    pub stream: String,
    /// Entries in the shard's stream.
    pub length: u64,
    /// Entries in the shard's default dead-letter stream.
    pub dead_letters: u64,
    /// Delayed messages waiting for the shard (`publish_after` / `publish_at`).
    pub scheduled: u64,
    /// The groups reading the shard, by name.
    pub groups: Vec<ShardGroup>,
}

/// A group's figures summed over a topic's shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicGroupTotals {
    /// The group name.
    pub name: String,
    /// Entries not yet delivered to the group, over every shard (estimated where Redis
    /// cannot tell, as by [`Inspector::groups`]).
    pub lag: u64,
    /// Entries delivered and not acknowledged, over every shard.
    pub pending: u64,
    /// Shards the group reads (it has a consumer group on them).
    pub shards: u32,
    /// Shards whose lease a process holds for the group.
    pub owned_shards: u32,
    /// The distinct processes holding the group's shard leases.
    pub owners: Vec<String>,
}

/// A topic: its layout, each shard's figures, and totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name and shard count, as recorded in Redis.
    pub layout: TopicLayout,
    /// Every shard, by index.
    pub shards: Vec<ShardInfo>,
    /// Entries in all shards.
    pub length: u64,
    /// Entries in all shards' default dead-letter streams.
    pub dead_letters: u64,
    /// Delayed messages waiting for any shard.
    pub scheduled: u64,
    /// Per group, its figures summed over the shards, by name.
    pub groups: Vec<TopicGroupTotals>,
}

impl Inspector {
    /// The topics listed in the registry of topics ([`TOPIC_NAMES`]), sorted by
    /// name, each with its figures (see [`topic`](Self::topic)). A listed topic whose
    /// record is gone (deleted since) is left out.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let mut names: Vec<String> =
            self.client.smembers(TOPIC_NAMES).await.map_err(|e| Error::redis("SMEMBERS", TOPIC_NAMES, e))?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(info) = self.topic(&name).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// The topic `name`, read from its record, with per shard its stream length, dead letters,
    /// delayed messages and per group lag, pending and the lease holder, and totals; `None`
    /// when there is no such topic. A few commands per shard, sent together.
    ///
    /// ```no_run
    /// # async fn demo(inspector: streamx_runtime::Inspector) -> Result<(), streamx_runtime::Error> {
    /// if let Some(topic) = inspector.topic("orders").await? {
    ///     for shard in &topic.shards {
    ///         for g in &shard.groups {
    ///             let owner = g.owner.as_ref().map_or("-", |o| o.member.as_str());
    ///             println!("{} {} lag {:?} owner {owner}", shard.stream, g.group.name, g.group.lag);
    ///         }
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        let Some(layout) = crate::topic::layout::lookup(&self.client, name).await? else { return Ok(None) };
        let shards = futures_util::future::try_join_all((0..layout.shards()).map(|i| self.shard(&layout, i))).await?;
        Ok(Some(totals(layout, shards)))
    }

    /// The figures of shard `index` of `layout`.
    pub async fn shard(&self, layout: &TopicLayout, index: u32) -> Result<ShardInfo> {
        let stream = layout.shard_stream(index).to_string();
        let dlq = derived_key(&stream, KeyKind::DeadLetters);
        let scheduled_key = derived_key(&stream, KeyKind::Scheduled);
        let (length, dead_letters, scheduled, groups) = futures_util::try_join!(
            self.stream_len(&stream),
            self.stream_len(&dlq),
            async {
                let zcard =
                    CustomCommand::new_static("ZCARD", ClusterHash::Custom(crate::keys::slot(&scheduled_key)), false);
                let count: Value = self
                    .client
                    .custom(zcard, vec![Value::from(scheduled_key.as_str())])
                    .await
                    .map_err(|e| Error::redis("ZCARD", &scheduled_key, e))?;
                Ok::<_, Error>(count.as_u64().unwrap_or(0))
            },
            self.groups(&stream),
        )?;
        let owners = groups.iter().map(|g| {
            let lease = shard_lease(&stream, &g.name);
            async move {
                let value: Option<String> =
                    self.client.get(&lease).await.map_err(|e| Error::redis("GET", &lease, e))?;
                Ok::<_, Error>(value.as_deref().and_then(ShardOwner::parse))
            }
        });
        let owners = futures_util::future::try_join_all(owners).await?;
        let groups = groups.into_iter().zip(owners).map(|(group, owner)| ShardGroup { group, owner }).collect();
        Ok(ShardInfo { index, stream, length, dead_letters, scheduled, groups })
    }
}

/// A topic's figures from its shards'.
fn totals(layout: TopicLayout, shards: Vec<ShardInfo>) -> TopicInfo {
    let mut groups: BTreeMap<String, TopicGroupTotals> = BTreeMap::new();
    for shard in &shards {
        for g in &shard.groups {
            let totals = groups
                .entry(g.group.name.clone())
                .or_insert_with(|| TopicGroupTotals { name: g.group.name.clone(), ..Default::default() });
            totals.lag += g.group.lag.unwrap_or(0);
            totals.pending += g.group.pending;
            totals.shards += 1;
            if let Some(owner) = &g.owner {
                totals.owned_shards += 1;
                if !totals.owners.contains(&owner.member) {
                    totals.owners.push(owner.member.clone());
                }
            }
        }
    }
    let mut groups: Vec<TopicGroupTotals> = groups.into_values().collect();
    for g in &mut groups {
        g.owners.sort();
    }
    TopicInfo {
        length: shards.iter().map(|s| s.length).sum(),
        dead_letters: shards.iter().map(|s| s.dead_letters).sum(),
        scheduled: shards.iter().map(|s| s.scheduled).sum(),
        layout,
        shards,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, lag: Option<u64>, pending: u64) -> GroupInfo {
        GroupInfo { name: name.to_string(), lag, pending, ..GroupInfo::default() }
    }

    #[test]
    fn a_topics_totals_sum_its_shards() {
        let layout = TopicLayout::new("orders", 2).expect("valid");
        let owner = |member: &str| Some(ShardOwner { epoch: 1, member: member.to_string() });
        let shards = vec![
            ShardInfo {
                index: 0,
                stream: layout.shard_stream(0).to_string(),
                length: 10,
                dead_letters: 1,
                scheduled: 2,
                groups: vec![
                    ShardGroup { group: group("billing", Some(3), 2), owner: owner("b") },
                    ShardGroup { group: group("audit", None, 0), owner: None },
                ],
            },
            ShardInfo {
                index: 1,
                stream: layout.shard_stream(1).to_string(),
                length: 5,
                dead_letters: 0,
                scheduled: 1,
                groups: vec![ShardGroup { group: group("billing", Some(1), 4), owner: owner("a") }],
            },
        ];
        let info = totals(layout, shards);
        assert_eq!((info.length, info.dead_letters, info.scheduled), (15, 1, 3));
        let names: Vec<&str> = info.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["audit", "billing"]);
        let billing = &info.groups[1];
        assert_eq!((billing.lag, billing.pending, billing.shards, billing.owned_shards), (4, 6, 2, 2));
        assert_eq!(billing.owners, ["a", "b"]);
        assert_eq!((info.groups[0].lag, info.groups[0].owned_shards), (0, 0));
        assert!(ShardOwner::parse("x:member").is_none());
    }
}
