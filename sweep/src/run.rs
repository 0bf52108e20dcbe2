//! `sweep run`: starts an embedded coordinator and local worker slots in this process, submits
//! the sweep (idempotently, so a re-run continues it), follows it with progress bars until no job
//! is queued or running, then writes the report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use coordinator::client::{Preset, SpecArgs, SpecError};
use coordinator::{Config, Database};
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::{GetSweepRequest, SubmitSweepRequest, SweepSpec};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::info;
use worker::agent::attach::prepare_local;
use worker::agent::{AgentConfig, run_agent};

/// Flags of `sweep run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The sweep: a preset (default: smoke), a spec file or flags, as for `coordinator submit`.
    #[command(flatten)]
    pub spec: SpecArgs,
    /// SQLite database of the embedded coordinator.
    #[arg(long, env = "SWEEP_DATABASE_URL", default_value = coordinator::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Address of the embedded coordinator; use 0.0.0.0:50051 to let workers on other machines
    /// join (`worker --coordinator http://THIS_HOST:50051`).
    #[arg(long, env = "SWEEP_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Folder with the CIFAR-10 binary files (.bin or .bin.xz); downloaded there if missing.
    #[arg(long, env = "SWEEP_DATA_DIR", default_value = "data/cifar10")]
    pub data_dir: PathBuf,
    /// auto (every CUDA GPU, else the CPU), cuda or cpu.
    #[arg(long, env = "SWEEP_DEVICE", default_value = "auto")]
    pub device: String,
    /// GPUs to use: `all` or a list like `0,1`.
    #[arg(long, env = "SWEEP_GPUS", default_value = "all")]
    pub gpus: String,
    /// Concurrent jobs per device.
    #[arg(long, env = "SWEEP_SLOTS_PER_GPU", default_value_t = 1)]
    pub slots_per_gpu: u32,
    /// Attach local worker slots; `false` leaves the training to remote workers.
    #[arg(long, env = "SWEEP_LOCAL_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub local_worker: bool,
    /// Lease time-to-live of the embedded coordinator, in seconds.
    #[arg(long, env = "SWEEP_LEASE_TTL_SECS", default_value_t = 30)]
    pub lease_ttl_secs: u64,
    /// Report directory (default: reports/<sweep name>).
    #[arg(long, env = "SWEEP_REPORT_OUT")]
    pub out: Option<PathBuf>,
    /// Print one line per finished epoch instead of progress bars.
    #[arg(long, env = "SWEEP_NO_PROGRESS")]
    pub no_progress: bool,
    #[arg(long, env = "SWEEP_KERNELS", default_value = "auto", help = worker::train_ops::KERNELS_HELP)]
    pub kernels: worker::train_ops::KernelChoice,
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
    Connect(#[from] tonic::transport::Error),
    #[error("coordinator refused the request: {}", .0.message())]
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
    pub report: report::ReportFiles,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

/// The submissions the flags describe (the smoke preset when no sweep is named).
pub fn submissions(args: &RunArgs) -> Result<Vec<SweepSpec>, SpecError> {
    args.spec.submissions(Some(Preset::Smoke))
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
    let db = Database::open(&args.database_url).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| RunError::Listen { addr: args.listen, source })?;
    let addr = listener.local_addr().map_err(|source| RunError::Listen { addr: args.listen, source })?;
    let (stop_tx, mut stop) = watch::channel(false);
    let server = {
        let config = Config::with_lease_ttl(Duration::from_secs(args.lease_ttl_secs.max(1)));
        tokio::spawn(coordinator::run(listener, db.clone(), config, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    };
    let endpoint = format!("http://{addr}");
    info!(%endpoint, database = %args.database_url, "embedded coordinator started");
    let result = drive(&args, specs, &endpoint, interrupt).await;
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = server.await {
        tracing::warn!(error = %e, "embedded coordinator stopped with an error");
    }
    db.close().await;
    result
}

async fn drive(
    args: &RunArgs,
    specs: Vec<SweepSpec>,
    endpoint: &str,
    interrupt: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunSummary, RunError> {
    let sweep = specs.first().map(|s| s.name.clone()).unwrap_or_default();
    let channel = Channel::from_shared(endpoint.to_owned()).expect("valid endpoint").connect().await?;
    let mut client = SweepServiceClient::new(channel.clone());
    for spec in specs {
        let submitted = client.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await?.into_inner();
        eprintln!(
            "sweep {}: {} new jobs, {} already known (continuing)",
            submitted.sweep, submitted.jobs_created, submitted.jobs_existing
        );
    }

    let (worker_stop_tx, worker_stop) = watch::channel(false);
    let agent = if args.local_worker {
        let local = prepare_local(&args.device, &args.gpus, &args.data_dir).await?;
        eprintln!(
            "local worker on {}",
            local.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        );
        let config = AgentConfig {
            coordinator: endpoint.to_owned(),
            worker_id: format!("{}-sweep-{}", local.hostname, std::process::id()),
            hostname: local.hostname,
            devices: local.devices,
            slots_per_device: args.slots_per_gpu.max(1),
            kernels: args.kernels,
        };
        Some(tokio::spawn(run_agent(config, local.data, worker_stop)))
    } else {
        None
    };

    let follow = coordinator::cli::watch::watch_progress(channel.clone(), &sweep, !args.no_progress);
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
    let input = coordinator::cli::report::fetch_report_input(channel, &sweep).await?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(&sweep));
    let files = report::write_report(&input, &out)?;
    eprintln!(
        "sweep {sweep} done: {} succeeded, {} failed, {} cancelled; report in {}",
        summary.succeeded,
        summary.failed,
        summary.cancelled,
        files.index_html.display()
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
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn local_workers_default_to_auto_kernels_and_reject_unknown_ones() {
        use clap::Parser;
        use worker::train_ops::{KernelChoice, Kernels};
        assert_eq!(Cli::parse_from(["sweep"]).run.kernels, KernelChoice::Auto);
        let stock = Cli::parse_from(["sweep", "--kernels", "stock"]).run.kernels;
        assert_eq!(stock, KernelChoice::Set(Kernels::STOCK));
        let err = Cli::try_parse_from(["sweep", "--kernels", "wgrad+fp8"]).err().expect("rejected");
        assert!(err.to_string().contains("fp8"), "{err}");
    }

    #[test]
    fn overrides_from_flags_reach_the_spec() {
        use clap::Parser;
        let args = Cli::parse_from([
            "sweep",
            "--preset",
            "quick",
            "--seeds",
            "0..2",
            "--epochs",
            "3",
            "--variants",
            "natural_softmax,normal_lr1e-3",
            "--name",
            "mine",
            "--width",
            "0.5",
        ])
        .run;
        let spec = submissions(&args).unwrap().remove(0);
        assert_eq!((spec.name.as_str(), spec.seeds.as_slice(), spec.epochs), ("mine", &[0, 1][..], 3));
        assert_eq!(spec.variants, vec!["natural_softmax", "normal_lr1e-3"]);
        assert_eq!(spec.data.unwrap().width_multiplier, 0.5);
        let default = submissions(&Cli::parse_from(["sweep"]).run).unwrap();
        assert_eq!(default[0].name, "smoke");
    }
}
