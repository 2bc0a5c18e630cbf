//! Topics: `streamx topics` (every topic with its totals), `streamx info <topic>` (one topic
//! shard by shard) and `streamx topics delete` (a drained topic, to change its shard count).

use serde::Serialize;
use streamx_runtime::admin::TopicAdmin;
use streamx_runtime::{ShardInfo, TopicGroupTotals, TopicInfo};

use crate::cli::TopicsCommand;
use crate::confirm::confirm_one;
use crate::connection::Connection;
use crate::error::{CliError, Result};
use crate::output::{self, or_dash, print_json, printable, table};

/// A topic for `--json`: the same shape in `topics` (a list), `info <topic>` and the
/// dashboard's `/api/topics`.
#[derive(Serialize)]
pub(crate) struct TopicJson<'a> {
    topic: &'a str,
    shards: u32,
    length: u64,
    dead_letters: u64,
    scheduled: u64,
    groups: Vec<GroupJson<'a>>,
    /// Per shard; left out of `topics` unless asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    shard_figures: Option<Vec<ShardJson<'a>>>,
}

#[derive(Serialize)]
struct GroupJson<'a> {
    name: &'a str,
    lag: u64,
    pending: u64,
    shards: u32,
    owned_shards: u32,
    owners: &'a [String],
}

#[derive(Serialize)]
struct ShardJson<'a> {
    index: u32,
    stream: &'a str,
    length: u64,
    dead_letters: u64,
    scheduled: u64,
    groups: Vec<ShardGroupJson<'a>>,
}

#[derive(Serialize)]
struct ShardGroupJson<'a> {
    name: &'a str,
    lag: Option<u64>,
    lag_estimated: bool,
    pending: u64,
    consumers: u64,
    owner: Option<&'a str>,
    epoch: Option<u64>,
}

fn group_json(g: &TopicGroupTotals) -> GroupJson<'_> {
    GroupJson {
        name: &g.name,
        lag: g.lag,
        pending: g.pending,
        shards: g.shards,
        owned_shards: g.owned_shards,
        owners: &g.owners,
    }
}

fn shard_json(s: &ShardInfo) -> ShardJson<'_> {
    ShardJson {
        index: s.index,
        stream: &s.stream,
        length: s.length,
        dead_letters: s.dead_letters,
        scheduled: s.scheduled,
        groups: s
            .groups
            .iter()
            .map(|g| ShardGroupJson {
                name: &g.group.name,
                lag: g.group.lag,
                lag_estimated: g.group.lag_estimated,
                pending: g.group.pending,
                consumers: g.group.consumers,
                owner: g.owner.as_ref().map(|o| o.member.as_str()),
                epoch: g.owner.as_ref().map(|o| o.epoch),
            })
            .collect(),
    }
}

/// The JSON of `t`, with its per-shard figures when `with_shards`.
pub(crate) fn topic_json(t: &TopicInfo, with_shards: bool) -> TopicJson<'_> {
    TopicJson {
        topic: t.layout.name(),
        shards: t.layout.shards(),
        length: t.length,
        dead_letters: t.dead_letters,
        scheduled: t.scheduled,
        groups: t.groups.iter().map(group_json).collect(),
        shard_figures: with_shards.then(|| t.shards.iter().map(shard_json).collect()),
    }
}

/// `streamx topics [delete ...]`.
pub async fn run(conn: &Connection, command: Option<&TopicsCommand>, json: bool) -> Result<()> {
    match command {
        None => list(conn, json).await,
        Some(TopicsCommand::Delete { topic, yes }) => delete(conn, topic, *yes, json).await,
        Some(TopicsCommand::Create { topic, shards }) => create(conn, topic, *shards, json).await,
    }
}

/// `streamx topics`: every topic of the registry `streamx:topics`, one row each.
async fn list(conn: &Connection, json: bool) -> Result<()> {
    let topics = conn.inspector().topics().await?;
    if json {
        print_json(&topics.iter().map(|t| topic_json(t, false)).collect::<Vec<_>>());
        return Ok(());
    }
    if topics.is_empty() {
        println!("no topics at {}", printable(conn.redacted_url()));
        return Ok(());
    }
    let rows = topics.iter().map(|t| {
        vec![
            t.layout.name().to_string(),
            t.layout.shards().to_string(),
            t.length.to_string(),
            t.dead_letters.to_string(),
            t.scheduled.to_string(),
            groups_summary(&t.groups, t.layout.shards()),
        ]
    });
    println!(
        "{}",
        table(&["TOPIC", "SHARDS", "LENGTH", "DEAD LETTERS", "DELAYED", "GROUPS (lag/pending, owned)"], rows)
    );
    Ok(())
}

/// `billing 3/0 16/16, audit 0/0 0/16`.
fn groups_summary(groups: &[TopicGroupTotals], shards: u32) -> String {
    if groups.is_empty() {
        return "-".to_string();
    }
    groups
        .iter()
        .map(|g| format!("{} {}/{} {}/{shards}", g.name, g.lag, g.pending, g.owned_shards))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `streamx info <topic>`: the topic's totals, then one row per shard and group.
pub async fn info(conn: &Connection, topic: &TopicInfo, json: bool) -> Result<()> {
    if json {
        print_json(&topic_json(topic, true));
        return Ok(());
    }
    let facts = vec![
        vec!["topic".to_string(), topic.layout.name().to_string()],
        vec!["shards".to_string(), topic.layout.shards().to_string()],
        vec!["length".to_string(), topic.length.to_string()],
        vec!["dead letters".to_string(), topic.dead_letters.to_string()],
        vec!["delayed messages".to_string(), topic.scheduled.to_string()],
    ];
    println!("{}\n", output::facts(facts));
    if !topic.groups.is_empty() {
        let rows = topic.groups.iter().map(|g| {
            vec![
                g.name.clone(),
                g.lag.to_string(),
                g.pending.to_string(),
                format!("{}/{}", g.owned_shards, topic.layout.shards()),
                if g.owners.is_empty() { "-".to_string() } else { g.owners.join(", ") },
            ]
        });
        println!("{}\n", table(&["GROUP", "LAG", "PENDING", "OWNED SHARDS", "OWNERS"], rows));
    }
    let mut rows = Vec::new();
    for shard in &topic.shards {
        let head = [
            shard.index.to_string(),
            shard.stream.clone(),
            shard.length.to_string(),
            shard.dead_letters.to_string(),
            shard.scheduled.to_string(),
        ];
        if shard.groups.is_empty() {
            rows.push(head.iter().cloned().chain(["-", "-", "-", "-"].map(String::from)).collect::<Vec<_>>());
        }
        for g in &shard.groups {
            let owner = g.owner.as_ref().map(|o| format!("{} (epoch {})", o.member, o.epoch));
            rows.push(
                head.iter()
                    .cloned()
                    .chain([
                        g.group.name.clone(),
                        output::lag(g.group.lag, g.group.lag_estimated),
                        g.group.pending.to_string(),
                        or_dash(owner),
                    ])
                    .collect(),
            );
        }
    }
    println!(
        "{}",
        table(&["SHARD", "STREAM", "LENGTH", "DEAD LETTERS", "DELAYED", "GROUP", "LAG", "PENDING", "OWNER"], rows)
    );
    let _ = conn;
    Ok(())
}

/// `streamx topics create <topic> --shards N`: creates the topic's record, or checks it.
async fn create(conn: &Connection, topic: &str, shards: u32, json: bool) -> Result<()> {
    let layout = conn.producer().topic(topic, shards).await?;
    if json {
        #[derive(Serialize)]
        struct Created<'a> {
            topic: &'a str,
            shards: u32,
            streams: &'a [String],
        }
        print_json(&Created { topic, shards: layout.shards(), streams: layout.shard_streams() });
    } else {
        println!("topic `{}` has {} shards", printable(topic), layout.shards());
    }
    Ok(())
}

/// `streamx topics delete <topic>`: deletes a drained topic (see
/// [`TopicAdmin::delete_drained`]).
async fn delete(conn: &Connection, topic: &str, yes: bool, json: bool) -> Result<()> {
    let Some(info) = conn.inspector().topic(topic).await? else {
        return Err(CliError::NotFound { what: format!("topic `{topic}`") });
    };
    confirm_one(&format!("delete the drained topic `{topic}` and its {} shards", info.layout.shards()), yes).await?;
    let deleted = TopicAdmin::new(conn.client()).delete_drained(topic).await?;
    if json {
        #[derive(Serialize)]
        struct Deleted<'a> {
            topic: &'a str,
            shards: u32,
            keys: usize,
        }
        print_json(&Deleted { topic, shards: deleted.layout.shards(), keys: deleted.keys });
    } else {
        println!("deleted topic `{}` ({} shards)", printable(topic), deleted.layout.shards());
    }
    Ok(())
}
