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

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::error::ErrorKind;
use fred::prelude::{ClientLike, Config, ReconnectPolicy};
use fred::rustls::pki_types::pem::PemObject;
use fred::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use fred::rustls::{ClientConfig, RootCertStore};
use fred::types::config::TlsConfig;
use fred::types::Builder;

use crate::error::{Error, Result};

/// The default Redis URL, used when neither the builder nor `STREAMX_REDIS_URL` sets one.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The environment variable read by [`crate::run`] and [`RedisUrl::from_env`].
pub const REDIS_URL_ENV: &str = "STREAMX_REDIS_URL";

/// Environment variable read by [`RedisUrl::from_env`]: a PEM file of the CA certificates
/// to trust for a `rediss://` URL, instead of the system's.
pub const REDIS_TLS_CA_ENV: &str = "STREAMX_REDIS_TLS_CA";

/// Environment variable read by [`RedisUrl::from_env`]: a PEM file with the client
/// certificate (chain) to present, for servers that verify clients. Needs
/// [`REDIS_TLS_KEY_ENV`].
pub const REDIS_TLS_CERT_ENV: &str = "STREAMX_REDIS_TLS_CERT";

/// Environment variable read by [`RedisUrl::from_env`]: a PEM file with the private key of
/// the client certificate in [`REDIS_TLS_CERT_ENV`].
pub const REDIS_TLS_KEY_ENV: &str = "STREAMX_REDIS_TLS_KEY";

/// A Redis URL, parsed once; its `Display` and `Debug` never show the password.
///
/// A `rediss://` (or `rediss-cluster://`) URL connects over TLS (rustls). The server
/// certificate is checked against the system's CA certificates, or only against the ones
/// given with [`with_tls_ca_file`](Self::with_tls_ca_file) /
/// [`with_tls_ca_pem`](Self::with_tls_ca_pem). A client certificate for servers that verify
/// clients (`tls-auth-clients yes`) is added with
/// [`with_tls_client_cert_files`](Self::with_tls_client_cert_files).
///
/// ```no_run
/// # fn demo() -> Result<(), streamx_runtime::Error> {
/// use streamx_runtime::RedisUrl;
///
/// let url = RedisUrl::parse("rediss://redis.internal:6380")?
///     .with_tls_ca_file("/etc/redis/ca.crt")?
///     .with_credentials("orders-worker", "s3cret");
/// assert_eq!(url.to_string(), "rediss://orders-worker:***@redis.internal:6380");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisUrl {
    /// The URL as given (with the user name set by `with_credentials`); only ever shown
    /// redacted.
    raw: String,
    /// fred's settings, always without TLS: the TLS connector is built from `tls` for each
    /// client, so that fred never picks a crypto provider or trust roots by itself.
    config: Config,
    /// `Some` for a `rediss://` URL.
    tls: Option<TlsSettings>,
}

/// What a TLS connection trusts and presents.
#[derive(Clone, Default)]
struct TlsSettings {
    /// CA certificates trusted instead of the system's; `None`: the system's.
    ca: Option<Vec<CertificateDer<'static>>>,
    /// A client certificate chain and its key. Never printed.
    client: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl RedisUrl {
    /// Parses a URL: `redis://`, `rediss://` (TLS), `redis-cluster://host:port?node=host:port`
    /// (`rediss-cluster://` for TLS), with optional `user:password@`.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |e: fred::error::Error| Error::InvalidUrl { url: redact(url), reason: e.details().to_string() };
        let (config, tls) = match tls_scheme_as_plain(url) {
            Some(plain) => (Config::from_url(&plain).map_err(invalid)?, Some(TlsSettings::default())),
            None => (Config::from_url(url).map_err(invalid)?, None),
        };
        Ok(RedisUrl { raw: url.to_string(), config, tls })
    }

    /// `STREAMX_REDIS_URL`, or [`DEFAULT_REDIS_URL`] when it is unset or empty; with the CA
    /// file in `STREAMX_REDIS_TLS_CA` and the client certificate and key files in
    /// `STREAMX_REDIS_TLS_CERT` and `STREAMX_REDIS_TLS_KEY`, when set (they need a
    /// `rediss://` URL).
    pub fn from_env() -> Result<Self> {
        let mut url = match std::env::var(REDIS_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Self::parse(url.trim())?,
            _ => Self::parse(DEFAULT_REDIS_URL)?,
        };
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(ca) = var(REDIS_TLS_CA_ENV) {
            url = url.with_tls_ca_file(ca)?;
        }
        match (var(REDIS_TLS_CERT_ENV), var(REDIS_TLS_KEY_ENV)) {
            (Some(cert), Some(key)) => url = url.with_tls_client_cert_files(cert, key)?,
            (None, None) => {}
            _ => {
                return Err(url.tls_error(format!("{REDIS_TLS_CERT_ENV} and {REDIS_TLS_KEY_ENV} must be set together")))
            }
        }
        Ok(url)
    }

    /// Trusts only the CA certificates in this PEM file (one or more `CERTIFICATE` blocks)
    /// for the server's certificate, instead of the system's. Needs a `rediss://` URL.
    pub fn with_tls_ca_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| self.tls_error(format!("cannot read the CA file {}: {e}", path.display())))?;
        self.with_ca(&pem, &format!("the CA file {}", path.display()))
    }

    /// Like [`with_tls_ca_file`](Self::with_tls_ca_file), with the PEM text itself.
    pub fn with_tls_ca_pem(self, pem: impl AsRef<[u8]>) -> Result<Self> {
        self.with_ca(pem.as_ref(), "the CA PEM")
    }

    /// Presents this client certificate (PEM, the certificate first, then any
    /// intermediates) and its private key (PEM: PKCS#8, PKCS#1 or SEC1) to servers that
    /// verify clients. Needs a `rediss://` URL.
    pub fn with_tls_client_cert_files(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let read = |path: &Path, what: &str| {
            std::fs::read(path)
                .map_err(|e| self.tls_error(format!("cannot read the client {what} file {}: {e}", path.display())))
        };
        let (cert_pem, key_pem) = (read(cert, "certificate")?, read(key, "key")?);
        self.with_client_cert(&cert_pem, &key_pem, &cert.display().to_string(), &key.display().to_string())
    }

    /// Like [`with_tls_client_cert_files`](Self::with_tls_client_cert_files), with the PEM
    /// text itself.
    pub fn with_tls_client_cert_pem(self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Self> {
        self.with_client_cert(cert.as_ref(), key.as_ref(), "PEM", "PEM")
    }

    /// Authenticates as this ACL user (`AUTH username password`), replacing any
    /// `user:password@` of the URL. For a server with only `requirepass`, the user is
    /// `default`. The password is never shown: `Display` gives `scheme://username:***@host`.
    pub fn with_credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        let username = username.into();
        self.raw = with_userinfo(&self.raw, &format!("{username}:***"));
        self.config.username = Some(username);
        self.config.password = Some(password.into());
        self
    }

    /// True for a `rediss://` (TLS) URL.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn with_ca(mut self, pem: &[u8], what: &str) -> Result<Self> {
        self.tls_mut(what)?;
        let certs = parse_certs(pem).map_err(|reason| self.tls_error(format!("{what}: {reason}")))?;
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots.add(cert.clone()).map_err(|e| self.tls_error(format!("{what}: not a usable CA certificate: {e}")))?;
        }
        self.tls_mut(what)?.ca = Some(certs);
        Ok(self)
    }

    fn with_client_cert(mut self, cert_pem: &[u8], key_pem: &[u8], cert_what: &str, key_what: &str) -> Result<Self> {
        self.tls_mut("a client certificate")?;
        let chain = parse_certs(cert_pem)
            .map_err(|reason| self.tls_error(format!("client certificate {cert_what}: {reason}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| self.tls_error(format!("client key {key_what}: no private key found ({e})")))?;
        let tls = self.tls_mut("a client certificate")?;
        tls.client = Some((chain, Arc::new(key)));
        // Checks that the key fits the certificate and is supported, before any connect.
        let settings = tls.clone();
        settings.rustls_config(RootCertStore::empty()).map_err(|reason| self.tls_error(reason))?;
        Ok(self)
    }

    fn tls_mut(&mut self, what: &str) -> Result<&mut TlsSettings> {
        if self.tls.is_none() {
            return Err(self.tls_error(format!("{what} was given but the URL does not use TLS; use rediss://")));
        }
        Ok(self.tls.get_or_insert_with(TlsSettings::default))
    }

    fn tls_error(&self, reason: String) -> Error {
        Error::Tls { url: self.redacted(), reason }
    }

    /// fred's settings for a new client, with a TLS connector for a `rediss://` URL.
    fn client_config(&self) -> Result<Config> {
        let mut config = self.config.clone();
        if let Some(tls) = &self.tls {
            let roots = tls.roots().map_err(|reason| self.tls_error(reason))?;
            let rustls = tls.rustls_config(roots).map_err(|reason| self.tls_error(reason))?;
            config.tls = Some(TlsConfig::from(rustls));
        }
        Ok(config)
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

impl TlsSettings {
    /// The given CA certificates, else the system's (an error when there are none).
    fn roots(&self) -> std::result::Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(certs) => {
                for cert in certs {
                    roots.add(cert.clone()).map_err(|e| format!("not a usable CA certificate: {e}"))?;
                }
            }
            None => {
                let loaded = fred::rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(loaded.certs);
                if roots.is_empty() {
                    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
                    return Err(format!(
                        "no system CA certificates found ({}); give the server's CA with \
                         {REDIS_TLS_CA_ENV} or with_tls_ca_file",
                        if errors.is_empty() { "none installed".to_string() } else { errors.join("; ") }
                    ));
                }
            }
        }
        Ok(roots)
    }

    /// A rustls client configuration on the *ring* provider, chosen here rather than taken
    /// from the process default, so that no other crate's rustls features can make it
    /// fail (or panic) at connect time.
    fn rustls_config(&self, roots: RootCertStore) -> std::result::Result<ClientConfig, String> {
        let provider = Arc::new(fred::rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_root_certificates(roots);
        match &self.client {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("the client certificate and key cannot be used: {e}")),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

/// For a TLS scheme (`rediss`, `rediss-cluster`, `valkeys`, ...), the URL with the plain
/// scheme, so fred parses the rest and leaves TLS to us; `None` for other schemes.
fn tls_scheme_as_plain(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    ["rediss", "valkeys"].iter().find_map(|tls| {
        let suffix = scheme.strip_prefix(tls)?;
        (suffix.is_empty() || suffix.starts_with('-')).then(|| format!("{}{suffix}://{rest}", &tls[..tls.len() - 1]))
    })
}

/// Every `CERTIFICATE` block of a PEM text; an error if there is none.
fn parse_certs(pem: &[u8]) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE found in it".to_string());
    }
    Ok(certs)
}

/// The URL with its `user[:password]@` part replaced by `userinfo@` (for display only).
fn with_userinfo(url: &str, userinfo: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{scheme}{userinfo}@{host}")
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
    read_off_runtime(&url.raw, move || owned.client_config()).await
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
            ClientRole::Publish | ClientRole::Reader { .. } if url.is_cluster() => 2,
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
pub(crate) async fn connect(url: &RedisUrl, role: ClientRole, deadline: Duration) -> Result<fred::clients::Client> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let config = config_off_runtime(url).await?;
    loop {
        let client = build_client(url, config.clone(), role)?;
        match client.init().await {
            Ok(_) => return Ok(client),
            Err(source) => {
                let _ = client.quit().await;
                let source = explain_connect_error(url, source);
                // Wrong credentials or a rejected certificate do not fix themselves.
                let permanent = matches!(source.kind(), ErrorKind::Auth | ErrorKind::Tls);
                let elapsed = started.elapsed();
                if permanent || elapsed + delay > deadline {
                    return Err(Error::Connect { url: url.redacted(), source });
                }
                tracing::warn!(url = %url, error = %source, retry_in = ?delay, "Redis is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Says what a failed connect most likely means where fred's text does not: a TLS
/// certificate the client rejected, a plain connection to a TLS port, TLS to a plain port.
fn explain_connect_error(url: &RedisUrl, err: fred::error::Error) -> fred::error::Error {
    let details = err.details();
    if let Some(reason) = details.split("InvalidCertificate(").nth(1).and_then(|rest| rest.split(')').next()) {
        let hint = match reason {
            "UnknownIssuer" | "BadSignature" => format!(
                "it is not signed by a trusted CA; give the server's CA with tls_ca_file / \
                 with_tls_ca_file or {REDIS_TLS_CA_ENV}"
            ),
            "NotValidForName" | "NotValidForNameContext" => "it is not valid for this host name".to_string(),
            "Expired" | "ExpiredContext" => "it has expired".to_string(),
            _ => "it cannot be verified".to_string(),
        };
        return fred::error::Error::new(
            ErrorKind::Tls,
            format!("TLS handshake failed: the server's certificate was rejected ({reason}): {hint}"),
        );
    }
    if details.contains("AlertReceived(CertificateRequired)") {
        return fred::error::Error::new(
            ErrorKind::Tls,
            format!(
                "TLS handshake failed: the server requires a client certificate; give one with \
                 tls_client_cert_files / with_tls_client_cert_files or {REDIS_TLS_CERT_ENV} and {REDIS_TLS_KEY_ENV}"
            ),
        );
    }
    if url.is_tls() && *err.kind() == ErrorKind::Timeout {
        return fred::error::Error::new(
            ErrorKind::Timeout,
            format!("{details} (no TLS handshake: if the port does not speak TLS, use a redis:// URL)"),
        );
    }
    if url.is_tls() && (details.contains("InvalidContentType") || details.contains("corrupt message")) {
        return fred::error::Error::new(
            ErrorKind::Tls,
            format!("TLS handshake failed ({details}): does this port speak TLS? Use redis:// for a plain port"),
        );
    }
    let closed = ["ConnectionReset", "UnexpectedEof", "BrokenPipe"].iter().any(|k| details.contains(k));
    if !url.is_tls() && closed {
        return fred::error::Error::new(
            err.kind().clone(),
            format!("{details} (the server closed the connection: if it only accepts TLS, use a rediss:// URL)"),
        );
    }
    err
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
    fn tls_schemes_are_parsed_as_tls() {
        for (url, cluster) in [
            ("rediss://127.0.0.1:6380", false),
            ("REDISS://127.0.0.1:6380/2", false),
            ("rediss-cluster://127.0.0.1:7000?node=127.0.0.1:7001", true),
            ("valkeys://127.0.0.1:6380", false),
        ] {
            let parsed = RedisUrl::parse(url).unwrap();
            assert!(parsed.is_tls(), "{url}");
            assert_eq!(parsed.is_cluster(), cluster, "{url}");
            assert_eq!(parsed.to_string(), url, "shown as given");
        }
        for url in ["redis://127.0.0.1:6379", "redis-cluster://127.0.0.1:7000"] {
            assert!(!RedisUrl::parse(url).unwrap().is_tls(), "{url}");
        }
        assert_eq!(tls_scheme_as_plain("rediss-cluster://h:1").as_deref(), Some("redis-cluster://h:1"));
        assert_eq!(tls_scheme_as_plain("redissx://h:1"), None);
    }

    #[test]
    fn tls_options_need_a_tls_url_and_usable_pem() {
        let err = RedisUrl::parse("redis://u:hunter2@127.0.0.1:1").unwrap().with_tls_ca_pem("x").err().unwrap();
        let text = err.to_string();
        assert!(matches!(err, Error::Tls { .. }), "{text}");
        assert!(text.contains("use rediss://") && text.contains("u:***@") && !text.contains("hunter2"), "{text}");

        let tls = RedisUrl::parse("rediss://127.0.0.1:1").unwrap();
        let err = tls.clone().with_tls_ca_pem("not a certificate").err().unwrap();
        assert!(err.to_string().contains("no CERTIFICATE found"), "{err}");
        let err = tls.clone().with_tls_ca_file("/nonexistent/ca.pem").err().unwrap();
        assert!(err.to_string().contains("cannot read the CA file /nonexistent/ca.pem"), "{err}");
        let err = tls.with_tls_client_cert_pem("", "").err().unwrap();
        assert!(err.to_string().contains("client certificate PEM"), "{err}");
    }

    #[test]
    fn credentials_replace_the_urls_and_are_never_shown() {
        let url = RedisUrl::parse("redis://old:hunter2@127.0.0.1:6390/0").unwrap().with_credentials("app", "s3cret");
        assert_eq!(url.to_string(), "redis://app:***@127.0.0.1:6390/0");
        assert_eq!(url.config.username.as_deref(), Some("app"));
        assert_eq!(url.config.password.as_deref(), Some("s3cret"));
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("hunter2"), "{shown}");
        let plain = RedisUrl::parse("rediss://127.0.0.1:6390").unwrap().with_credentials("app", "s3cret");
        assert_eq!(plain.to_string(), "rediss://app:***@127.0.0.1:6390");
    }

    #[test]
    fn invalid_url_error_is_redacted() {
        let err = RedisUrl::parse("redis://bob:hunter2@x:notaport").err().unwrap();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("bob:***@x:notaport"), "{text}");
    }
}

/// A command client for a tool (history, inspection, dead letters): one connect attempt.
pub(crate) async fn tool_client(url: &RedisUrl) -> Result<fred::clients::Client> {
    connect(url, ClientRole::Command, Duration::ZERO).await
}

/// True when an error means the fred client itself is stuck rather than one command
/// failing: fred gave up routing ("Max attempts reached", after which it stops routing
/// until rebuilt) or a command outlived its timeout (a disconnect fred did not notice).
pub(crate) fn is_wedged(err: &fred::error::Error) -> bool {
    match err.kind() {
        ErrorKind::Routing => err.details().contains("Max attempts"),
        ErrorKind::Timeout => true,
        _ => false,
    }
}

/// A client that is replaced by a fresh connection when it is wedged (see [`is_wedged`]).
/// Cheap to clone; clones share the current client.
#[derive(Clone)]
pub(crate) struct HealingClient {
    inner: Arc<HealingInner>,
}

struct HealingInner {
    url: RedisUrl,
    role: ClientRole,
    current: std::sync::RwLock<fred::clients::Client>,
    replacing: tokio::sync::Mutex<()>,
}

impl HealingClient {
    /// Connects (see [`connect`]).
    pub async fn connect(url: &RedisUrl, role: ClientRole, deadline: Duration) -> Result<Self> {
        let client = connect(url, role, deadline).await?;
        Ok(HealingClient {
            inner: Arc::new(HealingInner {
                url: url.clone(),
                role,
                current: std::sync::RwLock::new(client),
                replacing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The current client.
    pub fn get(&self) -> fred::clients::Client {
        self.inner.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// After `err` from `used` (a client obtained with [`get`](Self::get)): if the error
    /// means the client is wedged and it is still the current one, replaces it with a new
    /// connection. Returns true when the caller should retry on a new client.
    pub async fn heal(&self, used: &fred::clients::Client, err: &fred::error::Error) -> bool {
        if !is_wedged(err) {
            return false;
        }
        let _one_at_a_time = self.inner.replacing.lock().await;
        if self.get().id() != used.id() {
            return true; // someone else replaced it meanwhile
        }
        tracing::warn!(url = %self.inner.url, error = %err, "the Redis client is stuck; replacing it with a new connection");
        match connect(&self.inner.url, self.inner.role, Duration::ZERO).await {
            Ok(fresh) => {
                let old = std::mem::replace(
                    &mut *self.inner.current.write().unwrap_or_else(std::sync::PoisonError::into_inner),
                    fresh,
                );
                tokio::spawn(async move {
                    let _ = old.quit().await;
                });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a new connection yet");
                false
            }
        }
    }

    /// Closes the current client.
    pub async fn quit(&self) {
        let _ = self.get().quit().await;
    }
}
