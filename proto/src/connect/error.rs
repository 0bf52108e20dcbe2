//! Why a client could not reach the coordinator ([`ConnectError`]), and the hints that turn a
//! transport failure into something a user can act on (a refused connection, a plaintext client
//! talking to a TLS coordinator).

use std::path::PathBuf;

/// Where every client's coordinator address comes from, named by the errors about that address.
pub const ADDRESS_SET_BY: &str = " (the address is set with --coordinator or SWEEP_COORDINATOR)";

/// Why a client could not set up its connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `set_by` is empty, or [`ADDRESS_SET_BY`] where the address came from the client flags.
    #[error(
        "coordinator address {url:?} has no scheme: use http://{url} (plaintext) or https://{url} \
         (TLS){set_by}"
    )]
    NoScheme { url: String, set_by: &'static str },
    #[error("coordinator address {url:?} is not valid: {reason}{set_by}")]
    Address { url: String, reason: String, set_by: &'static str },
    #[error(
        "TLS options (--ca-cert, --tls-client-cert) need an https:// coordinator address, not {0:?}: \
         use {https} or leave the TLS options out",
        https = .0.replacen("http://", "https://", 1)
    )]
    TlsOverPlaintext(String),
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the {what} {} is not PEM: it has no \"-----BEGIN {block}-----\" block", path.display())]
    NotPem { what: &'static str, path: PathBuf, block: &'static str },
    #[error("invalid token: {0}")]
    Token(String),
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    /// Nothing accepts connections at the address: the coordinator is down or elsewhere.
    #[error("cannot connect to the coordinator at {url}: connection refused; is it running?{set_by}")]
    Refused { url: String, set_by: &'static str },
    #[error("cannot connect to {url}: {detail}{hint}")]
    Connect { url: String, detail: String, hint: &'static str },
}

impl ConnectError {
    /// The same error, naming the flag and env var the address came from where it is about the
    /// address.
    pub fn address_set_by_flags(mut self) -> ConnectError {
        match &mut self {
            ConnectError::NoScheme { set_by, .. }
            | ConnectError::Address { set_by, .. }
            | ConnectError::Refused { set_by, .. } => *set_by = ADDRESS_SET_BY,
            _ => {}
        }
        self
    }
}

/// The error and its causes on one line (tonic's own message is only "transport error"); a cause
/// whose text is already there is not repeated.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
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

/// The first I/O error among `e` and its causes: a failure at the TCP level.
fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut next = Some(e);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = cause.source();
    }
    None
}

/// Whether `e` (or a cause) is a refused TCP connection.
pub(super) fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    io_cause(e).is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
}

pub(super) const PLAINTEXT_HINT: &str =
    " (if the coordinator serves TLS, use an https:// address and --ca-cert)";
const REFUSED_HINT: &str = " (connection refused: is the coordinator running? its address is set with \
                            --coordinator or SWEEP_COORDINATOR)";

/// Whether a call's status is a transport failure rather than the coordinator's answer.
pub(super) fn transport_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
    )
}

/// What to tell someone whose call to `url` broke at the transport level: nothing accepts
/// connections there (is the coordinator running?), or, for a plaintext (`http://`) call whose
/// connection was dropped, that the coordinator likely serves TLS. Empty otherwise.
pub fn plaintext_hint(url: &str, status: &tonic::Status) -> &'static str {
    if !transport_failure(status) {
        ""
    } else if is_refused(status) {
        REFUSED_HINT
    } else if url.starts_with("http://") {
        PLAINTEXT_HINT
    } else {
        ""
    }
}

/// The error for a failed `connect` to `url`. The TLS hint only where TCP got through: a
/// coordinator that serves TLS accepts the connection, so a TCP-level failure is something else.
pub(super) fn connect_error(url: &str, e: &tonic::transport::Error) -> ConnectError {
    if is_refused(e) {
        return ConnectError::Refused { url: url.to_owned(), set_by: "" };
    }
    let hint = if url.starts_with("http://") && io_cause(e).is_none() { PLAINTEXT_HINT } else { "" };
    ConnectError::Connect { url: url.to_owned(), detail: chain(e), hint }
}
