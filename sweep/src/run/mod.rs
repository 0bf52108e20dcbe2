//! `sweep run`: starts an embedded coordinator and local worker slots in this process, submits
//! the sweep (idempotently, so a re-run continues it), follows it with progress bars until no job
//! is queued or running, then writes the report.
//!
//! The coordinator listens on loopback without authentication by default. To let workers on
//! other machines join it takes the same TLS and token flags as `coordinator serve` (and the same
//! refusal to listen beyond this machine without them); its own worker and watcher then use
//! in-memory credentials, over a second, loopback-only listener when the public one speaks TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use coordinator::cli::ServerSecurityArgs;
use coordinator::client::report_input::write_sweep_report;
use coordinator::client::{Preset, SpecArgs, SpecError};
use coordinator::{Config, Database, Listener, Role, Security};
use sweep_proto::connect::{self, ClientSecurity, ConnectError};
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::{self, GetSweepRequest, SubmitSweepRequest, SweepSpec};
use sweep_proto::text::printable;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;
use worker::agent::attach::{CadenceArgs, SlotArgs, prepare_commands_only, prepare_local};
use worker::agent::{AgentConfig, CheckpointSettings, CheckpointTarget, Commands, run_agent_with};

/// Flags of `sweep run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The sweep: a preset, a spec file or flags, as for `coordinator submit` (default: smoke).
    #[command(flatten)]
    pub spec: SpecArgs,
    /// SQLite database of the embedded coordinator.
    #[arg(long, env = "SWEEP_DATABASE_URL", default_value = coordinator::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Address of the embedded coordinator; use 0.0.0.0:50051 with TLS and tokens to let
    /// workers on other machines join (`worker --coordinator https://THIS_HOST:50051 …`).
    #[arg(long, env = "SWEEP_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub security: ServerSecurityArgs,
    /// The CIFAR-10 folder (--data-dir) and whether to download into it (--download).
    #[command(flatten)]
    pub data: worker::data::DataArgs,
    /// The devices, slots and kernels of the local worker.
    #[command(flatten)]
    pub slots: SlotArgs,
    /// Attach local worker slots; `false` leaves the training to remote workers.
    #[arg(long, env = "SWEEP_LOCAL_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub local_worker: bool,
    /// Lease time-to-live of the embedded coordinator, in seconds.
    #[arg(long, env = "SWEEP_LEASE_TTL_SECS", default_value_t = 30)]
    pub lease_ttl_secs: u64,
    /// Report directory (default: reports/<sweep name>).
    #[arg(long, env = "SWEEP_REPORT_OUT")]
    pub out: Option<PathBuf>,
    /// Print one line per finished epoch and per job state change instead of progress bars (the
    /// default when stderr is not a terminal).
    #[arg(long, env = "SWEEP_NO_PROGRESS")]
    pub no_progress: bool,
    /// Queue the sweep's failed and cancelled jobs again (each as a new attempt with a fresh
    /// budget) before training; without it they stay as they are.
    #[arg(long, env = "SWEEP_RETRY_FAILED")]
    pub retry_failed: bool,
    /// Where the local worker checkpoints its jobs, so that a job stopped by Ctrl-C continues
    /// from its last epoch when the same command runs again (a job's files go once it succeeds).
    #[arg(long, env = "SWEEP_CHECKPOINT_DIR", default_value = "sweep-checkpoints")]
    pub checkpoint_dir: PathBuf,
    #[command(flatten)]
    pub cadence: CadenceArgs,
    /// A command sweep's report: the parameter whose values are compared, and the baseline value
    /// (as for `coordinator report`).
    #[command(flatten)]
    pub grouping: coordinator::cli::report::GroupingArgs,
}

/// Why `sweep run` stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Coordinator(#[from] coordinator::Error),
    #[error("cannot reach the embedded coordinator: {0}")]
    Connect(#[from] ConnectError),
    #[error("coordinator refused the request: {}", printable(.0.message()))]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Local(#[from] worker::agent::attach::AttachError),
    #[error(transparent)]
    Worker(#[from] worker::agent::AgentError),
    #[error(transparent)]
    Report(#[from] report::ReportError),
    #[error("interrupted: run the same command again to continue the sweep")]
    Interrupted,
}

/// What a finished `sweep run` produced.
#[derive(Debug)]
pub struct RunSummary {
    pub sweep: String,
    /// `None` when a command sweep's epochs cannot make one (its reason was printed).
    pub report: Option<report::ReportFiles>,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

/// The submissions the flags describe: the smoke preset when they name no sweep and give none
/// of its shape (a `--seeds`/`--epochs`/`--batch-size` sweep trains on all the data, as
/// `coordinator submit`'s does).
pub fn submissions(args: &RunArgs) -> Result<Vec<SweepSpec>, SpecError> {
    let default = (!args.spec.shapes_a_sweep()).then_some(Preset::Smoke);
    args.spec.submissions(default)
}

/// Runs the sweep to its end (or until Ctrl-C) and writes the report.
pub async fn run(args: RunArgs) -> Result<RunSummary, RunError> {
    run_until(args, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// [`run`] with the interrupt as a future, so tests can stop it.
pub async fn run_until(
    args: RunArgs,
    interrupt: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunSummary, RunError> {
    let specs = submissions(&args)?;
    let security = args.security.for_address(args.listen)?;
    let db = Database::open(&args.database_url).await?;
    let (listeners, local) = bind(args.listen, security).await?;
    let (stop_tx, mut stop) = watch::channel(false);
    let server = {
        let config = Config::with_lease_ttl(Duration::from_secs(args.lease_ttl_secs.max(1)));
        tokio::spawn(coordinator::run_listeners(listeners, db.clone(), config, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    };
    info!(endpoint = %local.url, database = %coordinator::db::redacted(&args.database_url), "embedded coordinator started");
    let result = drive(&args, specs, &local, interrupt).await;
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = server.await {
        tracing::warn!(error = %e, "embedded coordinator stopped with an error");
    }
    db.close().await;
    result
}

/// How this process's own worker and watcher reach the embedded coordinator.
struct Local {
    url: String,
    /// What the watcher submits and reads with.
    user: ClientSecurity,
    /// What the local worker presents.
    worker: ClientSecurity,
}

/// Binds `addr` with `security`, and the way in for this process: the same listener, or a second
/// one on loopback without TLS when the public one speaks TLS (its certificate need not name
/// this host). With tokens, this process gets in-memory credentials; their names hold a ':',
/// which no token file name may, so none can be impersonated.
async fn bind(addr: SocketAddr, security: Security) -> Result<(Vec<Listener>, Local), RunError> {
    let listen = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| RunError::Listen { addr, source })
    };
    let listener = listen(addr).await?;
    let bound = listener.local_addr().map_err(|source| RunError::Listen { addr, source })?;
    let (user, worker) = match &security.tokens {
        Some(store) => (
            ClientSecurity::token(store.add(Role::Admin, "sweep-run:admin")?),
            ClientSecurity::token(store.add(Role::Worker, "sweep-run:worker")?),
        ),
        None => (ClientSecurity::default(), ClientSecurity::default()),
    };
    let tokens = security.tokens.clone();
    let mut listeners = vec![Listener { listener, security }];
    let local_addr = if listeners[0].security.tls.is_some() {
        let loopback = listen(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let local = loopback.local_addr().map_err(|source| RunError::Listen { addr, source })?;
        listeners.push(Listener { listener: loopback, security: Security { tls: None, tokens } });
        local
    } else if bound.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    };
    Ok((listeners, Local { url: format!("http://{local_addr}"), user, worker }))
}

async fn drive(
    args: &RunArgs,
    specs: Vec<SweepSpec>,
    local: &Local,
    interrupt: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunSummary, RunError> {
    let sweep = specs.first().map(|s| s.name.clone()).unwrap_or_default();
    let commands = match specs.iter().filter(|s| s.command.is_some()).count() {
        0 => Commands::Refuse,
        n if n == specs.len() => Commands::Only,
        _ => Commands::Allow,
    };
    let channel = connect::connect(&local.url, &local.user).await?;
    let mut client = SweepServiceClient::new(channel.clone());
    for spec in specs {
        let submitted = client.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await?.into_inner();
        eprintln!(
            "sweep {}: {} new jobs, {} already known (continuing)",
            printable(&submitted.sweep),
            submitted.jobs_created,
            submitted.jobs_existing
        );
    }
    let retried = if args.retry_failed {
        let retry = pb::RetryJobsRequest { sweep: sweep.clone(), failed: true, cancelled: true, job_id: 0 };
        client.retry_jobs(retry).await?.into_inner().retried
    } else {
        0
    };
    let planned = client.get_sweep(GetSweepRequest { sweep: sweep.clone() }).await?.into_inner();
    eprintln!("{}", crate::plan::plan_line(&planned, retried));

    let (worker_stop_tx, worker_stop) = watch::channel(false);
    let agent = if args.local_worker {
        // Only the sweep's own program: no CIFAR-10 for the built-in CNN to load.
        let resources = match commands {
            Commands::Only => prepare_commands_only(&args.slots.device, &args.slots.gpus)?,
            _ => prepare_local(&args.slots.device, &args.slots.gpus, args.data.source()).await?,
        };
        eprintln!(
            "local worker on {}",
            resources.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        );
        if worker::kernel_cache::starts_cold_on(&resources.devices) {
            eprintln!("{}", worker::kernel_cache::COLD_START);
        }
        let config = AgentConfig {
            commands,
            coordinator: local.url.clone(),
            worker_id: format!("{}-sweep-{}", resources.hostname, std::process::id()),
            hostname: resources.hostname,
            devices: resources.devices,
            slots: args.slots.slots_per_gpu,
            fuse: args.slots.fuse,
            kernels: args.slots.kernels,
            checkpoints: Some(CheckpointSettings {
                target: CheckpointTarget::Directory(args.checkpoint_dir.clone()),
                cadence: args.cadence.cadence(),
            }),
        };
        Some(tokio::spawn(run_agent_with(config, local.worker.clone(), resources.data, worker_stop)))
    } else {
        None
    };

    let follow = coordinator::client::watch::follow(
        channel.clone(),
        &sweep,
        coordinator::client::watch::Progress::auto(args.no_progress),
    );
    let interrupted = tokio::select! {
        done = follow => { done?; false }
        _ = interrupt => true,
    };
    let _ = worker_stop_tx.send(true);
    if let Some(agent) = agent {
        match agent.await {
            Ok(result) => result?,
            Err(e) => tracing::error!(error = %e, "local worker task failed"),
        }
    }
    if interrupted {
        return Err(RunError::Interrupted);
    }

    let summary = client.get_sweep(GetSweepRequest { sweep: sweep.clone() }).await?.into_inner();
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(&sweep));
    let grouping = args.grouping.grouping();
    let files = match write_sweep_report(channel, &sweep, &out, &grouping).await {
        Ok(files) => Some(files),
        // A command sweep's epochs may not make a report; its metrics are still stored.
        Err(coordinator::Error::InvalidInput(why))
            if summary.spec.as_ref().is_some_and(|s| s.command.is_some()) =>
        {
            eprintln!("no report: {why}; `coordinator export --sweep {sweep}` reads every metric");
            None
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "sweep {sweep} done: {} succeeded, {} failed, {} cancelled{}",
        summary.succeeded,
        summary.failed,
        summary.cancelled,
        files.as_ref().map_or(String::new(), |f| format!("; report in {}", f.index_html.display()))
    );
    Ok(RunSummary {
        sweep,
        report: files,
        succeeded: summary.succeeded,
        failed: summary.failed,
        cancelled: summary.cancelled,
    })
}

#[cfg(test)]
mod tests;
