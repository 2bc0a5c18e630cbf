//! Pausing and resuming a consumer group (see [`crate::pause`] for what a pause does to the
//! running consumers).

use fred::interfaces::KeysInterface;
use fred::types::Value;

use super::Inspector;
use crate::error::{Error, Result};
use crate::keys;
use crate::pause::{parse_pause_value, pause_value};
use crate::wire::value_bytes;

/// A paused group's pause: who paused it and when, as [`Inspector::pause_as`] recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseInfo {
    /// Who paused the group (the `by` of [`Inspector::pause_as`]; empty if unknown).
    pub by: String,
    /// When (Unix ms, the pausing process's clock), if recorded.
    pub at_ms: Option<u64>,
}

impl Inspector {
    /// Pauses `group` on `stream` (see [`pause_as`](Self::pause_as)), recorded as paused by
    /// this process (`<host>-<pid>`).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), streamx_runtime::Error> {
    /// let inspector = streamx_runtime::Inspector::connect("redis://127.0.0.1:6379").await?;
    /// inspector.pause("orders", "billing").await?;
    /// assert!(inspector.is_paused("orders", "billing").await?);
    /// inspector.resume("orders", "billing").await?;
    /// # Ok(()) }
    /// ```
    pub async fn pause(&self, stream: &str, group: &str) -> Result<()> {
        let host = gethostname::gethostname().into_string().unwrap_or_else(|_| "host".to_string());
        self.pause_as(stream, group, &format!("{host}-{}", std::process::id())).await
    }

    /// Pauses `group` on `stream`, recording `by` (who, for display): within a second every
    /// running consumer of the group, in every process, stops starting handlers; those
    /// running finish and are acknowledged, heartbeats go on, and what the consumers hold
    /// waits, pending, until [`resume`](Self::resume). One `SET` of
    /// [`keys::paused`]: the pause outlives the processes, and Redis restarts if Redis
    /// persists its data (AOF or RDB). Pausing a paused group records the new `by`. The group
    /// need not exist yet: consumers started on it later start nothing.
    pub async fn pause_as(&self, stream: &str, group: &str, by: &str) -> Result<()> {
        let key = keys::paused(stream, group);
        self.client
            .set::<(), _, _>(key.as_str(), pause_value(by), None, None, false)
            .await
            .map_err(|e| Error::redis("SET", key, e))
    }

    /// Resumes `group` on `stream`: deletes its pause key; within a second its consumers
    /// start what they held, then read on. Returns whether the group was paused.
    pub async fn resume(&self, stream: &str, group: &str) -> Result<bool> {
        let key = keys::paused(stream, group);
        let deleted: u64 = self.client.del(key.as_str()).await.map_err(|e| Error::redis("DEL", key, e))?;
        Ok(deleted > 0)
    }

    /// Whether `group` on `stream` is paused (its pause key exists).
    pub async fn is_paused(&self, stream: &str, group: &str) -> Result<bool> {
        Ok(self.pause_info(stream, group).await?.is_some())
    }

    /// Who paused `group` on `stream` and when; `None` when it is not paused.
    pub async fn pause_info(&self, stream: &str, group: &str) -> Result<Option<PauseInfo>> {
        let key = keys::paused(stream, group);
        let value: Value = self.client.get(key.as_str()).await.map_err(|e| Error::redis("GET", key, e))?;
        if value.is_null() {
            return Ok(None);
        }
        let text = value_bytes(value).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let (at_ms, by) = parse_pause_value(&text);
        Ok(Some(PauseInfo { by, at_ms }))
    }

    /// Which of `groups` (of `stream`) are paused: one pipelined `EXISTS` each.
    pub(crate) async fn paused_among(&self, stream: &str, groups: &[&str]) -> Result<Vec<bool>> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.client.pipeline();
        for group in groups {
            let _: () =
                pipeline.exists(keys::paused(stream, group)).await.map_err(|e| Error::redis("EXISTS", stream, e))?;
        }
        let mut paused = Vec::with_capacity(groups.len());
        for reply in pipeline.try_all::<Value>().await {
            let reply = reply.map_err(|e| Error::redis("EXISTS", stream, e))?;
            paused.push(reply.as_u64().unwrap_or(0) > 0);
        }
        Ok(paused)
    }
}
