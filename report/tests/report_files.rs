//! `write_report` on deterministic synthetic sweeps: every file is written and says what it should.

mod common;

use std::path::Path;

use report::plots::boxplot::BOX_FILL_OPACITY;
use report::plots::curves::VAL_MEAN_STROKE_WIDTH;
use report::plots::variant_colour_hex;
use report::{ReportError, ReportInput, write_report};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Number of `<rect>` elements filled with `colour` at the box fill opacity.
fn box_rects(svg: &str, colour: &str) -> usize {
    let fill = format!("opacity=\"{BOX_FILL_OPACITY}\" fill=\"{colour}\"");
    svg.split("<rect").skip(1).filter(|element| element.split('>').next().unwrap().contains(&fill)).count()
}

/// Number of `<polyline>` elements stroked with `colour` at the validation-mean width.
fn val_mean_lines(svg: &str, colour: &str) -> usize {
    let stroke = format!("stroke=\"{colour}\" stroke-width=\"{VAL_MEAN_STROKE_WIDTH}\"");
    svg.split("<polyline")
        .skip(1)
        .filter(|element| element.split('>').next().unwrap().contains(&stroke))
        .count()
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert!(bytes.len() > 10_000, "{} is only {} bytes", path.display(), bytes.len());
}

/// Number of frames of a GIF file (panics if it does not decode).
fn gif_frames(path: &Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    let mut decoder = gif::DecodeOptions::new().read_info(file).unwrap();
    let mut frames = 0;
    while decoder.read_next_frame().unwrap().is_some() {
        frames += 1;
    }
    frames
}

fn csv_data_rows(path: &Path) -> usize {
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader.records().inspect(|r| assert!(r.is_ok(), "{r:?}")).count()
}

#[test]
fn finished_sweep_writes_every_file() {
    let input = common::finished_sweep(5, 10);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/report");
    let files = write_report(&input, &out).unwrap();
    for path in files.all() {
        assert!(path.is_file(), "{} missing", path.display());
        assert!(path.starts_with(&out));
    }
    assert_png(&files.boxplot_png);
    assert_png(&files.curves_png);
    assert_eq!(csv_data_rows(&files.results_csv), 25);
    assert_eq!(csv_data_rows(&files.epochs_csv), 250);
    assert_eq!(files.all().len(), 9, "a balanced sweep has no extended box plot");
    assert_eq!((files.boxplot_extended_svg, files.boxplot_extended_png), (None, None));
    assert!(!out.join("boxplot_extended.svg").exists());
    assert_eq!(gif_frames(&files.curves_gif), 10, "one frame per epoch");
}

#[test]
fn boxplot_svg_has_one_box_per_variant_and_names_them() {
    let input = common::finished_sweep(5, 10);
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    let svg = read(&files.boxplot_svg);
    for (index, variant) in common::VARIANTS.iter().enumerate() {
        assert_eq!(box_rects(&svg, &variant_colour_hex(index)), 1, "boxes of {variant}");
        assert!(svg.contains(&format!("{variant} (n=5)")), "axis label of {variant}");
        // Five finished jobs → five dots in the variant colour.
        let fill = format!("fill=\"{}\"", variant_colour_hex(index));
        let dots =
            svg.split("<circle").skip(1).filter(|e| e.split('>').next().unwrap().contains(&fill)).count();
        assert_eq!(dots, 5, "dots of {variant}");
    }
    assert!(svg.contains("cifar10-natural"), "title names the sweep");
    assert!(svg.contains("n = 5 / 5 / 5 / 5 / 5"), "title gives n per variant");
}

#[test]
fn curves_svg_has_one_validation_mean_line_per_variant_and_panel_and_a_legend() {
    let input = common::finished_sweep(5, 10);
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    let svg = read(&files.curves_svg);
    for (index, variant) in common::VARIANTS.iter().enumerate() {
        // One line in the all-epochs panel and one in the zoomed validation panel.
        assert_eq!(val_mean_lines(&svg, &variant_colour_hex(index)), 2, "validation mean of {variant}");
        assert!(svg.contains(&format!("{variant} (n=5)")), "legend entry of {variant}");
    }
    assert!(svg.contains("±1 sd"), "the band is explained");
    assert!(svg.contains("training mean (dotted)") && svg.contains("validation mean (solid)"));
    assert!(svg.contains("validation only, epochs 6–10 (zoom)"));
}

#[test]
fn csv_files_have_headers_and_percentages() {
    let input = common::finished_sweep(3, 4);
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    let results = read(&files.results_csv);
    let header = results.lines().next().unwrap();
    assert_eq!(header, report::tables::RESULTS_HEADER.join(","));
    assert_eq!(read(&files.epochs_csv).lines().next().unwrap(), report::tables::EPOCHS_HEADER.join(","));
    let first_job = input.jobs.iter().find(|j| j.variant == "natural_hardmax" && j.seed == 0).unwrap();
    let expected = format!("{:.4}", first_job.best_value.unwrap() * 100.0);
    let row = results.lines().nth(1).unwrap();
    assert!(row.starts_with(&format!("{},natural_hardmax,0,succeeded,", first_job.job_id)), "{row}");
    assert!(row.contains(&expected), "{row} lacks {expected}");
    assert_eq!(csv_data_rows(&files.results_csv), 15);
    assert_eq!(csv_data_rows(&files.epochs_csv), 60);
}

#[test]
fn summary_reports_every_variant_the_tests_and_the_claims() {
    let input = common::finished_sweep(5, 10);
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    let md = read(&files.summary_md);
    for variant in common::VARIANTS {
        assert!(md.contains(&format!("| {variant} |")), "{variant} missing from summary");
    }
    assert!(md.contains("25 of 25 jobs finished"));
    for needle in [
        "Design: shared seeds: paired",
        "paired t + Wilcoxon signed-rank",
        "paired, seeds 0–4",
        "Wilcoxon W = ",
        "Welch",
        "Mann-Whitney",
        "Hedges' g",
        "Cliff's δ",
        "95% CI",
        "(exact)",
        "## Results: every finished seed",
        "| variant | n finished | best epoch (headline) | final epoch | mean of last 10 epochs |",
        "choosing the best epoch on it is optimistic",
    ] {
        assert!(md.contains(needle), "summary lacks {needle}:\n{md}");
    }
    // The synthetic data: softmax +1.5, lr 1e-2 and hardmax lower, multi at the baseline's level
    // with four times its spread. Five seeds at that spread cannot pin the mean within ±0.5.
    for claim in [
        "**Natural SoftMax beats Normal by 1–2 points**: supported",
        "**lr 1e-2 is worse than the baseline**: supported",
        "**Natural HardMax is worse than the baseline**: supported",
        "**Multiple SoftMax only widens the spread (same mean, larger variance)**: not supported by this data — \
         the data cannot establish the same mean",
    ] {
        assert!(md.contains(claim), "summary lacks `{claim}`:\n{md}");
    }
}

#[test]
fn index_html_embeds_figures_tables_and_reproducibility_block() {
    let input = common::finished_sweep(5, 10);
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    let html = read(&files.index_html);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), 2, "both figures inlined");
    assert!(!html.contains("<?xml"));
    assert!(html.contains("<img src=\"curves.gif\""));
    assert!(!html.contains('`'), "markdown backticks are rendered as <code>");
    assert!(html.contains("<code>natural_softmax</code> − <code>normal_lr1e-3</code>"));
    let p = &input.provenance;
    assert!(html.contains(&p.git_commit));
    assert!(html.contains("burn 0.21.0"));
    assert!(html.contains("NVIDIA H100 80GB HBM3"));
    assert!(html.contains("data_batch_1.bin") && html.contains("c99cafc152244af753f735de768cd75f"));
    assert!(html.contains("&quot;name&quot;: &quot;cifar10-natural&quot;"), "spec JSON shown (escaped)");
    for variant in common::VARIANTS {
        assert!(html.contains(&format!("<td>{variant}</td>")), "{variant} missing from tables");
    }
}

#[test]
fn sweep_without_finished_jobs_and_a_missing_variant_still_writes_everything() {
    let input = common::partial_sweep_none_finished();
    assert!(input.jobs.iter().all(|j| j.variant != "normal_lr1e-2"), "fixture: last variant has no jobs");
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    for path in files.all() {
        assert!(path.is_file(), "{} missing", path.display());
    }
    assert_png(&files.boxplot_png);
    assert_png(&files.curves_png);
    let md = read(&files.summary_md);
    assert!(md.contains("0 of 12 jobs finished (succeeded), 4 running, 8 queued"), "{md}");
    assert!(md.contains("No finished jobs yet"));
    assert!(md.contains("too few seeds to say"));
    assert!(md.contains("| normal_lr1e-2 | 0 |"));
    assert!(read(&files.boxplot_svg).contains("no finished jobs yet"));
    assert_eq!(csv_data_rows(&files.results_csv), 12);
    assert_eq!(csv_data_rows(&files.epochs_csv), input.epochs.len());
    assert_eq!(input.epochs.len(), 3 + 4 + 5 + 6);
}

#[test]
fn running_jobs_are_shown_apart_and_left_out_of_statistics() {
    let input = common::partial_sweep_mixed();
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    let md = read(&files.summary_md);
    assert!(
        md.contains("10 of 25 jobs finished (succeeded), 5 running, 5 queued, 5 failed or cancelled"),
        "{md}"
    );
    assert!(md.contains("too few seeds to say"), "n = 2 per variant cannot decide a claim");
    let svg = read(&files.boxplot_svg);
    assert!(svg.contains("natural_softmax (n=2)"));
    assert!(svg.contains("running job, best so far"));
    let running = input.jobs.iter().find(|j| j.variant == "natural_softmax" && j.state == "running").unwrap();
    let shown = format!("{:.2} (seed {})", running.best_value.unwrap() * 100.0, running.seed);
    assert!(md.contains(&shown), "running best {shown} missing");
    let analysis = report::analysis::analyse(&input);
    let softmax = analysis.variant("natural_softmax").unwrap();
    assert_eq!(softmax.finished_best.len(), 2);
    assert_eq!(softmax.running_best.len(), 1);
    assert!(html_contains_running_row(&read(&files.index_html)));
}

fn html_contains_running_row(html: &str) -> bool {
    html.contains("<tr class=\"running\">")
}

#[test]
fn empty_input_is_an_error() {
    let mut input: ReportInput = common::finished_sweep(1, 1);
    input.variants.clear();
    input.jobs.clear();
    input.epochs.clear();
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(write_report(&input, dir.path()), Err(ReportError::EmptyInput)));
}

#[test]
fn claims_follow_the_paired_ci_on_hand_made_values() {
    // Best validation accuracies (fractions) per variant in display order.
    let input = common::sweep_with_best_values([
        &[0.901, 0.899, 0.903, 0.900], // natural_hardmax: CI around 0 → not supported
        &[0.940, 0.950, 0.945, 0.948], // natural_softmax: +4.6 points → better, but not by 1–2
        &[0.880, 0.920, 0.870, 0.930], // multi_softmax: wider, but the mean's CI is ±3 points
        &[0.900, 0.902, 0.898, 0.901], // baseline
        &[0.905, 0.890],               // normal_lr1e-2: n = 2
    ]);
    let analysis = report::analysis::analyse(&input);
    use report::analysis::Verdict::*;
    // normal_lr1e-2's two seeds make the balanced set seeds 0–1: too few for any claim there.
    let main: Vec<_> = analysis.claims().iter().map(|c| c.verdict).collect();
    assert_eq!(main, [TooFewSeeds; 4], "{:#?}", analysis.claims());
    // The extended set has all four seeds of the other variants and judges their claims.
    let claims = &analysis.extended_set().unwrap().claims;
    let verdicts: Vec<_> = claims.iter().map(|c| (c.claim, c.verdict)).collect();
    assert_eq!(
        verdicts,
        [
            ("Natural SoftMax beats Normal by 1–2 points", PartlySupported),
            ("Natural HardMax is worse than the baseline", NotSupported),
            ("Multiple SoftMax only widens the spread (same mean, larger variance)", NotSupported)
        ],
        "{claims:#?}"
    );
    assert!(claims[0].evidence.starts_with("better, but not by 1–2 points"), "{}", claims[0].evidence);
    assert!(claims[1].evidence.starts_with("the CI includes 0"), "{}", claims[1].evidence);
    assert!(
        claims[2].evidence.starts_with("the data cannot establish the same mean"),
        "{}",
        claims[2].evidence
    );
}

#[test]
fn protocol_sweep_gets_an_extended_box_plot_identical_variants_and_a_small_gif() {
    let input = common::protocol_sweep(100);
    assert_eq!(input.jobs.len(), 45);
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    assert_eq!(files.all().len(), 11);
    for path in files.all() {
        assert!(path.is_file(), "{} missing", path.display());
    }
    let extended_svg = read(files.boxplot_extended_svg.as_ref().unwrap());
    assert!(extended_svg.contains("natural_softmax (n=15)") && extended_svg.contains("normal_lr1e-3 (n=15)"));
    assert!(!extended_svg.contains("natural_hardmax"), "only the variants with extra seeds");
    assert_png(files.boxplot_extended_png.as_ref().unwrap());
    let main_svg = read(&files.boxplot_svg);
    assert!(main_svg.contains("n = 5 / 5 / 5 / 5 / 5"));
    assert!(
        main_svg.contains("natural_hardmax and multi_softmax are identical to normal_lr1e-3 seed for seed")
    );
    // Same colour for a variant in both box plots: natural_softmax is the second canonical colour.
    assert_eq!(box_rects(&extended_svg, &variant_colour_hex(1)), 1);
    assert_eq!(box_rects(&main_svg, &variant_colour_hex(1)), 1);

    let gif_bytes = std::fs::metadata(&files.curves_gif).unwrap().len();
    assert!(gif_bytes <= 5 * 1024 * 1024, "curves.gif is {gif_bytes} bytes");
    assert_eq!(&std::fs::read(&files.curves_gif).unwrap()[..6], b"GIF89a");
    assert_eq!(gif_frames(&files.curves_gif), 50, "100 epochs in steps of 2");

    let md = read(&files.summary_md);
    for needle in [
        "## Balanced set: seeds 0–4 of every variant (n = 5 each)",
        "## Extended set: every finished seed of `natural_softmax` (n = 15), `normal_lr1e-3` (n = 15)",
        "`natural_hardmax` and `multi_softmax` are identical to the baseline `normal_lr1e-3` seed for seed (by \
         construction, bit for bit)",
        "**Natural HardMax is worse than the baseline**: not supported by this data — `natural_hardmax` is identical \
         to the baseline seed for seed (by construction, bit for bit).",
        "**Multiple SoftMax only widens the spread (same mean, larger variance)**: not supported by this data — \
         `multi_softmax` is identical to the baseline seed for seed (by construction, bit for bit): same mean, same \
         spread.",
        "none: identical to the baseline seed for seed (by construction, bit for bit)",
        "paired, seeds 0–14",
        "`boxplot_extended.svg`",
    ] {
        assert!(md.contains(needle), "summary lacks {needle}:\n{md}");
    }
    assert!(!md.contains("not significant"));
    assert!(!md.contains("noise floor\n"), "bit for bit: no noise floor section");
    // The extended set judges only the claim about its variant.
    let analysis = report::analysis::analyse(&input);
    let extended = analysis.extended_set().unwrap();
    assert_eq!(extended.claims.len(), 1);
    assert_eq!(extended.comparisons[0].n_units(), 15);

    let html = read(&files.index_html);
    assert_eq!(html.matches("<svg").count(), 3, "two box plots and the curves inlined");
    assert!(html.contains("<img src=\"curves.gif\""));
    assert!(html.contains("boxplot_extended.svg"));
    assert!(!html.contains('`'));
}

#[test]
fn rewriting_a_now_balanced_report_removes_the_stale_extended_box_plot() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_report(&common::protocol_sweep(3), dir.path()).unwrap();
    assert!(first.boxplot_extended_svg.unwrap().is_file());
    let second = write_report(&common::finished_sweep(3, 3), dir.path()).unwrap();
    assert_eq!(second.boxplot_extended_svg, None);
    assert!(!dir.path().join("boxplot_extended.svg").exists());
    assert!(!dir.path().join("boxplot_extended.png").exists());
}
