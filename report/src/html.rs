//! `index.html`: one self-contained page with the status, attempts and failed jobs, the design,
//! per seed set its box plot (SVG inlined), statistics, comparison and noise-floor tables and
//! claim verdicts, the learning curves (SVG inlined, plus the animated `curves.gif`), every job,
//! and the reproducibility block (git commit, rustc and crate versions, devices, data MD5s, the
//! sweep spec JSON).

use std::fmt::Write as _;

use crate::analysis::{Analysis, SeedSetAnalysis, SeedSetKind, Verdict};
use crate::input::{Measure, ReportInput};
use crate::plots::boxplot::MIN_N_FOR_BOX;
use crate::summary::{self, TextTable};
use crate::tables::{is_unsafe_char, jobs_in_display_order};

/// The SVG figures inlined into the page.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub boxplot_svg: String,
    /// Only for an unbalanced sweep.
    pub boxplot_extended_svg: Option<String>,
    pub curves_svg: String,
}

/// Escapes text for HTML element content and attribute values; control characters (other than
/// tab and line breaks) and bidirectional controls, which have no business in a page and may
/// disguise what it shows, become U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if is_unsafe_char(c) => out.push('\u{fffd}'),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes prose and renders its markdown-style `code` spans as `<code>`; a lone backtick is
/// dropped, so no literal backtick reaches the page.
pub fn rich(text: &str) -> String {
    let escaped = escape(text);
    let parts: Vec<&str> = escaped.split('`').collect();
    let mut out = String::with_capacity(escaped.len());
    for (i, part) in parts.iter().enumerate() {
        let closed = i % 2 == 1 && i + 1 < parts.len();
        if closed {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}figure svg{max-width:100%;height:auto}\
pre{background:#f6f6f6;padding:1em;overflow-x:auto}.running{color:#888;font-style:italic}\
.supported{color:#1a7f37}.contradicted{color:#c62828}.undecided{color:#8a6d00}figure img{max-width:100%}";

fn html_table(out: &mut String, table: &TextTable, row_class: impl Fn(&[String]) -> Option<&'static str>) {
    out.push_str("<table>\n<tr>");
    for cell in &table.header {
        let _ = write!(out, "<th>{}</th>", escape(cell));
    }
    out.push_str("</tr>\n");
    for row in &table.rows {
        match row_class(row) {
            Some(class) => {
                let _ = write!(out, "<tr class=\"{class}\">");
            }
            None => out.push_str("<tr>"),
        }
        for cell in row {
            let _ = write!(out, "<td>{}</td>", rich(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn verdict_class(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Supported => "supported",
        Verdict::Contradicted | Verdict::NotSupported => "contradicted",
        _ => "undecided",
    }
}

fn jobs_table(input: &ReportInput, analysis: &Analysis) -> TextTable {
    let order: Vec<String> = analysis.variants.iter().map(|v| v.name.clone()).collect();
    let pct = |x: Option<f64>| x.map_or_else(|| "–".to_string(), |x| format!("{:.2}", x * 100.0));
    let measure = &input.measure;
    let d = measure.decimals();
    let best = |x: Option<f64>| x.map_or_else(|| "–".to_string(), |x| format!("{:.d$}", measure.show(x)));
    let rows = jobs_in_display_order(input, &order)
        .into_iter()
        .map(|j| {
            vec![
                j.variant.clone(),
                j.seed.to_string(),
                j.state.clone(),
                format!("{}/{}", j.epochs_done, j.epochs),
                best(j.best_value),
                j.best_epoch.map_or_else(|| "–".to_string(), |e| e.to_string()),
                pct(j.final_train_acc),
                pct(j.final_val_acc),
                format!("{:.0}", j.wall_seconds),
                j.worker.clone(),
                j.attempts.to_string(),
            ]
        })
        .collect();
    let best_header = format!("best {}{}", measure.metric, measure.unit());
    let header = [
        "variant",
        "seed",
        "state",
        "epochs",
        best_header.as_str(),
        "best epoch",
        "final train acc (%)",
        "final val acc (%)",
        "wall (s)",
        "worker",
        "attempts",
    ];
    TextTable { header: header.iter().map(|s| s.to_string()).collect(), rows }
}

fn reproducibility(out: &mut String, input: &ReportInput) {
    let p = &input.provenance;
    out.push_str("<h2 id=\"reproducibility\">Reproducibility</h2>\n<dl class=\"reproducibility\">\n");
    let _ = writeln!(out, "<dt>git commit</dt><dd><code>{}</code></dd>", escape(&p.git_commit));
    let _ = writeln!(out, "<dt>generated at</dt><dd>{}</dd>", escape(&p.generated_at));
    if !p.rustc_version.is_empty() {
        let _ = writeln!(out, "<dt>compiler</dt><dd><code>{}</code></dd>", escape(&p.rustc_version));
    }
    let list = |items: Vec<String>| {
        if items.is_empty() { "<em>none recorded</em>".to_string() } else { items.join(", ") }
    };
    let crates =
        p.crate_versions.iter().map(|(c, v)| format!("<code>{} {}</code>", escape(c), escape(v))).collect();
    let _ = writeln!(out, "<dt>crate versions</dt><dd>{}</dd>", list(crates));
    let devices = p.devices.iter().map(|d| escape(d)).collect();
    let _ = writeln!(out, "<dt>devices</dt><dd>{}</dd>", list(devices));
    let md5s = p
        .data_md5
        .iter()
        .map(|(f, m)| format!("<code>{}</code>: <code>{}</code>", escape(f), escape(m)))
        .collect();
    let md5s = if p.data_md5.is_empty() {
        "<em>none reported by the workers that ran this sweep</em>".to_string()
    } else {
        list(md5s)
    };
    let _ = writeln!(out, "<dt>data MD5 (verified by the workers)</dt><dd>{md5s}</dd>");
    out.push_str("</dl>\n<h3>Sweep spec</h3>\n");
    let _ = writeln!(out, "<pre class=\"spec\">{}</pre>", escape(&input.spec_json));
}

fn seed_set_section(out: &mut String, set: &SeedSetAnalysis, baseline: &str, svg: &str, measure: &Measure) {
    let _ = writeln!(out, "<h2>{}</h2>\n<figure>", rich(&set.title()));
    out.push_str(strip_xml_declaration(svg));
    let files = match set.kind {
        SeedSetKind::Balanced => "boxplot",
        SeedSetKind::Extended => "boxplot_extended",
    };
    let _ = write!(
        out,
        "\n<figcaption>Box (n ≥ {MIN_N_FOR_BOX} only): quartiles and median of finished jobs; whiskers: furthest value within \
         1.5 IQR; dots: finished jobs (jittered); crosses: running jobs' best so far (not in the box); dashed line: \
         chance (10 %), when within the axis. Files: <a href=\"{files}.svg\">{files}.svg</a>, \
         <a href=\"{files}.png\">{files}.png</a>."
    );
    let identical: Vec<String> = set
        .comparisons
        .iter()
        .filter(|c| c.identical)
        .map(|c| format!("<code>{}</code>", escape(&c.variant)))
        .collect();
    if !identical.is_empty() {
        let _ = write!(
            out,
            " Note: {} {} identical to the baseline <code>{}</code> seed for seed (by construction, bit for bit); \
             the points coincide.",
            identical.join(" and "),
            if identical.len() == 1 { "is" } else { "are" },
            escape(baseline)
        );
    }
    let [best, epochs] = summary::value_headings(measure);
    let _ = writeln!(out, "</figcaption>\n</figure>\n<h3>{}</h3>", escape(&best));
    html_table(out, &summary::variant_table(set, measure), |_| None);
    let _ = writeln!(out, "<h3>{}</h3>\n<p>Mean ± sample sd over the set's seeds.</p>", escape(&epochs));
    html_table(out, &summary::epoch_table(set, measure), |_| None);
    let _ = writeln!(out, "<h3>Against the baseline <code>{}</code></h3>", escape(baseline));
    if set.comparisons.is_empty() {
        out.push_str("<p>No other variants.</p>\n");
    } else {
        html_table(out, &summary::comparison_table(set, measure), |_| None);
    }
    if let Some(table) = summary::noise_floor_table(set) {
        out.push_str("<h3>Run-to-run nondeterminism: the noise floor</h3>\n");
        let _ = writeln!(out, "<p>{}</p>", rich(&summary::noise_floor_intro()));
        html_table(out, &table, |_| None);
        if let Some(sentence) = summary::noise_versus_seeds_sentence(set, baseline) {
            let _ = writeln!(out, "<p>{}</p>", rich(&sentence));
        }
    }
    out.push_str("<h3>The experiment's claims</h3>\n<ul class=\"claims\">\n");
    if !measure.is_validation_accuracy() {
        let _ = writeln!(out, "<li>{}</li>", rich(&summary::no_claims_text(measure)));
    } else if set.claims.is_empty() {
        out.push_str("<li>No claim is about the variants of this set.</li>\n");
    }
    for claim in &set.claims {
        let _ = writeln!(
            out,
            "<li><strong>{}</strong>: <span class=\"{}\">{}</span> — {}.</li>",
            rich(claim.claim),
            verdict_class(claim.verdict),
            escape(claim.verdict.label()),
            rich(&claim.evidence)
        );
    }
    out.push_str("</ul>\n");
}

/// The whole `index.html`, with the SVG figures inlined.
pub fn render_html(input: &ReportInput, analysis: &Analysis, figures: &Figures) -> String {
    let mut out = String::new();
    let title = format!("Sweep report: {}", input.sweep);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let _ = writeln!(out, "<p>{}</p>", rich(&summary::provenance_sentence(&input.provenance)));
    let _ = writeln!(out, "<p>{}</p>", rich(&summary::status_sentence(analysis)));
    if let Some(note) = summary::notes::plumbing_note(&input.spec_json) {
        let _ = writeln!(out, "<p><strong>{}</strong></p>", rich(&note));
    }
    let _ = writeln!(out, "<p>{}</p>", rich(&summary::attempts_sentence(analysis)));
    if let (Some(sentence), Some(table)) =
        (summary::failed_jobs_sentence(analysis), summary::failed_jobs_table(&analysis.attempts))
    {
        let _ = writeln!(out, "<p>{}</p>", rich(&sentence));
        html_table(&mut out, &table, |_| None);
    }
    let _ = writeln!(out, "<p>{}</p>", rich(&summary::design_sentence(analysis)));
    let _ = writeln!(out, "<p>{}</p>", rich(&summary::seed_sets_sentence(analysis)));
    let notes = [summary::identical_note(analysis), summary::nondeterminism_note(analysis)];
    for note in notes.into_iter().flatten() {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", rich(&note));
    }
    for set in &analysis.seed_sets {
        let svg = match set.kind {
            SeedSetKind::Balanced => Some(&figures.boxplot_svg),
            SeedSetKind::Extended => figures.boxplot_extended_svg.as_ref(),
        };
        seed_set_section(&mut out, set, &analysis.baseline, svg.map_or("", |s| s.as_str()), &input.measure);
    }

    out.push_str("<h2>Learning curves</h2>\n<figure>\n");
    out.push_str(strip_xml_declaration(&figures.curves_svg));
    let label = escape(&input.measure.label);
    let _ = writeln!(
        out,
        "\n<figcaption>Mean over finished seeds per epoch; solid: {label}, dotted (where there is one): its training \
         counterpart; shaded band: ±1 sample sd across seeds; thin faint lines: running jobs' {label}. The right \
         panel (when present) zooms on the {label} curves of the second half of the epochs. \
         Files: <a href=\"curves.svg\">curves.svg</a>, <a href=\"curves.png\">curves.png</a>.</figcaption>\n</figure>",
    );
    let _ = writeln!(
        out,
        "<figure>\n<img src=\"curves.gif\" alt=\"Animated learning curves of every run\">\n<figcaption>Every run \
         (succeeded and running jobs), coloured by variant, growing epoch by epoch: {label} solid, its training \
         counterpart dotted. File: <a href=\"curves.gif\">curves.gif</a>.</figcaption>\n</figure>",
    );

    out.push_str("<h2>Methods</h2>\n");
    for paragraph in summary::methods_text(&analysis.baseline, &input.measure) {
        let _ = writeln!(out, "<p>{}</p>", rich(&paragraph));
    }
    out.push_str("<h2>Jobs</h2>\n");
    html_table(&mut out, &jobs_table(input, analysis), |row| (row[2] == "running").then_some("running"));
    out.push_str(
        "<p>Data: <a href=\"results.csv\">results.csv</a>, <a href=\"epochs.csv\">epochs.csv</a>, \
         <a href=\"summary.md\">summary.md</a>.</p>\n",
    );
    reproducibility(&mut out, input);
    out.push_str("</body>\n</html>\n");
    out
}

/// The SVG without a leading `<?xml …?>` declaration, so it can be inlined.
fn strip_xml_declaration(svg: &str) -> &str {
    let trimmed = svg.trim_start();
    if trimmed.starts_with("<?xml") {
        trimmed.find("?>").map_or(trimmed, |end| trimmed[end + 2..].trim_start())
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_become_code_elements_and_lone_backticks_vanish() {
        assert_eq!(rich("`a<b` vs `c`"), "<code>a&lt;b</code> vs <code>c</code>");
        assert_eq!(rich("odd ` one"), "odd  one");
        assert_eq!(rich("no code"), "no code");
    }

    #[test]
    fn markup_and_control_characters_from_the_network_are_neutralised() {
        let hostile = "<script>alert('x')</script>\u{1b}[2J&\u{202e}\"";
        let escaped = escape(hostile);
        assert_eq!(escaped, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;\u{fffd}[2J&amp;\u{fffd}&quot;");
        assert_eq!(escape("line\nnext\ttab"), "line\nnext\ttab");
        let cell = rich("`<img src=x onerror=alert(1)>`");
        assert_eq!(cell, "<code>&lt;img src=x onerror=alert(1)&gt;</code>");
    }
}
