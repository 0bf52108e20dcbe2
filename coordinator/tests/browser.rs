//! The dashboard in a real browser (the distribution's Chromium, headless): a coordinator serves a
//! small sweep, the page shows the box plot and the curves, and as a worker stores epochs and
//! finishes a job the page redraws itself (no reload): the curves and the box plot change and the
//! job table comes to match the database.
//! Without Chromium the test says so and is skipped, unless `SWEEP_REQUIRE_BROWSER` is set (CI).

#[allow(dead_code)]
#[path = "it/common.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use coordinator::{Config, Database, Listener, Security};
use headless_chrome::{Browser, LaunchOptions, Tab};
use sweep_proto::pb;
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;

use crate::common::metrics;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SWEEP_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Evaluates `script` in the page until it returns `want`, for up to 15 s; the last value.
fn wait_for(tab: &Tab, script: &str, want: &serde_json::Value) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let value = tab.evaluate(script, false).unwrap().value.unwrap_or_default();
        if &value == want || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The page's job table as `[[job id, state, epochs], …]`.
const JOB_TABLE: &str = "JSON.stringify([...document.querySelectorAll('#jobs tr[data-job]')].map(r => \
    [Number(r.dataset.job), r.cells[3].textContent, r.cells[6].textContent]))";

#[test]
fn the_dashboard_redraws_itself_as_the_sweep_runs() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("SWEEP_REQUIRE_BROWSER").is_none(),
            "SWEEP_REQUIRE_BROWSER is set but no Chromium"
        );
        eprintln!(
            "the_dashboard_redraws_itself_as_the_sweep_runs: skipped, no chromium on PATH (set SWEEP_CHROMIUM)"
        );
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = coordinator::testing::database_url(dir.path());
    let (grpc, http) = runtime.block_on(async {
        let db = Database::open(&url).await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let listeners = vec![Listener::open(grpc)];
        let http = Some(Listener { listener: http, security: Security::none() });
        tokio::spawn(coordinator::run_with_http(
            listeners,
            http,
            db,
            Config::default(),
            std::future::pending(),
        ));
        addrs
    });
    let grpc = format!("http://{grpc}");
    let (mut sweeps, mut w) = runtime.block_on(async {
        let mut sweeps = SweepServiceClient::connect(grpc.clone()).await.unwrap();
        let spec = pb::SweepSpec {
            name: "browser".into(),
            variants: vec!["natural_softmax".into(), "normal_lr1e-3".into()],
            seeds: (0..5).collect(),
            epochs: 2,
            batch_size: 128,
            ..Default::default()
        };
        sweeps.submit_sweep(pb::SubmitSweepRequest { spec: Some(spec) }).await.unwrap();
        (sweeps, WorkerServiceClient::connect(grpc.clone()).await.unwrap())
    });

    let options = LaunchOptions::default_builder()
        .path(Some(chromium))
        .sandbox(false)
        .window_size(Some((1280, 1600)))
        .build()
        .unwrap();
    let browser = Browser::new(options).unwrap();
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("http://{http}/sweeps/browser")).unwrap().wait_until_navigated().unwrap();
    tab.wait_for_element("#boxplot svg").unwrap();
    tab.wait_for_element("#curves svg").unwrap();
    let figure =
        |id: &str| tab.evaluate(&format!("document.querySelector('#{id}').innerHTML"), false).unwrap().value;
    let (curves_before, boxplot_before) = (figure("curves"), figure("boxplot"));

    // A worker leases a job and stores both its epochs; the page follows without a reload.
    let job = runtime.block_on(async {
        let register = pb::RegisterWorkerRequest {
            worker_id: "w".into(),
            hostname: "h".into(),
            slots: 1,
            ..Default::default()
        };
        w.register_worker(register).await.unwrap();
        let lease = w
            .lease_job(pb::LeaseJobRequest { worker_id: "w".into(), slot: 0, ..Default::default() })
            .await
            .unwrap();
        let fence = lease.into_inner().job.unwrap().fence.unwrap();
        let reports = [1, 2].map(|e| pb::EpochReport {
            fence: Some(fence.clone()),
            metrics: Some(metrics(e, 0.3 * e as f64)),
        });
        let mut acks = w.report_epochs(tokio_stream::iter(reports)).await.unwrap().into_inner();
        while acks.message().await.unwrap().is_some() {}
        fence
    });
    let running = wait_for(
        &tab,
        &format!("{JOB_TABLE}.includes('[{},\"running\",\"2/2\"]')", job.job_id),
        &true.into(),
    );
    assert_eq!(running, serde_json::Value::Bool(true), "the running job's row did not update");
    assert_ne!(curves_before, figure("curves"), "the curves were redrawn with the stored epochs");
    let boxplot_running = figure("boxplot");
    assert_ne!(boxplot_before, boxplot_running, "the running job's best so far appears in the box plot");

    runtime.block_on(w.complete_job(pb::CompleteJobRequest { fence: Some(job.clone()) })).unwrap();
    let expected: Vec<(i64, String, String)> = runtime.block_on(async {
        let listed = sweeps.list_jobs(pb::ListJobsRequest { sweep: "browser".into(), ..Default::default() });
        let jobs = listed.await.unwrap().into_inner().jobs;
        jobs.iter()
            .map(|j| {
                let state = sweep_proto::convert::state_from_wire(j.state).unwrap().as_str().to_owned();
                (j.id, state, format!("{}/{}", j.epochs_done, j.epochs))
            })
            .collect()
    });
    assert_eq!(expected.iter().filter(|j| j.1 == "succeeded").count(), 1);
    let want = serde_json::to_string(&expected).unwrap();
    let shown = wait_for(&tab, JOB_TABLE, &want.clone().into());
    assert_eq!(shown, serde_json::Value::String(want), "the page's job table matches the database");
    assert_ne!(
        figure("boxplot"),
        boxplot_running,
        "the finished job moved from best-so-far to the box plot's points"
    );

    // A phone-width screen: the figures shrink to the width and nothing overflows the page.
    tab.set_bounds(headless_chrome::types::Bounds::Normal {
        left: None,
        top: None,
        width: Some(390.0),
        height: Some(844.0),
    })
    .unwrap();
    let narrow = wait_for(&tab, "window.innerWidth <= 400", &true.into());
    assert_eq!(narrow, serde_json::Value::Bool(true), "the window did not shrink");
    let fits = wait_for(&tab, "document.documentElement.scrollWidth <= window.innerWidth", &true.into());
    assert_eq!(fits, serde_json::Value::Bool(true), "the page is wider than a phone");
}
