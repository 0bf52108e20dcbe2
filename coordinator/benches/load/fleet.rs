//! The fleet phase: simulated workers register, lease, heartbeat and stream epochs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use sweep_proto::pb;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::*;

/// One simulated worker of the fleet phase.
async fn fleet_worker(i: usize, ch: Channel, opts: Opts, window: Window) -> Samples {
    let mut s = Samples::default();
    let id = format!("load-worker-{i:04}");
    let mut client = WorkerServiceClient::new(ch);
    let t = Instant::now();
    let req = pb::RegisterWorkerRequest {
        worker_id: id.clone(),
        hostname: format!("host-{}", i / 8),
        gpus: vec!["NVIDIA H100 80GB HBM3".into()],
        slots: 1,
        data_files: vec![],
    };
    if client.register_worker(req).await.is_err() {
        s.errors += 1;
        return s;
    }
    s.register.push(micros(t.elapsed()));

    let current: Arc<Mutex<Option<pb::Fence>>> = Arc::default();
    let heartbeat = {
        let (mut client, current, id) = (client.clone(), current.clone(), id.clone());
        tokio::spawn(async move {
            let mut hb = Vec::new();
            let mut errors = 0;
            let phase = Duration::from_millis(rand::rng().random_range(0..1000));
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + phase, Duration::from_secs(1));
            loop {
                let at = tick.tick().await.into_std();
                if at >= window.until {
                    return (hb, errors);
                }
                let leases = current.lock().unwrap().clone().into_iter().collect();
                let req = pb::HeartbeatRequest { worker_id: id.clone(), leases, idle_slots: 0 };
                // Timed from the call, like every RPC (the tick's lateness is the client's).
                let t = Instant::now();
                match client.heartbeat(req).await {
                    Ok(_) if window.contains(at) => hb.push(micros(t.elapsed())),
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
            }
        })
    };

    'jobs: while Instant::now() < window.until {
        let t = Instant::now();
        let leased = client
            .lease_job(pb::LeaseJobRequest { worker_id: id.clone(), slot: 0, ..Default::default() })
            .await;
        let assignment = match leased {
            Ok(r) => r.into_inner().job,
            Err(_) => {
                s.errors += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if window.contains(t) {
            s.lease.push(micros(t.elapsed()));
        }
        let Some(a) = assignment else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let fence = a.fence.clone().unwrap();
        *current.lock().unwrap() = Some(fence.clone());
        let (tx, rx) = mpsc::channel(4);
        let mut acks = match client.report_epochs(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(_) => {
                s.errors += 1;
                continue;
            }
        };
        let phase =
            Duration::from_millis(rand::rng().random_range(0..opts.epoch_interval.as_millis().max(1) as u64));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, opts.epoch_interval);
        for epoch in 1..=a.epochs {
            tick.tick().await;
            let t = Instant::now();
            if t >= window.until {
                break 'jobs;
            }
            let report = pb::EpochReport { fence: Some(fence.clone()), metrics: Some(metrics(epoch)) };
            if tx.send(report).await.is_err() {
                s.errors += 1;
                continue 'jobs;
            }
            match acks.message().await {
                Ok(Some(ack)) => {
                    if window.contains(t) {
                        s.epoch.push(micros(t.elapsed()));
                        s.stored += u64::from(!ack.duplicate);
                    }
                }
                _ => {
                    s.errors += 1;
                    continue 'jobs;
                }
            }
        }
        drop(tx);
        let t = Instant::now();
        match client.complete_job(pb::CompleteJobRequest { fence: Some(fence) }).await {
            Ok(_) if window.contains(t) => s.complete.push(micros(t.elapsed())),
            Ok(_) => {}
            Err(_) => s.errors += 1,
        }
        *current.lock().unwrap() = None;
    }
    let (hb, errors) = heartbeat.await.unwrap();
    s.heartbeat = hb;
    s.errors += errors;
    s
}

pub async fn run(opts: &Opts) {
    println!("## Fleet: {} simulated workers", opts.workers);
    let server = start_server().await;
    let channels = server.channels(opts.channels).await;
    let window_secs = opts.warmup_secs + opts.secs + 2;
    let epochs_per_worker = window_secs * 1000 / opts.epoch_interval.as_millis().max(1) as u64;
    let jobs_needed =
        (opts.workers as u64 * (epochs_per_worker / u64::from(opts.epochs_per_job) + 2)).max(10);
    let variants = ["natural_hardmax", "natural_softmax", "multi_softmax", "normal_lr1e-3", "normal_lr1e-2"];
    let seeds = jobs_needed.div_ceil(variants.len() as u64).min(10_000);
    let t = Instant::now();
    submit(channels[0].clone(), "load", &variants, seeds, opts.epochs_per_job).await;
    println!(
        "submitted {} jobs of {} epochs in {:.2} s",
        seeds * variants.len() as u64,
        opts.epochs_per_job,
        t.elapsed().as_secs_f64()
    );
    println!(
        "workers {}, tonic channels (HTTP/2 connections) {}, heartbeat 1/s, one epoch per worker every {} ms \
         (offered {:.0} epochs/s), warm-up {} s, measured {} s",
        opts.workers,
        channels.len(),
        opts.epoch_interval.as_millis(),
        opts.workers as f64 * 1000.0 / opts.epoch_interval.as_millis().max(1) as f64,
        opts.warmup_secs,
        opts.secs
    );
    let start = Instant::now();
    let window = Window {
        from: start + Duration::from_secs(opts.warmup_secs),
        until: start + Duration::from_secs(opts.warmup_secs + opts.secs),
    };
    let rows_before_measure = Arc::new(Mutex::new(0i64));
    let probe = {
        let (db, rows) = (server.db.clone(), rows_before_measure.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(window.from.into()).await;
            let n = db.epoch_rows().await.unwrap();
            *rows.lock().unwrap() = n;
            tokio::time::sleep_until(window.until.into()).await;
            let m = db.epoch_rows().await.unwrap();
            m - n
        })
    };
    let mut tasks = Vec::with_capacity(opts.workers);
    for i in 0..opts.workers {
        tasks.push(tokio::spawn(fleet_worker(i, channels[i % channels.len()].clone(), opts.clone(), window)));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await.unwrap());
    }
    let rows_in_window = probe.await.unwrap();
    let secs = opts.secs as f64;
    print_table(&mut all, secs);
    println!(
        "epoch rows stored in the measured window: {rows_in_window} ({:.0} rows/s by table count; {:.0}/s by acks)",
        rows_in_window as f64 / secs,
        all.stored as f64 / secs
    );
    println!("errors: {}; total epoch rows in the database: {}", all.errors, server.stored_rows().await);
    server.stop().await;
}
