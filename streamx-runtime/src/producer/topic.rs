//! Publishing to topics: which names a producer treats as topics, and which shard of a topic
//! a message goes to.
//!
//! A producer learns that a name is a topic in one of two ways:
//! - [`Producer::topic`](crate::Producer::topic) declares it (creating the topic's record in
//!   Redis, or checking the shard count recorded there);
//! - the first publish to a name it does not know yet looks the record up (one `EVALSHA` of
//!   the record script reading `{<name>}:topic`, in the slot of `<name>`; `HGET` inside) and
//!   remembers the answer, topic or plain stream, for the producer's lifetime (clones share
//!   the memory).
//!
//! A user whom the server's ACL refuses the lookup (a rule written before topics) publishes
//! to the name as a stream, with a warning.
//!
//! So a topic must be created (by a consumer's start, `Producer::topic`, or
//! [`topic::declare`](crate::topic::declare)) before a producer first publishes to its name:
//! a producer that found no record keeps publishing to the plain stream of that name.
//!
//! Which shard: a message with a key goes to [`TopicLayout::shard_of_key`] (so every
//! message of a key lands in one shard, in publish order); a message without one takes the
//! next shard of the producer's round-robin counter. An idempotent publish without a message
//! key goes to the shard of its idempotency key, so a retried publish meets its own record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fred::clients::Client;

use crate::error::{Error, Result};
use crate::topic::TopicLayout;

/// How a producer routes to one topic: its layout and the round-robin counter of messages
/// published without a key.
#[derive(Debug)]
pub(crate) struct TopicRoute {
    pub(crate) layout: TopicLayout,
    next: AtomicU64,
}

impl TopicRoute {
    fn new(layout: TopicLayout) -> Self {
        TopicRoute { layout, next: AtomicU64::new(0) }
    }

    /// The shard of a message with key `key` (the round-robin's next shard without one).
    pub(crate) fn shard(&self, key: Option<&str>) -> u32 {
        match key {
            Some(key) => self.layout.shard_of_key(key),
            None => self.next_shards(1),
        }
    }

    /// Takes `count` turns of the round-robin; returns the shard of the first (the others
    /// follow it, modulo the shard count).
    pub(crate) fn next_shards(&self, count: u64) -> u32 {
        let first = self.next.fetch_add(count, Ordering::Relaxed);
        (first % u64::from(self.layout.shards().max(1))) as u32
    }

    /// The stream of shard `shard`.
    pub(crate) fn stream(&self, shard: u32) -> &str {
        self.layout.shard_stream(shard)
    }
}

/// What a producer knows about the names it publishes to: a topic's route, or `None` for a
/// plain stream. Filled by [`Producer::topic`](crate::Producer::topic) and by the first
/// publish to each name; one entry per name, kept for the producer's lifetime.
#[derive(Default, Clone)]
pub(crate) struct Topics {
    known: Arc<Mutex<HashMap<String, Option<Arc<TopicRoute>>>>>,
    /// Per name, its look-up: publishes that arrive while one runs wait for it rather than
    /// each looking up (and resuming in any order).
    lookups: Arc<Mutex<HashMap<String, Arc<Lookup>>>>,
}

/// One name's look-up: its route once found (`None` for a plain stream).
type Lookup = tokio::sync::OnceCell<Option<Arc<TopicRoute>>>;

impl Topics {
    /// What this producer remembers about `name`: `Some(route)` for a topic, `Some(None)`
    /// for a plain stream, `None` when it was never asked.
    fn cached(&self, name: &str) -> Option<Option<Arc<TopicRoute>>> {
        self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    fn remember(&self, name: &str, route: Option<Arc<TopicRoute>>) -> Option<Arc<TopicRoute>> {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A route found first (by a concurrent publish or a declare) stays, with its counter:
        // a lookup that began before a declaration of this producer answered may have found
        // no record yet, and must not turn the declared topic back into a plain stream.
        match known.get(name) {
            Some(Some(existing)) => Some(existing.clone()),
            _ => {
                known.insert(name.to_string(), route.clone());
                route
            }
        }
    }

    /// Remembers a declared topic (see [`Producer::topic`](crate::Producer::topic)).
    pub(crate) fn declared(&self, layout: TopicLayout) {
        let name = layout.name().to_string();
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match known.get(&name) {
            Some(Some(existing)) if existing.layout == layout => {}
            _ => {
                known.insert(name, Some(Arc::new(TopicRoute::new(layout))));
            }
        }
    }

    /// The route of `name` when it is a topic, `None` for a plain stream: from memory, else
    /// from the topic's record in Redis (one round trip, once per name). A name that cannot
    /// be a topic (with `{` or `}`) is a plain stream without asking.
    pub(crate) async fn route_of(&self, client: &Client, name: &str) -> Result<Option<Arc<TopicRoute>>> {
        if let Some(known) = self.cached(name) {
            return Ok(known);
        }
        if name.contains(['{', '}']) {
            return Ok(self.remember(name, None));
        }
        let lookup = self
            .lookups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.to_string())
            .or_default()
            .clone();
        let found = lookup
            .get_or_try_init(|| async {
                match crate::topic::layout::lookup(client, name).await {
                    Ok(recorded) => Ok(recorded.map(|layout| Arc::new(TopicRoute::new(layout)))),
                    Err(e) if is_no_permission(&e) => {
                        // A user whose rule predates topics (`~orders ~{orders}:dlq ...`, without
                        // the record `{orders}:topic` or EVALSHA) keeps publishing to its
                        // stream; a topic needs the record readable (see the README's "TLS and
                        // ACL").
                        tracing::warn!(
                            name,
                            error = %e,
                            "cannot read the topic record of this name; publishing to it as a stream \
                             (grant the record's key to publish to a topic of this name)"
                        );
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(self.remember(name, found.clone()))
    }
}

/// A refusal by the server's ACL (the user may not run the lookup or read the record).
fn is_no_permission(e: &Error) -> bool {
    matches!(e, Error::Redis { source, .. } if source.details().contains("NOPERM") || source.details().contains("ACL failure in script"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(shards: u32) -> TopicLayout {
        TopicLayout::new("orders", shards).expect("a valid layout")
    }

    #[test]
    fn unkeyed_messages_take_the_shards_in_turn_and_keys_their_hash() {
        let route = TopicRoute::new(layout(4));
        let turns: Vec<u32> = (0..9).map(|_| route.shard(None)).collect();
        assert_eq!(turns, [0, 1, 2, 3, 0, 1, 2, 3, 0]);
        // A batch of 6 takes 6 turns: it starts where the single publishes stopped.
        assert_eq!(route.next_shards(6), 1);
        assert_eq!(route.shard(None), 3);
        assert_eq!(route.shard(Some("order-7")), route.layout.shard_of_key("order-7"));
    }

    #[test]
    fn a_declared_topic_replaces_what_a_lookup_remembered_and_keeps_its_counter() {
        let topics = Topics::default();
        // A lookup found no record: a plain stream.
        assert!(topics.remember("orders", None).is_none());
        assert!(matches!(topics.cached("orders"), Some(None)));
        topics.declared(layout(4));
        let route = topics.cached("orders").flatten().expect("a topic now");
        assert_eq!(route.shard(None), 0);
        // Declared again with the same layout: the same route, the counter goes on.
        topics.declared(layout(4));
        assert_eq!(topics.cached("orders").flatten().expect("a topic").shard(None), 1);
        // A concurrent lookup's route does not replace the one remembered, nor does one that
        // began before the declaration and found no record.
        let found = topics.remember("orders", Some(Arc::new(TopicRoute::new(layout(4))))).expect("a topic");
        assert_eq!(found.shard(None), 2);
        assert!(topics.remember("orders", None).is_some());
        assert!(topics.cached("orders").flatten().is_some());
    }
}
