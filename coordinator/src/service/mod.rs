//! The two gRPC services ([`sweep_service::SweepApi`] for users, [`worker_service::WorkerApi`]
//! for GPU workers) and the state they share. A handler decodes its request (through
//! `sweep_proto::convert`), makes one call on the [`Queue`] and encodes the answer; errors become
//! statuses through the crate's one `From<Error> for Status`.

pub mod sweep_service;
pub mod worker_service;

use tokio::sync::watch;
use tonic::{Response, Status};

use crate::config::Config;
use crate::queue::Queue;

/// What every handler needs: the queue, the settings and the shutdown signal (streams end when it
/// turns true, so graceful shutdown does not wait on them).
#[derive(Debug, Clone)]
pub struct Shared {
    pub queue: Queue,
    pub config: Config,
    pub stop: watch::Receiver<bool>,
}

type RpcResult<T> = Result<Response<T>, Status>;
