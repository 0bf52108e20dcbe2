//! Sweeps of the user's own command: only admins may submit them, only slots that run commands
//! lease them, each job's command line is rendered from the template, any named metric is
//! stored, the objective ranks epochs in its direction, and the export has a column per metric.

use coordinator::client::metrics_export::{fetch_metrics_export, write_csv};
use sweep_proto::pb;
use tonic::Code;

use crate::common::*;
use crate::secure::{SecureServer, Who};

fn command_spec(name: &str) -> pb::SweepSpec {
    pb::SweepSpec {
        name: name.into(),
        seeds: vec![0, 1],
        epochs: 2,
        command: Some(pb::CommandSpec {
            template: "python3 train.py --lr {lr} --seed {seed} --name '{sweep} job {job_id}'".into(),
            grid: [("lr".to_string(), pb::ParamValues { values: vec!["0.1".into(), "0.01".into()] })].into(),
            env: [("OMP_NUM_THREADS".to_string(), "4".to_string())].into(),
            timeout_seconds: 600,
            ..Default::default()
        }),
        objective: Some(pb::Objective { metric: "loss".into(), mode: pb::objective::Mode::Min as i32 }),
        ..Default::default()
    }
}

fn lease_request(id: &str, kinds: &[pb::JobKind]) -> pb::LeaseJobRequest {
    pb::LeaseJobRequest { worker_id: id.into(), slot: 0, kinds: kinds.iter().map(|k| *k as i32).collect() }
}

fn named(epoch: u32, loss: f64) -> pb::EpochMetrics {
    pb::EpochMetrics {
        epoch,
        wall_seconds: 1.0,
        values: [("loss".to_string(), loss), ("bleu".to_string(), 30.0 + f64::from(epoch))].into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_command_sweep_leases_renders_stores_ranks_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), fast_config()).await;
    let (mut sweeps, mut workers) = (server.sweeps().await, server.workers().await);
    let created =
        sweeps.submit_sweep(pb::SubmitSweepRequest { spec: Some(command_spec("byo")) }).await.unwrap();
    assert_eq!(created.into_inner().jobs_created, 4);
    let labels: Vec<String> = sweeps
        .list_jobs(pb::ListJobsRequest {
            sweep: "byo".into(),
            variant: Some("lr=0.01".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| format!("{} {}", j.variant, j.seed))
        .collect();
    assert_eq!(labels, ["lr=0.01 0", "lr=0.01 1"]);

    register(&mut workers, "w").await;
    // A slot that names no kind runs the built-in CNN only.
    assert!(lease(&mut workers, "w").await.is_none());
    let job = workers
        .lease_job(lease_request("w", &[pb::JobKind::Command]))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let command = job.command.clone().unwrap();
    let id = job.fence.as_ref().unwrap().job_id;
    assert_eq!((job.variant.as_str(), job.seed), ("lr=0.1", 0));
    assert_eq!(
        command.argv,
        ["python3", "train.py", "--lr", "0.1", "--seed", "0", "--name", &format!("byo job {id}")]
    );
    assert_eq!((command.env["OMP_NUM_THREADS"].as_str(), command.timeout_seconds), ("4", 600));
    assert_eq!(command.params["lr"], "0.1");

    let f = fence(&job);
    let reports = [(1, 0.5), (2, 0.25)]
        .map(|(e, loss)| pb::EpochReport { fence: Some(f.clone()), metrics: Some(named(e, loss)) });
    let (acks, status) = report(&mut workers, reports.to_vec()).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(acks.len(), 2);
    workers.complete_job(pb::CompleteJobRequest { fence: Some(f) }).await.unwrap();
    let detail = crate::common::job(&mut sweeps, id).await;
    let j = detail.job.unwrap();
    // Minimised: the lower loss of epoch 2 is the best.
    assert_eq!((j.best_value, j.best_epoch, j.epochs_done), (0.25, 2, 2));
    assert_eq!((detail.epochs[0].val_acc, detail.epochs[0].values["bleu"]), (None, 31.0));

    let export = fetch_metrics_export(server.channel().await, "byo").await.unwrap();
    assert_eq!(
        (export.objective.as_str(), export.maximize, export.jobs.len(), export.epochs.len()),
        ("loss", false, 4, 2)
    );
    let (jobs, epochs) = write_csv(&export).unwrap();
    let (jobs, epochs) = (String::from_utf8(jobs).unwrap(), String::from_utf8(epochs).unwrap());
    assert!(
        jobs.starts_with("job_id,variant,seed,lr,state,attempt,epochs_done,best_loss,best_epoch"),
        "{jobs}"
    );
    assert!(jobs.contains(&format!("{id},lr=0.1,0,0.1,succeeded,1,2,0.25,2,w,")), "{jobs}");
    assert_eq!(
        epochs.lines().collect::<Vec<_>>(),
        [
            "job_id,epoch,attempt,wall_seconds,bleu,loss".to_string(),
            format!("{id},1,1,1.000,31,0.5"),
            format!("{id},2,1,1.000,32,0.25"),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn only_an_admin_may_submit_a_command_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let server = SecureServer::start(dir.path(), coordinator::Config::default(), true, false).await;
    let before = server.snapshot().await;
    let mut user = server.sweeps(Who::User).await;
    let refused =
        user.submit_sweep(pb::SubmitSweepRequest { spec: Some(command_spec("mine")) }).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("only an admin"), "{refused:?}");
    assert_eq!(server.snapshot().await, before, "a refused submission stores nothing");
    let mut admin = server.sweeps(Who::Admin).await;
    let created =
        admin.submit_sweep(pb::SubmitSweepRequest { spec: Some(command_spec("mine")) }).await.unwrap();
    assert_eq!(created.into_inner().jobs_created, 4);
}

#[tokio::test]
async fn a_command_sweep_gets_the_report_grouped_by_a_parameter_on_its_objective() {
    use coordinator::client::report_groups::Grouping;
    use coordinator::client::report_input::write_sweep_report;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), fast_config()).await;
    let (mut sweeps, mut workers) = (server.sweeps().await, server.workers().await);
    let mut spec = command_spec("torch");
    spec.seeds = vec![0, 1, 2];
    spec.epochs = 1;
    spec.objective = None;
    let command = spec.command.as_mut().unwrap();
    command.template = "python3 train.py --loss {loss} --seed {seed}".into();
    command.grid =
        [("loss".to_string(), pb::ParamValues { values: vec!["normal".into(), "natural".into()] })].into();
    sweeps.submit_sweep(pb::SubmitSweepRequest { spec: Some(spec.clone()) }).await.unwrap();
    // The same jobs ranked by a metric of their own, minimised.
    spec.name = "torch-loss".into();
    spec.objective = Some(pb::Objective { metric: "loss".into(), mode: pb::objective::Mode::Min as i32 });
    sweeps.submit_sweep(pb::SubmitSweepRequest { spec: Some(spec) }).await.unwrap();
    register(&mut workers, "w").await;
    while let Some(job) =
        workers.lease_job(lease_request("w", &[pb::JobKind::Command])).await.unwrap().into_inner().job
    {
        let f = fence(&job);
        let acc = if job.variant.contains("natural") { 0.5 } else { 0.6 } + job.seed as f64 / 100.0;
        let m = pb::EpochMetrics {
            epoch: 1,
            train_acc: Some(0.7),
            val_acc: Some(acc),
            values: [("loss".to_string(), 1.0 - acc)].into(),
            ..Default::default()
        };
        let (_, status) =
            report(&mut workers, vec![pb::EpochReport { fence: Some(f.clone()), metrics: Some(m) }]).await;
        assert!(status.is_none(), "{status:?}");
        workers.complete_job(pb::CompleteJobRequest { fence: Some(f) }).await.unwrap();
    }
    let out = dir.path().join("report");
    let grouping = Grouping { by: Some("loss".into()), baseline: Some("normal".into()) };
    let files = write_sweep_report(server.channel().await, "torch", &out, &grouping).await.unwrap();
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(files.index_html.is_file());
    assert!(
        summary.contains("| natural | 3 | 51.00 |") && summary.contains("Against the baseline `normal`"),
        "{summary}"
    );
    assert!(summary.contains("| natural | paired, seeds 0–2 | paired t"), "{summary}");
    let out = dir.path().join("report-loss");
    write_sweep_report(server.channel().await, "torch-loss", &out, &grouping).await.unwrap();
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("### Lowest loss per variant") && summary.contains("| natural | 3 | 0.4900 |"),
        "{summary}"
    );
    assert!(
        summary.contains("| natural | paired, seeds 0–2 | paired t")
            && summary.contains("| Δ mean | 95% CI of Δ |"),
        "{summary}"
    );
    let results = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(results.starts_with("job_id,variant,seed,state,epochs_done,epochs,best_loss,"), "{results}");
    // Grouped by a parameter the jobs do not have: refused, nothing written.
    let by_lr = Grouping { by: Some("lr".into()), baseline: None };
    let refused = write_sweep_report(server.channel().await, "torch", &dir.path().join("r2"), &by_lr).await;
    assert!(refused.unwrap_err().to_string().contains("has no parameter lr"));
    assert!(!dir.path().join("r2").exists());
    server.stop().await;
}

/// A granted lease says how many jobs of the slot's kinds are still queued (what a fusing slot
/// shares with the worker's idle slots); a heartbeat's idle slot count shows in the worker list.
#[tokio::test]
async fn a_lease_counts_the_jobs_of_its_kinds_still_queued() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), fast_config()).await;
    let (mut sweeps, mut workers) = (server.sweeps().await, server.workers().await);
    let builtin = spec("cnn", &["normal_lr1e-3"], &[0, 1], 2);
    sweeps.submit_sweep(pb::SubmitSweepRequest { spec: Some(builtin) }).await.unwrap();
    sweeps.submit_sweep(pb::SubmitSweepRequest { spec: Some(command_spec("byo")) }).await.unwrap();
    register(&mut workers, "w").await;
    let w = &mut workers;
    // Two built-in jobs and four commands: the count is of the request's kinds only.
    assert_eq!(queued_after(w, &[pb::JobKind::Builtin]).await, (true, Some(1)));
    assert_eq!(queued_after(w, &[pb::JobKind::Command]).await, (true, Some(3)));
    assert_eq!(queued_after(w, &[pb::JobKind::Builtin, pb::JobKind::Command]).await, (true, Some(3)));
    assert_eq!(queued_after(w, &[pb::JobKind::Builtin]).await, (false, None), "none left to lease");

    workers
        .heartbeat(pb::HeartbeatRequest { worker_id: "w".into(), leases: vec![], idle_slots: 1 })
        .await
        .unwrap();
    let listed = sweeps.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers;
    assert_eq!((listed[0].slots, listed[0].idle_slots), (1, 1));
}

/// Whether a lease for `kinds` was granted, and the queued count it came with.
async fn queued_after(w: &mut Workers, kinds: &[pb::JobKind]) -> (bool, Option<u32>) {
    let granted = w.lease_job(lease_request("w", kinds)).await.unwrap().into_inner();
    (granted.job.is_some(), granted.queued)
}
