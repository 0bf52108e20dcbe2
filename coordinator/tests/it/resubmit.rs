//! Submitting a sweep name again: idempotent, additive, or rejected on conflicting settings.

use sweep_proto::pb;
use tonic::Code;

use crate::common::*;

async fn job_keys(sweeps: &mut Sweeps, name: &str) -> Vec<(i64, String, u64)> {
    let req = pb::ListJobsRequest { sweep: name.into(), ..Default::default() };
    sweeps
        .list_jobs(req)
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| (j.id, j.variant, j.seed))
        .collect()
}

#[tokio::test]
async fn resubmit_is_idempotent_and_adds_only_missing_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let base = spec("grow", &["natural_softmax", "normal_lr1e-3"], &[0, 1, 2], 4);
    let r = submit(&mut sweeps, base.clone()).await.unwrap();
    assert_eq!((r.jobs_created, r.jobs_existing), (6, 0));
    let before = job_keys(&mut sweeps, "grow").await;

    let r = submit(&mut sweeps, base.clone()).await.unwrap();
    assert_eq!((r.jobs_created, r.jobs_existing), (0, 6));
    assert_eq!(job_keys(&mut sweeps, "grow").await, before, "same jobs, same ids");

    // Seeds 0..5: only 3 and 4 are new, for both variants.
    let more = pb::SweepSpec { seeds: vec![0, 1, 2, 3, 4], ..base.clone() };
    let r = submit(&mut sweeps, more).await.unwrap();
    assert_eq!((r.jobs_created, r.jobs_existing), (4, 6));
    let after = job_keys(&mut sweeps, "grow").await;
    assert_eq!(after.len(), 10);
    assert_eq!(&after[..6], &before[..], "existing jobs untouched");

    // A new variant for a subset of seeds adds only those jobs, with its own learning rate.
    let mut extra = spec("grow", &["normal_lr1e-2"], &[0], 4);
    extra.learning_rates.insert("normal_lr1e-2".into(), 0.05);
    let r = submit(&mut sweeps, extra).await.unwrap();
    assert_eq!((r.jobs_created, r.jobs_existing), (1, 0));
    let s = summary(&mut sweeps, "grow").await;
    assert_eq!(s.jobs_total, 11);
    let stored = s.spec.unwrap();
    assert_eq!(stored.variants, vec!["natural_softmax", "normal_lr1e-3", "normal_lr1e-2"]);
    assert_eq!(stored.seeds, vec![0, 1, 2, 3, 4]);
    assert_eq!(stored.learning_rates["normal_lr1e-2"], 0.05);
    server.stop().await;
}

#[tokio::test]
async fn conflicting_resubmit_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let base = spec("fixed", &["natural_softmax"], &[0, 1], 4);
    submit(&mut sweeps, base.clone()).await.unwrap();
    let before = summary(&mut sweeps, "fixed").await;
    let jobs_before = job_keys(&mut sweeps, "fixed").await;

    let mut lr = base.clone();
    lr.learning_rates.insert("natural_softmax".into(), 0.1);
    let data = pb::SweepSpec {
        data: Some(pb::DataOptions { train_limit: 1000, ..Default::default() }),
        ..base.clone()
    };
    let cases = [
        ("epochs 5 (stored 4)", pb::SweepSpec { epochs: 5, seeds: vec![0, 1, 9], ..base.clone() }),
        ("batch_size 256 (stored 128)", pb::SweepSpec { batch_size: 256, ..base.clone() }),
        ("data options", data),
        ("learning rate 0.1 for natural_softmax", lr),
    ];
    for (needle, spec) in cases {
        let err = submit(&mut sweeps, spec).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains(needle), "{needle:?} not in {:?}", err.message());
    }
    assert_eq!(summary(&mut sweeps, "fixed").await, before);
    assert_eq!(job_keys(&mut sweeps, "fixed").await, jobs_before, "seed 9 was not added");
    server.stop().await;
}
