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
    /// A worker write whose fence is not the job's current, unexpired lease; nothing was stored.
    #[error("stale lease: {0}")]
    StaleLease(String),
    /// A resubmitted sweep whose hyper-parameters differ from the stored ones; nothing changed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is well formed but the job is not in a state that allows it.
    #[error("failed precondition: {0}")]
    Precondition(String),
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
    /// An RPC a client subcommand made failed.
    #[error("{:?}: {}", .0.code(), .0.message())]
    Rpc(tonic::Status),
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

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        match e {
            Error::NotFound(_) => Status::not_found(e.to_string()),
            Error::InvalidInput(_) => Status::invalid_argument(e.to_string()),
            Error::StaleLease(_) | Error::Conflict(_) | Error::Precondition(_) => {
                Status::failed_precondition(e.to_string())
            }
            Error::Unavailable(_) | Error::Transport(_) => Status::unavailable(e.to_string()),
            Error::Database(sqlx::Error::PoolTimedOut) => Status::unavailable(e.to_string()),
            Error::Rpc(status) => status,
            Error::Database(_)
            | Error::Migrate(_)
            | Error::Io(_)
            | Error::Format(_)
            | Error::Spec(_)
            | Error::Report(_)
            | Error::Internal(_) => {
                tracing::error!(error = %e, "internal error");
                Status::internal(e.to_string())
            }
        }
    }
}
