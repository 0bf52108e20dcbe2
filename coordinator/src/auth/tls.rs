//! A listener's security: its TLS certificate (rustls through tonic), the CA its clients'
//! certificates must chain to (mutual TLS), the token store, and the rule that a coordinator
//! reachable from other machines runs with TLS and tokens unless told `--insecure`.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::TokenStore;
use crate::error::{Error, Result};

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's certificate chain and key (PEM), and optionally the CA of client certificates.
#[derive(Clone)]
pub struct ServerTls {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").field("client_ca", &self.client_ca.is_some()).finish_non_exhaustive()
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", path.display())))
}

impl ServerTls {
    /// PEM contents: certificate chain, private key, and the client CA (which makes client
    /// certificates required).
    pub fn from_pem(cert: Vec<u8>, key: Vec<u8>, client_ca: Option<Vec<u8>>) -> ServerTls {
        ServerTls { cert, key, client_ca }
    }

    /// Reads the PEM files.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls> {
        let client_ca = client_ca.map(|p| read("client CA certificate", p)).transpose()?;
        Ok(ServerTls::from_pem(read("TLS certificate", cert)?, read("TLS key", key)?, client_ca))
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certs(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The tonic configuration.
    pub fn config(&self) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(ca)).client_auth_optional(false);
        }
        config
    }

    /// The same certificate, key and client CA as a rustls configuration (ring), for the HTTP
    /// listener; offers HTTP/2 and HTTP/1.1.
    pub fn rustls_config(&self) -> Result<Arc<tokio_rustls::rustls::ServerConfig>> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
        let bad = |what: &str, e: &dyn fmt::Display| {
            Error::Config(format!("TLS for the HTTP listener: {what}: {e}"))
        };
        let certs = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate", &e))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| bad("key", &e))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("protocol versions", &e))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca) {
                    roots.add(cert.map_err(|e| bad("client CA", &e))?).map_err(|e| bad("client CA", &e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| bad("client CA", &e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| bad("certificate and key", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// What one listener demands of its clients.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// `None`: plaintext.
    pub tls: Option<ServerTls>,
    /// `None`: authentication off, every caller is [`super::Principal::Local`].
    pub tokens: Option<Arc<TokenStore>>,
}

impl Security {
    /// Plaintext, no authentication: for loopback addresses.
    pub fn none() -> Security {
        Security::default()
    }

    /// Refuses to expose the coordinator beyond this machine without TLS and tokens, unless
    /// `insecure` says the operator accepts that anyone who reaches `addr` has every right.
    pub fn check_exposure(&self, addr: SocketAddr, insecure: bool) -> Result<()> {
        if addr.ip().is_loopback() {
            return Ok(());
        }
        let mut missing = Vec::new();
        if self.tls.is_none() {
            missing.push("TLS (--tls-cert and --tls-key)");
        }
        if self.tokens.is_none() {
            missing.push("tokens (--tokens FILE; add credentials with `coordinator token create`)");
        }
        if missing.is_empty() {
            return Ok(());
        }
        if insecure {
            tracing::warn!(%addr, missing = %missing.join(", "),
                "--insecure: serving beyond this machine without full protection");
            return Ok(());
        }
        Err(Error::Config(format!(
            "refusing to listen on {addr} without {}: anyone who can reach it could submit, cancel and \
             overwrite results. Give them, listen on 127.0.0.1, or pass --insecure to accept the risk",
            missing.join(" and ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_or_full_protection_or_insecure_may_serve() {
        let open = Security::none();
        assert!(open.check_exposure("127.0.0.1:50051".parse().unwrap(), false).is_ok());
        assert!(open.check_exposure("[::1]:50051".parse().unwrap(), false).is_ok());
        let exposed: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let err = open.check_exposure(exposed, false).unwrap_err().to_string();
        assert!(err.contains("TLS") && err.contains("tokens") && err.contains("--insecure"), "{err}");
        assert!(open.check_exposure(exposed, true).is_ok());
        let tokens_only = Security { tokens: Some(Arc::new(TokenStore::in_memory())), tls: None };
        let err = tokens_only.check_exposure(exposed, false).unwrap_err().to_string();
        assert!(err.contains("TLS") && !err.contains("tokens ("), "{err}");
        let full = Security {
            tls: Some(ServerTls::from_pem(vec![], vec![], None)),
            tokens: Some(Arc::new(TokenStore::in_memory())),
        };
        assert!(full.check_exposure(exposed, false).is_ok());
    }
}
