//! The README's main job, end to end on the CPU: `sweep run --preset smoke` with an embedded
//! coordinator, a local worker and the real CIFAR-10 files (read from the shared .xz files),
//! interrupted part-way, continued by the same command, and checked through its report files.
//! `sweep run` accepts only the official files (MD5-checked), so without them the test says so
//! and is skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use sweep::run::{RunArgs, RunError, run_until};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn shared_cifar10() -> PathBuf {
    std::env::var_os("SWEEP_TEST_CIFAR10")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cifar10"))
}

/// Whether the six official `.xz` files are there; says why the test is skipped when not.
fn real_data_or_skip(test: &str) -> bool {
    let dir = shared_cifar10();
    let present =
        ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
            .iter()
            .all(|name| dir.join(format!("{name}.bin.xz")).is_file());
    if !present {
        eprintln!("{test}: skipped, no CIFAR-10 .xz files in {} (set SWEEP_TEST_CIFAR10)", dir.display());
    }
    present
}

fn args(dir: &Path) -> RunArgs {
    let db = coordinator::testing::database_url(dir);
    let data = shared_cifar10();
    let out = dir.join("report");
    let checkpoints = dir.join("checkpoints");
    Cli::parse_from([
        "sweep",
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
        "--preset",
        "smoke",
        "--database-url",
        &db,
        "--data-dir",
        data.to_str().unwrap(),
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
        "--lease-ttl-secs",
        "2",
    ])
    .run
}

fn csv_rows(path: &Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(path).unwrap().records().map(|r| r.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_preset_runs_end_to_end_and_resumes_after_an_interrupt() {
    if !real_data_or_skip("smoke_preset_runs_end_to_end_and_resumes_after_an_interrupt") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // First run: interrupted (as by Ctrl-C) a few seconds into training.
    let first = run_until(args(dir.path()), tokio::time::sleep(Duration::from_secs(25))).await;
    assert!(matches!(first, Err(RunError::Interrupted)), "{first:?}");

    // Same command again: continues the sweep, finishes it and writes the report.
    let summary = run_until(args(dir.path()), std::future::pending()).await.expect("second run");
    assert_eq!((summary.succeeded, summary.failed, summary.cancelled), (10, 0, 0));
    let files = summary.report.expect("a report");
    for path in files.all() {
        let len = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len();
        assert!(len > 100, "{} is only {len} bytes", path.display());
    }
    let results = csv_rows(&files.results_csv);
    assert_eq!(results.len(), 10, "one row per (variant, seed), no duplicates");
    let epochs = csv_rows(&files.epochs_csv);
    assert_eq!(epochs.len(), 20, "2 epochs × 10 jobs, each stored once");
    let svg = std::fs::read_to_string(&files.boxplot_svg).unwrap();
    for variant in ["natural_hardmax", "natural_softmax", "multi_softmax", "normal_lr1e-3", "normal_lr1e-2"] {
        assert!(svg.contains(variant), "box plot lacks {variant}");
    }
    let summary_md = std::fs::read_to_string(&files.summary_md).unwrap();
    assert!(summary_md.contains("too few seeds"), "2 seeds per variant cannot support a claim");
    // The reproducibility block lists the checksums the local worker verified when it loaded the data.
    let html = std::fs::read_to_string(&files.index_html).unwrap();
    for (name, md5) in worker::data::CIFAR10_FILES {
        assert!(html.contains(&format!("<code>{name}</code>: <code>{md5}</code>")), "{name} not verified");
    }

    // Jobs stopped by the interrupt left checkpoints; each went once its job succeeded.
    let kept = std::fs::read_dir(dir.path().join("checkpoints/smoke")).map_or(0, |d| d.count());
    assert_eq!(kept, 0, "a succeeded job's checkpoints are removed");

    // A third run finds nothing to do and keeps every job.
    let again = run_until(args(dir.path()), std::future::pending()).await.expect("third run");
    assert_eq!(again.succeeded, 10);
    assert_eq!(csv_rows(&again.report.unwrap().results_csv).len(), 10);
}

/// Prints two epochs with a training and a validation accuracy that rise with `lr` and the seed.
const SCRIPT: &str = r#"for e in 1 2; do
  echo "{\"epoch\": $e, \"train_acc\": 0.$((e + 4)), \"val_acc\": 0.$e$SWEEP_SEED, \"top5\": $1}"
done
"#;

#[tokio::test]
async fn a_command_sweep_runs_on_the_local_worker_and_gets_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("train.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    let spec = dir.path().join("spec.json");
    let template = format!("sh {} {{lr}}", script.display());
    let json = serde_json::json!({
        "name": "byo", "seeds": "0..3", "epochs": 2,
        "command": {"template": template, "grid": {"lr": ["0.5", "0.25"]}},
    });
    std::fs::write(&spec, json.to_string()).unwrap();
    let db = coordinator::testing::database_url(dir.path());
    let out = dir.path().join("report");
    let checkpoints = dir.path().join("checkpoints");
    let run = |extra: &[&str]| {
        let mut argv = vec!["sweep", "--spec", spec.to_str().unwrap(), "--database-url", &db];
        argv.extend(["--device", "cpu", "--no-progress", "--out", out.to_str().unwrap()]);
        argv.extend(["--checkpoint-dir", checkpoints.to_str().unwrap()]);
        argv.extend(extra);
        Cli::parse_from(argv).run
    };
    // No CIFAR-10 anywhere: a command sweep's local worker loads none.
    let summary =
        run_until(run(&["--group-by", "lr", "--baseline", "0.5"]), std::future::pending()).await.unwrap();
    assert_eq!((summary.succeeded, summary.failed), (6, 0));
    let files = summary.report.expect("a report grouped by lr");
    let text = std::fs::read_to_string(&files.summary_md).unwrap();
    assert!(text.contains("Against the baseline `0.5`") && text.contains("| 0.25 | 3 |"), "{text}");

    // Ranked by a metric the script does not print: the sweep still finishes, without a report.
    let json = serde_json::json!({
        "name": "byo-loss", "seeds": [0], "epochs": 2,
        "command": {"template": format!("sh {} 0.5", script.display())},
        "objective": {"metric": "loss", "mode": "min"},
    });
    std::fs::write(&spec, json.to_string()).unwrap();
    let summary = run_until(run(&[]), std::future::pending()).await.unwrap();
    assert_eq!((summary.succeeded, summary.report.is_none()), (1, true));
}
