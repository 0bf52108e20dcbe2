//! The happy path end to end, and what WatchSweep delivers along it.

use std::time::Duration;

use sweep_proto::pb::{self, sweep_event::Event};

use crate::common::*;

#[tokio::test]
async fn submit_lease_stream_complete_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;

    let created = submit(&mut sweeps, spec("flow", &["natural_softmax"], &[7], 3)).await.unwrap();
    assert_eq!((created.jobs_created, created.jobs_existing), (1, 0));

    let mut watch =
        sweeps.watch_sweep(pb::WatchSweepRequest { sweep: "flow".into() }).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    let Some(Event::Snapshot(snapshot)) = first.event else {
        panic!("first event must be a snapshot: {first:?}")
    };
    assert_eq!((snapshot.jobs_total, snapshot.queued, snapshot.epochs_total), (1, 1, 3));

    register(&mut workers, "w1").await;
    let a = lease(&mut workers, "w1").await.expect("a queued job");
    assert_eq!((a.variant.as_str(), a.seed, a.epochs, a.batch_size), ("natural_softmax", 7, 3, 128));
    assert_eq!(a.learning_rate, 1e-3);
    assert_eq!(fence(&a).attempt, 1);
    assert!(lease(&mut workers, "w1").await.is_none(), "only one job exists");
    let f = fence(&a);

    let reports = vec![epoch_report(&f, 1, 0.30), epoch_report(&f, 2, 0.55), epoch_report(&f, 2, 0.55)];
    let (acks, err) = report(&mut workers, reports).await;
    assert!(err.is_none(), "{err:?}");
    let dups: Vec<_> = acks.iter().map(|a| (a.epoch, a.duplicate)).collect();
    assert_eq!(dups, vec![(1, false), (2, false), (2, true)]);

    let missing = workers.complete_job(pb::CompleteJobRequest { fence: Some(f.clone()) }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::FailedPrecondition);
    assert!(missing.message().contains("missing epochs"), "{}", missing.message());

    let (acks, err) = report(&mut workers, vec![epoch_report(&f, 3, 0.50)]).await;
    assert!(err.is_none() && acks.len() == 1 && !acks[0].duplicate);
    let done =
        workers.complete_job(pb::CompleteJobRequest { fence: Some(f.clone()) }).await.unwrap().into_inner();
    assert_eq!(done.job.unwrap().state, state(pb::JobState::Succeeded));

    let s = summary(&mut sweeps, "flow").await;
    assert_eq!((s.succeeded, s.queued, s.running, s.epochs_done, s.epochs_total), (1, 0, 0, 3, 3));
    assert_eq!(s.progress_percent, 100.0);
    assert_eq!(s.eta_seconds, 0.0);
    let detail = job(&mut sweeps, a.fence.unwrap().job_id).await;
    let j = detail.job.unwrap();
    assert_eq!((j.epochs_done, j.best_epoch, j.best_value), (3, 2, 0.55));
    assert_eq!(j.worker_id, "w1");
    assert!(j.finished_at_ms >= j.started_at_ms && j.started_at_ms > 0);
    let epochs: Vec<_> = detail.epochs.iter().map(|e| (e.epoch, e.val_acc)).collect();
    assert_eq!(epochs, vec![(1, Some(0.30)), (2, Some(0.55)), (3, Some(0.50))]);

    let listed = sweeps.list_sweeps(pb::ListSweepsRequest {}).await.unwrap().into_inner().sweeps;
    assert_eq!(listed.len(), 1);
    let ws = sweeps.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers;
    assert_eq!((ws[0].id.as_str(), ws[0].gpus.len(), ws[0].running_jobs), ("w1", 1, 0));
    assert!(ws[0].last_seen_ms >= ws[0].registered_at_ms);

    // The watch saw: running, epochs 1..=3 (no duplicate), then succeeded.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let event =
            tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
        seen.push(match event.event.unwrap() {
            Event::JobChanged(j) => format!("job {}", j.state),
            Event::EpochRecorded(e) => format!("epoch {}", e.metrics.unwrap().epoch),
            Event::Snapshot(_) => "snapshot".into(),
        });
    }
    let running = state(pb::JobState::Running);
    let succeeded = state(pb::JobState::Succeeded);
    assert_eq!(
        seen,
        vec![
            format!("job {running}"),
            "epoch 1".into(),
            "epoch 2".into(),
            "epoch 3".into(),
            format!("job {succeeded}")
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn list_jobs_filters_by_state_and_variant() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;
    submit(&mut sweeps, spec("filters", &["natural_softmax", "normal_lr1e-2"], &[0, 1], 2)).await.unwrap();
    register(&mut workers, "w").await;
    let a = lease(&mut workers, "w").await.unwrap();
    let list = |state: Option<pb::JobState>, variant: Option<&str>| pb::ListJobsRequest {
        sweep: "filters".into(),
        state: state.map(|s| s as i32),
        variant: variant.map(str::to_owned),
    };
    let all = sweeps.list_jobs(list(None, None)).await.unwrap().into_inner().jobs;
    assert_eq!(all.len(), 4);
    let running = sweeps.list_jobs(list(Some(pb::JobState::Running), None)).await.unwrap().into_inner().jobs;
    assert_eq!(running.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a.fence.unwrap().job_id]);
    let lr2 = sweeps.list_jobs(list(None, Some("normal_lr1e-2"))).await.unwrap().into_inner().jobs;
    assert_eq!(lr2.len(), 2);
    assert!(lr2.iter().all(|j| j.variant == "normal_lr1e-2" && j.learning_rate == 1e-2));
    let queued_lr2 =
        sweeps.list_jobs(list(Some(pb::JobState::Queued), Some("normal_lr1e-2"))).await.unwrap().into_inner();
    assert_eq!(queued_lr2.jobs.len(), 2);
    server.stop().await;
}
