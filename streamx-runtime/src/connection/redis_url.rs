//! [`RedisUrl`]: a Redis URL parsed once, with its credentials and TLS settings, and the
//! environment that completes it.
//!
//! Every connection resolves its settings the same way: what the URL and its `with_*`
//! options say, then, for a TLS setting not given, the file named by the environment
//! ([`REDIS_TLS_CA_ENV`], [`REDIS_TLS_CERT_ENV`] with [`REDIS_TLS_KEY_ENV`]); see
//! [`RedisUrl::with_tls_from_env`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use fred::prelude::{Config, ServerConfig};
use url::Url;

use super::redact::{redact, redacted};
use super::tls::{CaSource, TlsSettings, REDIS_TLS_CA_ENV, REDIS_TLS_CERT_ENV, REDIS_TLS_KEY_ENV};
use crate::error::{Error, Result};

/// The default Redis URL, used when neither the builder nor `STREAMX_REDIS_URL` sets one.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The environment variable read by [`crate::run`] and [`RedisUrl::from_env`].
pub const REDIS_URL_ENV: &str = "STREAMX_REDIS_URL";

/// A Redis URL, parsed once; its `Display` and `Debug` never show the password.
///
/// A `rediss://` (or `rediss-cluster://`) URL connects over TLS (rustls; needs the `tls`
/// feature, on by default). The server certificate is checked against the system's CA
/// certificates, or only against the ones given with
/// [`with_tls_ca_file`](Self::with_tls_ca_file) / [`with_tls_ca_pem`](Self::with_tls_ca_pem).
/// A client certificate for servers that verify clients (`tls-auth-clients yes`) is added
/// with [`with_tls_client_cert_files`](Self::with_tls_client_cert_files).
///
/// Whatever is not given here is taken from the environment when connecting:
/// `STREAMX_REDIS_TLS_CA` for the CA, `STREAMX_REDIS_TLS_CERT` with `STREAMX_REDIS_TLS_KEY`
/// for the client certificate. Settings given here win over the environment.
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
    /// The URL as given (with the user name set by `with_credentials`), its passwords
    /// already replaced by `***`: what `Display` shows.
    shown: Url,
    /// fred's settings, always without TLS: the TLS connector is built from `tls` for each
    /// client, so that fred never picks a crypto provider or trust roots by itself.
    config: Config,
    /// `Some` for a `rediss://` URL.
    tls: Option<TlsSettings>,
}

impl RedisUrl {
    /// Parses a URL: `redis://`, `rediss://` (TLS), `redis-cluster://host:port?node=host:port`
    /// (`rediss-cluster://` for TLS),
    /// `redis-sentinel://sentinel:port?sentinelServiceName=name&node=sentinel:port`
    /// (`rediss-sentinel://` for TLS; `sentinelUsername` and `sentinelPassword` for sentinels
    /// that require a password), with optional `user:password@` (for the master).
    ///
    /// ```
    /// # fn demo() -> Result<(), streamx_runtime::Error> {
    /// use streamx_runtime::RedisUrl;
    ///
    /// let url = RedisUrl::parse(
    ///     "redis-sentinel://app:s3cret@10.0.0.1:26379?sentinelServiceName=orders&node=10.0.0.2:26379",
    /// )?;
    /// assert!(url.is_sentinel() && !url.is_cluster());
    /// assert!(!url.to_string().contains("s3cret"));
    /// # Ok(()) }
    /// # demo().unwrap();
    /// ```
    ///
    /// This reads no environment; connecting with the result does (see
    /// [`RedisUrl`]). Without the `tls` feature, a TLS URL is [`Error::TlsNotEnabled`].
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl { url: redact(url), reason };
        let fred_error = |e: fred::error::Error| invalid(e.details().to_string());
        check_scheme(url).map_err(invalid)?;
        let (config, tls) = match tls_scheme_as_plain(url) {
            Some(plain) => {
                let config = Config::from_url(&plain).map_err(fred_error)?;
                let tls = TlsSettings::for_tls_url().ok_or_else(|| Error::TlsNotEnabled { url: redact(url) })?;
                (config, Some(tls))
            }
            None => (Config::from_url(url).map_err(fred_error)?, None),
        };
        let shown = Url::parse(url)
            .ok()
            .and_then(redacted)
            .ok_or_else(|| invalid("it cannot be shown without its password".to_string()))?;
        Ok(RedisUrl { shown, config, tls })
    }

    /// `STREAMX_REDIS_URL`, or [`DEFAULT_REDIS_URL`] when it is unset or empty; with the CA
    /// file in `STREAMX_REDIS_TLS_CA` and the client certificate and key files in
    /// `STREAMX_REDIS_TLS_CERT` and `STREAMX_REDIS_TLS_KEY`, when set (they need a
    /// `rediss://` URL). Reads those files: in async code, call it on a blocking thread.
    pub fn from_env() -> Result<Self> {
        let url = match std::env::var(REDIS_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Self::parse(url.trim())?,
            _ => Self::parse(DEFAULT_REDIS_URL)?,
        };
        url.with_tls_from_env()
    }

    /// Completes the TLS settings from the environment, as every connect does: the CA file
    /// in `STREAMX_REDIS_TLS_CA` unless CA certificates were given, the client certificate
    /// and key files in `STREAMX_REDIS_TLS_CERT` and `STREAMX_REDIS_TLS_KEY` (set both or
    /// neither) unless a client certificate was given. A variable that is set needs a
    /// `rediss://` URL. Reads those files.
    pub(crate) fn with_tls_from_env(mut self) -> Result<Self> {
        if let Some(ca) = env_file(REDIS_TLS_CA_ENV) {
            if !self.tls.as_ref().is_some_and(TlsSettings::has_ca) {
                let path = PathBuf::from(ca);
                self = self.with_ca_file(&path, CaSource::Env(path.clone()))?;
            }
        }
        match (env_file(REDIS_TLS_CERT_ENV), env_file(REDIS_TLS_KEY_ENV)) {
            (Some(cert), Some(key)) => {
                if !self.tls.as_ref().is_some_and(TlsSettings::has_client_cert) {
                    let what = |path: &OsString, var: &str| format!("{} (from {var})", Path::new(path).display());
                    let (cert_what, key_what) = (what(&cert, REDIS_TLS_CERT_ENV), what(&key, REDIS_TLS_KEY_ENV));
                    self = self.with_client_cert_files(cert.as_ref(), key.as_ref(), &cert_what, &key_what)?;
                }
            }
            (None, None) => {}
            _ => {
                return Err(self.tls_error(format!("{REDIS_TLS_CERT_ENV} and {REDIS_TLS_KEY_ENV} must be set together")))
            }
        }
        Ok(self)
    }

    /// True when one of the `STREAMX_REDIS_TLS_*` variables is set, so that
    /// [`with_tls_from_env`](Self::with_tls_from_env) may read files.
    pub(crate) fn env_names_tls_files() -> bool {
        [REDIS_TLS_CA_ENV, REDIS_TLS_CERT_ENV, REDIS_TLS_KEY_ENV].into_iter().any(|var| env_file(var).is_some())
    }

    /// Trusts only the CA certificates in this PEM file (one or more `CERTIFICATE` blocks)
    /// for the server's certificate, instead of the system's (and instead of
    /// `STREAMX_REDIS_TLS_CA`). Needs a `rediss://` URL.
    pub fn with_tls_ca_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        self.with_ca_file(path, CaSource::File(path.to_path_buf()))
    }

    /// Like [`with_tls_ca_file`](Self::with_tls_ca_file), with the PEM text itself.
    pub fn with_tls_ca_pem(self, pem: impl AsRef<[u8]>) -> Result<Self> {
        self.with_ca(pem.as_ref(), CaSource::Pem)
    }

    /// Presents this client certificate (PEM, the certificate first, then any
    /// intermediates) and its private key (PEM: PKCS#8, PKCS#1 or SEC1) to servers that
    /// verify clients, instead of those named by `STREAMX_REDIS_TLS_CERT` and
    /// `STREAMX_REDIS_TLS_KEY`. Needs a `rediss://` URL.
    pub fn with_tls_client_cert_files(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        self.with_client_cert_files(cert, key, &cert.display().to_string(), &key.display().to_string())
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
        // `parse` made sure `shown` has a host, so both succeed; `shown` never holds the
        // password either way.
        let _ = self.shown.set_username(&username);
        let _ = self.shown.set_password(Some("***"));
        self.config.username = Some(username);
        self.config.password = Some(password.into());
        self
    }

    /// The ACL user the connections authenticate as (`default` when none is given).
    pub(crate) fn username(&self) -> &str {
        self.config.username.as_deref().filter(|u| !u.is_empty()).unwrap_or("default")
    }

    /// True for a `rediss://` (TLS) URL.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True for a `redis-cluster://` URL.
    pub fn is_cluster(&self) -> bool {
        self.config.server.is_clustered()
    }

    /// True for a `redis-sentinel://` URL: the host and the `node=` parameters are
    /// sentinels, which name the master of the `sentinelServiceName` service.
    pub fn is_sentinel(&self) -> bool {
        self.config.server.is_sentinel()
    }

    /// For a `redis-sentinel://` URL, its `sentinelServiceName`.
    pub(crate) fn sentinel_service(&self) -> Option<&str> {
        match &self.config.server {
            ServerConfig::Sentinel { service_name, .. } => Some(service_name),
            _ => None,
        }
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        self.shown.to_string()
    }

    /// fred's settings for a new client, with a TLS connector for a `rediss://` URL. Without
    /// CA certificates given, this reads the system's CA store: call it off the async
    /// runtime.
    pub(super) fn client_config(&self) -> Result<Config> {
        let mut config = self.config.clone();
        if let Some(tls) = &self.tls {
            tls.apply_to(&mut config).map_err(|reason| self.tls_error(reason))?;
        }
        Ok(config)
    }

    /// Why the server's certificate was not trusted (see `TlsSettings::untrusted_hint`).
    #[cfg(feature = "tls")]
    pub(super) fn untrusted_hint(&self) -> Option<String> {
        self.tls.as_ref().map(TlsSettings::untrusted_hint)
    }

    fn with_ca_file(self, path: &Path, source: CaSource) -> Result<Self> {
        if !self.is_tls() {
            return Err(self.not_tls(&source.to_string()));
        }
        let pem = std::fs::read(path).map_err(|e| self.tls_error(format!("cannot read {source}: {e}")))?;
        self.with_ca(&pem, source)
    }

    fn with_ca(mut self, pem: &[u8], source: CaSource) -> Result<Self> {
        let what = source.to_string();
        let Some(tls) = &mut self.tls else { return Err(self.not_tls(&what)) };
        if let Err(reason) = tls.set_ca(pem, source) {
            return Err(self.tls_error(format!("{what}: {reason}")));
        }
        Ok(self)
    }

    fn with_client_cert_files(self, cert: &Path, key: &Path, cert_what: &str, key_what: &str) -> Result<Self> {
        if !self.is_tls() {
            return Err(self.not_tls("a client certificate"));
        }
        let read = |path: &Path, what: &str, shown: &str| {
            std::fs::read(path).map_err(|e| self.tls_error(format!("cannot read the client {what} file {shown}: {e}")))
        };
        let (cert_pem, key_pem) = (read(cert, "certificate", cert_what)?, read(key, "key", key_what)?);
        self.with_client_cert(&cert_pem, &key_pem, cert_what, key_what)
    }

    fn with_client_cert(mut self, cert_pem: &[u8], key_pem: &[u8], cert_what: &str, key_what: &str) -> Result<Self> {
        let Some(tls) = &mut self.tls else { return Err(self.not_tls("a client certificate")) };
        if let Err(reason) = tls.set_client_cert(cert_pem, key_pem, cert_what, key_what) {
            return Err(self.tls_error(reason));
        }
        Ok(self)
    }

    /// The error for `what` (a TLS option) given for a URL without TLS, or when TLS is not
    /// compiled in.
    fn not_tls(&self, what: &str) -> Error {
        if cfg!(feature = "tls") {
            self.tls_error(format!("{what} was given but the URL does not use TLS; use rediss://"))
        } else {
            Error::TlsNotEnabled { url: self.redacted() }
        }
    }

    fn tls_error(&self, reason: String) -> Error {
        Error::Tls { url: self.redacted(), reason }
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown.as_str())
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RedisUrl").field(&self.shown.as_str()).finish()
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// The value of the environment variable `var`, unless it is unset or empty.
fn env_file(var: &str) -> Option<OsString> {
    std::env::var_os(var).filter(|v| !v.is_empty())
}

/// For a TLS scheme (`rediss`, `rediss-cluster`, `valkeys`, ...), the URL with the plain
/// scheme, so fred parses the rest and leaves TLS to us; `None` for other schemes.
/// The schemes a Redis URL may have: `redis`, `rediss` (TLS) and their Valkey spellings,
/// each alone or with `-cluster` or `-sentinel`.
fn check_scheme(url: &str) -> std::result::Result<(), String> {
    const BASES: [&str; 4] = ["redis", "rediss", "valkey", "valkeys"];
    const SUFFIXES: [&str; 3] = ["", "-cluster", "-sentinel"];
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let known = scheme.as_deref().is_some_and(|scheme| {
        BASES.iter().any(|base| scheme.strip_prefix(base).is_some_and(|suffix| SUFFIXES.contains(&suffix)))
    });
    if known {
        return Ok(());
    }
    let given = match scheme {
        Some(scheme) => format!("the scheme `{scheme}://` is not a Redis one"),
        None => "it has no `scheme://`".to_string(),
    };
    Err(format!(
        "{given}: use redis://, rediss:// (TLS), redis-cluster://, rediss-cluster://, redis-sentinel:// or \
         rediss-sentinel:// (valkey:// and valkeys:// work too)"
    ))
}

fn tls_scheme_as_plain(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    ["rediss", "valkeys"].iter().find_map(|tls| {
        let suffix = scheme.strip_prefix(tls)?;
        (suffix.is_empty() || suffix.starts_with('-')).then(|| format!("{}{suffix}://{rest}", &tls[..tls.len() - 1]))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn display_and_debug_hide_the_password() {
        let url = RedisUrl::parse("redis://alice:hunter2@127.0.0.1:6390").unwrap();
        assert!(!format!("{url} {url:?}").contains("hunter2"));
        let url = RedisUrl::parse("redis-sentinel://h:1?sentinelServiceName=m&sentinelPassword=hunter2").unwrap();
        assert!(!format!("{url} {url:?}").contains("hunter2"), "{url}");
    }

    #[cfg(feature = "tls")]
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
            // Shown as given, but for the scheme's case.
            assert_eq!(parsed.to_string(), url.replacen("REDISS", "rediss", 1), "shown as given");
        }
        for url in ["redis://127.0.0.1:6379", "redis-cluster://127.0.0.1:7000"] {
            assert!(!RedisUrl::parse(url).unwrap().is_tls(), "{url}");
        }
        assert_eq!(tls_scheme_as_plain("rediss-cluster://h:1").as_deref(), Some("redis-cluster://h:1"));
        assert_eq!(tls_scheme_as_plain("redissx://h:1"), None);
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_tls_feature_a_tls_url_says_to_enable_it() {
        for url in ["rediss://u:hunter2@127.0.0.1:6380", "rediss-cluster://127.0.0.1:7000"] {
            let err = RedisUrl::parse(url).err().unwrap();
            let text = err.to_string();
            assert!(matches!(err, Error::TlsNotEnabled { .. }), "{text}");
            assert!(text.contains("`tls` feature") && !text.contains("hunter2"), "{text}");
        }
        let err = RedisUrl::parse("redis://127.0.0.1:1").unwrap().with_tls_ca_pem("x").err().unwrap();
        assert!(matches!(err, Error::TlsNotEnabled { .. }), "{err}");
    }

    #[cfg(feature = "tls")]
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
        if cfg!(feature = "tls") {
            let plain = RedisUrl::parse("rediss://127.0.0.1:6390").unwrap().with_credentials("app", "s3cret");
            assert_eq!(plain.to_string(), "rediss://app:***@127.0.0.1:6390");
        }
    }

    #[test]
    fn only_redis_schemes_are_accepted() {
        for url in ["http://u:hunter2@127.0.0.1:6379", "127.0.0.1:6379", "redis-foo://h:1", "unix:///tmp/r.sock"] {
            let err = RedisUrl::parse(url).err().unwrap();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        for url in [
            "redis://h:1",
            "REDIS://h:1",
            "valkey://h:1",
            "redis-cluster://h:1",
            "redis-sentinel://h:1?sentinelServiceName=m",
        ] {
            assert!(RedisUrl::parse(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn invalid_url_error_is_redacted() {
        let err = RedisUrl::parse("redis://bob:hunter2@x:notaport").err().unwrap();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("bob:***@x:notaport"), "{text}");
    }
}
