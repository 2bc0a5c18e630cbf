//! Building Redis clients from a URL: one place for client settings, reconnect policy and
//! password redaction.
//!
//! streamx uses three kinds of fred clients, each with settings chosen for what it does:
//! - the *command* client, shared by everything that sends short, idempotent commands
//!   (XACK, XCLAIM, XPENDING, scripts); fred pipelines concurrent commands on it;
//! - the *publish* client, which never re-sends a command after a connection drop (so a
//!   lost reply cannot turn into a duplicate XADD: the caller gets an error instead);
//! - one *reader* client per consumer loop, for the blocking XREADGROUP, so a blocked read
//!   never delays acks or publishes (see the fred notes in the README).

use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Config, ReconnectPolicy};
use fred::types::Builder;

use crate::error::{Error, Result};

/// The default Redis URL, used when neither the builder nor `STREAMX_REDIS_URL` sets one.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The environment variable read by [`crate::run`] and [`RedisUrl::from_env`].
pub const REDIS_URL_ENV: &str = "STREAMX_REDIS_URL";

/// A Redis URL, parsed once; its `Display` and `Debug` never show the password.
#[derive(Clone)]
pub struct RedisUrl {
    raw: String,
    config: Config,
}

impl RedisUrl {
    /// Parses a URL: `redis://`, `rediss://` (TLS), `redis-cluster://host:port?node=host:port`,
    /// with optional `user:password@`.
    pub fn parse(url: &str) -> Result<Self> {
        let config = Config::from_url(url).map_err(|e| Error::InvalidUrl {
            url: redact(url),
            reason: e.details().to_string(),
        })?;
        Ok(RedisUrl { raw: url.to_string(), config })
    }

    /// `STREAMX_REDIS_URL`, or [`DEFAULT_REDIS_URL`] when it is unset or empty.
    pub fn from_env() -> Result<Self> {
        match std::env::var(REDIS_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Self::parse(url.trim()),
            _ => Self::parse(DEFAULT_REDIS_URL),
        }
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.raw)
    }

    /// True for a `redis-cluster://` URL.
    pub fn is_cluster(&self) -> bool {
        self.config.server.is_clustered()
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RedisUrl").field(&self.redacted()).finish()
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Replaces the password of a URL (`user:password@` and `sentinelPassword=`) with `***`.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let host = &authority[at..];
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{}", &userinfo[..colon], host),
                None if !userinfo.is_empty() && scheme.is_empty() => format!("***{host}"),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    let tail = redact_query_param(tail, "sentinelPassword=");
    format!("{scheme}{authority}{tail}")
}

fn redact_query_param(tail: &str, param: &str) -> String {
    let mut out = String::with_capacity(tail.len());
    let mut rest = tail;
    while let Some(i) = rest.find(param) {
        out.push_str(&rest[..i + param.len()]);
        out.push_str("***");
        rest = &rest[i + param.len()..];
        rest = &rest[rest.find('&').unwrap_or(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// What a client is used for; decides its timeouts and whether commands are re-sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientRole {
    /// Short idempotent commands: re-sent after a reconnect.
    Command,
    /// XADD: never re-sent, so a dropped connection cannot duplicate an entry.
    Publish,
    /// One blocking XREADGROUP at a time, with the given BLOCK.
    Reader { block: Duration },
}

/// Builds a fred client for `role`; it reconnects by itself (exponential backoff, no limit).
pub(crate) fn build_client(url: &RedisUrl, role: ClientRole) -> Result<fred::clients::Client> {
    let mut builder = Builder::from_config(url.config.clone());
    builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    builder.with_connection_config(|c| {
        c.connection_timeout = Duration::from_secs(5);
        c.internal_command_timeout = Duration::from_secs(5);
        c.max_command_attempts = match role {
            ClientRole::Command => 3,
            ClientRole::Publish | ClientRole::Reader { .. } => 1,
        };
        c.tcp.nodelay = Some(true);
    });
    builder.with_performance_config(|p| {
        p.default_command_timeout = match role {
            ClientRole::Command | ClientRole::Publish => Duration::from_secs(30),
            ClientRole::Reader { block } => block + Duration::from_secs(10),
        };
    });
    builder.build().map_err(|source| Error::Connect { url: url.redacted(), source })
}

/// Builds a client for `role` and connects it, retrying with backoff until `deadline`
/// (`Duration::ZERO`: one attempt). Each failed attempt is logged with the redacted URL.
pub(crate) async fn connect(
    url: &RedisUrl,
    role: ClientRole,
    deadline: Duration,
) -> Result<fred::clients::Client> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let client = build_client(url, role)?;
        match client.init().await {
            Ok(_) => return Ok(client),
            Err(source) => {
                let _ = client.quit().await;
                let elapsed = started.elapsed();
                if elapsed + delay > deadline {
                    return Err(Error::Connect { url: url.redacted(), source });
                }
                tracing::warn!(url = %url, error = %source, retry_in = ?delay, "Redis is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://user:secret@host:6379/0"), "redis://user:***@host:6379/0");
        assert_eq!(redact("rediss://:secret@host"), "rediss://:***@host");
        assert_eq!(
            redact("redis-sentinel://u:p@h:1?sentinelPassword=x&node=h:2"),
            "redis-sentinel://u:***@h:1?sentinelPassword=***&node=h:2"
        );
        assert_eq!(redact("redis://user@host"), "redis://user@host");
    }

    #[test]
    fn display_and_debug_hide_the_password() {
        let url = RedisUrl::parse("redis://alice:hunter2@127.0.0.1:6390").unwrap();
        assert!(!format!("{url} {url:?}").contains("hunter2"));
    }

    #[test]
    fn invalid_url_error_is_redacted() {
        let err = RedisUrl::parse("redis://bob:hunter2@x:notaport").err().unwrap();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("bob:***@x:notaport"), "{text}");
    }
}
