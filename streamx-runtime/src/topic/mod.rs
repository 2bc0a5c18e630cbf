//! Sharded topics: a topic of N shards is N streams whose hash slots spread over a cluster's
//! masters ([`layout`]); messages of one key go to one shard, so per-key order holds across
//! processes while each shard is read by one process of a group at a time (shard ownership,
//! with fenced leases).

pub mod layout;

pub use layout::{declare, TopicLayout, DEFAULT_SHARDS, MAX_SHARDS};
pub(crate) mod fence;
pub(crate) mod ownership;
pub(crate) mod supervisor;
