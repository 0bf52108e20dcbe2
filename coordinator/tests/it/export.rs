//! ExportSweep: a sweep's jobs with their epochs in one call, the same as a GetJob per job, and
//! the client's readers use it (or, from a coordinator without it, fall back to GetJob).

use sweep_proto::pb;
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn export_sweep_streams_what_get_job_returns_for_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), fast_config()).await;
    let (mut sweeps, mut workers) = (server.sweeps().await, server.workers().await);
    submit(&mut sweeps, spec("all", &["natural_softmax", "normal_lr1e-3"], &[0, 1], 3)).await.unwrap();
    submit(&mut sweeps, spec("other", &["natural_softmax"], &[0], 3)).await.unwrap();
    register(&mut workers, "w").await;
    for epochs in [2, 1] {
        let f = fence(&lease(&mut workers, "w").await.unwrap());
        let reports = (1..=epochs).map(|e| epoch_report(&f, e, 0.5 + f64::from(e) / 10.0)).collect();
        assert!(report(&mut workers, reports).await.1.is_none());
    }

    let mut stream =
        sweeps.export_sweep(pb::ExportSweepRequest { sweep: "all".into() }).await.unwrap().into_inner();
    let mut exported = Vec::new();
    while let Some(detail) = stream.message().await.unwrap() {
        exported.push(detail);
    }
    assert_eq!(exported.len(), 4, "the sweep's jobs only");
    let ids: Vec<i64> = exported.iter().map(|d| d.job.as_ref().unwrap().id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by job id: {ids:?}");
    for detail in &exported {
        let one = job(&mut sweeps, detail.job.as_ref().unwrap().id).await;
        assert_eq!(&one, detail);
    }
    let epochs: Vec<usize> = exported.iter().map(|d| d.epochs.len()).collect();
    assert_eq!(epochs.iter().sum::<usize>(), 3, "{epochs:?}");

    let missing = sweeps.export_sweep(pb::ExportSweepRequest { sweep: "nope".into() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let bad = sweeps.export_sweep(pb::ExportSweepRequest { sweep: "a\u{0}b".into() }).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // The report's reader gets the same rows through it.
    let input =
        coordinator::client::report_input::fetch_report_input(server.channel().await, "all").await.unwrap();
    assert_eq!((input.jobs.len(), input.epochs.len()), (4, 3));
    server.stop().await;
}
