//! The crate's one error type and its single mapping onto gRPC status codes.

use sweep_proto::InvalidInput;

/// Everything that can go wrong in the coordinator, its database layer and its CLI clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sweep, job or worker that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Client input that breaks a rule (checked in `sweep_proto::convert` or against the job).
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// A streamed request message that could not be read (bad protobuf or framing); the messages
    /// before it were handled.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A worker write whose fence is not the job's current, unexpired lease; nothing was stored.
    #[error("stale lease: {0}")]
    StaleLease(String),
    /// A resubmitted sweep whose hyper-parameters differ from the stored ones; nothing changed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is well formed but the job is not in a state that allows it.
    #[error("failed precondition: {0}")]
    Precondition(String),
    /// No credential, or one the coordinator does not know.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A known credential whose role or ownership does not allow the call; nothing changed.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A configured limit (rate, sweep size) was reached; the message names it.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Bytes that arrived damaged (a checksum differs); nothing was kept.
    #[error("data loss: {0}")]
    DataLoss(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The writer task is gone (the coordinator is shutting down) or a commit failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A status tonic produced: an RPC a client subcommand made failed (the server's message is
    /// shown escaped), or a client's stream broke (see [`Error::inbound`]).
    #[error("{:?}: {}", .0.code(), sweep_proto::text::printable(.0.message()))]
    Rpc(tonic::Status),
    /// A client could not set up its connection to the coordinator.
    #[error(transparent)]
    Connect(#[from] sweep_proto::connect::ConnectError),
    /// A setting that cannot be used or is unsafe (token files, TLS files, exposure).
    #[error("{0}")]
    Config(String),
    /// Something the CLI could not encode or decode (spec files, exports).
    #[error("{0}")]
    Format(String),
    /// The flags or spec file of a submission do not describe a sweep.
    #[error(transparent)]
    Spec(#[from] crate::client::SpecError),
    /// The report crate could not write the report.
    #[error("report: {0}")]
    Report(#[from] report::ReportError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Why reading a client's request stream failed. tonic reports a message it cannot decode as
    /// INTERNAL, but the fault is the client's input; other statuses pass through as they are (a
    /// message over the size limit keeps tonic's OUT_OF_RANGE, as on unary calls).
    pub fn inbound(status: tonic::Status) -> Error {
        match status.code() {
            tonic::Code::Internal => Error::Malformed(status.message().to_owned()),
            _ => Error::Rpc(status),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Rpc(status)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Format(format!("json: {e}"))
    }
}

impl From<csv::Error> for Error {
    fn from(e: csv::Error) -> Self {
        Error::Format(format!("csv: {e}"))
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest status message sent: it travels in an HTTP/2 header, and one past the peer's header
/// limit turns the error into a different one (the values quoted in it are cut much shorter).
const MAX_STATUS_MESSAGE: usize = 2048;

/// `e`'s message, cut to [`MAX_STATUS_MESSAGE`] bytes.
fn message(e: &Error) -> String {
    let mut text = e.to_string();
    if text.len() > MAX_STATUS_MESSAGE {
        let mut cut = MAX_STATUS_MESSAGE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        match e {
            Error::NotFound(_) => Status::not_found(message(&e)),
            Error::Unauthenticated(_) => Status::unauthenticated(message(&e)),
            Error::PermissionDenied(_) => Status::permission_denied(message(&e)),
            Error::ResourceExhausted(_) => Status::resource_exhausted(message(&e)),
            Error::DataLoss(_) => Status::data_loss(message(&e)),
            Error::InvalidInput(_) | Error::Malformed(_) => Status::invalid_argument(message(&e)),
            Error::StaleLease(_) | Error::Conflict(_) | Error::Precondition(_) => {
                Status::failed_precondition(message(&e))
            }
            Error::Unavailable(_) | Error::Transport(_) | Error::Connect(_) => {
                Status::unavailable(message(&e))
            }
            Error::Database(sqlx::Error::PoolTimedOut) => Status::unavailable(message(&e)),
            Error::Rpc(status) => status,
            Error::Database(_)
            | Error::Migrate(_)
            | Error::Io(_)
            | Error::Format(_)
            | Error::Config(_)
            | Error::Spec(_)
            | Error::Report(_)
            | Error::Internal(_) => {
                tracing::error!(error = %e, "internal error");
                Status::internal(message(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_errors_map_to_their_codes_and_messages_stay_bounded() {
        let cases = [
            (Error::Unauthenticated("no token".into()), tonic::Code::Unauthenticated),
            (Error::PermissionDenied("not yours".into()), tonic::Code::PermissionDenied),
            (Error::ResourceExhausted("rate".into()), tonic::Code::ResourceExhausted),
        ];
        for (e, code) in cases {
            assert_eq!(tonic::Status::from(e).code(), code);
        }
        let long = tonic::Status::from(Error::Precondition("x".repeat(1 << 20)));
        assert!(long.message().len() <= MAX_STATUS_MESSAGE + '…'.len_utf8());
        let shown = Error::Rpc(tonic::Status::internal("bad\u{1b}[2Jthing")).to_string();
        assert!(shown.contains("bad\\u{1b}[2Jthing"), "{shown}");
    }

    #[test]
    fn broken_request_streams_are_the_clients_fault_or_keep_tonics_code() {
        let broken = Error::inbound(tonic::Status::internal("failed to decode Protobuf message"));
        let status = tonic::Status::from(broken);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "malformed message: failed to decode Protobuf message");
        let too_large = Error::inbound(tonic::Status::out_of_range("decoded message length too large"));
        assert_eq!(tonic::Status::from(too_large).code(), tonic::Code::OutOfRange);
    }
}
