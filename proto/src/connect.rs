//! How every client reaches the coordinator (the CLI, `sweep run`, the worker): one set of flags
//! ([`ConnectArgs`]), one channel builder ([`connect`], [`connect_lazy`], [`endpoint`]) that
//! speaks plaintext for `http://` and TLS (rustls) for `https://` addresses and never falls back
//! from one to the other, and the interceptor that puts the bearer token on every call
//! ([`BearerToken`]).

mod error;
mod security;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use error::{ADDRESS_SET_BY, ConnectError, plaintext_hint};
pub use security::{BearerToken, ClientSecurity, Secret};

use error::{PLAINTEXT_HINT, chain, connect_error, is_refused, transport_failure};

/// A channel whose calls carry the client's credentials.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// How long a client waits for the TCP (and TLS) connection before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of every client: where the coordinator is and how to prove who we are.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Coordinator address: http://HOST:PORT (plaintext) or https://HOST:PORT (TLS).
    #[arg(long, env = "SWEEP_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// PEM file of the CA that signed the coordinator's certificate (default: the public web CAs).
    #[arg(long, env = "SWEEP_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a coordinator that requires mutual TLS.
    #[arg(long, env = "SWEEP_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// PEM private key of --tls-client-cert.
    #[arg(long, env = "SWEEP_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// Bearer token (a flag is visible to other local users in `ps`: prefer SWEEP_TOKEN or
    /// --token-file).
    #[arg(long, env = "SWEEP_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<Secret>,
    /// File holding the bearer token (surrounding whitespace is ignored).
    #[arg(long, env = "SWEEP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl ConnectArgs {
    /// Plain flags for `url`: no TLS files, no token.
    pub fn plain(url: impl Into<String>) -> ConnectArgs {
        ConnectArgs {
            coordinator: url.into(),
            ca_cert: None,
            tls_client_cert: None,
            tls_client_key: None,
            token: None,
            token_file: None,
        }
    }

    /// Reads the files the flags name into a [`ClientSecurity`]; files that are not PEM fail here,
    /// naming the file, rather than at the first TLS handshake.
    pub fn security(&self) -> Result<ClientSecurity, ConnectError> {
        let ca_cert =
            self.ca_cert.as_deref().map(|p| read_pem("CA certificate", p, "CERTIFICATE")).transpose()?;
        let identity = match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read_pem("client certificate", cert, "CERTIFICATE")?,
                read_pem("client key", key, "PRIVATE KEY")?,
            )),
            _ => None,
        };
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => {
                let text = String::from_utf8(read("token file", path)?)
                    .map_err(|_| ConnectError::Token(format!("{} is not UTF-8", path.display())))?;
                Some(Secret::new(text.trim()))
            }
            (None, None) => None,
        };
        Ok(ClientSecurity { ca_cert, identity, token })
    }

    /// [`endpoint`] for these flags: errors about the address name `--coordinator`.
    pub fn endpoint(&self, security: &ClientSecurity) -> Result<Endpoint, ConnectError> {
        endpoint(&self.coordinator, security).map_err(ConnectError::address_set_by_flags)
    }

    /// A channel to the coordinator, connected now; errors about the address name
    /// `--coordinator`.
    pub async fn connect(&self) -> Result<AuthChannel, ConnectError> {
        connect(&self.coordinator, &self.security()?).await.map_err(ConnectError::address_set_by_flags)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read { what, path: path.to_owned(), source })
}

fn read_pem(what: &'static str, path: &Path, block: &'static str) -> Result<Vec<u8>, ConnectError> {
    let bytes = read(what, path)?;
    if has_pem_block(&bytes, block) {
        Ok(bytes)
    } else {
        Err(ConnectError::NotPem { what, path: path.to_owned(), block })
    }
}

/// Whether `pem` holds a `-----BEGIN …{block}-----` line (`PRIVATE KEY` matches the RSA and EC
/// forms too).
fn has_pem_block(pem: &[u8], block: &str) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.split("-----BEGIN ")
        .skip(1)
        .any(|rest| rest.split_once("-----").is_some_and(|(label, _)| label.ends_with(block)))
}

fn is_loopback(host: Option<&str>) -> bool {
    match host {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Why `uri` cannot name a coordinator (a host, an optional port, no path), checked here
/// because a bad host or port only fails at connection time, where a long-running client retries.
fn address_problem(uri: &tonic::codegen::http::Uri) -> Option<String> {
    if uri.host().is_none_or(str::is_empty) {
        return Some("there is no host name: write http://HOST:PORT or https://HOST:PORT".into());
    }
    let authority = uri.authority().map_or("", |a| a.as_str());
    let port_text = authority.rsplit_once(':').map(|(_, p)| p).filter(|p| !p.contains(']'));
    if let Some(port) = port_text
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Some(format!("the port {port:?} is not a number from 1 to 65535"));
    }
    match uri.path_and_query().map(|p| p.as_str()) {
        Some(path) if !path.is_empty() && path != "/" => {
            Some(format!("a path ({path}) is not supported: the coordinator's calls go to its root"))
        }
        _ => None,
    }
}

/// The endpoint for `url` (not connected yet): TLS for `https://` (with the CA and client identity
/// of `security`, else the public web CAs), plaintext for `http://`, and an immediate error for an
/// address without a scheme, host or valid port, and for TLS options with an `http://` address.
pub fn endpoint(url: &str, security: &ClientSecurity) -> Result<Endpoint, ConnectError> {
    let invalid = |reason: String| ConnectError::Address { url: url.to_owned(), reason, set_by: "" };
    let tls = if url.starts_with("https://") {
        true
    } else if url.starts_with("http://") {
        false
    } else if url.contains("://") {
        return Err(invalid("the scheme must be http:// or https://".into()));
    } else {
        return Err(ConnectError::NoScheme { url: url.to_owned(), set_by: "" });
    };
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| invalid(chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(reason) = address_problem(endpoint.uri()) {
        return Err(invalid(reason));
    }
    if !tls {
        if security.wants_tls() {
            return Err(ConnectError::TlsOverPlaintext(url.to_owned()));
        }
        if security.token.is_some() && !is_loopback(endpoint.uri().host()) {
            tracing::warn!(%url, "sending the bearer token over plaintext http://; use https:// on a network");
        }
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new().timeout(CONNECT_TIMEOUT);
    config = match &security.ca_cert {
        // A CA with no certificate in it would leave nothing trusted: every handshake would fail
        // with a message about the server's certificate, not about this file.
        Some(pem) if !has_pem_block(pem, "CERTIFICATE") => {
            return Err(ConnectError::Tls("the CA certificate holds no PEM certificate".into()));
        }
        Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
        None => config.with_webpki_roots(),
    };
    if let Some(identity) = &security.identity {
        config = config.identity(identity.clone());
    }
    endpoint.tls_config(config).map_err(|e| ConnectError::Tls(chain(&e)))
}

/// Connects to `url` now; every call on the channel carries `security`'s token. Over `http://` a
/// health check follows: a TLS coordinator accepts the TCP connection and only then drops the
/// plaintext, so without it the mistake would surface later as a cancelled call.
pub async fn connect(url: &str, security: &ClientSecurity) -> Result<AuthChannel, ConnectError> {
    let interceptor = security.interceptor()?;
    let channel = endpoint(url, security)?.connect().await.map_err(|e| connect_error(url, &e))?;
    if url.starts_with("http://") {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let check = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() });
        let failed = match tokio::time::timeout(CONNECT_TIMEOUT, check).await {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => Some(status),
            Err(_) => Some(tonic::Status::unavailable("no answer to a health check")),
        };
        if let Some(status) = failed.filter(transport_failure) {
            if is_refused(&status) {
                return Err(ConnectError::Refused { url: url.to_owned(), set_by: "" });
            }
            let detail = format!("{:?}: {}", status.code(), status.message());
            return Err(ConnectError::Connect { url: url.to_owned(), detail, hint: PLAINTEXT_HINT });
        }
    }
    Ok(InterceptedService::new(channel, interceptor))
}

/// Like [`connect`], but connects on first use (and reconnects after a failure): for
/// long-running clients that must outlive coordinator restarts.
pub fn connect_lazy(url: &str, security: &ClientSecurity) -> Result<AuthChannel, ConnectError> {
    let interceptor = security.interceptor()?;
    Ok(InterceptedService::new(endpoint(url, security)?.connect_lazy(), interceptor))
}

/// An already built channel with `security`'s token on every call.
pub fn authorized(channel: Channel, security: &ClientSecurity) -> Result<AuthChannel, ConnectError> {
    Ok(InterceptedService::new(channel, security.interceptor()?))
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    #[test]
    fn an_address_without_a_scheme_fails_at_once_suggesting_one() {
        let err = endpoint("10.0.0.5:50051", &ClientSecurity::default()).unwrap_err();
        assert!(matches!(err, ConnectError::NoScheme { .. }), "{err}");
        assert!(err.to_string().contains("use http://10.0.0.5:50051 (plaintext)"), "{err}");
        let err = endpoint("ftp://h:1", &ClientSecurity::default()).unwrap_err();
        assert!(err.to_string().contains("http:// or https://"), "{err}");
        assert!(endpoint("http://10.0.0.5:50051", &ClientSecurity::default()).is_ok());
        assert!(endpoint("https://[::1]:50051/", &ClientSecurity::default()).is_ok());
        assert!(endpoint("http://localhost", &ClientSecurity::default()).is_ok());
    }

    #[test]
    fn hosts_ports_and_paths_are_checked_before_connecting() {
        for (url, expected) in [
            ("http://:50051", "no host name"),
            ("http://coordinator:99999", "\"99999\" is not a number from 1 to 65535"),
            ("http://coordinator:0", "\"0\""),
            ("https://coordinator:50051/api", "a path (/api) is not supported"),
            ("http://", "invalid URI"),
        ] {
            let err = endpoint(url, &ClientSecurity::default()).unwrap_err();
            assert!(matches!(err, ConnectError::Address { .. }), "{url}: {err}");
            assert!(err.to_string().contains(expected), "{url}: {err}");
        }
    }

    #[test]
    fn tls_files_need_https() {
        let security = ClientSecurity { ca_cert: Some(b"pem".to_vec()), ..ClientSecurity::default() };
        let err = endpoint("http://coordinator:50051", &security).unwrap_err();
        assert!(matches!(err, ConnectError::TlsOverPlaintext(_)), "{err}");
        assert!(err.to_string().contains("use https://coordinator:50051"), "{err}");
    }

    #[test]
    fn https_never_builds_without_a_usable_ca() {
        let not_pem =
            ClientSecurity { ca_cert: Some(b"not a certificate".to_vec()), ..ClientSecurity::default() };
        let err = endpoint("https://coordinator:50051", &not_pem).unwrap_err();
        assert!(matches!(err, ConnectError::Tls(_)), "{err}");
        // Without --ca-cert: the public web CAs.
        assert!(endpoint("https://coordinator:50051", &ClientSecurity::default()).is_ok());
    }

    #[test]
    fn tokens_are_redacted_and_sent_as_bearer() {
        let security = ClientSecurity::token(Secret::new("swp_abc123"));
        assert!(!format!("{security:?}").contains("abc123"));
        let mut interceptor = security.interceptor().unwrap();
        assert!(!format!("{interceptor:?}").contains("abc123"));
        let request = interceptor.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer swp_abc123");
        let bad = ClientSecurity::token(Secret::new("two words"));
        assert!(matches!(bad.interceptor().unwrap_err(), ConnectError::Token(_)));
        let none = ClientSecurity::default().interceptor().unwrap().call(tonic::Request::new(())).unwrap();
        assert!(none.metadata().get("authorization").is_none());
    }

    #[test]
    fn flags_read_the_token_file_and_tls_files() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("alice.token");
        std::fs::write(&token_file, "  swp_from_file \n").unwrap();
        let mut args = ConnectArgs::plain("https://coordinator:50051");
        args.token_file = Some(token_file.clone());
        assert_eq!(args.security().unwrap().token.unwrap().expose(), "swp_from_file");
        args.token = Some(Secret::new("swp_flag"));
        assert_eq!(args.security().unwrap().token.unwrap().expose(), "swp_flag", "the flag wins");
        args.ca_cert = Some(token_file);
        let err = args.security().unwrap_err().to_string();
        assert!(err.contains("CA certificate") && err.contains("alice.token is not PEM"), "{err}");
        args.ca_cert = Some(dir.path().join("missing.pem"));
        let err = args.security().unwrap_err().to_string();
        assert!(err.contains("cannot read the CA certificate") && err.contains("missing.pem"), "{err}");
    }

    #[test]
    fn pem_blocks_are_recognised_by_label() {
        let cert = b"junk\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert!(has_pem_block(cert, "CERTIFICATE"));
        assert!(!has_pem_block(cert, "PRIVATE KEY"));
        assert!(has_pem_block(b"-----BEGIN EC PRIVATE KEY-----\nx\n", "PRIVATE KEY"));
        assert!(!has_pem_block(b"BEGIN CERTIFICATE", "CERTIFICATE"));
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        assert!(is_loopback(Some("127.0.0.1")));
        assert!(is_loopback(Some("[::1]")));
        assert!(is_loopback(Some("localhost")));
        assert!(!is_loopback(Some("10.0.0.5")));
        assert!(!is_loopback(Some("coordinator")));
    }
}
