//! The dashboard's HTML: the list of sweeps, a sweep's page (a shell that redraws its live part
//! whenever the sweep's event stream says something changed) and that live part (progress and
//! ETA, the report's box plots and curves drawn on the server, the job and worker tables). No
//! external assets: it works offline and fits a phone's width.

use std::fmt::Write;

use report::html::escape;
use sweep_proto::domain::{Direction, SweepSummary};

use super::view::SweepView;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 12px}\
svg{width:100%;height:auto}figure{margin:0}.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:14px}\
td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}\
progress{width:100%;height:14px}.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(520px,100%),1fr));gap:8px}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title>\
         <style>{STYLE}</style></head><body>\n{body}</body></html>\n",
        escape(title)
    )
}

fn eta(summary: &SweepSummary) -> String {
    match summary.eta_seconds {
        Some(s) if summary.queued + summary.running > 0 => sweep_proto::text::hms(s),
        Some(_) => "done".into(),
        None => "–".into(),
    }
}

fn progress_line(s: &SweepSummary) -> String {
    format!(
        "{} jobs: {} queued, {} running, {} succeeded, {} failed, {} cancelled · epochs {}/{} ({:.1} %) · ETA {}",
        s.jobs_total(),
        s.queued,
        s.running,
        s.succeeded,
        s.failed,
        s.cancelled,
        s.epochs_done,
        s.epochs_total,
        s.progress_percent(),
        eta(s)
    )
}

/// `/`: every sweep with its progress.
pub fn sweeps_page(summaries: &[SweepSummary]) -> String {
    let mut body = String::from(
        "<h1>Sweeps</h1>\n<div class=\"scroll\"><table><tr><th>sweep</th><th>progress</th></tr>\n",
    );
    for s in summaries {
        let name = escape(&s.spec.name);
        let _ = writeln!(
            body,
            "<tr><td><a href=\"/sweeps/{name}\">{name}</a></td><td>{}</td></tr>",
            escape(&progress_line(s))
        );
    }
    body.push_str("</table></div>\n");
    if summaries.is_empty() {
        body.push_str("<p>No sweep yet: <code>coordinator submit --preset smoke</code> starts one.</p>\n");
    }
    page("Sweeps", &body)
}

/// `/sweeps/NAME`: the shell; its script fetches `live` once per burst of events, and sends the
/// admin buttons' actions.
pub fn sweep_page(name: &str, live: &str, admin: bool) -> String {
    let name = escape(name);
    let cancel = if admin {
        format!(" · <button data-post=\"/sweeps/{name}/cancel\">cancel the sweep</button>")
    } else {
        String::new()
    };
    let body = format!(
        "<p><a href=\"/\">Sweeps</a></p><h1>{name}</h1>\n\
         <p>Download: <a href=\"/sweeps/{name}/results.csv\">results.csv</a> · \
         <a href=\"/sweeps/{name}/epochs.csv\">epochs.csv</a> · \
         <a href=\"/sweeps/{name}/report/index.html\">the static report</a>{cancel}</p>\n\
         <div id=\"live\">{live}</div>\n<script>\n{SCRIPT}</script>\n"
    );
    page(&format!("{name} – sweep"), &body)
}

/// Redraws the live part when the sweep changes: one request in flight at most, bursts of events
/// coalesced into one more request.
const SCRIPT: &str = r#"const live = document.getElementById('live');
let busy = false, again = false;
async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  try {
    const r = await fetch(location.pathname + '/live', { credentials: 'same-origin' });
    if (r.ok) { live.innerHTML = await r.text(); }
  } finally {
    busy = false;
    if (again) { again = false; setTimeout(refresh, 250); }
  }
}
const events = new EventSource(location.pathname + '/events');
events.onmessage = refresh;
document.addEventListener('click', async (e) => {
  const url = e.target.dataset && e.target.dataset.post;
  if (!url || !confirm(e.target.textContent + '?')) { return; }
  const r = await fetch(url, { method: 'POST', credentials: 'same-origin', headers: { 'X-Sweep-Action': '1' } });
  if (!r.ok) { alert(await r.text()); }
  refresh();
});
"#;

/// The live part of a sweep's page.
/// `figures`: the drawn figures, or why there are none.
pub fn live_part(
    view: &SweepView,
    figures: Result<&report::LiveFigures, &String>,
    now_ms: i64,
    admin: bool,
) -> String {
    let s = &view.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<p id=\"progress\">{}</p><progress max=\"100\" value=\"{:.1}\"></progress>",
        escape(&progress_line(s)),
        s.progress_percent()
    );
    // A command sweep's figures show its objective for each parameter point.
    let command = s.spec.command.is_some();
    match figures {
        Ok(figures) => {
            out.push_str("<div class=\"figures\">");
            let mut figure = |id: &str, svg: &str| {
                let _ = write!(out, "<figure id=\"{id}\">{}</figure>", svg.trim_start_matches(|c| c != '<'));
            };
            figure("boxplot", strip_declaration(&figures.boxplot_svg));
            if let Some(svg) = &figures.boxplot_extended_svg {
                figure("boxplot-extended", strip_declaration(svg));
            }
            figure("curves", strip_declaration(&figures.curves_svg));
            out.push_str("</div>\n");
        }
        Err(why) => {
            let _ = writeln!(out, "<p class=\"note\">No figures: {}</p>", escape(why));
        }
    }
    let objective = &s.spec.objective;
    let best_header = match (command, objective.direction) {
        (false, _) => "best val acc".into(),
        (true, Direction::Max) => format!("best {}", escape(&objective.metric)),
        (true, Direction::Min) => format!("lowest {}", escape(&objective.metric)),
    };
    let _ = writeln!(
        out,
        "<h2>Jobs</h2>\n<div class=\"scroll\"><table id=\"jobs\"><tr><th>job</th><th>variant</th>\
         <th>seed</th><th>state</th><th>attempt</th><th>worker</th><th>epochs</th><th>{best_header}</th><th></th></tr>"
    );
    for j in &view.input.jobs {
        let best = j.best_value.filter(|_| j.best_epoch.unwrap_or(0) > 0).map_or("–".to_owned(), |b| {
            let epoch = j.best_epoch.unwrap_or(0);
            if command { format!("{b} @{epoch}") } else { format!("{:.2} % @{epoch}", b * 100.0) }
        });
        let _ = writeln!(
            out,
            "<tr data-job=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"state\">{}</td><td>{}</td><td>{}</td>\
             <td>{}/{}</td><td>{}</td><td>{}</td></tr>",
            j.job_id,
            j.job_id,
            escape(&j.variant),
            j.seed,
            escape(&j.state),
            j.attempts,
            escape(&j.worker),
            j.epochs_done,
            j.epochs,
            best,
            if admin { job_button(j) } else { String::new() }
        );
    }
    out.push_str("</table></div>\n<h2>Workers</h2>\n<div class=\"scroll\"><table id=\"workers\"><tr><th>worker</th>\
                  <th>host</th><th>devices</th><th>slots idle</th><th>last heartbeat</th><th>running here</th><th>images/s</th></tr>\n");
    for w in &view.workers {
        let running: Vec<String> = view
            .input
            .jobs
            .iter()
            .filter(|j| j.state == "running" && j.worker == w.id)
            .map(|j| format!("{} ({} seed {})", j.job_id, escape(&j.variant), j.seed))
            .collect();
        let images: f64 = view
            .input
            .jobs
            .iter()
            .filter(|j| j.state == "running" && j.worker == w.id)
            .filter_map(|j| view.input.epochs.iter().filter(|e| e.job_id == j.job_id).max_by_key(|e| e.epoch))
            .fold(0.0, |sum, e| sum + e.images_per_sec);
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} of {}</td><td>{:.0} s ago</td><td>{}</td><td>{:.0}</td></tr>",
            escape(&w.id),
            escape(&w.hostname),
            escape(&w.gpus.join(", ")),
            w.idle_slots,
            w.slots,
            ((now_ms - w.last_seen_ms) as f64 / 1000.0).max(0.0),
            if running.is_empty() { "–".to_owned() } else { running.join(", ") },
            images
        );
    }
    out.push_str("</table></div>\n");
    out
}

/// The admin's button for a job: cancel while it is queued or running, retry once it failed or
/// was cancelled.
fn job_button(j: &report::JobRow) -> String {
    match j.state.as_str() {
        "queued" | "running" => format!("<button data-post=\"/jobs/{}/cancel\">cancel</button>", j.job_id),
        "failed" | "cancelled" => format!("<button data-post=\"/jobs/{}/retry\">retry</button>", j.job_id),
        _ => String::new(),
    }
}

/// An SVG document without its `<?xml …?>` line, for inline use.
fn strip_declaration(svg: &str) -> &str {
    match svg.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(svg, |(_, body)| body),
        None => svg,
    }
}
