//! The ingest phase: epoch reports as fast as acks come back, a window of them in flight.

use std::time::{Duration, Instant};

use sweep_proto::pb;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::*;

pub async fn run(opts: &Opts) {
    println!(
        "## Ingest: {} streams, each keeping {} report(s) unacknowledged (the next goes out as an ack comes back)",
        opts.ingest_streams, opts.ingest_window
    );
    let server = start_server().await;
    let channels = server.channels(opts.channels).await;
    submit(channels[0].clone(), "ingest", &["natural_softmax"], opts.ingest_streams as u64, 10_000).await;
    let mut client = WorkerServiceClient::new(channels[0].clone());
    let req = pb::RegisterWorkerRequest {
        worker_id: "ingest".into(),
        hostname: "bench".into(),
        gpus: vec![],
        slots: opts.ingest_streams as u32,
        data_files: vec![],
    };
    client.register_worker(req).await.unwrap();
    let mut fences = Vec::new();
    for _ in 0..opts.ingest_streams {
        let req = pb::LeaseJobRequest { worker_id: "ingest".into(), slot: 0, ..Default::default() };
        fences.push(client.lease_job(req).await.unwrap().into_inner().job.unwrap().fence.unwrap());
    }
    let start = Instant::now();
    let warmup = Duration::from_secs(2);
    let window =
        Window { from: start + warmup, until: start + warmup + Duration::from_secs(opts.ingest_secs) };
    let mut tasks = Vec::new();
    for (i, fence) in fences.into_iter().enumerate() {
        let mut client = WorkerServiceClient::new(channels[i % channels.len()].clone());
        let window_size = opts.ingest_window.max(1);
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            let (tx, rx) = mpsc::channel(window_size * 2);
            let mut acks = client.report_epochs(ReceiverStream::new(rx)).await.unwrap().into_inner();
            let mut in_flight = std::collections::VecDeque::new();
            let mut next_epoch = 1;
            loop {
                while in_flight.len() < window_size && next_epoch <= 10_000 && Instant::now() < window.until {
                    let report =
                        pb::EpochReport { fence: Some(fence.clone()), metrics: Some(metrics(next_epoch)) };
                    in_flight.push_back(Instant::now());
                    tx.send(report).await.unwrap();
                    next_epoch += 1;
                }
                let Some(t) = in_flight.pop_front() else { break };
                let ack = acks.message().await.unwrap().unwrap();
                if window.contains(t) {
                    s.epoch.push(micros(t.elapsed()));
                    s.stored += u64::from(!ack.duplicate);
                }
            }
            s
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await.unwrap());
    }
    let secs = opts.ingest_secs as f64;
    print_table(&mut all, secs);
    println!(
        "stored epoch rows: {:.0} rows/s over {} s ({} rows); total in the database: {}",
        all.stored as f64 / secs,
        opts.ingest_secs,
        all.stored,
        server.stored_rows().await
    );
    server.stop().await;
}
