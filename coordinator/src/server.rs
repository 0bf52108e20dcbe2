//! Wires the services into tonic servers, one per listener, each with its own security (TLS,
//! token store) in front of the same queue: authenticating interceptors on both services and on
//! reflection, health left public for probes. Starts the lease reaper and the token-file
//! watcher, and shuts everything down gracefully when the caller's shutdown future resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sweep_proto::pb::sweep_service_server::SweepServiceServer;
use sweep_proto::pb::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;

use crate::auth::{Authenticator, RateLimiter, Role, Security, TokenStore};
use crate::checkpoints::CheckpointFiles;
use crate::config::Config;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::reaper;
use crate::service::Shared;
use crate::service::sweep_service::SweepApi;
use crate::service::worker_service::WorkerApi;

/// How often the token files are checked for changes.
const TOKEN_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// A bound socket and what it demands of its clients.
#[derive(Debug)]
pub struct Listener {
    pub listener: TcpListener,
    pub security: Security,
}

impl Listener {
    /// Plaintext without authentication (every caller is `Principal::Local`).
    pub fn open(listener: TcpListener) -> Listener {
        Listener { listener, security: Security::none() }
    }
}

/// Serves both services on `listener` (plaintext, no authentication) until `shutdown` resolves;
/// see [`run_listeners`].
pub async fn run(
    listener: TcpListener,
    db: Database,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    run_listeners(vec![Listener::open(listener)], db, config, shutdown).await
}

/// Serves both services on every listener until `shutdown` resolves; see [`run_with_http`].
pub async fn run_listeners(
    listeners: Vec<Listener>,
    db: Database,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    run_with_http(listeners, None, db, config, shutdown).await
}

/// Serves both services on every listener, and `/metrics` on `http` if given, until `shutdown`
/// resolves, then stops accepting, ends the open streams (watches, epoch streams), waits for
/// in-flight calls and stops the reaper. The database stays open (the caller owns it; see
/// [`Database::close`]).
pub async fn run_with_http(
    listeners: Vec<Listener>,
    http: Option<Listener>,
    db: Database,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    let queue = Queue::new(db, &config);
    let graced = queue.grant_restart_grace().await?;
    if graced > 0 {
        tracing::info!(leases = graced, "running leases given a whole TTL for their workers to reconnect");
    }
    let reaper = tokio::spawn(reaper::run(queue.clone(), config.reaper_interval, stop.clone()));
    let limiter = Arc::new(RateLimiter::new(config.limits.user_writes, config.limits.worker_writes));
    let metrics = Metrics::new(queue.clone())?;
    let http_server = http.map(|Listener { listener, security }| {
        tokio::spawn(crate::http::serve_http(
            listener,
            security,
            queue.clone(),
            metrics.clone(),
            stop.clone(),
        ))
    });
    let checkpoints = config.checkpoints.clone().map(CheckpointFiles::new);
    let shared = Shared { queue, config: config.clone(), stop: stop.clone(), limiter, checkpoints };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SweepServiceServer<SweepApi>>().await;
    health.set_serving::<WorkerServiceServer<WorkerApi>>().await;

    let mut stores: Vec<Arc<TokenStore>> = Vec::new();
    for store in listeners.iter().filter_map(|l| l.security.tokens.clone()) {
        if !stores.iter().any(|s| Arc::ptr_eq(s, &store)) {
            stores.push(store);
        }
    }
    let reloads = tokio::spawn(reload_tokens(stores, stop.clone()));

    let mut servers = Vec::new();
    for Listener { listener, security } in listeners {
        let local = listener.local_addr()?;
        let tokens = security.tokens.clone();
        let auth = |service: &'static str, roles: &'static [Role]| {
            Authenticator::new(tokens.clone(), service, roles)
        };
        let limit = config.max_message_bytes;
        let sweeps = SweepServiceServer::new(SweepApi::new(shared.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        let workers = WorkerServiceServer::new(WorkerApi::new(shared.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(sweep_proto::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let internal = |e: tonic_reflection::server::Error| Error::Internal(format!("reflection: {e}"));
        let reflection_v1 = reflection().build_v1().map_err(internal)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(internal)?;

        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &security.tls {
            builder =
                builder.tls_config(tls.config()).map_err(|e| Error::Config(format!("TLS: {}", chain(&e))))?;
        }
        let router = builder
            .layer(metrics.rpc_layer())
            .add_service(health_service.clone())
            .add_service(InterceptedService::new(reflection_v1, auth("server reflection", &[])))
            .add_service(InterceptedService::new(reflection_v1alpha, auth("server reflection", &[])))
            .add_service(InterceptedService::new(
                sweeps,
                auth("sweep.v1.SweepService", &[Role::User, Role::Admin]),
            ))
            .add_service(InterceptedService::new(workers, auth("sweep.v1.WorkerService", &[Role::Worker])));
        // Small RPCs: disable Nagle so replies are not held back waiting for more data.
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            conn.inspect(|stream| {
                let _ = stream.set_nodelay(true);
            })
        });
        let mut stopped = stop.clone();
        let signal = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tracing::info!(
            %local,
            tls = security.tls.is_some(),
            client_certs = security.tls.as_ref().is_some_and(|t| t.requires_client_certs()),
            authentication = tokens.is_some(),
            "coordinator listening"
        );
        servers.push(tokio::spawn(router.serve_with_incoming_shutdown(incoming, signal)));
    }
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if result.is_ok() => result = Err(Error::Transport(e)),
            Ok(Err(_)) => {}
            Err(e) => tracing::error!(error = %e, "a server task failed"),
        }
    }
    if let Some(http) = http_server {
        match http.await {
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            Err(e) => tracing::error!(error = %e, "the HTTP server task failed"),
            _ => {}
        }
    }
    let _ = reaper.await;
    let _ = reloads.await;
    result
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Picks up edits of the token files (new or revoked credentials) until the server stops.
async fn reload_tokens(stores: Vec<Arc<TokenStore>>, mut stop: watch::Receiver<bool>) {
    if stores.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(TOKEN_RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        for store in &stores {
            store.reload_if_changed();
        }
    }
}

/// Opens the database at `database_url`, serves `listeners` (and `http`) until `shutdown`, then
/// closes the database.
pub async fn serve(
    listeners: Vec<Listener>,
    http: Option<Listener>,
    database_url: &str,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let db = Database::open(database_url).await?;
    let result = run_with_http(listeners, http, db.clone(), config, shutdown).await;
    db.close().await;
    result
}
