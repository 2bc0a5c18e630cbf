//! One connection to Redis for a command, made by the runtime's own code (URL syntax, TLS
//! environment, redaction), and the lookups every command shares: does the stream exist,
//! does the group.

use fred::clients::Client;
use fred::interfaces::KeysInterface;
use streamx_runtime::admin::DeadLetterSummary;
use streamx_runtime::keys::default_dead_letter_stream;
use streamx_runtime::{DeadLetters, GroupInfo, Inspector, Producer, RedisUrl};

use crate::error::{redis, CliError, Result};

/// A connected client and the runtime's tools on it.
#[derive(Clone)]
pub struct Connection {
    producer: Producer,
    url: String,
}

impl Connection {
    /// Connects to `url` as the runtime would (one attempt); a failure names the URL with
    /// its password redacted.
    pub async fn open(url: &str) -> Result<Self> {
        let parsed = RedisUrl::parse(url)?;
        let producer = Producer::connect_with(&parsed).await?;
        Ok(Connection { producer, url: parsed.redacted() })
    }

    /// The URL, without its password.
    pub fn redacted_url(&self) -> &str {
        &self.url
    }

    /// The fred client, for commands streamx does not wrap: asked of the producer each time,
    /// since it replaces a client that got stuck (the dashboard runs for days).
    pub fn client(&self) -> Client {
        self.producer.client()
    }

    /// The producer (publishes in streamx's wire format).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Group and pending figures.
    pub fn inspector(&self) -> Inspector {
        Inspector::with_client(self.client())
    }

    /// The dead letters of `stream`: its default dead-letter stream (`{stream}:dlq` for a
    /// name without `}`) unless `dlq_stream` names another.
    pub fn dead_letters(&self, stream: &str, dlq_stream: Option<&str>) -> DeadLetters {
        let key = dlq_stream.map(str::to_string).unwrap_or_else(|| dead_letter_key(stream));
        DeadLetters::with_client(self.client(), &key)
    }

    /// [`Connection::dead_letters`] for a change (replay, delete, purge): a `dlq_stream`
    /// given by the operator must be a dead-letter stream, so that a typo or a crafted
    /// request cannot replay or delete the entries of a live stream. Refused with
    /// [`CliError::InvalidInput`] when it is `stream` itself, or when it holds entries and
    /// its first one is no dead letter (no `dlq:stream` field); a missing or empty stream
    /// passes (nothing to act on).
    pub async fn dead_letters_to_change(&self, stream: &str, dlq_stream: Option<&str>) -> Result<DeadLetters> {
        let dead_letters = self.dead_letters(stream, dlq_stream);
        let Some(given) = dlq_stream else { return Ok(dead_letters) };
        let refuse = |reason: &str| {
            Err(CliError::InvalidInput { what: format!("dead-letter stream `{given}`"), reason: reason.to_string() })
        };
        if given == stream {
            return refuse("it is the stream itself, not its dead-letter stream");
        }
        if !DeadLetterSummary::is_dead_letter_stream(&self.client(), given).await? && dead_letters.count().await? > 0 {
            return refuse("its entries are not dead letters (the first has no `dlq:stream` field)");
        }
        Ok(dead_letters)
    }

    /// Fails with [`CliError::UnknownStream`] unless `stream` exists.
    pub async fn require_stream(&self, stream: &str) -> Result<()> {
        let exists: u64 = self.client().exists(stream).await.map_err(|e| redis("EXISTS", stream, e))?;
        if exists == 0 {
            return Err(CliError::UnknownStream { stream: stream.to_string() });
        }
        Ok(())
    }

    /// The group `group` of `stream`; [`CliError::UnknownStream`] or
    /// [`CliError::UnknownGroup`] (listing the groups it has) otherwise.
    pub async fn require_group(&self, stream: &str, group: &str) -> Result<GroupInfo> {
        self.require_stream(stream).await?;
        let groups = self.inspector().groups(stream).await?;
        let known = if groups.is_empty() {
            "none".to_string()
        } else {
            groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ")
        };
        groups.into_iter().find(|g| g.name == group).ok_or_else(|| CliError::UnknownGroup {
            stream: stream.to_string(),
            group: group.to_string(),
            known,
        })
    }
}

/// The default dead-letter stream of `stream` (the engine's naming, see
/// `streamx_runtime::keys`): `{orders}:dlq`, `{shop}#{shop}.orders:dlq`.
pub fn dead_letter_key(stream: &str) -> String {
    default_dead_letter_stream(stream)
}
