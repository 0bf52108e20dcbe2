//! `write_report` on the noise floor of variants that train like the baseline but ran elsewhere,
//! and on jobs that needed several attempts or failed.

mod common;

use std::path::Path;

use report::write_report;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn identical_training_run_elsewhere_is_reported_as_a_noise_floor() {
    let input = common::protocol_sweep_across_machines(20);
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    let analysis = report::analysis::analyse(&input);
    assert_eq!(analysis.nondeterministic(), ["natural_hardmax"]);
    assert_eq!(analysis.identical_to_baseline(), ["multi_softmax"]);

    // Every other variant's statistics are those of the bit-for-bit sweep.
    let same = report::analysis::analyse(&common::protocol_sweep(20));
    for name in ["natural_softmax", "normal_lr1e-2"] {
        let find =
            |a: &report::analysis::Analysis| a.comparisons().iter().find(|c| c.variant == name).cloned();
        assert_eq!(find(&analysis), find(&same), "{name}");
    }
    assert_eq!(analysis.extended_set(), same.extended_set());

    let hardmax = analysis.comparisons().iter().find(|c| c.variant == "natural_hardmax").unwrap();
    let noise = hardmax.noise_floor.unwrap();
    assert_eq!((noise.n_pairs, noise.bit_identical), (5, 0));
    assert!(noise.max_abs > 0.0 && noise.max_abs <= 0.6, "{noise:?}");
    let claim = analysis.claims().iter().find(|c| c.claim.starts_with("Natural HardMax")).unwrap();
    assert_eq!(claim.verdict, report::analysis::Verdict::IdenticalTraining, "{}", claim.evidence);

    let md = read(&files.summary_md);
    let row = format!(
        "| natural_hardmax | 0–4 | 5 | 0 | {} | {:.2} | {:.2} |",
        report::analysis::noise::signed_points(noise.mean),
        noise.sd.unwrap(),
        noise.max_abs
    );
    for needle in [
        "`natural_hardmax` trains exactly like the baseline `normal_lr1e-3` by construction",
        "### Run-to-run nondeterminism: the noise floor",
        "| variant | paired seeds | n pairs | bit for bit | mean Δ (points) | sd of Δ | max \\|Δ\\| |",
        &row,
        "the sd of Δ of `natural_hardmax`",
        "× the sd of the difference between two seeds of the baseline",
        "**Natural HardMax is worse than the baseline**: identical training by construction: the measured Δ is \
         nondeterminism — `natural_hardmax` trains exactly like `normal_lr1e-3` (the gradients of plain \
         cross-entropy",
        "none: identical training by construction; Δ is run-to-run nondeterminism, not an effect of the loss",
        "`multi_softmax` is identical to the baseline `normal_lr1e-3` seed for seed (by construction, bit for bit)",
        "Identical training by construction: `natural_hardmax` and `multi_softmax` add to the cross-entropy",
    ] {
        assert!(md.contains(needle), "summary lacks {needle}:\n{md}");
    }
    let html = read(&files.index_html);
    assert!(html.contains("<h3>Run-to-run nondeterminism: the noise floor</h3>"));
    assert!(html.contains("identical training by construction: the measured Δ is nondeterminism"));
    assert!(!html.contains('`'));
}

#[test]
fn attempts_and_failed_jobs_are_counted_listed_and_written() {
    let input = common::partial_sweep_mixed();
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    let md = read(&files.summary_md);
    for needle in [
        "Attempts: 7 of 25 jobs needed more than one attempt (`natural_hardmax` seed 1: attempt 2; \
         `natural_hardmax` seed 2: attempt 2; `natural_hardmax` seed 4: attempt 3;",
        "1 continued after an earlier attempt's stored epochs (epochs from more than one attempt: \
         `natural_hardmax` seed 2, attempts 1, 2).",
        "5 jobs failed or were cancelled, with the reason the coordinator recorded last:",
        "| variant | seed | job | state | attempts | reason |",
        "| natural_hardmax | 4 | 5 | failed | 3 | CUDA error: out of memory while allocating 2.0 GiB |",
        "| normal_lr1e-2 | 4 | 405 | failed | 3 | CUDA error: out of memory while allocating 2.0 GiB |",
    ] {
        assert!(md.contains(needle), "summary lacks {needle}:\n{md}");
    }
    let html = read(&files.index_html);
    assert!(html.contains("<td>CUDA error: out of memory while allocating 2.0 GiB</td>"));
    assert!(html.contains("<th>attempts</th>"));

    let mut results = csv::Reader::from_path(&files.results_csv).unwrap();
    let header = results.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (attempts, error) = (column("attempts"), column("error"));
    let rows: Vec<csv::StringRecord> = results.records().map(Result::unwrap).collect();
    let failed = rows.iter().find(|r| &r[0] == "5").unwrap();
    assert_eq!(
        (&failed[attempts], &failed[error]),
        ("3", "CUDA error: out of memory\u{fffd}while allocating 2.0 GiB")
    );
    assert_eq!((&rows[0][attempts], &rows[0][error]), ("1", ""));
    let mut epochs = csv::Reader::from_path(&files.epochs_csv).unwrap();
    let attempt = epochs.headers().unwrap().iter().position(|h| h == "attempt").unwrap();
    let of_job_3: Vec<String> = epochs
        .records()
        .map(Result::unwrap)
        .filter(|r| &r[0] == "3")
        .map(|r| r[attempt].to_string())
        .collect();
    assert_eq!(of_job_3, ["1", "1", "1", "1", "2", "2"]);
}
