//! Bad input gets a typed status with a clear message and changes nothing.

use sweep_proto::domain::{MAX_BATCH_SIZE, MAX_EPOCHS};
use sweep_proto::pb;
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn invalid_specs_are_rejected_without_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let good = || spec("bad", &["natural_softmax"], &[0, 1], 5);
    let cases: Vec<(&str, pb::SweepSpec)> = vec![
        ("unknown loss variant", pb::SweepSpec { variants: vec!["bogus".into()], ..good() }),
        ("epochs", pb::SweepSpec { epochs: 0, ..good() }),
        ("epochs", pb::SweepSpec { epochs: MAX_EPOCHS + 1, ..good() }),
        ("batch_size", pb::SweepSpec { batch_size: 0, ..good() }),
        ("batch_size", pb::SweepSpec { batch_size: MAX_BATCH_SIZE + 1, ..good() }),
        ("at least one seed", pb::SweepSpec { seeds: vec![], ..good() }),
        ("listed twice", pb::SweepSpec { seeds: vec![3, 3], ..good() }),
        ("name", pb::SweepSpec { name: "no spaces allowed".into(), ..good() }),
    ];
    for (needle, spec) in cases {
        let err = submit(&mut sweeps, spec).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{needle}: {err:?}");
        assert!(err.message().contains(needle), "{needle:?} not in {:?}", err.message());
    }
    let err = sweeps.submit_sweep(pb::SubmitSweepRequest { spec: None }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(sweeps.list_sweeps(pb::ListSweepsRequest {}).await.unwrap().into_inner().sweeps.is_empty());

    // Oversized message (> 4 MiB default limit).
    let huge: Vec<u64> = (0..600_000u64).map(|i| u64::MAX - i).collect();
    let err = submit(&mut sweeps, pb::SweepSpec { seeds: huge, ..good() }).await.unwrap_err();
    assert!(matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange), "{err:?}");
    assert!(sweeps.list_sweeps(pb::ListSweepsRequest {}).await.unwrap().into_inner().sweeps.is_empty());
    server.stop().await;
}

fn nf<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.unwrap_err().code()
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;
    assert_eq!(nf(sweeps.get_sweep(pb::GetSweepRequest { sweep: "nope".into() }).await), Code::NotFound);
    assert_eq!(
        nf(sweeps.list_jobs(pb::ListJobsRequest { sweep: "nope".into(), ..Default::default() }).await),
        Code::NotFound
    );
    assert_eq!(nf(sweeps.get_job(pb::GetJobRequest { job_id: 42 }).await), Code::NotFound);
    assert_eq!(nf(sweeps.cancel_job(pb::CancelJobRequest { job_id: 42 }).await), Code::NotFound);
    assert_eq!(
        nf(sweeps.cancel_sweep(pb::CancelSweepRequest { sweep: "nope".into() }).await),
        Code::NotFound
    );
    let watch = sweeps.watch_sweep(pb::WatchSweepRequest { sweep: "nope".into() }).await;
    assert_eq!(watch.unwrap_err().code(), Code::NotFound);
    // Workers must register before leasing or heartbeating.
    let lease = workers
        .lease_job(pb::LeaseJobRequest { worker_id: "ghost".into(), slot: 0, ..Default::default() })
        .await;
    assert_eq!(nf(lease), Code::NotFound);
    let hb =
        workers.heartbeat(pb::HeartbeatRequest { worker_id: "ghost".into(), ..Default::default() }).await;
    assert_eq!(nf(hb), Code::NotFound);
    let ghost = pb::Fence { job_id: 42, attempt: 1, lease_token: "t".into() };
    let (acks, err) = report(&mut workers, vec![epoch_report(&ghost, 1, 0.1)]).await;
    assert!(acks.is_empty());
    assert_eq!(err.unwrap().code(), Code::NotFound);
    assert!(sweeps.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn bad_worker_writes_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;
    submit(&mut sweeps, spec("writes", &["natural_softmax"], &[0], 2)).await.unwrap();
    register(&mut workers, "w").await;
    let a = lease(&mut workers, "w").await.unwrap();
    let f = fence(&a);

    let mut nan = epoch_report(&f, 1, 0.5);
    nan.metrics.as_mut().unwrap().val_loss = Some(f64::NAN);
    let mut negative = epoch_report(&f, 1, 0.5);
    negative.metrics.as_mut().unwrap().train_loss = Some(-1.0);
    let beyond = epoch_report(&f, 3, 0.5);
    let no_fence = pb::EpochReport { fence: None, metrics: Some(metrics(1, 0.5)) };
    let wrong_token = epoch_report(&pb::Fence { lease_token: "forged".into(), ..f.clone() }, 1, 0.5);
    for (report_msg, code, needle) in [
        (nan, Code::InvalidArgument, "metrics.val_loss"),
        (negative, Code::InvalidArgument, "metrics.train_loss"),
        (beyond, Code::InvalidArgument, "beyond the job's 2 epochs"),
        (no_fence, Code::InvalidArgument, "fence"),
        (wrong_token, Code::FailedPrecondition, "the lease token does not match"),
    ] {
        let (acks, err) = report(&mut workers, vec![report_msg]).await;
        let err = err.expect("rejected");
        assert!(acks.is_empty());
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(needle), "{needle:?} not in {:?}", err.message());
    }
    let detail = job(&mut sweeps, f.job_id).await;
    assert!(detail.epochs.is_empty());
    assert_eq!(detail.job.unwrap().epochs_done, 0);

    // Filters are checked too.
    let bad_state = pb::ListJobsRequest { sweep: "writes".into(), state: Some(0), variant: None };
    assert_eq!(sweeps.list_jobs(bad_state).await.unwrap_err().code(), Code::InvalidArgument);
    let bad_variant =
        pb::ListJobsRequest { sweep: "writes".into(), state: None, variant: Some(String::new()) };
    assert_eq!(sweeps.list_jobs(bad_variant).await.unwrap_err().code(), Code::InvalidArgument);
    // A variant is a loss variant's name or a command sweep's parameter point: one the sweep
    // does not have matches no job.
    let other = pb::ListJobsRequest { sweep: "writes".into(), state: None, variant: Some("lr=0.1".into()) };
    assert!(sweeps.list_jobs(other).await.unwrap().into_inner().jobs.is_empty());
    let bad_worker = pb::RegisterWorkerRequest { worker_id: String::new(), ..Default::default() };
    assert_eq!(workers.register_worker(bad_worker).await.unwrap_err().code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn bad_data_checksums_are_rejected_and_the_last_registration_stands() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut workers = server.workers().await;
    register(&mut workers, "w").await;
    let file = |name: &str, md5: &str| pb::DataFile { name: name.into(), md5: md5.into() };
    let good = file("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d");
    let cases = [
        ("data_files.md5", vec![file("test_batch.bin", "803D5F7F4D78EA53DE84DBE85F74FB6D")]),
        ("data_files.md5", vec![file("test_batch.bin", "803d")]),
        ("data_files.name", vec![file("../etc/passwd", &good.md5)]),
        ("data_files.name", vec![file("", &good.md5)]),
        ("data_files", vec![good.clone(); 17]),
    ];
    for (needle, data_files) in cases {
        let request = pb::RegisterWorkerRequest {
            worker_id: "w".into(),
            hostname: "other-host".into(),
            slots: 1,
            data_files,
            ..Default::default()
        };
        let err = workers.register_worker(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{needle}: {err:?}");
        assert!(err.message().contains(needle), "{needle:?} not in {:?}", err.message());
    }
    let mut sweeps = server.sweeps().await;
    let listed = sweeps.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers;
    let reported: Vec<(&str, &str)> =
        listed[0].data_files.iter().map(|f| (f.name.as_str(), f.md5.as_str())).collect();
    assert_eq!((listed[0].hostname.as_str(), reported), ("test-host", DATA_FILES.to_vec()));
    server.stop().await;
}
