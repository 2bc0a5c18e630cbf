//! Read-only figures for operators and tests: stream length, and per group the pending
//! count, lag and consumers (XINFO GROUPS / XINFO CONSUMERS / XLEN).

use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::Value;

use crate::connection::{tool_client, RedisUrl};
use crate::error::{Error, Result};
use crate::message::MessageId;
use crate::wire::value_bytes;

/// One consumer group of a stream, as XINFO GROUPS reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group name.
    pub name: String,
    /// Consumers known to the group.
    pub consumers: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// The last id delivered to the group.
    pub last_delivered_id: Option<MessageId>,
    /// Entries the group has read (Redis 7+).
    pub entries_read: Option<u64>,
    /// Entries not yet delivered to the group (Redis 7+; `None` when Redis cannot tell).
    pub lag: Option<u64>,
}

/// One consumer of a group, as XINFO CONSUMERS reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The consumer name.
    pub name: String,
    /// Entries it holds unacknowledged.
    pub pending: u64,
    /// Milliseconds since it last interacted with the group.
    pub idle_ms: u64,
}

/// One entry of a group's pending entries list, as XPENDING reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// The entry id.
    pub id: MessageId,
    /// The consumer holding it.
    pub consumer: String,
    /// Milliseconds since it was last delivered or claimed.
    pub idle_ms: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// Reads stream and group figures.
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// let inspector = streamx_runtime::Inspector::connect("redis://127.0.0.1:6379").await?;
/// for g in inspector.groups("orders").await? {
///     println!("{}: pending {}, lag {:?}", g.name, g.pending, g.lag);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Inspector {
    pub(crate) client: Client,
}

impl Inspector {
    /// Connects to `url`. For a `rediss://` URL the CA file in
    /// `STREAMX_REDIS_TLS_CA` and the client certificate in `STREAMX_REDIS_TLS_CERT` /
    /// `STREAMX_REDIS_TLS_KEY` are used when set, as by the runtime (see [`RedisUrl`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(&RedisUrl::parse(url)?).await
    }

    /// Connects with a parsed URL (with TLS or credentials options). TLS files it does not
    /// set are taken from the environment, as for [`connect`](Self::connect); its own
    /// settings win.
    pub async fn connect_with(url: &RedisUrl) -> Result<Self> {
        Ok(Inspector { client: tool_client(url).await? })
    }

    /// Uses an existing client.
    pub fn with_client(client: Client) -> Self {
        Inspector { client }
    }

    /// The number of entries in `stream` (0 when it does not exist).
    pub async fn stream_len(&self, stream: &str) -> Result<u64> {
        self.client.xlen(stream).await.map_err(|e| Error::redis("XLEN", stream, e))
    }

    /// The groups of `stream` (empty when the stream does not exist).
    pub async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        let reply: Result<Value, _> = self.client.xinfo_groups(stream).await;
        let reply = match reply {
            Ok(v) => v,
            Err(e) if e.details().contains("no such key") => return Ok(Vec::new()),
            Err(e) => return Err(Error::redis("XINFO GROUPS", stream, e)),
        };
        Ok(reply.into_array().into_iter().map(parse_group).collect())
    }

    /// The group `group` of `stream`, if it exists.
    pub async fn group(&self, stream: &str, group: &str) -> Result<Option<GroupInfo>> {
        Ok(self.groups(stream).await?.into_iter().find(|g| g.name == group))
    }

    /// The consumers of `group` on `stream`.
    pub async fn consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        let reply: Value =
            self.client.xinfo_consumers(stream, group).await.map_err(|e| Error::redis("XINFO CONSUMERS", stream, e))?;
        Ok(parse_consumers(reply))
    }
}

impl Inspector {
    /// Every pending entry of `group` on `stream` (of one consumer when given), oldest
    /// first, read page by page to the end of the list.
    pub async fn pending(&self, stream: &str, group: &str, consumer: Option<&str>) -> Result<Vec<PendingEntry>> {
        let mut out = Vec::new();
        let mut start = "-".to_string();
        loop {
            let reply: Value = match consumer {
                Some(c) => self.client.xpending(stream, group, (start.as_str(), "+", 1000, c)).await,
                None => self.client.xpending(stream, group, (start.as_str(), "+", 1000)).await,
            }
            .map_err(|e| Error::redis("XPENDING", stream, e))?;
            let rows = parse_pending(reply);
            let full = rows.len() >= 1000;
            out.extend(rows);
            match out.last() {
                Some(last) if full => start = format!("({}", last.id),
                _ => return Ok(out),
            }
        }
    }
}

/// Parses an XINFO CONSUMERS reply; a consumer missing its name, pending count or idle
/// time is left out (so no caller acts on a default).
pub(crate) fn parse_consumers(reply: Value) -> Vec<ConsumerInfo> {
    reply
        .into_array()
        .into_iter()
        .filter_map(|c| {
            let (mut name, mut pending, mut idle_ms) = (None, None, None);
            for (k, v) in pairs(c) {
                match k.as_str() {
                    "name" => name = Some(text(v)),
                    "pending" => pending = v.as_u64(),
                    "idle" => idle_ms = v.as_u64(),
                    _ => {}
                }
            }
            Some(ConsumerInfo { name: name?, pending: pending?, idle_ms: idle_ms? })
        })
        .collect()
}

/// Parses an extended XPENDING reply (`[id, consumer, idle, deliveries]` rows).
pub(crate) fn parse_pending(reply: Value) -> Vec<PendingEntry> {
    if reply.is_null() {
        return Vec::new();
    }
    reply
        .into_array()
        .into_iter()
        .filter_map(|row| {
            let mut parts = row.into_array().into_iter();
            let id = MessageId::parse_bytes(&value_bytes(parts.next()?)?)?;
            let consumer = text(parts.next()?);
            let idle_ms = parts.next()?.as_u64()?;
            let deliveries = parts.next()?.as_u64()?;
            Some(PendingEntry { id, consumer, idle_ms, deliveries })
        })
        .collect()
}

fn pairs(v: Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut it = v.into_array().into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((text(k), v));
    }
    out
}

fn text(v: Value) -> String {
    value_bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// A number Redis may answer with nil for "unknown" (fred reads nil as 0 with
/// `default-nil-types`, which would show an unknown lag as no lag).
fn known(v: &Value) -> Option<u64> {
    if v.is_null() {
        None
    } else {
        v.as_u64()
    }
}

fn parse_group(v: Value) -> GroupInfo {
    let mut g = GroupInfo::default();
    for (k, v) in pairs(v) {
        match k.as_str() {
            "name" => g.name = text(v),
            "consumers" => g.consumers = v.as_u64().unwrap_or(0),
            "pending" => g.pending = v.as_u64().unwrap_or(0),
            "last-delivered-id" => g.last_delivered_id = value_bytes(v).and_then(|b| MessageId::parse_bytes(&b)),
            "entries-read" => g.entries_read = known(&v),
            "lag" => g.lag = known(&v),
            _ => {}
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_lag_stays_unknown() {
        let reply = Value::Array(vec![
            "name".into(),
            "billing".into(),
            "lag".into(),
            Value::Null,
            "entries-read".into(),
            Value::Integer(3),
        ]);
        let group = parse_group(reply);
        assert_eq!(group.lag, None);
        assert_eq!(group.entries_read, Some(3));
    }
}
