use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sweep_proto::domain::{DataOptions, Fence};

use super::*;

fn job(epochs: u32) -> JobAssignment {
    JobAssignment {
        fence: Fence { job_id: 7, attempt: 2, lease_token: "t".into() },
        sweep: "byo".into(),
        variant: "lr=0.5".into(),
        seed: 3,
        epochs,
        batch_size: 0,
        learning_rate: 0.0,
        data: DataOptions::default(),
        lease_ttl: Duration::from_secs(30),
        epochs_stored: 0,
        command: None,
    }
}

fn sh(script: &str, timeout_seconds: Option<u32>) -> CommandJob {
    CommandJob {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        workdir: None,
        env: BTreeMap::from([("EXTRA".to_string(), "x".to_string())]),
        timeout_seconds,
        params: BTreeMap::from([("lr".to_string(), "0.5".to_string())]),
    }
}

fn go() -> StopRequest {
    StopRequest::No
}

async fn run(
    epochs: u32,
    command: CommandJob,
    stop: &(dyn Fn() -> StopRequest + Sync),
) -> (Result<JobOutcome, String>, Vec<EpochMetrics>) {
    run_job(&job(epochs), command, None, stop).await
}

async fn run_job(
    job: &JobAssignment,
    command: CommandJob,
    checkpoint_dir: Option<&Path>,
    stop: &(dyn Fn() -> StopRequest + Sync),
) -> (Result<JobOutcome, String>, Vec<EpochMetrics>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcome = run_command(job, &command, &DeviceChoice::Cpu, checkpoint_dir, tx, stop).await;
    let mut got = Vec::new();
    while let Ok(m) = rx.try_recv() {
        got.push(m);
    }
    (outcome, got)
}

#[test]
fn metrics_lines_are_json_objects_with_an_epoch() {
    let m = parse_metrics(r#"{"epoch": 3, "val_acc": 0.81, "top5": 0.97, "note": "x"}"#).unwrap().unwrap();
    assert_eq!((m.epoch, m.val_acc, m.get("top5"), m.train_loss), (3, Some(0.81), Some(0.97), None));
    assert!(parse_metrics("epoch 3: loss 0.2").is_none());
    assert!(parse_metrics(r#"{"loss": 0.2}"#).is_none(), "no epoch: an ordinary log line");
    assert!(parse_metrics(r#"{"epoch": 0}"#).unwrap().is_err());
    assert!(parse_metrics(r#"{"epoch": 1.5}"#).unwrap().is_err());
    assert!(parse_metrics(r#"{"epoch": 1, "bad name": 1}"#).unwrap().is_err());
}

#[tokio::test]
async fn a_command_streams_its_epochs_and_sees_its_job() {
    let script = r#"echo "loading"
for e in 1 2 3; do printf '{"epoch": %d, "val_acc": 0.%d, "lr": %s, "job": %s, "seed": %s}\n' $e $e "$SWEEP_PARAM_LR" "$SWEEP_JOB_ID" "$SWEEP_SEED"; done
[ "$EXTRA" = x ] && [ -z "$CUDA_VISIBLE_DEVICES" ] && [ "$SWEEP_ATTEMPT" = 2 ] && [ "$SWEEP_SWEEP" = byo ]"#;
    let (outcome, epochs) = run(3, sh(script, None), &go).await;
    assert_eq!(outcome.unwrap(), JobOutcome::Completed { best_val_acc: 0.0, best_epoch: 0, epochs: 3 });
    assert_eq!(epochs.iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(epochs[1].val_acc, Some(0.2));
    let values = &epochs[0].values;
    assert_eq!((values["lr"], values["job"], values["seed"]), (0.5, 7.0, 3.0));
}

#[tokio::test]
async fn a_failing_command_fails_with_its_status_and_stderr() {
    let (outcome, epochs) =
        run(2, sh(r#"echo '{"epoch": 1}'; echo "CUDA out of memory" >&2; exit 3"#, None), &go).await;
    let why = outcome.unwrap_err();
    assert!(why.contains("exited with status 3") && why.contains("CUDA out of memory"), "{why}");
    assert_eq!(epochs.len(), 1, "the epoch before the failure is kept");
}

#[tokio::test]
async fn a_command_that_reports_too_few_epochs_fails() {
    let (outcome, _) = run(5, sh(r#"echo '{"epoch": 1}'"#, None), &go).await;
    assert!(outcome.unwrap_err().contains("after reporting 1 of 5 epochs"));
    let (outcome, _) =
        run(1, CommandJob { argv: vec!["/nonexistent/train".into()], ..sh("", None) }, &go).await;
    assert!(outcome.unwrap_err().contains("could not start"));
}

#[tokio::test]
async fn a_command_past_its_time_limit_is_killed() {
    let started = Instant::now();
    let (outcome, _) = run(1, sh("echo started >&2; sleep 30", Some(1)), &go).await;
    let why = outcome.unwrap_err();
    assert!(why.contains("timed out after 1 s") && why.contains("started"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(20), "killed, not waited for");
}

#[tokio::test]
async fn a_stopped_job_kills_its_command() {
    let started = Instant::now();
    let stop =
        || if started.elapsed() > Duration::from_millis(500) { StopRequest::Now } else { StopRequest::No };
    let (outcome, epochs) = run(3, sh(r#"echo '{"epoch": 1}'; sleep 30"#, None), &stop).await;
    assert_eq!(outcome.unwrap(), JobOutcome::Stopped { epochs_done: 1 });
    assert_eq!(epochs.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_stopping_worker_lets_its_command_end_its_epoch() {
    // The child saves on SIGTERM and reports the epoch it was in; the job goes back unfailed.
    let script = r#"trap 'echo "{\"epoch\": 2}"; echo saved >&2; exit 143' TERM
echo '{"epoch": 1}'
sleep 30 & wait"#;
    let started = Instant::now();
    let stop = || {
        if started.elapsed() > Duration::from_millis(500) { StopRequest::Gracefully } else { StopRequest::No }
    };
    let (outcome, epochs) = run(3, sh(script, None), &stop).await;
    assert_eq!(outcome.unwrap(), JobOutcome::Stopped { epochs_done: 2 });
    assert_eq!(epochs.iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2]);
    assert!(started.elapsed() < STOP_GRACE, "it exited on SIGTERM, not at the grace period's end");
}

#[tokio::test]
async fn a_resumed_command_sees_its_stored_epochs_and_checkpoint_directory() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("byo/job-7");
    let job = JobAssignment { epochs_stored: 2, ..job(4) };
    let script = r#"[ "$SWEEP_EPOCHS_STORED" = 2 ] && [ -d "$SWEEP_JOB_CHECKPOINT_DIR" ] || exit 9
echo 2 > "$SWEEP_JOB_CHECKPOINT_DIR/last"
for e in 3 4; do echo "{\"epoch\": $e}"; done"#;
    let (outcome, epochs) = run_job(&job, sh(script, None), Some(&ckpt), &go).await;
    assert_eq!(outcome.unwrap(), JobOutcome::Completed { best_val_acc: 0.0, best_epoch: 0, epochs: 4 });
    assert_eq!(epochs.iter().map(|m| m.epoch).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(std::fs::read_to_string(ckpt.join("last")).unwrap(), "2\n");
}

#[tokio::test]
async fn a_command_that_skips_epochs_fails_and_reports_none_past_the_gap() {
    // Epoch 2 is not stored, so resuming after epoch 3 would leave a hole in the job's epochs.
    let job = JobAssignment { epochs_stored: 1, ..job(4) };
    let script = r#"for e in 4 3; do echo "{\"epoch\": $e}"; done; sleep 30"#;
    let (outcome, epochs) = run_job(&job, sh(script, None), None, &go).await;
    let why = outcome.unwrap_err();
    assert!(why.contains("reported epoch 4 before epoch 2") && why.contains("SWEEP_EPOCHS_STORED"), "{why}");
    assert!(epochs.is_empty(), "{epochs:?}");
}

#[tokio::test]
async fn a_malformed_metrics_line_fails_the_job() {
    let (outcome, epochs) =
        run(2, sh(r#"echo '{"epoch": 1}'; echo '{"epoch": 2, "bad name": 1}'; sleep 30"#, None), &go).await;
    let why = outcome.unwrap_err();
    assert!(why.contains("broke the protocol") && why.contains("bad name"), "{why}");
    assert_eq!(epochs.len(), 1);
}

#[tokio::test]
async fn a_command_that_finishes_while_asked_to_stop_completes() {
    // It reports its last epoch on SIGTERM and exits 0: the job is done, not handed back.
    let script = r#"trap 'echo "{\"epoch\": 2}"; exit 0' TERM
echo '{"epoch": 1}'
sleep 30 & wait"#;
    let started = Instant::now();
    let stop = || {
        if started.elapsed() > Duration::from_millis(500) { StopRequest::Gracefully } else { StopRequest::No }
    };
    let (outcome, _) = run(2, sh(script, None), &stop).await;
    assert_eq!(outcome.unwrap(), JobOutcome::Completed { best_val_acc: 0.0, best_epoch: 0, epochs: 2 });
}
