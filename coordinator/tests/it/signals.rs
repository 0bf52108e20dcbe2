//! `coordinator serve` stopped with SIGTERM (what Kubernetes, Slurm and `docker stop` send):
//! it exits cleanly, ending open watch streams, with every acknowledged epoch stored and the
//! running job still leased, and
//! a coordinator started again on the same database lets the worker carry on with its fence.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sweep_proto::pb;
use tonic::transport::Channel;

use crate::common::*;

/// A `coordinator serve` process on a free loopback port.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    async fn start(database: &str) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
            .args(["serve", "--listen", &listen, "--database-url", database])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let url = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Channel::from_shared(url.clone()).unwrap().connect().await.is_err() {
            assert!(Instant::now() < deadline, "coordinator serve did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Serve { child, url }
    }

    /// Sends SIGTERM and waits for the exit status.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "coordinator ignored SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigterm_stops_the_coordinator_cleanly_and_a_restart_keeps_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let database = db_url(dir.path());
    let mut serve = Serve::start(&database).await;
    let mut sweeps = Sweeps::connect(serve.url.clone()).await.unwrap();
    let mut workers = Workers::connect(serve.url.clone()).await.unwrap();
    submit(&mut sweeps, spec("term", &["natural_softmax"], &[0], 3)).await.unwrap();
    register(&mut workers, "w").await;
    let job = lease(&mut workers, "w").await.unwrap();
    let f = fence(&job);
    let (acks, status) = report(&mut workers, vec![epoch_report(&f, 1, 0.5)]).await;
    assert!(status.is_none() && acks.len() == 1, "{status:?}");

    // A follower (`coordinator watch`, the dashboard) holds a stream open across the stop.
    let mut watch =
        sweeps.watch_sweep(pb::WatchSweepRequest { sweep: "term".into() }).await.unwrap().into_inner();
    let status = serve.terminate().await;
    assert!(status.success(), "exited with {status}");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = watch.message().await {}
    });
    assert!(ended.await.is_ok(), "the watch stream ends with the coordinator");

    let mut serve = Serve::start(&database).await;
    let mut sweeps = Sweeps::connect(serve.url.clone()).await.unwrap();
    let mut workers = Workers::connect(serve.url.clone()).await.unwrap();
    let detail = crate::common::job(&mut sweeps, f.job_id).await;
    assert_eq!(detail.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), [1], "the acknowledged epoch");
    assert_eq!(detail.job.unwrap().state, state(pb::JobState::Running), "still leased, not requeued");
    // The worker that kept training carries on under the same fence.
    let reports = vec![epoch_report(&f, 2, 0.6), epoch_report(&f, 3, 0.7)];
    let (acks, status) = report(&mut workers, reports).await;
    assert!(status.is_none() && acks.len() == 2, "{status:?}");
    workers.complete_job(pb::CompleteJobRequest { fence: Some(f) }).await.unwrap();
    assert_eq!(summary(&mut sweeps, "term").await.succeeded, 1);
    assert!(serve.terminate().await.success());
}
