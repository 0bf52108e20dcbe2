//! Strings from the network reach people only escaped: a worker that registers with terminal
//! escape sequences, markup and spreadsheet formulas in its id, host, GPU names and error texts
//! cannot drive `coordinator status`, run script in the report's index.html, or plant a formula
//! in `coordinator export`'s or the report's CSV files.

use clap::Parser;
use coordinator::cli::status::{format_job, format_worker};
use coordinator::client::report_input::write_sweep_report;
use sweep_proto::pb;
use sweep_proto::text::is_unsafe_char;

use crate::common::*;

const WORKER: &str = "=HYPERLINK(\"http://evil\")\u{1b}[31m";
const HOST: &str = "<script>alert(1)</script>\u{1b}]0;pwned\u{7}";
const GPU: &str = "@SUM(1)\u{9b}2J";
const ERROR: &str = "\u{1b}[2J<img src=x onerror=alert(1)>\u{202e}";

#[tokio::test]
async fn hostile_names_are_escaped_in_terminal_csv_and_html() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    submit(&mut sweeps, spec("hostile", &["natural_softmax"], &[0, 1], 1)).await.unwrap();
    let mut workers = server.workers().await;
    let register = pb::RegisterWorkerRequest {
        worker_id: WORKER.into(),
        hostname: HOST.into(),
        gpus: vec![GPU.into()],
        slots: 1,
        data_files: vec![],
    };
    workers.register_worker(register).await.unwrap();
    let a = lease(&mut workers, WORKER).await.unwrap();
    let (_, err) = report(&mut workers, vec![epoch_report(&fence(&a), 1, 0.4)]).await;
    assert!(err.is_none());
    workers.complete_job(pb::CompleteJobRequest { fence: a.fence.clone() }).await.unwrap();
    let b = lease(&mut workers, WORKER).await.unwrap();
    workers.fail_job(pb::FailJobRequest { fence: b.fence.clone(), error: ERROR.into() }).await.unwrap();

    // Terminal: `coordinator status` lines.
    let listed = sweeps.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers;
    let jobs = sweeps.list_jobs(pb::ListJobsRequest { sweep: "hostile".into(), ..Default::default() }).await;
    let mut lines = vec![format_worker(&listed[0], 0, 30_000)];
    lines.extend(jobs.unwrap().into_inner().jobs.iter().map(format_job));
    for line in &lines {
        assert!(!line.chars().any(is_unsafe_char), "{line:?}");
    }
    assert!(lines[0].contains("\\u{1b}]0;pwned\\u{7}") && lines[0].contains("\\u{9b}2J"), "{}", lines[0]);
    assert!(lines.iter().any(|l| l.contains("error: \\u{1b}[2J<img")), "{lines:?}");

    // CSV: `coordinator export` through the real command line.
    let export = dir.path().join("export");
    let cli = coordinator::cli::Cli::parse_from([
        "coordinator",
        "export",
        "--coordinator",
        &server.url,
        "--sweep",
        "hostile",
        "--out",
        export.to_str().unwrap(),
    ]);
    coordinator::cli::execute(cli).await.unwrap();
    let jobs_csv = std::fs::read_to_string(export.join("jobs.csv")).unwrap();
    assert!(!jobs_csv.contains('\u{1b}'), "{jobs_csv}");
    assert!(jobs_csv.contains("\"'=HYPERLINK(\"\"http://evil\"\")\u{fffd}[31m\""), "{jobs_csv}");

    // The report: index.html and its CSV files.
    let out = dir.path().join("report");
    let files =
        write_sweep_report(server.channel().await, "hostile", &out, &Default::default()).await.unwrap();
    let html = std::fs::read_to_string(&files.index_html).unwrap();
    assert!(!html.contains("<script>alert") && !html.contains("<img src=x"), "markup got through");
    assert!(
        !html.chars().any(|c| c == '\u{1b}' || c == '\u{9b}' || c == '\u{7}'),
        "a control character got through"
    );
    assert!(html.contains("=HYPERLINK(&quot;http://evil&quot;)\u{fffd}[31m"), "the worker is shown, escaped");
    assert!(html.contains("@SUM(1)\u{fffd}2J"), "the GPU is shown, escaped");
    let results = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(!results.contains('\u{1b}') && results.contains("'=HYPERLINK"), "{results}");
    server.stop().await;
}
