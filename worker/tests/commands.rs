//! Command sweeps end to end (a coordinator on 127.0.0.1, worker agents in this process): only a
//! worker that allows commands runs them, and a command job stopped on one worker continues on
//! another from the checkpoint the program itself wrote, each epoch stored once.

mod cluster;

use std::time::Duration;

use cluster::{client, start_agent, start_server, start_server_with, wait_for};
use sweep_proto::pb::{GetJobRequest, GetSweepRequest, ListJobsRequest, SubmitSweepRequest, SweepSpec};
use worker::agent::{Cadence, CheckpointSettings, CheckpointTarget, Commands};

fn start_worker(addr: std::net::SocketAddr) -> cluster::Agent {
    start_agent(addr, "test-worker", None, Commands::Refuse)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sweep_runs_only_on_a_worker_that_allows_commands() {
    let dir = tempfile::tempdir().unwrap();
    let url = coordinator::testing::database_url(dir.path());
    let server = start_server(&url, "127.0.0.1:0".parse().unwrap()).await;
    let mut c = client(server.addr).await;
    // Braces of the JSON are doubled: single ones name parameters.
    let template =
        r#"sh -c 'for e in 1 2 3; do echo "{{\"epoch\": $e, \"loss\": {lr}, \"step\": $e}}"; done'"#;
    let spec = SweepSpec {
        name: "byo".into(),
        seeds: vec![0],
        epochs: 3,
        command: Some(sweep_proto::pb::CommandSpec {
            template: template.into(),
            grid: [(
                "lr".to_string(),
                sweep_proto::pb::ParamValues { values: vec!["0.5".into(), "0.25".into()] },
            )]
            .into(),
            ..Default::default()
        }),
        objective: Some(sweep_proto::pb::Objective { metric: "step".into(), mode: 2 }),
        ..Default::default()
    };
    c.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await.unwrap();
    let (stop_builtin, builtin) = start_worker(server.addr);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = c.get_sweep(GetSweepRequest { sweep: "byo".into() }).await.unwrap().into_inner();
    assert_eq!(s.queued, 2, "a worker without --allow-commands leases no command job");

    // Command jobs only: no data set, no training runner.
    let (stop, agent) = start_agent(server.addr, "cmd-worker", None, Commands::Only);
    let s = wait_for(server.addr, "byo", Duration::from_secs(60), |s| s.succeeded == 2).await;
    assert_eq!((s.epochs_done, s.failed), (6, 0));
    let jobs = c.list_jobs(ListJobsRequest { sweep: "byo".into(), ..Default::default() }).await.unwrap();
    for job in jobs.into_inner().jobs {
        assert_eq!(job.worker_id, "cmd-worker");
        // The objective is step, minimised: epoch 1.
        assert_eq!((job.best_value, job.best_epoch), (1.0, 1), "{job:?}");
        let detail = c.get_job(GetJobRequest { job_id: job.id }).await.unwrap().into_inner();
        let lr: f64 = job.variant.strip_prefix("lr=").unwrap().parse().unwrap();
        for (i, e) in detail.epochs.iter().enumerate() {
            assert_eq!((e.epoch, e.values["loss"], e.values["step"]), (i as u32 + 1, lr, (i + 1) as f64));
            assert_eq!(e.val_acc, None);
        }
    }
    for (stop, agent) in [(stop, agent), (stop_builtin, builtin)] {
        stop.send(true).unwrap();
        agent.await.unwrap().unwrap();
    }
    server.shutdown().await;
}

/// Keeps a checkpoint per epoch in $SWEEP_JOB_CHECKPOINT_DIR (`epoch-NNNNN.ckpt`, holding its epoch,
/// renamed into place) and resumes from the newest one the coordinator has epochs up to, reporting
/// where it resumed from with every epoch.
const RESUMING_SCRIPT: &str = r#"dir="$SWEEP_JOB_CHECKPOINT_DIR"
[ -d "$dir" ] || { echo "no SWEEP_JOB_CHECKPOINT_DIR" >&2; exit 2; }
start=0
for f in "$dir"/epoch-*.ckpt; do
  [ -e "$f" ] || continue
  c=$(cat "$f")
  if [ "$c" -le "$SWEEP_EPOCHS_STORED" ] && [ "$c" -gt "$start" ]; then start=$c; fi
done
e=$start
while [ "$e" -lt "$SWEEP_EPOCHS" ]; do
  e=$((e + 1))
  sleep 0.5
  echo "$e" > "$dir/.partial" && mv "$dir/.partial" "$dir/$(printf 'epoch-%05d.ckpt' "$e")"
  echo "{\"epoch\": $e, \"resumed_from\": $start, \"lr\": $1}"
done
"#;

/// Runs a one-job command sweep with worker A stopped (as by SIGTERM) after two epochs and worker
/// B finishing it, both keeping checkpoints in `target`; checks every epoch is stored once and
/// the epochs after the hand-back continued from A's last checkpoint. Returns the job's id and
/// the epochs stored at the hand-back.
async fn split_command_run(config: coordinator::Config, target: CheckpointTarget) -> (i64, u32) {
    let dir = tempfile::tempdir().unwrap();
    let url = coordinator::testing::database_url(dir.path());
    let script = dir.path().join("train.sh");
    std::fs::write(&script, RESUMING_SCRIPT).unwrap();
    let checkpoints = CheckpointSettings { target, cadence: Cadence::every(1) };
    let server = start_server_with(&url, "127.0.0.1:0".parse().unwrap(), config).await;
    let mut c = client(server.addr).await;
    let spec = SweepSpec {
        name: "resume".into(),
        seeds: vec![0],
        epochs: 8,
        command: Some(sweep_proto::pb::CommandSpec {
            template: format!("sh {} {{lr}}", script.display()),
            grid: [("lr".to_string(), sweep_proto::pb::ParamValues { values: vec!["0.5".into()] })].into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await.unwrap();

    let (stop, agent) = start_agent(server.addr, "worker-a", Some(checkpoints.clone()), Commands::Only);
    wait_for(server.addr, "resume", Duration::from_secs(60), |s| s.epochs_done >= 2).await;
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    let jobs = c.list_jobs(ListJobsRequest { sweep: "resume".into(), ..Default::default() }).await.unwrap();
    let job = jobs.into_inner().jobs[0].clone();
    assert_eq!(job.state, sweep_proto::pb::JobState::Queued as i32, "handed back at a graceful stop");
    let handed_back = job.epochs_done;
    assert!((2..8).contains(&handed_back), "{handed_back}");

    let (stop, agent) = start_agent(server.addr, "worker-b", Some(checkpoints), Commands::Only);
    let s = wait_for(server.addr, "resume", Duration::from_secs(60), |s| s.succeeded == 1).await;
    assert_eq!((s.epochs_done, s.failed), (8, 0));
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    let detail = c.get_job(GetJobRequest { job_id: job.id }).await.unwrap().into_inner();
    assert_eq!(detail.job.unwrap().worker_id, "worker-b");
    let epochs: Vec<u32> = detail.epochs.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, (1..=8).collect::<Vec<_>>(), "each epoch once");
    for e in &detail.epochs {
        let resumed_from = if e.epoch <= handed_back { 0.0 } else { f64::from(handed_back) };
        assert_eq!(e.values["resumed_from"], resumed_from, "epoch {}", e.epoch);
        assert_eq!(e.values["lr"], 0.5);
    }
    server.shutdown().await;
    (job.id, handed_back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_command_job_continues_on_another_worker_from_its_checkpoint_in_a_shared_directory() {
    let shared = tempfile::tempdir().unwrap();
    let target = CheckpointTarget::Directory(shared.path().to_owned());
    let config = coordinator::Config::with_lease_ttl(Duration::from_secs(5));
    let (id, _) = split_command_run(config, target).await;
    assert!(
        !shared.path().join("resume").join(format!("job-{id}")).exists(),
        "a succeeded job's are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_command_job_continues_on_another_worker_from_its_checkpoint_on_the_coordinator() {
    let store = tempfile::tempdir().unwrap();
    let mut config = coordinator::Config::with_lease_ttl(Duration::from_secs(5));
    config.checkpoints = Some(coordinator::checkpoints::CheckpointSettings::in_dir(store.path()));
    split_command_run(config, CheckpointTarget::Coordinator).await;
    let left = std::fs::read_dir(store.path()).unwrap().count();
    assert_eq!(left, 0, "the coordinator removes a succeeded job's checkpoints");
}
