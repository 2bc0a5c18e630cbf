//! Topics, the producer side: shard keys spread over a cluster's masters, the shard count
//! recorded once, keyed publishes to one shard in order, round-robin without a key, keyed
//! batches split per shard, and the tools (Inspector, History, TopicAdmin) per shard.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_both_topologies, TestRedis, Topology};
use futures_util::TryStreamExt;
use streamx::admin::TopicAdmin;
use streamx::testing::{key_slot, unique_name};
use streamx::topic::TopicLayout;
use streamx::{Consumer, Error, History, Inspector, Message, MessageId, Producer, PublishOptions};

/// Every entry of every shard of `layout`: per shard, `(key, payload)` in stream order.
async fn shard_contents(url: &str, layout: &TopicLayout) -> Vec<Vec<(Option<String>, u64)>> {
    let history = History::connect(url).await.unwrap();
    let mut out = Vec::new();
    for stream in layout.shard_streams() {
        let messages: Vec<Message<u64>> = history.read::<u64>(stream, ..).try_collect().await.unwrap();
        out.push(messages.iter().map(|m| (m.key().map(str::to_string), *m.payload())).collect());
    }
    out
}

#[test]
fn every_shard_key_lies_in_its_share_of_the_slots() {
    for shards in [1u32, 2, 3, 7, 16, 100, 1000] {
        let layout = TopicLayout::new("orders", shards).unwrap();
        for (i, stream) in layout.shard_streams().iter().enumerate() {
            let (from, to) = (i as u64 * 16384 / u64::from(shards), (i as u64 + 1) * 16384 / u64::from(shards));
            let slot = u64::from(key_slot(stream));
            assert!((from..to).contains(&slot), "{stream}: slot {slot} not in [{from}, {to}) of {shards} shards");
            assert_eq!(stream, layout.shard_stream(i as u32));
            assert!(stream.starts_with(&format!("orders:shard{i}.")), "{stream}");
        }
    }
}

/// The masters of a cluster as CLUSTER SHARDS lists them: per master, its port and slot
/// ranges (RESP2 replies arrive as flat arrays of names and values).
fn masters_from_cluster_shards(redis: &TestRedis) -> Vec<(u64, Vec<(u64, u64)>)> {
    fn field<'a>(map: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
        match map {
            serde_json::Value::Object(o) => o.get(name),
            serde_json::Value::Array(a) => a.chunks(2).find(|kv| kv[0] == name).map(|kv| &kv[1]),
            _ => None,
        }
    }
    let shards = redis.cli_json(&["CLUSTER", "SHARDS"]).unwrap();
    let mut masters = Vec::new();
    for shard in shards.as_array().unwrap() {
        let slots: Vec<u64> =
            field(shard, "slots").unwrap().as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let ranges = slots.chunks(2).map(|r| (r[0], r[1])).collect::<Vec<_>>();
        if ranges.is_empty() {
            continue;
        }
        let nodes = field(shard, "nodes").unwrap().as_array().unwrap();
        let master = nodes.iter().find(|n| field(n, "role").and_then(|r| r.as_str()) == Some("master")).unwrap();
        masters.push((field(master, "port").unwrap().as_u64().unwrap(), ranges));
    }
    masters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_shard_topic_spreads_over_all_three_masters() {
    let redis = TestRedis::start(Topology::Cluster).unwrap();
    let topic = unique_name("spread");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let layout = producer.topic(&topic, 16).await.unwrap();
    let masters = masters_from_cluster_shards(&redis);
    assert_eq!(masters.len(), 3, "{masters:?}");

    // One message per shard (round-robin), so every shard's stream exists.
    let ids = producer.publish_batch(&topic, &(0..16u64).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(ids.len(), 16);
    let mut shards_per_master: BTreeMap<u64, usize> = BTreeMap::new();
    let owner = |slot: u64| {
        masters
            .iter()
            .find(|(_, ranges)| ranges.iter().any(|&(from, to)| (from..=to).contains(&slot)))
            .map(|(port, _)| *port)
            .unwrap()
    };
    for stream in layout.shard_streams() {
        let slot: u64 = redis.cli(&["CLUSTER", "KEYSLOT", stream]).unwrap().trim().parse().unwrap();
        assert_eq!(slot, u64::from(key_slot(stream)), "{stream}");
        *shards_per_master.entry(owner(slot)).or_default() += 1;
        assert_eq!(redis.xlen(stream).unwrap(), 1, "{stream} holds its message");
    }
    assert_eq!(shards_per_master.len(), 3, "every master holds shards: {shards_per_master:?}");
    // What the layout promises, whatever the topic's name: a master holds every shard whose
    // slot share lies inside its slots, and may hold a shard whose share straddles one of its
    // boundaries (which side such a shard lands on depends on the name's CRC16).
    for (&port, &held) in &shards_per_master {
        let (mut inside, mut straddling) = (0, 0);
        for i in 0..16u64 {
            let (from, to) = (i * 16384 / 16, (i + 1) * 16384 / 16 - 1);
            match (owner(from) == port, owner(to) == port) {
                (true, true) => inside += 1,
                (true, false) | (false, true) => straddling += 1,
                (false, false) => {}
            }
        }
        assert!(inside >= 4, "3 even masters each own at least 4 whole shares: {port} owns {inside}");
        assert!(
            (inside..=inside + straddling).contains(&held),
            "master {port} holds {held} shards, outside [{inside}, {}]: {shards_per_master:?}",
            inside + straddling
        );
    }
}

async fn a_different_shard_count_fails_and_writes_nothing(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let topic = unique_name("mismatch");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let layout = producer.topic(&topic, 8).await.unwrap();
    assert_eq!(layout.shards(), 8);
    assert_eq!(producer.topic(&topic, 8).await.unwrap(), layout, "declaring again with the same count is fine");

    let other = Producer::connect(&redis.url()).await.unwrap();
    let err = other.topic(&topic, 4).await.unwrap_err();
    assert!(
        matches!(&err, Error::TopicShardsMismatch { recorded: 8, requested: 4, .. }),
        "a clear error naming both counts: {err:?}"
    );
    // Nothing written: the record keeps 8, no shard stream of 4 exists, and the producer that
    // failed still routes over the recorded 8 (it looks the record up).
    let record = format!("{{{topic}}}:topic");
    assert_eq!(redis.cli(&["HGET", &record, "shards"]).unwrap().trim(), "8");
    let four = TopicLayout::new(&topic, 4).unwrap();
    for stream in four.shard_streams() {
        assert_eq!(redis.cli(&["EXISTS", stream]).unwrap().trim(), "0", "{stream}");
    }
    for n in 0..8u64 {
        other.publish(&topic, &n).await.unwrap();
    }
    let per_shard = shard_contents(&redis.url(), &layout).await;
    assert!(per_shard.iter().all(|s| s.len() == 1), "round-robin over the recorded 8: {per_shard:?}");
}

async fn keyed_publishes_of_one_key_land_in_one_shard_in_order(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let topic = unique_name("keyed");
    let declaring = Producer::connect(&redis.url()).await.unwrap();
    let layout = declaring.topic(&topic, 16).await.unwrap();
    // A producer that never declared the topic finds it by its record.
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let keys: Vec<String> = (0..20).map(|k| format!("customer-{k}")).collect();
    for seq in 0..25u64 {
        for key in &keys {
            producer.publish_keyed(&topic, key, &seq).await.unwrap();
        }
    }
    let per_shard = shard_contents(&redis.url(), &layout).await;
    let mut seen: HashMap<String, (usize, Vec<u64>)> = HashMap::new();
    for (shard, entries) in per_shard.iter().enumerate() {
        for (key, seq) in entries {
            let key = key.clone().expect("every entry carries its key");
            let (first_shard, seqs) = seen.entry(key.clone()).or_insert((shard, Vec::new()));
            assert_eq!(*first_shard, shard, "{key} in two shards");
            seqs.push(*seq);
        }
    }
    assert_eq!(seen.len(), keys.len());
    for (key, (shard, seqs)) in &seen {
        assert_eq!(*shard as u32, layout.shard_of_key(key), "{key} is in the shard of its hash");
        assert_eq!(*seqs, (0..25).collect::<Vec<_>>(), "{key}: every message, in publish order");
    }
    let used: BTreeSet<usize> = seen.values().map(|(s, _)| *s).collect();
    assert!(used.len() > 4, "20 keys over 16 shards use many shards: {used:?}");
}

async fn unkeyed_publishes_spread_round_robin(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let topic = unique_name("roundrobin");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let layout = producer.topic(&topic, 16).await.unwrap();
    for n in 0..160u64 {
        producer.publish(&topic, &n).await.unwrap();
    }
    let counts: Vec<usize> = shard_contents(&redis.url(), &layout).await.iter().map(Vec::len).collect();
    assert_eq!(counts, vec![10; 16], "single publishes take the shards in turn");
    // A batch goes on where the single publishes stopped, split per shard.
    let batch: Vec<u64> = (0..1_600).collect();
    let ids = producer.publish_batch(&topic, &batch).await.unwrap();
    assert_eq!(ids.len(), 1_600);
    let contents = shard_contents(&redis.url(), &layout).await;
    let counts: Vec<usize> = contents.iter().map(Vec::len).collect();
    assert_eq!(counts, vec![110; 16], "a batch spreads evenly too");
    // The ids come back in the batch's order: id i is the entry holding payload i.
    let history = History::connect(&redis.url()).await.unwrap();
    let all: Vec<Message<u64>> = history.read_topic::<u64>(&topic, ..).try_collect().await.unwrap();
    let by_id: HashMap<(String, MessageId), u64> =
        all.iter().map(|m| ((m.stream().to_string(), m.id()), *m.payload())).collect();
    for (n, id) in ids.iter().enumerate() {
        let found = by_id.iter().find(|((_, i), v)| i == id && **v == n as u64);
        assert!(found.is_some(), "id {id} of position {n}");
    }
    // Delayed messages take the round-robin too (and the key's shard with a key).
    producer.publish_after(&topic, &1u64, Duration::from_secs(3600)).await.unwrap();
    let keyed = PublishOptions::new().key("customer-1");
    producer.publish_after_with(&topic, &2u64, Duration::from_secs(3600), &keyed).await.unwrap();
    let info = Inspector::connect(&redis.url()).await.unwrap().topic(&topic).await.unwrap().unwrap();
    assert_eq!(info.scheduled, 2);
    // 1,760 turns taken before it: the unkeyed one waits on shard 1,760 mod 16 = 0.
    assert!(info.shards[0].scheduled >= 1, "{:?}", info.shards[0]);
    assert!(info.shards[layout.shard_of_key("customer-1") as usize].scheduled >= 1);
}

async fn a_keyed_batch_keeps_each_keys_order_across_shards(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let topic = unique_name("batchkeyed");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let layout = producer.topic(&topic, 16).await.unwrap();
    // 60 keys × 30 sequence numbers, interleaved: 1,800 entries, several round trips per shard.
    let entries: Vec<(String, u64)> =
        (0..30u64).flat_map(|seq| (0..60).map(move |k| (format!("order-{k}"), seq))).collect();
    let ids = producer.publish_batch_keyed(&topic, &entries).await.unwrap();
    assert_eq!(ids.len(), entries.len());

    let per_shard = shard_contents(&redis.url(), &layout).await;
    assert_eq!(per_shard.iter().map(Vec::len).sum::<usize>(), entries.len());
    let mut order: HashMap<String, Vec<u64>> = HashMap::new();
    for (shard, contents) in per_shard.iter().enumerate() {
        for (key, seq) in contents {
            let key = key.clone().unwrap();
            assert_eq!(layout.shard_of_key(&key) as usize, shard, "{key}");
            order.entry(key).or_default().push(*seq);
        }
    }
    assert_eq!(order.len(), 60);
    assert!(order.values().all(|seqs| *seqs == (0..30).collect::<Vec<_>>()), "each key in batch order");
    // Ids in input order: within a key they increase (one shard, in order).
    let mut last: HashMap<&str, MessageId> = HashMap::new();
    for ((key, _), id) in entries.iter().zip(&ids) {
        if let Some(previous) = last.insert(key.as_str(), *id) {
            assert!(previous < *id, "{key}: {previous} then {id}");
        }
    }
}

async fn a_keyed_batch_on_a_stream_is_one_ordered_batch(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let stream = unique_name("plainkeyed");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let entries: Vec<(String, u64)> = (0..1_200u64).map(|n| (format!("k{}", n % 7), n)).collect();
    let ids = producer.publish_batch_keyed(&stream, &entries).await.unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase in batch order");
    let history = History::connect(&redis.url()).await.unwrap();
    let stored: Vec<Message<u64>> = history.read::<u64>(&stream, ..).try_collect().await.unwrap();
    let got: Vec<(String, u64)> = stored.iter().map(|m| (m.key().unwrap().to_string(), *m.payload())).collect();
    assert_eq!(got, entries, "every entry in order, with its key header");
    assert_eq!(stored.iter().map(Message::id).collect::<Vec<_>>(), ids);
}

async fn an_idempotent_publish_to_a_topic_meets_its_own_record(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let topic = unique_name("idem");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let layout = producer.topic(&topic, 8).await.unwrap();
    let once = PublishOptions::new().idempotency_key("evt-1");
    let first = producer.publish_with(&topic, &1u64, &once).await.unwrap();
    // Without a message key, the round-robin would pick another shard: the idempotency key
    // picks the shard instead, so the retry finds the first publish.
    for _ in 0..10 {
        assert_eq!(producer.publish_with(&topic, &1u64, &once).await.unwrap(), first);
    }
    let lengths: u64 = layout.shard_streams().iter().map(|s| redis.xlen(s).unwrap()).sum();
    assert_eq!(lengths, 1, "one entry for one idempotency key");
}

async fn the_tools_show_per_shard_figures(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let topic = unique_name("tools");
    let producer = Producer::connect(&url).await.unwrap();
    let layout = producer.topic(&topic, 4).await.unwrap();
    let entries: Vec<(String, u64)> = (0..40u64).map(|n| (format!("k{}", n % 10), n)).collect();
    producer.publish_batch_keyed(&topic, &entries).await.unwrap();
    let per_shard: Vec<u64> = layout.shard_streams().iter().map(|s| redis.xlen(s).unwrap()).collect();

    // A group on every shard, which read everything on shard 0 and acked nothing there.
    for stream in layout.shard_streams() {
        redis.cli(&["XGROUP", "CREATE", stream, "billing", "0"]).unwrap();
    }
    let shard0 = layout.shard_stream(0);
    redis.cli(&["XREADGROUP", "GROUP", "billing", "w1", "COUNT", "1000", "STREAMS", shard0, ">"]).unwrap();
    // A lease held on shard 1 (the lead's format `<epoch>:<member>`), a dead letter on shard 2.
    let lease = streamx::keys::shard_lease(layout.shard_stream(1), "billing");
    redis.cli(&["SET", &lease, "7:host-a:42"]).unwrap();
    let dlq = streamx::keys::default_dead_letter_stream(layout.shard_stream(2));
    redis.cli(&["XADD", &dlq, "*", "data", "1"]).unwrap();

    let inspector = Inspector::connect(&url).await.unwrap();
    let topics = inspector.topics().await.unwrap();
    let info = topics.iter().find(|t| t.layout.name() == topic).unwrap().clone();
    assert_eq!(info.layout, layout);
    assert_eq!(info.length, 40);
    assert_eq!(info.shards.iter().map(|s| s.length).collect::<Vec<_>>(), per_shard);
    assert_eq!(info.dead_letters, 1);
    assert_eq!(info.shards[2].dead_letters, 1);
    let billing = |shard: usize| info.shards[shard].groups.iter().find(|g| g.group.name == "billing").unwrap();
    assert_eq!(billing(0).group.pending, per_shard[0]);
    assert_eq!(billing(0).group.lag, Some(0));
    assert_eq!(billing(1).group.lag, Some(per_shard[1]));
    assert_eq!(billing(1).owner.as_ref().map(|o| (o.epoch, o.member.as_str())), Some((7, "host-a:42")));
    assert!(billing(0).owner.is_none());
    let totals = &info.groups[0];
    assert_eq!((totals.name.as_str(), totals.pending, totals.lag), ("billing", per_shard[0], 40 - per_shard[0]));
    assert_eq!((totals.shards, totals.owned_shards, totals.owners.clone()), (4, 1, vec!["host-a:42".to_string()]));
    assert!(inspector.topic("no-such-topic").await.unwrap().is_none());

    // History: all shards merged by id, and one shard alone.
    let history = History::connect(&url).await.unwrap();
    let merged: Vec<Message<u64>> = history.read_topic::<u64>(&topic, ..).try_collect().await.unwrap();
    assert_eq!(merged.len(), 40);
    assert!(merged.windows(2).all(|w| w[0].id() <= w[1].id()), "merged by id");
    let one: Vec<Message<u64>> = history.read_topic_shard::<u64>(&topic, 3, ..).try_collect().await.unwrap();
    assert_eq!(one.len() as u64, per_shard[3]);
    assert!(one.iter().all(|m| m.stream() == layout.shard_stream(3)));
    let err = history.read_topic_shard::<u64>(&topic, 4, ..).try_collect::<Vec<_>>().await.unwrap_err();
    assert!(matches!(err, Error::UnknownTopic { .. }), "{err:?}");
}

async fn a_drained_topic_is_deleted_then_created_with_another_count(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let topic = unique_name("recreate");
    let producer = Producer::connect(&url).await.unwrap();
    let layout = producer.topic(&topic, 4).await.unwrap();
    producer.publish_batch(&topic, &(0..8u64).collect::<Vec<_>>()).await.unwrap();
    for stream in layout.shard_streams() {
        redis.cli(&["XGROUP", "CREATE", stream, "billing", "0"]).unwrap();
    }
    let admin = TopicAdmin::connect(&url).await.unwrap();

    // Not drained: the group has unread entries. Nothing of the topic goes.
    let err = admin.delete_drained(&topic).await.unwrap_err();
    assert!(matches!(&err, Error::TopicNotDrained { reason, .. } if reason.contains("unread")), "{err:?}");
    assert_eq!(redis.cli(&["HGET", &format!("{{{topic}}}:topic"), "shards"]).unwrap().trim(), "4");

    // Drain: read and acknowledge everything.
    for stream in layout.shard_streams() {
        let read = redis.cli(&["XREADGROUP", "GROUP", "billing", "w", "COUNT", "100", "STREAMS", stream, ">"]).unwrap();
        for id in read.lines().filter(|l| l.contains('-') && l.chars().next().is_some_and(|c| c.is_ascii_digit())) {
            redis.cli(&["XACK", stream, "billing", id.trim()]).unwrap();
        }
    }
    let deleted = admin.delete_drained(&topic).await.unwrap();
    assert_eq!(deleted.layout, layout);
    for stream in layout.shard_streams() {
        assert_eq!(redis.cli(&["EXISTS", stream]).unwrap().trim(), "0", "{stream} deleted");
    }
    assert!(Inspector::connect(&url).await.unwrap().topic(&topic).await.unwrap().is_none());
    // The registry of stream names (the producer registered the shards it wrote) forgets them.
    let names = redis.cli(&["SMEMBERS", "streamx:streams"]).unwrap();
    let listed: Vec<&str> = names.lines().filter(|n| layout.shard_streams().iter().any(|s| s == n.trim())).collect();
    assert_eq!(listed, Vec::<&str>::new(), "deleted shards still listed in streamx:streams");
    assert!(matches!(admin.delete_drained(&topic).await.unwrap_err(), Error::UnknownTopic { .. }));

    // A fresh producer creates it again with another count.
    let fresh = Producer::connect(&url).await.unwrap();
    assert_eq!(fresh.topic(&topic, 2).await.unwrap().shards(), 2);
}

async fn a_batch_to_a_topic_that_fails_on_one_shard_lists_what_the_others_wrote(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let topic = unique_name("partial");
    let producer = Producer::connect(&redis.url()).await.unwrap();
    let layout = producer.topic(&topic, 4).await.unwrap();
    // Shard 2's key holds a string: every XADD to it fails (WRONGTYPE).
    redis.cli(&["SET", layout.shard_stream(2), "not a stream"]).unwrap();
    let entries: Vec<(String, u64)> = (0..200u64).map(|n| (format!("k{}", n % 20), n)).collect();
    let err = producer.publish_batch_keyed(&topic, &entries).await.unwrap_err();
    let Error::PartialPublish { source, written, .. } = &err else { panic!("a partial publish: {err:?}") };
    assert!(source.to_string().contains("WRONGTYPE"), "{source}");
    let expected: Vec<usize> = (0..entries.len()).filter(|&at| layout.shard_of_key(&entries[at].0) != 2).collect();
    assert!(!expected.is_empty() && expected.len() < entries.len());
    assert_eq!(written.iter().map(|&(at, _)| at).collect::<Vec<_>>(), expected, "exactly the other shards' entries");
    let stored: u64 = [0, 1, 3].iter().map(|&i| redis.xlen(layout.shard_stream(i)).unwrap()).sum();
    assert_eq!(stored as usize, expected.len());
}

async fn a_running_topic_consumer_shows_as_the_owner_of_every_shard(topology: Topology) {
    let redis = TestRedis::start(topology).unwrap();
    let url = redis.url();
    let topic = unique_name("owned");
    let handled: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let h = handled.clone();
    let consumer = Consumer::topic(topic.clone(), "billing".to_string(), move |msg: Message<u64>| {
        let h = h.clone();
        async move {
            let key = msg.key().unwrap_or_default().to_string();
            h.lock().unwrap().entry(key).or_default().push(*msg.payload());
        }
    })
    .shards(4);
    let runtime = common::start_runtime(&url, vec![consumer]).await;
    let producer = Producer::connect(&url).await.unwrap();
    let entries: Vec<(String, u64)> = (0..10u64).flat_map(|seq| (0..8).map(move |k| (format!("k{k}"), seq))).collect();
    producer.publish_batch_keyed(&topic, &entries).await.unwrap();

    let inspector = Inspector::connect(&url).await.unwrap();
    common::wait_until(Duration::from_secs(30), "every message handled and acknowledged", || async {
        let done = handled.lock().unwrap().values().map(Vec::len).sum::<usize>() == entries.len();
        let info = inspector.topic(&topic).await.unwrap();
        done && info.is_some_and(|t| t.groups.iter().any(|g| g.name == "billing" && g.pending == 0 && g.lag == 0))
    })
    .await
    .unwrap();
    assert!(handled.lock().unwrap().values().all(|seqs| *seqs == (0..10).collect::<Vec<_>>()), "per-key order");
    let info = inspector.topic(&topic).await.unwrap().unwrap();
    assert_eq!(info.layout.shards(), 4);
    let billing = info.groups.iter().find(|g| g.name == "billing").unwrap();
    assert_eq!((billing.shards, billing.owned_shards, billing.owners.len()), (4, 4, 1), "{billing:?}");
    for shard in &info.shards {
        let owner = shard.groups[0].owner.as_ref().expect("a lease holder");
        assert!(owner.epoch >= 1 && owner.member == billing.owners[0], "{owner:?}");
    }
    runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_may_not_read_topic_records_publishes_to_the_stream() {
    let server = common::start_server();
    let stream = unique_name("acl");
    // Keys of the stream only (a rule written before topics): the record `{<name>}:topic`
    // is refused, so the producer cannot tell; it publishes to the stream, as before.
    let rule = format!("~{stream}");
    common::redis_cli(
        &server,
        &["ACL", "SETUSER", "old", "on", ">pw", "resetkeys", &rule, "~streamx:streams", "+@all"],
    )
    .unwrap();
    let url = format!("redis://old:pw@127.0.0.1:{}", server.port());
    let producer = Producer::connect(&url).await.unwrap();
    for n in 0..3u64 {
        producer.publish(&stream, &n).await.unwrap();
    }
    assert_eq!(common::redis_cli(&server, &["XLEN", &stream]).unwrap().trim(), "3");
}

on_both_topologies!(
    a_different_shard_count_fails_and_writes_nothing,
    keyed_publishes_of_one_key_land_in_one_shard_in_order,
    unkeyed_publishes_spread_round_robin,
    a_keyed_batch_keeps_each_keys_order_across_shards,
    a_keyed_batch_on_a_stream_is_one_ordered_batch,
    an_idempotent_publish_to_a_topic_meets_its_own_record,
    the_tools_show_per_shard_figures,
    a_drained_topic_is_deleted_then_created_with_another_count,
    a_batch_to_a_topic_that_fails_on_one_shard_lists_what_the_others_wrote,
    a_running_topic_consumer_shows_as_the_owner_of_every_shard,
);
