//! The export phase: reading a whole sweep (every job with its epochs), as `coordinator report`,
//! `coordinator export` and the dashboard do: one ExportSweep stream against ListJobs plus one
//! GetJob per job.

use std::time::{Duration, Instant};

use sweep_proto::pb;
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;

use super::*;

/// The sweep: 5 variants × `jobs / 5` seeds, every job leased and given `epochs` epochs.
async fn fill(channel: Channel, jobs: usize, epochs: u32) {
    submit(channel.clone(), "export", &pb_variants(), (jobs / 5) as u64, epochs).await;
    let mut client = WorkerServiceClient::new(channel);
    let req = pb::RegisterWorkerRequest {
        worker_id: "export".into(),
        hostname: "bench".into(),
        gpus: vec![],
        slots: 1,
        data_files: vec![],
    };
    client.register_worker(req).await.unwrap();
    loop {
        let req = pb::LeaseJobRequest { worker_id: "export".into(), slot: 0, ..Default::default() };
        let Some(job) = client.lease_job(req).await.unwrap().into_inner().job else { break };
        let fence = job.fence.unwrap();
        let reports: Vec<pb::EpochReport> = (1..=epochs)
            .map(|e| pb::EpochReport { fence: Some(fence.clone()), metrics: Some(metrics(e)) })
            .collect();
        let mut acks = client.report_epochs(tokio_stream::iter(reports)).await.unwrap().into_inner();
        while acks.message().await.unwrap().is_some() {}
    }
}

fn pb_variants() -> [&'static str; 5] {
    ["natural_hardmax", "natural_softmax", "multi_softmax", "normal_lr1e-3", "normal_lr1e-2"]
}

/// (jobs, epochs) read through one ExportSweep call.
async fn export_sweep(client: &mut SweepServiceClient<Channel>) -> (usize, usize) {
    let request = pb::ExportSweepRequest { sweep: "export".into() };
    let mut stream = client.export_sweep(request).await.unwrap().into_inner();
    let (mut jobs, mut epochs) = (0, 0);
    while let Some(detail) = stream.message().await.unwrap() {
        jobs += 1;
        epochs += detail.epochs.len();
    }
    (jobs, epochs)
}

/// (jobs, epochs) read through ListJobs and a GetJob per job.
async fn get_each_job(client: &mut SweepServiceClient<Channel>) -> (usize, usize) {
    let listed = client.list_jobs(pb::ListJobsRequest { sweep: "export".into(), ..Default::default() });
    let (mut jobs, mut epochs) = (0, 0);
    for job in listed.await.unwrap().into_inner().jobs {
        let detail = client.get_job(pb::GetJobRequest { job_id: job.id }).await.unwrap().into_inner();
        jobs += 1;
        epochs += detail.epochs.len();
    }
    (jobs, epochs)
}

pub async fn run(opts: &Opts) {
    let (jobs, epochs) = (opts.export_jobs, opts.export_epochs);
    println!(
        "## Export: a sweep of {jobs} jobs × {epochs} epochs read whole, {} rounds each",
        opts.export_rounds
    );
    let server = start_server().await;
    let channel = server.channels(1).await.remove(0);
    let started = Instant::now();
    fill(channel.clone(), jobs, epochs).await;
    println!(
        "(filled in {:.1} s: {} epoch rows)\n",
        started.elapsed().as_secs_f64(),
        server.stored_rows().await
    );
    let mut client = SweepServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..opts.export_rounds {
        for (i, times) in times.iter_mut().enumerate() {
            let t = Instant::now();
            let read = if i == 0 { export_sweep(&mut client).await } else { get_each_job(&mut client).await };
            times.push(t.elapsed());
            assert_eq!(read, (jobs, jobs * epochs as usize), "every job and epoch read");
        }
    }
    println!("| read | calls | median (ms) | min (ms) | max (ms) | epochs/s (median) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let [exported, each] = times;
    for (name, calls, mut times) in
        [("ExportSweep", 1, exported), ("ListJobs + GetJob per job", jobs + 1, each)]
    {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = times[times.len() / 2];
        println!(
            "| {name} | {calls} | {:.1} | {:.1} | {:.1} | {:.0} |",
            ms(median),
            ms(times[0]),
            ms(times[times.len() - 1]),
            (jobs * epochs as usize) as f64 / median.as_secs_f64()
        );
    }
    server.stop().await;
}
