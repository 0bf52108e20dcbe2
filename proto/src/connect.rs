//! How every client reaches the coordinator (the CLI, `sweep run`, the worker): one set of flags
//! ([`ConnectArgs`]), one channel builder ([`connect`], [`connect_lazy`], [`endpoint`]) that
//! speaks plaintext for `http://` and TLS (rustls) for `https://` addresses, and the interceptor
//! that puts the bearer token on every call ([`BearerToken`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A channel whose calls carry the client's credentials.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// How long a client waits for the TCP (and TLS) connection before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A secret string (a bearer token): usable, but never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends or hashes it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

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

    /// Reads the files the flags name into a [`ClientSecurity`].
    pub fn security(&self) -> Result<ClientSecurity, ConnectError> {
        let ca_cert = self.ca_cert.as_deref().map(|p| read("CA certificate", p)).transpose()?;
        let identity = match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => {
                Some(Identity::from_pem(read("client certificate", cert)?, read("client key", key)?))
            }
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

    /// A channel to the coordinator, connected now.
    pub async fn connect(&self) -> Result<AuthChannel, ConnectError> {
        connect(&self.coordinator, &self.security()?).await
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read { what, path: path.to_owned(), source })
}

/// What a client presents: the CA it trusts, its certificate (mutual TLS) and its bearer token.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// PEM; `None` trusts the public web CAs.
    pub ca_cert: Option<Vec<u8>>,
    pub identity: Option<Identity>,
    pub token: Option<Secret>,
}

impl fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("ca_cert", &self.ca_cert.is_some())
            .field("client_identity", &self.identity.is_some())
            .field("token", &self.token)
            .finish()
    }
}

impl ClientSecurity {
    /// Only a bearer token (plaintext or public-CA TLS).
    pub fn token(token: Secret) -> ClientSecurity {
        ClientSecurity { token: Some(token), ..ClientSecurity::default() }
    }

    /// The interceptor that attaches this token (nothing without one).
    pub fn interceptor(&self) -> Result<BearerToken, ConnectError> {
        let Some(token) = &self.token else { return Ok(BearerToken(None)) };
        let token = token.expose();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConnectError::Token("a token is one word of printable ASCII characters".into()));
        }
        let mut value: AsciiMetadataValue = format!("Bearer {token}")
            .parse()
            .map_err(|_| ConnectError::Token("the token does not fit an HTTP header".into()))?;
        // Keeps the header out of HTTP/2 header compression tables.
        value.set_sensitive(true);
        Ok(BearerToken(Some(value)))
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Default)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "BearerToken(<redacted>)" } else { "BearerToken(None)" })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Why a client could not set up its connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "coordinator address {0:?} has no scheme: write http://HOST:PORT (plaintext) or https://HOST:PORT (TLS)"
    )]
    NoScheme(String),
    #[error("coordinator address {0:?} is not valid: {1}")]
    Address(String, String),
    #[error("TLS options (--ca-cert, --tls-client-cert) need an https:// coordinator address, not {0:?}")]
    TlsOverPlaintext(String),
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("invalid token: {0}")]
    Token(String),
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    #[error("cannot connect to {url}: {detail}{hint}")]
    Connect { url: String, detail: String, hint: &'static str },
}

/// The error and its causes on one line (tonic's own message is only "transport error"); a cause
/// whose text is already there is not repeated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What to tell someone whose plaintext (`http://`) call to `url` broke at the transport level:
/// the likeliest cause is a coordinator that serves TLS. Empty otherwise.
pub fn plaintext_hint(url: &str, status: &tonic::Status) -> &'static str {
    let transport = matches!(
        status.code(),
        tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
    );
    if transport && url.starts_with("http://") { PLAINTEXT_HINT } else { "" }
}

const PLAINTEXT_HINT: &str = " (if the coordinator serves TLS, use an https:// address and --ca-cert)";

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

/// The endpoint for `url` (not connected yet): TLS for `https://` (with the CA and client identity
/// of `security`), plaintext for `http://`, and an immediate error for an address without one.
pub fn endpoint(url: &str, security: &ClientSecurity) -> Result<Endpoint, ConnectError> {
    let tls = if url.starts_with("https://") {
        true
    } else if url.starts_with("http://") {
        false
    } else {
        return Err(if url.contains("://") {
            ConnectError::Address(url.to_owned(), "the scheme must be http:// or https://".into())
        } else {
            ConnectError::NoScheme(url.to_owned())
        });
    };
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ConnectError::Address(url.to_owned(), chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT);
    if !tls {
        if security.ca_cert.is_some() || security.identity.is_some() {
            return Err(ConnectError::TlsOverPlaintext(url.to_owned()));
        }
        if security.token.is_some() && !is_loopback(endpoint.uri().host()) {
            tracing::warn!(%url, "sending the bearer token over plaintext http://; use https:// on a network");
        }
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new().timeout(CONNECT_TIMEOUT);
    config = match &security.ca_cert {
        Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
        None => config.with_webpki_roots(),
    };
    if let Some(identity) = &security.identity {
        config = config.identity(identity.clone());
    }
    endpoint.tls_config(config).map_err(|e| ConnectError::Tls(chain(&e)))
}

fn connect_error(url: &str, e: &tonic::transport::Error) -> ConnectError {
    let hint = if url.starts_with("http://") { PLAINTEXT_HINT } else { "" };
    ConnectError::Connect { url: url.to_owned(), detail: chain(e), hint }
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
        if let Some(status) = failed.filter(|s| !plaintext_hint(url, s).is_empty()) {
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
    use super::*;

    #[test]
    fn an_address_without_a_scheme_fails_at_once() {
        let err = endpoint("10.0.0.5:50051", &ClientSecurity::default()).unwrap_err();
        assert!(matches!(err, ConnectError::NoScheme(_)), "{err}");
        assert!(err.to_string().contains("https://HOST:PORT"), "{err}");
        let err = endpoint("ftp://h:1", &ClientSecurity::default()).unwrap_err();
        assert!(err.to_string().contains("http:// or https://"), "{err}");
        assert!(endpoint("http://10.0.0.5:50051", &ClientSecurity::default()).is_ok());
    }

    #[test]
    fn tls_files_need_https() {
        let security = ClientSecurity { ca_cert: Some(b"pem".to_vec()), ..ClientSecurity::default() };
        let err = endpoint("http://coordinator:50051", &security).unwrap_err();
        assert!(matches!(err, ConnectError::TlsOverPlaintext(_)), "{err}");
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
        args.token_file = Some(token_file);
        assert_eq!(args.security().unwrap().token.unwrap().expose(), "swp_from_file");
        args.token = Some(Secret::new("swp_flag"));
        assert_eq!(args.security().unwrap().token.unwrap().expose(), "swp_flag", "the flag wins");
        args.ca_cert = Some(dir.path().join("missing.pem"));
        let err = args.security().unwrap_err().to_string();
        assert!(err.contains("cannot read the CA certificate") && err.contains("missing.pem"), "{err}");
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
