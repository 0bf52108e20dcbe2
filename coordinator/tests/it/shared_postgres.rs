//! Two coordinators serving one PostgreSQL database (active-active): each job is leased once
//! whichever coordinator the workers ask, a watch on one sees what the other stores, and the
//! reapers of both requeue each expired lease once. These run only against a PostgreSQL server
//! (`SWEEP_TEST_POSTGRES_URL`); with `SWEEP_REQUIRE_POSTGRES=1` (CI) they fail instead of skipping.

use std::collections::HashSet;
use std::time::Duration;

use coordinator::queue::Registration;
use coordinator::{Config, Database, Principal, Queue};
use sweep_proto::domain::{JobKind, SweepSpec};
use sweep_proto::pb;
use sweep_proto::pb::sweep_event::Event;

use crate::common::*;

/// Whether a PostgreSQL server is configured; panics when one is required but missing.
fn postgres() -> bool {
    let configured = std::env::var("SWEEP_TEST_POSTGRES_URL").is_ok_and(|u| !u.is_empty());
    if !configured && std::env::var("SWEEP_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("SWEEP_REQUIRE_POSTGRES=1 but SWEEP_TEST_POSTGRES_URL is not set");
    }
    configured
}

/// Two coordinators serving the database of `dir`.
async fn two_coordinators(dir: &std::path::Path) -> (TestServer, TestServer) {
    (TestServer::start(dir, Config::default()).await, TestServer::start(dir, Config::default()).await)
}

#[tokio::test]
async fn two_coordinators_on_one_postgres_lease_each_job_exactly_once() {
    if !postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_coordinators(dir.path()).await;
    let mut sweeps = a.sweeps().await;
    let variants = ["natural_hardmax", "natural_softmax", "multi_softmax", "normal_lr1e-3", "normal_lr1e-2"];
    let seeds: Vec<u64> = (0..20).collect();
    assert_eq!(submit(&mut sweeps, spec("shared", &variants, &seeds, 1)).await.unwrap().jobs_created, 100);

    let mut clients = Vec::new();
    for i in 0..32 {
        clients.push(if i % 2 == 0 { a.workers().await } else { b.workers().await });
    }
    let all = lease_until_empty(clients).await;
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), 100, "every job handed out once");
    assert_eq!(unique.len(), 100, "no job handed out twice");
    let mut other = b.sweeps().await;
    let s = summary(&mut other, "shared").await;
    assert_eq!((s.running, s.queued), (100, 0), "both coordinators read the same queue");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_watch_on_one_coordinator_sees_what_the_other_stores() {
    if !postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_coordinators(dir.path()).await;
    let mut sweeps = a.sweeps().await;
    let mut watch = sweeps.watch_sweep(pb::WatchSweepRequest { sweep: "seen".into() }).await;
    assert!(watch.is_err(), "no such sweep yet");
    submit(&mut b.sweeps().await, spec("seen", &["natural_softmax"], &[0], 2)).await.unwrap();
    watch = sweeps.watch_sweep(pb::WatchSweepRequest { sweep: "seen".into() }).await;
    let mut watch = watch.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Snapshot(_))), "{first:?}");

    // Everything below goes through coordinator b.
    let mut workers = b.workers().await;
    register(&mut workers, "w").await;
    let job = lease(&mut workers, "w").await.unwrap();
    let f = fence(&job);
    let (acks, err) = report(&mut workers, vec![epoch_report(&f, 1, 0.4), epoch_report(&f, 2, 0.6)]).await;
    assert!(err.is_none() && acks.len() == 2, "{err:?}");
    workers.complete_job(pb::CompleteJobRequest { fence: Some(f.clone()) }).await.unwrap();

    let (mut epochs, mut states) = (Vec::new(), Vec::new());
    while !states.contains(&state(pb::JobState::Succeeded)) {
        let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
        let event = next.expect("a's watch hears b's changes").unwrap().unwrap().event;
        match event {
            Some(Event::EpochRecorded(e)) => epochs.push(e.metrics.unwrap().epoch),
            Some(Event::JobChanged(j)) => states.push(j.state),
            Some(Event::Snapshot(_)) => {}
            None => panic!("an empty event"),
        }
    }
    assert_eq!(epochs, [1, 2], "each stored epoch once, in order");
    // The submit's own "queued" notice may reach a's relay after the snapshot was taken: it
    // repeats the snapshot's state, so it may lead; nothing else may.
    if states.first() == Some(&state(pb::JobState::Queued)) {
        states.remove(0);
    }
    assert_eq!(states, [state(pb::JobState::Running), state(pb::JobState::Succeeded)]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_reapers_of_both_coordinators_requeue_each_expired_lease_once() {
    if !postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(dir.path());
    let config = Config { lease_ttl: Duration::from_millis(1), ..Config::default() };
    let (db_a, db_b) = (Database::open(&url).await.unwrap(), Database::open(&url).await.unwrap());
    let (a, b) = (Queue::new(db_a.clone(), &config), Queue::new(db_b.clone(), &config));
    let local = Principal::Local;
    let seeds: Vec<u64> = (0..60).collect();
    a.submit(SweepSpec::try_from(spec("reap", &["natural_softmax"], &seeds, 1)).unwrap(), &local)
        .await
        .unwrap();
    let worker = Registration {
        worker_id: "w".into(),
        hostname: "h".into(),
        gpus: vec![],
        slots: 60,
        data_files: vec![],
    };
    a.register(worker, &local).await.unwrap();
    for _ in 0..60 {
        a.lease("w".into(), vec![JobKind::Builtin], &local).await.unwrap().expect("a queued job");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;

    let (from_a, from_b) = tokio::join!(a.reap_expired(), b.reap_expired());
    let reaped: Vec<i64> = from_a.unwrap().iter().chain(&from_b.unwrap()).map(|j| j.id.0).collect();
    let unique: HashSet<_> = reaped.iter().copied().collect();
    assert_eq!((reaped.len(), unique.len()), (60, 60), "each expired lease reaped once, by either");
    for job in a.jobs("reap", None, None).await.unwrap() {
        assert_eq!((job.attempt, job.state.as_str()), (2, "queued"), "{job:?}");
    }
    db_a.close().await;
    db_b.close().await;
}
