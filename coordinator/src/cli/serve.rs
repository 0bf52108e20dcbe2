//! `coordinator serve`: the server's flags — where to listen (gRPC, and HTTP for `/metrics`), the
//! database, leases, checkpoints, TLS and tokens ([`ServerSecurityArgs`], shared with `sweep run`)
//! and the per-client limits ([`LimitArgs`]) — and the start-up that refuses to expose an
//! unprotected coordinator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::auth::{RateLimit, Security, ServerTls, TokenStore};
use crate::checkpoints::CheckpointSettings;
use crate::config::{Config, DEFAULT_MAX_MESSAGE_BYTES, Limits};
use crate::db::DEFAULT_DATABASE_URL;
use crate::error::Result;
use crate::server::Listener;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but a loopback address needs TLS and tokens (or --insecure).
    #[arg(long, env = "SWEEP_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Database URL: `sqlite://PATH?mode=rwc` (the file is created if missing) or
    /// `postgres://USER:PASSWORD@HOST/DB` (the database is created if the server has none).
    #[arg(long, env = "SWEEP_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Seconds a lease lives without a heartbeat.
    #[arg(long, env = "SWEEP_LEASE_TTL_SECS", default_value_t = 30)]
    pub lease_ttl_secs: u64,
    /// Milliseconds between reaper passes (default: a quarter of the lease TTL).
    #[arg(long, env = "SWEEP_REAPER_INTERVAL_MS")]
    pub reaper_interval_ms: Option<u64>,
    /// Largest gRPC message accepted or sent, in bytes; a bigger request message gets OUT_OF_RANGE.
    #[arg(long, env = "SWEEP_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Also serve HTTP on this address: `/metrics` (Prometheus text format) and `/healthz`, with
    /// the same TLS and tokens as gRPC (a user or admin bearer token). Off by default.
    #[arg(long, env = "SWEEP_HTTP_LISTEN")]
    pub http: Option<SocketAddr>,
    /// Keep checkpoints that workers upload (--checkpoint-to-coordinator) in this directory: each
    /// job's newest two, removed when it succeeds. Without it such uploads are refused.
    #[arg(long, env = "SWEEP_CHECKPOINT_STORE")]
    pub checkpoint_store: Option<PathBuf>,
    /// Largest checkpoint accepted, in MiB.
    #[arg(long, env = "SWEEP_MAX_CHECKPOINT_MIB", default_value_t = 1024)]
    pub max_checkpoint_mib: u64,
    #[command(flatten)]
    pub security: ServerSecurityArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// TLS and authentication of a coordinator (`coordinator serve`, `sweep run`).
#[derive(Debug, Clone, Args)]
pub struct ServerSecurityArgs {
    /// PEM certificate chain the coordinator presents: turns TLS on (clients use https://).
    #[arg(long, env = "SWEEP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWEEP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate: clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "SWEEP_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Token file, one `<role> <name> sha256:<hex>` per line: turns authentication on (add
    /// credentials with `coordinator token create`; edits are picked up while serving).
    #[arg(long, env = "SWEEP_TOKENS_FILE")]
    pub tokens: Option<PathBuf>,
    /// Listen beyond this machine without TLS or tokens anyway: whoever reaches the address may
    /// do anything.
    #[arg(long, env = "SWEEP_INSECURE")]
    pub insecure: bool,
}

impl ServerSecurityArgs {
    /// Loads the certificate and token files.
    pub fn security(&self) -> Result<Security> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTls::load(cert, key, self.tls_client_ca.as_deref())?),
            _ => None,
        };
        let tokens = self.tokens.as_deref().map(TokenStore::load).transpose()?.map(Arc::new);
        if let Some(store) = &tokens
            && store.is_empty()
        {
            tracing::warn!("the token file holds no credential: every call will be refused");
        }
        Ok(Security { tls, tokens })
    }

    /// The security for `addr`, refused when it would expose the coordinator unprotected.
    pub fn for_address(&self, addr: SocketAddr) -> Result<Security> {
        let security = self.security()?;
        security.check_exposure(addr, self.insecure)?;
        Ok(security)
    }
}

/// Per-client limits (see [`Limits`]).
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Most jobs (variants × seeds) one submission may describe.
    #[arg(long, env = "SWEEP_MAX_JOBS_PER_SUBMISSION", default_value_t = Limits::default().max_jobs_per_submission)]
    pub max_jobs_per_submission: u32,
    /// Most jobs one sweep may hold.
    #[arg(long, env = "SWEEP_MAX_JOBS_PER_SWEEP", default_value_t = Limits::default().max_jobs_per_sweep)]
    pub max_jobs_per_sweep: u32,
    /// Most leases one heartbeat may carry.
    #[arg(long, env = "SWEEP_MAX_FENCES_PER_HEARTBEAT", default_value_t = Limits::default().max_fences_per_heartbeat)]
    pub max_fences_per_heartbeat: u32,
    /// Writes per second of each user or admin credential (0: unlimited).
    #[arg(long, env = "SWEEP_USER_WRITE_RATE", default_value_t = Limits::default().user_writes.per_second)]
    pub user_write_rate: f64,
    /// Writes a user or admin credential may make at once before the rate applies.
    #[arg(long, env = "SWEEP_USER_WRITE_BURST", default_value_t = Limits::default().user_writes.burst as u32)]
    pub user_write_burst: u32,
    /// Writes per second of each worker credential (shared by the workers using it; 0: unlimited).
    #[arg(long, env = "SWEEP_WORKER_WRITE_RATE", default_value_t = Limits::default().worker_writes.per_second)]
    pub worker_write_rate: f64,
    /// Writes a worker credential may make at once before the rate applies.
    #[arg(long, env = "SWEEP_WORKER_WRITE_BURST", default_value_t = Limits::default().worker_writes.burst as u32)]
    pub worker_write_burst: u32,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_jobs_per_submission: self.max_jobs_per_submission,
            max_jobs_per_sweep: self.max_jobs_per_sweep,
            max_fences_per_heartbeat: self.max_fences_per_heartbeat,
            user_writes: RateLimit::new(self.user_write_rate, f64::from(self.user_write_burst)),
            worker_writes: RateLimit::new(self.worker_write_rate, f64::from(self.worker_write_burst)),
            ..Limits::default()
        }
    }
}

impl ServeArgs {
    pub fn config(&self) -> Config {
        let mut config = Config::with_lease_ttl(Duration::from_secs(self.lease_ttl_secs.max(1)));
        if let Some(ms) = self.reaper_interval_ms {
            config.reaper_interval = Duration::from_millis(ms.max(1));
        }
        config.max_message_bytes = self.max_message_bytes;
        config.limits = self.limits.limits();
        config.checkpoints = self.checkpoint_store.as_ref().map(|dir| CheckpointSettings {
            max_bytes: self.max_checkpoint_mib.saturating_mul(1 << 20),
            ..CheckpointSettings::in_dir(dir)
        });
        config
    }
}

/// Checks the security settings, binds the address and serves until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<()> {
    let security = args.security.for_address(args.listen)?;
    let http = match args.http {
        Some(addr) => {
            // The same token store (and its reloads) as the gRPC listener.
            security.check_exposure(addr, args.security.insecure)?;
            let listener = tokio::net::TcpListener::bind(addr).await?;
            Some(Listener { listener, security: security.clone() })
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let listeners = vec![Listener { listener, security }];
    crate::server::serve(listeners, http, &args.database_url, args.config(), super::shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[tokio::test]
    async fn an_exposed_address_without_protection_refuses_to_start_and_says_why() {
        let args = Cli::parse_from(["serve", "--listen", "0.0.0.0:0"]).serve;
        let err = run(args).await.unwrap_err().to_string();
        assert!(err.contains("refusing to listen on 0.0.0.0:0") && err.contains("--insecure"), "{err}");
        let defaults = Cli::parse_from(["serve"]).serve;
        assert_eq!(defaults.listen, "127.0.0.1:50051".parse::<SocketAddr>().unwrap());
        assert_eq!(defaults.config().limits, Limits::default());
        assert_eq!(defaults.config().checkpoints, None);
        let store =
            Cli::parse_from(["serve", "--checkpoint-store", "ckpt", "--max-checkpoint-mib", "2"]).serve;
        let expected = CheckpointSettings { max_bytes: 2 << 20, ..CheckpointSettings::in_dir("ckpt") };
        assert_eq!(store.config().checkpoints, Some(expected));
        let http = Cli::parse_from(["serve", "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0"]).serve;
        let err = run(http).await.unwrap_err().to_string();
        assert!(
            err.contains("refusing to listen on 0.0.0.0:0"),
            "the HTTP listener is held to the same rule: {err}"
        );
        let tls = Cli::try_parse_from(["serve", "--tls-cert", "c.pem"]);
        assert!(tls.is_err(), "--tls-cert needs --tls-key");
    }
}
