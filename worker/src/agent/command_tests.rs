use std::collections::BTreeMap;
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

async fn run(
    epochs: u32,
    command: CommandJob,
    stop: &(dyn Fn() -> bool + Sync),
) -> (Result<JobOutcome, String>, Vec<EpochMetrics>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcome = run_command(&job(epochs), &command, &DeviceChoice::Cpu, tx, stop).await;
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
    let (outcome, epochs) = run(3, sh(script, None), &|| false).await;
    assert_eq!(outcome.unwrap(), JobOutcome::Completed { best_val_acc: 0.0, best_epoch: 0, epochs: 3 });
    assert_eq!(epochs.iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(epochs[1].val_acc, Some(0.2));
    let values = &epochs[0].values;
    assert_eq!((values["lr"], values["job"], values["seed"]), (0.5, 7.0, 3.0));
}

#[tokio::test]
async fn a_failing_command_fails_with_its_status_and_stderr() {
    let (outcome, epochs) =
        run(2, sh(r#"echo '{"epoch": 1}'; echo "CUDA out of memory" >&2; exit 3"#, None), &|| false).await;
    let why = outcome.unwrap_err();
    assert!(why.contains("exited with status 3") && why.contains("CUDA out of memory"), "{why}");
    assert_eq!(epochs.len(), 1, "the epoch before the failure is kept");
}

#[tokio::test]
async fn a_command_that_reports_too_few_epochs_fails() {
    let (outcome, _) = run(5, sh(r#"echo '{"epoch": 1}'"#, None), &|| false).await;
    assert!(outcome.unwrap_err().contains("after reporting 1 of 5 epochs"));
    let (outcome, _) =
        run(1, CommandJob { argv: vec!["/nonexistent/train".into()], ..sh("", None) }, &|| false).await;
    assert!(outcome.unwrap_err().contains("could not start"));
}

#[tokio::test]
async fn a_command_past_its_time_limit_is_killed() {
    let started = Instant::now();
    let (outcome, _) = run(1, sh("echo started >&2; sleep 30", Some(1)), &|| false).await;
    let why = outcome.unwrap_err();
    assert!(why.contains("timed out after 1 s") && why.contains("started"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(20), "killed, not waited for");
}

#[tokio::test]
async fn a_stopped_job_kills_its_command() {
    let started = Instant::now();
    let stop = || started.elapsed() > Duration::from_millis(500);
    let (outcome, epochs) = run(3, sh(r#"echo '{"epoch": 1}'; sleep 30"#, None), &stop).await;
    assert_eq!(outcome.unwrap(), JobOutcome::Stopped { epochs_done: 1 });
    assert_eq!(epochs.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(20));
}
