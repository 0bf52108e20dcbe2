//! `index.html`: one self-contained page with the status, both figures (SVG inlined), the
//! statistics and comparison tables, the claim verdicts, every job, and the reproducibility block
//! (git commit, crate versions, devices, data MD5s, the sweep spec JSON).

use std::fmt::Write as _;

use crate::analysis::{Analysis, Verdict};
use crate::input::ReportInput;
use crate::summary::{self, TextTable};
use crate::tables::jobs_in_display_order;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}figure svg{max-width:100%;height:auto}\
pre{background:#f6f6f6;padding:1em;overflow-x:auto}.running{color:#888;font-style:italic}\
.supported{color:#1a7f37}.contradicted{color:#c62828}.undecided{color:#8a6d00}";

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
            let _ = write!(out, "<td>{}</td>", escape(cell));
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
    let rows = jobs_in_display_order(input, &order)
        .into_iter()
        .map(|j| {
            vec![
                j.variant.clone(),
                j.seed.to_string(),
                j.state.clone(),
                format!("{}/{}", j.epochs_done, j.epochs),
                pct(j.best_val_acc),
                j.best_epoch.map_or_else(|| "–".to_string(), |e| e.to_string()),
                pct(j.final_train_acc),
                pct(j.final_val_acc),
                format!("{:.0}", j.wall_seconds),
                j.worker.clone(),
            ]
        })
        .collect();
    let header = [
        "variant",
        "seed",
        "state",
        "epochs",
        "best val acc (%)",
        "best epoch",
        "final train acc (%)",
        "final val acc (%)",
        "wall (s)",
        "worker",
    ];
    TextTable { header: header.iter().map(|s| s.to_string()).collect(), rows }
}

fn reproducibility(out: &mut String, input: &ReportInput) {
    let p = &input.provenance;
    out.push_str("<h2 id=\"reproducibility\">Reproducibility</h2>\n<dl class=\"reproducibility\">\n");
    let _ = writeln!(out, "<dt>git commit</dt><dd><code>{}</code></dd>", escape(&p.git_commit));
    let _ = writeln!(out, "<dt>generated at</dt><dd>{}</dd>", escape(&p.generated_at));
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
    let _ = writeln!(out, "<dt>data MD5</dt><dd>{}</dd>", list(md5s));
    out.push_str("</dl>\n<h3>Sweep spec</h3>\n");
    let _ = writeln!(out, "<pre class=\"spec\">{}</pre>", escape(&input.spec_json));
}

/// The whole `index.html`; `boxplot_svg` and `curves_svg` are inlined.
pub fn render_html(input: &ReportInput, analysis: &Analysis, boxplot_svg: &str, curves_svg: &str) -> String {
    let mut out = String::new();
    let title = format!("Sweep report: {}", input.sweep);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let _ = writeln!(out, "<p>{}</p>", escape(&summary::status_sentence(analysis)));

    out.push_str("<h2>Best validation accuracy per variant</h2>\n<figure>\n");
    out.push_str(strip_xml_declaration(boxplot_svg));
    out.push_str(
        "\n<figcaption>Box: quartiles and median of finished jobs; whiskers: furthest value within 1.5 IQR; dots: \
         finished jobs (jittered); crosses: running jobs' best so far (not in the box). \
         Files: <a href=\"boxplot.svg\">boxplot.svg</a>, <a href=\"boxplot.png\">boxplot.png</a>.</figcaption>\n</figure>\n",
    );
    html_table(&mut out, &summary::variant_table(analysis), |_| None);

    let _ = writeln!(out, "<h2>Against the baseline <code>{}</code></h2>", escape(&analysis.baseline));
    if analysis.comparisons.is_empty() {
        out.push_str("<p>No other variants.</p>\n");
    } else {
        html_table(&mut out, &summary::comparison_table(analysis), |_| None);
    }

    out.push_str("<h2>The experiment's claims</h2>\n<ul class=\"claims\">\n");
    for claim in &analysis.claims {
        let _ = writeln!(
            out,
            "<li><strong>{}</strong>: <span class=\"{}\">{}</span> — {}.</li>",
            escape(claim.claim),
            verdict_class(claim.verdict),
            escape(claim.verdict.label()),
            escape(&claim.evidence)
        );
    }
    out.push_str("</ul>\n<h2>Learning curves</h2>\n<figure>\n");
    out.push_str(strip_xml_declaration(curves_svg));
    out.push_str(
        "\n<figcaption>Mean over finished seeds per epoch; solid: validation, dotted: training; shaded band: \
         ±1 sample sd across seeds; thin faint lines: running jobs' validation accuracy. The right panel (when present) zooms on the \
         validation curves of the second half of the epochs. \
         Files: <a href=\"curves.svg\">curves.svg</a>, <a href=\"curves.png\">curves.png</a>.</figcaption>\n</figure>\n",
    );

    out.push_str("<h2>Methods</h2>\n");
    for paragraph in summary::methods_text(&analysis.baseline) {
        let _ = writeln!(out, "<p>{}</p>", escape(&paragraph));
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
