//! The two gRPC services ([`sweep_service::SweepApi`] for users, [`worker_service::WorkerApi`]
//! for GPU workers) and the state they share. A handler decodes its request (through
//! `sweep_proto::convert`), makes one call on the [`Queue`] and encodes the answer; errors become
//! statuses through the crate's one `From<Error> for Status`. The caller's [`Principal`] (left by
//! the service's authenticating interceptor) goes with every write, and every write first takes
//! one unit of the caller's rate budget.

mod checkpoint_transfer;
pub mod sweep_service;
pub mod worker_service;

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::{Principal, RateLimiter};
use crate::checkpoints::CheckpointFiles;
use crate::config::Config;
use crate::error::Result;
use crate::queue::Queue;

/// What every handler needs: the queue, the settings and the shutdown signal (streams end when it
/// turns true, so graceful shutdown does not wait on them).
#[derive(Debug, Clone)]
pub struct Shared {
    pub queue: Queue,
    pub config: Config,
    pub stop: watch::Receiver<bool>,
    pub limiter: Arc<RateLimiter>,
    /// Where uploaded checkpoints are kept; `None`: this coordinator keeps none.
    pub checkpoints: Option<CheckpointFiles>,
}

impl Shared {
    /// The caller of a write, once it has taken one unit of its rate budget.
    fn writer<T>(&self, request: &Request<T>) -> Result<Principal> {
        let principal = crate::auth::principal(request)?;
        self.limiter.check(&principal)?;
        Ok(principal)
    }
}

type RpcResult<T> = Result<Response<T>, Status>;
