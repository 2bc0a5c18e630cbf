//! Certificates made at test time, for servers that speak TLS.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use super::error::TestingError;

/// The PEM files of a TLS test server: a fresh CA, a server certificate for `127.0.0.1`,
/// `::1` and `localhost` signed by it, and a client certificate signed by it (for servers
/// that verify clients, `tls-auth-clients yes`). Made with a new key for every server, so
/// no other server's CA is trusted.
///
/// ```no_run
/// use streamx_testing::RedisServer;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = RedisServer::builder().tls(true).start()?;
/// let files = server.tls_files().expect("a TLS server");
/// let url = streamx_runtime::RedisUrl::parse(&server.tls_url().expect("a TLS server"))?
///     .with_tls_ca_file(&files.ca_cert)?;
/// # let _ = url;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// The CA certificate (`ca.crt`): what a client must trust.
    pub ca_cert: PathBuf,
    /// The server certificate (`server.crt`), for `127.0.0.1`, `::1` and `localhost`.
    pub server_cert: PathBuf,
    /// The server's private key (`server.key`).
    pub server_key: PathBuf,
    /// A client certificate (`client.crt`, common name `streamx-test-client`).
    pub client_cert: PathBuf,
    /// The client certificate's private key (`client.key`).
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Makes a CA, a server and a client certificate and writes them into `dir`.
    ///
    /// # Errors
    ///
    /// [`TestingError::Setup`] if a certificate cannot be made or a file written.
    pub fn generate(dir: &Path) -> Result<TlsFiles, TestingError> {
        let files = TlsFiles {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        };
        let failed = |what: &str| {
            let what = format!("making the test {what}");
            move |e: rcgen::Error| TestingError::Setup { what, source: io::Error::other(e.to_string()) }
        };

        let mut ca = CertificateParams::new(Vec::new()).map_err(failed("CA certificate"))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: a client that trusts another test CA must not even find an
        // issuer of that name.
        let unique = dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        ca.distinguished_name.push(DnType::CommonName, format!("streamx test CA {unique}"));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(failed("CA key"))?;
        let ca_cert = ca.self_signed(&ca_key).map_err(failed("CA certificate"))?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |names: Vec<String>, common_name: &str, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name.push(DnType::CommonName, common_name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = vec![usage];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            Ok::<_, rcgen::Error>((cert.pem(), key.serialize_pem()))
        };
        let server_names = vec!["127.0.0.1".into(), "::1".into(), "localhost".into()];
        let (server_cert, server_key) = leaf(server_names, "localhost", ExtendedKeyUsagePurpose::ServerAuth)
            .map_err(failed("server certificate"))?;
        let (client_cert, client_key) = leaf(Vec::new(), "streamx-test-client", ExtendedKeyUsagePurpose::ClientAuth)
            .map_err(failed("client certificate"))?;

        for (path, pem) in [
            (&files.ca_cert, ca_cert.pem()),
            (&files.server_cert, server_cert),
            (&files.server_key, server_key),
            (&files.client_cert, client_cert),
            (&files.client_key, client_key),
        ] {
            fs::write(path, pem)
                .map_err(|source| TestingError::Setup { what: format!("writing {}", path.display()), source })?;
        }
        Ok(files)
    }

    /// The CA certificate as PEM text.
    ///
    /// # Errors
    ///
    /// [`TestingError::Setup`] if the file cannot be read (its server was dropped).
    pub fn ca_pem(&self) -> Result<String, TestingError> {
        fs::read_to_string(&self.ca_cert)
            .map_err(|source| TestingError::Setup { what: format!("reading {}", self.ca_cert.display()), source })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_pem_files_a_tls_client_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::generate(dir.path()).unwrap();
        for path in [&files.ca_cert, &files.server_cert, &files.client_cert] {
            let text = fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        }
        for path in [&files.server_key, &files.client_key] {
            let text = fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        }
        // The client side of streamx takes them as they are.
        streamx_runtime::RedisUrl::parse("rediss://127.0.0.1:1")
            .unwrap()
            .with_tls_ca_pem(files.ca_pem().unwrap())
            .unwrap()
            .with_tls_client_cert_files(&files.client_cert, &files.client_key)
            .unwrap();
    }
}
