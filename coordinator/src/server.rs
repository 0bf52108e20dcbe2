//! Wires the services into a tonic server with gRPC reflection and health, starts the lease
//! reaper, and shuts everything down gracefully when the caller's shutdown future resolves.

use std::future::Future;

use futures::StreamExt;
use sweep_proto::pb::sweep_service_server::SweepServiceServer;
use sweep_proto::pb::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Config;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::reaper;
use crate::service::Shared;
use crate::service::sweep_service::SweepApi;
use crate::service::worker_service::WorkerApi;

/// Serves both services on `listener` until `shutdown` resolves, then stops accepting, ends the
/// open streams (watches, epoch streams), waits for in-flight calls and stops the reaper.
/// The database stays open (the caller owns it; see [`Database::close`]).
pub async fn run(
    listener: TcpListener,
    db: Database,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    let queue = Queue::new(db, &config);
    let reaper = tokio::spawn(reaper::run(queue.clone(), config.reaper_interval, stop.clone()));
    let shared = Shared { queue, config: config.clone(), stop };

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SweepServiceServer<SweepApi>>().await;
    health.set_serving::<WorkerServiceServer<WorkerApi>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sweep_proto::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha =
        reflection().build_v1alpha().map_err(|e| Error::Internal(format!("reflection: {e}")))?;

    let limit = config.max_message_bytes;
    let sweeps = SweepServiceServer::new(SweepApi::new(shared.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let workers = WorkerServiceServer::new(WorkerApi::new(shared))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let local = listener.local_addr()?;
    // Small RPCs: disable Nagle so replies are not held back waiting for more data.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    };
    tracing::info!(%local, "coordinator listening");
    let served = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(sweeps)
        .add_service(workers)
        .serve_with_incoming_shutdown(incoming, signal)
        .await;
    let _ = reaper.await;
    served?;
    Ok(())
}

/// Opens the database at `database_url`, serves until `shutdown`, then closes the database.
pub async fn serve(
    listener: TcpListener,
    database_url: &str,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let db = Database::open(database_url).await?;
    let result = run(listener, db.clone(), config, shutdown).await;
    db.close().await;
    result
}
