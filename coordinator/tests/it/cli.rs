//! Reflection and health, and the library side of the CLI: progress watch and report input.

use std::time::Duration;

use coordinator::client::report_input::fetch_report_input;
use coordinator::client::watch::{Progress, follow};
use sweep_proto::pb;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::common::*;

#[tokio::test]
async fn health_and_reflection_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["sweep.v1.SweepService", "sweep.v1.WorkerService"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }
    let unknown = health.check(HealthCheckRequest { service: "nope.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies =
        reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in ["sweep.v1.SweepService", "sweep.v1.WorkerService", "grpc.health.v1.Health"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn watch_progress_follows_a_sweep_to_the_end_and_report_input_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    submit(&mut sweeps, spec("cli", &["natural_softmax", "normal_lr1e-3"], &[0, 1], 2)).await.unwrap();

    let watcher = server.channel().await;
    let printed = Printed::default();
    let lines = Progress::Lines(Box::new(printed.clone()));
    let watch = tokio::spawn(async move { follow(watcher, "cli", lines).await });

    let mut workers = server.workers().await;
    register(&mut workers, "gpu-box").await;
    let mut expected_best = Vec::new();
    while let Some(a) = lease(&mut workers, "gpu-box").await {
        let f = fence(&a);
        let acc = 0.5 + a.seed as f64 / 10.0;
        let (acks, err) =
            report(&mut workers, vec![epoch_report(&f, 1, acc), epoch_report(&f, 2, acc - 0.1)]).await;
        assert!(err.is_none() && acks.len() == 2);
        workers.complete_job(pb::CompleteJobRequest { fence: Some(f.clone()) }).await.unwrap();
        expected_best.push((f.job_id, acc));
    }
    let last =
        tokio::time::timeout(Duration::from_secs(10), watch).await.expect("watch ends").unwrap().unwrap();
    assert_eq!((last.succeeded, last.queued, last.running, last.epochs_done), (4, 0, 0, 8));
    // Plain lines: one per finished epoch and per job state change, then the outcome.
    let text = printed.text();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!((count(" epoch 1: "), count(" epoch 2: ")), (4, 4), "{text}");
    assert_eq!((count(": running (attempt 1/3 on gpu-box)"), count(": succeeded (best ")), (4, 4), "{text}");
    assert!(text.lines().last().unwrap().starts_with("sweep cli: 4 succeeded, 0 failed"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colours in plain lines");

    let input = fetch_report_input(server.channel().await, "cli").await.unwrap();
    assert_eq!(input.variants, vec!["natural_softmax", "normal_lr1e-3"]);
    assert_eq!(input.baseline_variant, "normal_lr1e-3");
    assert_eq!(input.jobs.len(), 4);
    assert_eq!(input.epochs.len(), 8);
    for (id, acc) in expected_best {
        let row = input.jobs.iter().find(|j| j.job_id == id).unwrap();
        assert_eq!((row.state.as_str(), row.best_value, row.best_epoch), ("succeeded", Some(acc), Some(1)));
        assert_eq!(row.final_val_acc, Some(acc - 0.1));
        assert_eq!(row.wall_seconds, 4.0);
        assert_eq!(row.worker, "gpu-box");
    }
    assert_eq!(input.provenance.devices, vec!["NVIDIA H100 80GB HBM3"]);
    let verified: Vec<(&str, &str)> =
        input.provenance.data_md5.iter().map(|(f, m)| (f.as_str(), m.as_str())).collect();
    assert_eq!(verified, DATA_FILES, "the checksums the worker that ran the jobs reported");
    assert!(input.provenance.crate_versions.iter().any(|(c, v)| c == "burn" && v == "0.21.0"));
    assert!(input.provenance.generated_at.ends_with('Z'));
    let spec: serde_json::Value = serde_json::from_str(&input.spec_json).unwrap();
    assert_eq!(spec["epochs"], 2);

    let out = dir.path().join("report");
    let files = report::write_report(&input, &out).unwrap();
    assert!(files.index_html.exists());
    server.stop().await;
}

/// A `Write` whose bytes a test reads back.
#[derive(Clone, Default)]
struct Printed(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Printed {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Printed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
