//! Operator tools that change a group's state on purpose, for the `streamx` CLI, the
//! dashboard and your own scripts:
//!
//! - [`RetrySchedule`]: the retries a group has scheduled: list them, run one now, delete one;
//! - [`GroupAdmin`]: create, delete and reset a consumer group, remove a stopped consumer
//!   (handing its pending entries to the others first);
//! - [`DeadLetterSummary`]: a dead-letter stream's letters counted by origin, group and kind;
//! - [`TopicAdmin`]: delete a drained topic (to change its shard count).
//!
//! Every script here touches keys of one stream's hash slot only (see [`crate::keys`]), so
//! each works on Redis Cluster, and each says what a crash before, during or after it means.

mod dead_letter_summary;
mod groups;
mod retry_schedule;
mod topics;

pub use dead_letter_summary::{DeadLetterCount, DeadLetterSummary, DEFAULT_SUMMARY_PAGE};
pub use groups::{
    ConsumerRemoval, EntryCount, GroupAdmin, GroupDeleted, GroupStart, Liveness, ResetPlan, ResetTarget,
    DEFAULT_ALIVE_WITHIN, MAX_COUNTED,
};
pub use retry_schedule::{RetrySchedule, ScheduledPage, ScheduledRetry};
pub use topics::{TopicAdmin, TopicDeleted};

use fred::clients::Client;
use fred::interfaces::ClientLike as _;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::error::{Error, Result};

/// Runs `command args...` on the node that holds `key`'s slot (for commands fred does not
/// wrap with the features streamx builds it with, or wraps without an option we need).
async fn command(client: &Client, name: &'static str, key: &str, args: Vec<Value>) -> Result<Value> {
    let cmd = CustomCommand::new_static(name, ClusterHash::Custom(crate::keys::slot(key)), false);
    client.custom(cmd, args).await.map_err(|e| Error::redis(name, key, e))
}

fn text(v: Value) -> String {
    crate::wire::value_bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}
