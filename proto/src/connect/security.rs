//! What a client presents to the coordinator: the CA it trusts, its certificate (mutual TLS) and
//! its bearer token ([`ClientSecurity`]), and the interceptor that puts the token on every call.

use std::fmt;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Identity;

use super::ConnectError;

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

    /// Whether any TLS option (a CA or a client certificate) is set.
    pub fn wants_tls(&self) -> bool {
        self.ca_cert.is_some() || self.identity.is_some()
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
