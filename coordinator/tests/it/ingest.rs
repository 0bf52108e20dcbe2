//! Many epoch streams at once: reports are pipelined and stored in shared batches, yet every
//! stream gets its acks in order, duplicates are flagged and job progress is exact.

use sweep_proto::pb;

use crate::common::*;

#[tokio::test]
async fn concurrent_pipelined_streams_store_every_epoch_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let seeds: Vec<u64> = (0..24).collect();
    submit(&mut sweeps, spec("many", &["natural_softmax"], &seeds, 6)).await.unwrap();
    let mut workers = server.workers().await;
    register(&mut workers, "w").await;
    let mut fences = Vec::new();
    while let Some(a) = lease(&mut workers, "w").await {
        fences.push(fence(&a));
    }
    assert_eq!(fences.len(), 24);

    let channel = server.channel().await;
    let mut tasks = Vec::new();
    for f in fences.clone() {
        let mut w = pb::worker_service_client::WorkerServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let acc = |e: u32| if e == 4 { 0.9 } else { f64::from(e) / 10.0 };
            // Epoch 3 is sent twice in a row; all seven reports are in flight together.
            let order = [1, 2, 3, 3, 4, 5, 6];
            let reports = order.iter().map(|e| epoch_report(&f, *e, acc(*e))).collect();
            let (acks, err) = report(&mut w, reports).await;
            assert!(err.is_none(), "{err:?}");
            let got: Vec<_> = acks.iter().map(|a| (a.job_id, a.epoch, a.duplicate)).collect();
            let want: Vec<_> = order.iter().enumerate().map(|(i, e)| (f.job_id, *e, i == 3)).collect();
            assert_eq!(got, want);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for f in &fences {
        let d = job(&mut sweeps, f.job_id).await;
        let j = d.job.unwrap();
        assert_eq!((j.epochs_done, j.best_epoch, j.best_value), (6, 4, 0.9), "job {}", j.id);
        assert_eq!(d.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
        workers.complete_job(pb::CompleteJobRequest { fence: Some(f.clone()) }).await.unwrap();
    }
    let s = summary(&mut sweeps, "many").await;
    assert_eq!((s.succeeded, s.epochs_done), (24, 144));
    server.stop().await;
}
