//! Building fred clients from a [`RedisUrl`] and connecting them, with retries, and
//! saying what a failed connect most likely means.
//!
//! streamx uses three kinds of fred clients, each with settings chosen for what it does
//! ([`ClientRole`]):
//! - the *command* client, shared by everything that sends short, idempotent commands
//!   (XACK, XCLAIM, XPENDING, scripts); fred pipelines concurrent commands on it;
//! - the *publish* client, which never re-sends a command after a connection drop (so a
//!   lost reply cannot turn into a duplicate XADD: the caller gets an error instead);
//! - one *reader* client per consumer loop, for the blocking XREADGROUP, so a blocked read
//!   never delays acks or publishes (see the fred notes in the README).

use std::time::{Duration, Instant};

use fred::error::ErrorKind;
use fred::prelude::{ClientLike, Config, ReconnectPolicy};
use fred::types::Builder;

use super::redact::redact;
use super::redis_url::RedisUrl;
use crate::error::{Error, Result};
use crate::retry_delay::RetryDelay;

/// What a client is used for; decides its timeouts and whether commands are re-sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientRole {
    /// Short idempotent commands: re-sent after a reconnect.
    Command,
    /// XADD: never re-sent, so a dropped connection cannot duplicate an entry.
    Publish,
    /// XADDs of batches of many round trips: as [`Publish`](Self::Publish), but without
    /// TCP_NODELAY, so the kernel merges what fred writes per 8 KiB into full segments.
    BulkPublish,
    /// One blocking XREADGROUP at a time, with the given BLOCK.
    Reader { block: Duration },
}

/// Runs `read`, which reads files (certificate files, the system's CA store), on tokio's
/// blocking pool rather than on a thread of the async runtime. A panic in `read` is resumed
/// here; `url` (redacted) names the connection in the error if the runtime shuts down first.
pub(crate) async fn read_off_runtime<T: Send + 'static>(
    url: &str,
    read: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => {
                Err(Error::Tls { url: redact(url), reason: format!("reading the TLS files did not finish: {e}") })
            }
        },
    }
}

/// fred's settings for `url`, with its TLS connector built off the async runtime: without a
/// CA given, building it reads the system's CA store from disk.
async fn config_off_runtime(url: &RedisUrl) -> Result<Config> {
    if !url.is_tls() {
        return url.client_config();
    }
    let owned = url.clone();
    read_off_runtime(&url.redacted(), move || owned.client_config()).await
}

/// `url` completed from the environment as every connect does (see
/// [`RedisUrl::with_tls_from_env`]), with the files read off the async runtime.
pub(crate) async fn with_env_off_runtime(url: &RedisUrl) -> Result<RedisUrl> {
    if !RedisUrl::env_names_tls_files() {
        return Ok(url.clone());
    }
    let owned = url.clone();
    read_off_runtime(&url.redacted(), move || owned.with_tls_from_env()).await
}

/// Builds a fred client for `role` from `config` (see [`config_off_runtime`]); it reconnects by
/// itself (backoff 100 ms doubling to 1 s, no limit).
fn build_client(url: &RedisUrl, config: Config, role: ClientRole) -> Result<fred::clients::Client> {
    let mut builder = Builder::from_config(config);
    // Reconnect attempts at most a second apart: a consumer whose connection stays down
    // longer than `claim_idle` after Redis is back looks stopped to the others.
    builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2));
    builder.with_connection_config(|c| {
        c.connection_timeout = Duration::from_secs(5);
        c.internal_command_timeout = Duration::from_secs(5);
        // One attempt means a command in flight when a connection drops is failed, never
        // re-sent (no duplicate XADD). On a cluster fred needs one spare attempt to follow
        // an ASK redirection while a slot migrates (with none left it stops routing and
        // the client hangs), so there a publish may be re-sent once after a drop.
        c.max_command_attempts = match role {
            ClientRole::Command => 3,
            ClientRole::Publish | ClientRole::BulkPublish | ClientRole::Reader { .. } if url.is_cluster() => 2,
            ClientRole::Publish | ClientRole::BulkPublish | ClientRole::Reader { .. } => 1,
        };
        // Small requests leave at once (a request written while another is unanswered would
        // otherwise wait for that one's ACK); bulk publishing trades that for full segments.
        c.tcp.nodelay = Some(role != ClientRole::BulkPublish);
    });
    builder.with_performance_config(|p| {
        p.default_command_timeout = match role {
            ClientRole::Command | ClientRole::Publish | ClientRole::BulkPublish => COMMAND_TIMEOUT,
            ClientRole::Reader { block } => block + Duration::from_secs(10),
        };
    });
    builder.build().map_err(|source| Error::Connect { url: url.redacted(), source })
}

/// Builds a client for `role` and connects it, retrying with backoff until `deadline`
/// (`Duration::ZERO`: one attempt). Each failed attempt is logged with the redacted URL.
/// `url` is used as it is: the entry points complete it from the environment first (see
/// [`with_env_off_runtime`]).
pub(crate) async fn connect(url: &RedisUrl, role: ClientRole, deadline: Duration) -> Result<fred::clients::Client> {
    let started = Instant::now();
    let mut delay = RetryDelay::up_to(Duration::from_secs(2));
    let config = config_off_runtime(url).await?;
    loop {
        let client = build_client(url, config.clone(), role)?;
        match client.init().await {
            Ok(_) => return Ok(client),
            Err(source) => {
                let _ = client.quit().await;
                let source = explain_connect_error(url, source);
                // Wrong credentials or a rejected certificate do not fix themselves.
                let permanent = is_permanent(&source);
                let elapsed = started.elapsed();
                if permanent || elapsed + delay.current() > deadline {
                    return Err(Error::Connect { url: url.redacted(), source });
                }
                tracing::warn!(url = %url, error = %source, retry_in = ?delay.current(), "Redis is not reachable yet; retrying");
                tokio::time::sleep(delay.advance()).await;
            }
        }
    }
}

/// True for a failed connect that retrying cannot fix: wrong credentials, a rejected
/// certificate, a service name the sentinels do not know.
fn is_permanent(err: &fred::error::Error) -> bool {
    match err.kind() {
        ErrorKind::Auth | ErrorKind::Config => true,
        #[cfg(feature = "tls")]
        ErrorKind::Tls => true,
        _ => false,
    }
}

/// Says what a failed connect most likely means where fred's text does not: a TLS
/// certificate the client rejected, a plain connection to a TLS port, TLS to a plain port.
fn explain_connect_error(url: &RedisUrl, err: fred::error::Error) -> fred::error::Error {
    if let Some(service) = url.sentinel_service() {
        if let Some(explained) = explain_sentinel_error(service, &err) {
            return explained;
        }
    }
    #[cfg(feature = "tls")]
    if let Some(explained) = explain_tls_error(url, &err) {
        return explained;
    }
    let details = err.details();
    let closed = ["ConnectionReset", "UnexpectedEof", "BrokenPipe"].iter().any(|k| details.contains(k));
    if !url.is_tls() && closed {
        return fred::error::Error::new(
            err.kind().clone(),
            format!("{details} (the server closed the connection: if it only accepts TLS, use a rediss:// URL)"),
        );
    }
    err
}

/// For a `redis-sentinel://` URL, what a failed connect means where fred's text does not
/// say: an unknown service name, credentials refused by the master, no sentinel to ask.
/// `None` for other errors (a TLS error is explained as for any URL).
fn explain_sentinel_error(service: &str, err: &fred::error::Error) -> Option<fred::error::Error> {
    let details = err.details();
    if details.contains("Missing primary address") {
        return Some(fred::error::Error::new(
            ErrorKind::Config,
            format!(
                "the sentinels monitor no master named `{service}`: sentinelServiceName must be the name \
                 of a `sentinel monitor` line of their configuration"
            ),
        ));
    }
    // fred reports every error after the sentinels answered as a sentinel error; a refused
    // AUTH there is the master's (a sentinel's refusal reads as "Failed to connect").
    if ["WRONGPASS", "NOAUTH", "NOPERM"].iter().any(|code| details.starts_with(code)) {
        return Some(fred::error::Error::new(
            ErrorKind::Auth,
            format!("the master named by the sentinels refused the URL's user and password: {details}"),
        ));
    }
    if details.contains("Failed to connect to all sentinel nodes") {
        return Some(fred::error::Error::new(
            err.kind().clone(),
            format!(
                "{details} (none of the sentinels in the URL, its host and its node= parameters, accepted a \
                 connection: are they running, and if they require a password, are sentinelUsername and \
                 sentinelPassword right?)"
            ),
        ));
    }
    None
}

/// For a `rediss://` URL, what a failed connect means (see [`explain_connect_error`]);
/// `None` when it is not about TLS.
#[cfg(feature = "tls")]
fn explain_tls_error(url: &RedisUrl, err: &fred::error::Error) -> Option<fred::error::Error> {
    use super::tls::{REDIS_TLS_CERT_ENV, REDIS_TLS_KEY_ENV};

    if !url.is_tls() {
        return None;
    }
    let details = err.details();
    if let Some(reason) = details.split("InvalidCertificate(").nth(1).and_then(|rest| rest.split(')').next()) {
        let why = match reason {
            "UnknownIssuer" | "BadSignature" => {
                url.untrusted_hint().unwrap_or_else(|| "it is not signed by a trusted CA".to_string())
            }
            "NotValidForName" | "NotValidForNameContext" => "it is not valid for this host name".to_string(),
            "Expired" | "ExpiredContext" => "it has expired".to_string(),
            _ => "it cannot be verified".to_string(),
        };
        return Some(fred::error::Error::new(
            ErrorKind::Tls,
            format!("TLS handshake failed: the server's certificate was rejected ({reason}): {why}"),
        ));
    }
    if details.contains("AlertReceived(CertificateRequired)") {
        return Some(fred::error::Error::new(
            ErrorKind::Tls,
            format!(
                "TLS handshake failed: the server requires a client certificate; give one with \
                 tls_client_cert_files / with_tls_client_cert_files or {REDIS_TLS_CERT_ENV} and {REDIS_TLS_KEY_ENV}"
            ),
        ));
    }
    if *err.kind() == ErrorKind::Timeout {
        return Some(fred::error::Error::new(
            ErrorKind::Timeout,
            format!("{details} (no TLS handshake: if the port does not speak TLS, use a redis:// URL)"),
        ));
    }
    if details.contains("InvalidContentType") || details.contains("corrupt message") {
        return Some(fred::error::Error::new(
            ErrorKind::Tls,
            format!("TLS handshake failed ({details}): does this port speak TLS? Use redis:// for a plain port"),
        ));
    }
    None
}

/// A command client for a tool (history, inspection, dead letters): `url` completed from
/// the environment (see [`with_env_off_runtime`]), one connect attempt.
pub(crate) async fn tool_client(url: &RedisUrl) -> Result<fred::clients::Client> {
    connect(&with_env_off_runtime(url).await?, ClientRole::Command, Duration::ZERO).await
}

/// True when an error means the fred client itself is stuck rather than one command
/// failing: fred gave up routing ("Max attempts reached", after which it stops routing
/// until rebuilt) or a command outlived its timeout (a disconnect fred did not notice).
pub(crate) fn is_wedged(err: &fred::error::Error) -> bool {
    match err.kind() {
        ErrorKind::Routing => err.details().contains("Max attempts"),
        ErrorKind::Timeout => true,
        // The client's connection task is gone (it ran on an async runtime that shut down).
        _ => err.details().contains("Failed to send command to router"),
    }
}

/// How long a command (other than a blocking read) waits for its reply.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(feature = "tls")]
    #[test]
    fn certificate_problems_are_explained() {
        let rejected = |reason: &str| {
            let text = format!("invalid peer certificate: InvalidCertificate({reason})");
            let err = explain_connect_error(
                &RedisUrl::parse("rediss://127.0.0.1:6380").unwrap(),
                fred::error::Error::new(ErrorKind::IO, text),
            );
            assert!(is_permanent(&err), "{err}");
            err.details().to_string()
        };
        let text = rejected("UnknownIssuer");
        assert!(text.contains("certificate was rejected (UnknownIssuer)"), "{text}");
        assert!(text.contains("no CA was configured") && text.contains("set STREAMX_REDIS_TLS_CA"), "{text}");
        assert!(rejected("Expired").contains("it has expired"));
        let required =
            fred::error::Error::new(ErrorKind::IO, "received fatal alert: AlertReceived(CertificateRequired)");
        let text = explain_connect_error(&RedisUrl::parse("rediss://127.0.0.1:6380").unwrap(), required).to_string();
        assert!(text.contains("requires a client certificate") && text.contains("STREAMX_REDIS_TLS_CERT"), "{text}");
    }

    #[test]
    fn a_plain_connection_closed_by_the_server_suggests_tls() {
        let plain = RedisUrl::parse("redis://127.0.0.1:6379").unwrap();
        let closed = fred::error::Error::new(ErrorKind::IO, "Connection reset by peer (os error 104): ConnectionReset");
        let err = explain_connect_error(&plain, closed);
        assert!(!is_permanent(&err), "{err}");
        assert!(err.details().contains("if it only accepts TLS, use a rediss:// URL"), "{err}");
    }

    #[test]
    fn sentinel_failures_are_explained() {
        let url = RedisUrl::parse("redis-sentinel://127.0.0.1:26379?sentinelServiceName=orders").unwrap();
        let sentinel =
            |text: &str| explain_connect_error(&url, fred::error::Error::new(ErrorKind::Sentinel, text.to_owned()));
        let err = sentinel("Missing primary address in response from sentinel node.");
        assert!(is_permanent(&err), "{err}");
        assert!(err.details().contains("no master named `orders`") && err.details().contains("sentinelServiceName"));
        let err = sentinel("WRONGPASS invalid username-password pair or user is disabled.");
        assert!(is_permanent(&err), "{err}");
        assert!(err.details().contains("the master named by the sentinels refused"), "{err}");
        let err = sentinel("Failed to connect to all sentinel nodes.");
        assert!(!is_permanent(&err), "{err}");
        assert!(err.details().contains("sentinelPassword"), "{err}");
        let other = sentinel("Invalid role: Some(\"slave\")");
        assert_eq!(other.details(), "Invalid role: Some(\"slave\")");
        assert!(!is_permanent(&other));
    }

    #[test]
    fn wedged_means_stuck_routing_or_a_timeout() {
        assert!(is_wedged(&fred::error::Error::new(ErrorKind::Routing, "Max attempts reached.")));
        assert!(is_wedged(&fred::error::Error::new(ErrorKind::Timeout, "Request timed out.")));
        assert!(!is_wedged(&fred::error::Error::new(ErrorKind::Unknown, "NOGROUP")));
    }
}
