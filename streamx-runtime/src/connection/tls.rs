//! TLS for `rediss://` URLs: what a connection trusts and presents, the environment
//! variables that name those files, and the rustls configuration built from them.
//!
//! With the `tls` feature off, [`TlsSettings`] has no values: a TLS URL is refused when it
//! is parsed, so nothing here is ever reached.

use std::fmt;
use std::path::PathBuf;

/// Environment variable read by [`RedisUrl::from_env`](crate::RedisUrl::from_env) and by
/// every `connect`: a PEM file of the CA certificates to trust for a `rediss://` URL,
/// instead of the system's.
pub const REDIS_TLS_CA_ENV: &str = "STREAMX_REDIS_TLS_CA";

/// Environment variable read by [`RedisUrl::from_env`](crate::RedisUrl::from_env) and by
/// every `connect`: a PEM file with the client certificate (chain) to present, for servers
/// that verify clients. Needs [`REDIS_TLS_KEY_ENV`].
pub const REDIS_TLS_CERT_ENV: &str = "STREAMX_REDIS_TLS_CERT";

/// Environment variable read by [`RedisUrl::from_env`](crate::RedisUrl::from_env) and by
/// every `connect`: a PEM file with the private key of the client certificate in
/// [`REDIS_TLS_CERT_ENV`].
pub const REDIS_TLS_KEY_ENV: &str = "STREAMX_REDIS_TLS_KEY";

/// Where the trusted CA certificates of a connection come from; named when the server's
/// certificate turns out not to be signed by them.
#[derive(Clone, Debug)]
pub(super) enum CaSource {
    /// The file named by [`REDIS_TLS_CA_ENV`].
    Env(PathBuf),
    /// A file given with `with_tls_ca_file` / `tls_ca_file`.
    File(PathBuf),
    /// PEM text given with `with_tls_ca_pem` / `tls_ca_pem`.
    Pem,
}

impl fmt::Display for CaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaSource::Env(path) => write!(f, "the CA file {} (from {REDIS_TLS_CA_ENV})", path.display()),
            CaSource::File(path) => write!(f, "the CA file {}", path.display()),
            CaSource::Pem => f.write_str("the CA PEM"),
        }
    }
}

#[cfg(feature = "tls")]
pub(super) use enabled::TlsSettings;

#[cfg(not(feature = "tls"))]
pub(super) use disabled::TlsSettings;

#[cfg(feature = "tls")]
mod enabled {
    use std::sync::Arc;

    use fred::prelude::Config;
    use fred::rustls::pki_types::pem::PemObject;
    use fred::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use fred::rustls::{ClientConfig, RootCertStore};
    use fred::types::config::TlsConfig;

    use super::{CaSource, REDIS_TLS_CA_ENV};

    /// What a TLS connection trusts and presents.
    #[derive(Clone, Default)]
    pub(in crate::connection) struct TlsSettings {
        /// CA certificates trusted instead of the system's, and where they come from;
        /// `None`: the system's.
        ca: Option<(Vec<CertificateDer<'static>>, CaSource)>,
        /// A client certificate chain and its key. Never printed.
        client: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    }

    impl TlsSettings {
        /// The settings of a new TLS URL: the system's CAs, no client certificate.
        /// `None` only without the `tls` feature.
        pub fn for_tls_url() -> Option<Self> {
            Some(Self::default())
        }

        /// True when CA certificates were given.
        pub fn has_ca(&self) -> bool {
            self.ca.is_some()
        }

        /// True when a client certificate was given.
        pub fn has_client_cert(&self) -> bool {
            self.client.is_some()
        }

        /// Trusts only the CA certificates in `pem`.
        pub fn set_ca(&mut self, pem: &[u8], source: CaSource) -> Result<(), String> {
            let certs = parse_certs(pem)?;
            let mut roots = RootCertStore::empty();
            for cert in &certs {
                roots.add(cert.clone()).map_err(|e| format!("not a usable CA certificate: {e}"))?;
            }
            self.ca = Some((certs, source));
            Ok(())
        }

        /// Presents this client certificate chain and key; checks that the key fits the
        /// certificate and is supported, before any connect.
        pub fn set_client_cert(
            &mut self,
            cert_pem: &[u8],
            key_pem: &[u8],
            cert_what: &str,
            key_what: &str,
        ) -> Result<(), String> {
            let chain = parse_certs(cert_pem).map_err(|reason| format!("client certificate {cert_what}: {reason}"))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| format!("client key {key_what}: no private key found ({e})"))?;
            let client = Some((chain, Arc::new(key)));
            let checked = TlsSettings { ca: None, client: client.clone() };
            checked.rustls_config(RootCertStore::empty())?;
            self.client = client;
            Ok(())
        }

        /// Sets fred's TLS connector in `config`. Without CA certificates given, this reads
        /// the system's CA store from disk: call it off the async runtime.
        pub fn apply_to(&self, config: &mut Config) -> Result<(), String> {
            let rustls = self.rustls_config(self.roots()?)?;
            config.tls = Some(TlsConfig::from(rustls));
            Ok(())
        }

        /// Why the server's certificate was not trusted (`UnknownIssuer`): the CA given, or
        /// none given.
        pub fn untrusted_hint(&self) -> String {
            match &self.ca {
                Some((_, source)) => source.untrusted_because(),
                None => format!(
                    "no CA was configured, so the system's CA certificates were used and none of them signed it; \
                     set {REDIS_TLS_CA_ENV} to the server's CA file (or use tls_ca_file / with_tls_ca_file)"
                ),
            }
        }

        /// The given CA certificates, else the system's (an error when there are none).
        fn roots(&self) -> Result<RootCertStore, String> {
            let mut roots = RootCertStore::empty();
            match &self.ca {
                Some((certs, _)) => {
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

        /// A rustls client configuration on the *ring* provider, chosen here rather than
        /// taken from the process default, so that no other crate's rustls features can make
        /// it fail (or panic) at connect time.
        fn rustls_config(&self, roots: RootCertStore) -> Result<ClientConfig, String> {
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

    impl CaSource {
        /// Why the server's certificate was not trusted, given these CA certificates.
        fn untrusted_because(&self) -> String {
            let not_signed = "the server's certificate is not signed by it";
            match self {
                CaSource::Env(path) => format!(
                    "{REDIS_TLS_CA_ENV} is set to {} but {not_signed}; point it at the CA that signed the server's \
                     certificate",
                    path.display()
                ),
                CaSource::File(path) => format!(
                    "the CA file {} (tls_ca_file / with_tls_ca_file) is used but {not_signed}; give the CA that signed \
                     the server's certificate",
                    path.display()
                ),
                CaSource::Pem => format!(
                    "the CA PEM (tls_ca_pem / with_tls_ca_pem) is used but {not_signed}; give the CA that signed the \
                     server's certificate"
                ),
            }
        }
    }

    /// Every `CERTIFICATE` block of a PEM text; an error if there is none.
    fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("invalid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("no CERTIFICATE found in it".to_string());
        }
        Ok(certs)
    }
}

#[cfg(not(feature = "tls"))]
mod disabled {
    use fred::prelude::Config;

    use super::CaSource;

    /// Without the `tls` feature there are no TLS settings: a `rediss://` URL is refused.
    #[derive(Clone)]
    pub(in crate::connection) enum TlsSettings {}

    impl TlsSettings {
        /// `None`: TLS is not compiled in.
        pub fn for_tls_url() -> Option<Self> {
            None
        }

        pub fn has_ca(&self) -> bool {
            match *self {}
        }

        pub fn has_client_cert(&self) -> bool {
            match *self {}
        }

        pub fn set_ca(&mut self, _pem: &[u8], _source: CaSource) -> Result<(), String> {
            match *self {}
        }

        pub fn set_client_cert(&mut self, _: &[u8], _: &[u8], _: &str, _: &str) -> Result<(), String> {
            match *self {}
        }

        pub fn apply_to(&self, _config: &mut Config) -> Result<(), String> {
            match *self {}
        }
    }
}
