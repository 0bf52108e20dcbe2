//! The live dashboard on the HTTP listener: `/` lists the sweeps; `/sweeps/NAME` shows one, its
//! live part (`/sweeps/NAME/live`) redrawn from the server whenever `/sweeps/NAME/events` (Server-
//! Sent Events fed by the queue's event stream, as `WatchSweep` is) says a job or an epoch
//! changed; `results.csv` and `epochs.csv` are the report's tables, `report/` the whole static
//! report ([`static_report`]); admins get buttons to cancel
//! the sweep or a job and to retry an ended job ([`actions`]).

mod actions;
mod page;
pub(crate) mod static_report;
mod view;

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

use crate::auth::Principal;
use crate::client::report_groups::{Grouping, grouped};
use crate::error::Error;
use crate::events::Event;
use crate::http::AppState;

/// The dashboard's routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(sweeps))
        .route("/sweeps/{name}", get(sweep))
        .route("/sweeps/{name}/live", get(live))
        .route("/sweeps/{name}/events", get(events))
        .route("/sweeps/{name}/results.csv", get(results_csv))
        .route("/sweeps/{name}/epochs.csv", get(epochs_csv))
        .route(
            "/sweeps/{name}/report",
            get(|Path(name): Path<String>| async move {
                axum::response::Redirect::to(&format!("/sweeps/{name}/report/index.html"))
            }),
        )
        .route("/sweeps/{name}/report/{file}", get(static_report::report_file))
        .route("/sweeps/{name}/cancel", post(actions::cancel_sweep))
        .route("/jobs/{id}/cancel", post(actions::cancel_job))
        .route("/jobs/{id}/retry", post(actions::retry_job))
}

/// An error as the page shows it: 404 for an unknown sweep, 409 for one that cannot make what was
/// asked (a report without its objective's values), 503 otherwise.
fn failure(e: Error) -> Response {
    let status = match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::InvalidInput(_) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{e}\n")).into_response()
}

async fn sweeps(State(state): State<AppState>) -> Response {
    match state.queue.summaries().await {
        Ok(summaries) => Html(page::sweeps_page(&summaries)).into_response(),
        Err(e) => failure(e),
    }
}

/// The report input a sweep's figures and static report are drawn from: a command sweep's jobs
/// grouped by their parameter point (each point a variant) on the sweep's objective.
pub(crate) fn drawable(view: &view::SweepView) -> Result<report::ReportInput, Error> {
    match view.summary.spec.command {
        Some(_) => grouped(view.input.clone(), &Grouping::default()),
        None => Ok(view.input.clone()),
    }
}

/// The live part's HTML, drawn from the queue now.
async fn live_html(state: &AppState, name: &str, who: &Principal) -> Result<String, Error> {
    let view = view::load(&state.queue, name).await?;
    // A command sweep whose epochs lack its objective gets no figures, and says why.
    let figures = match drawable(&view) {
        Ok(input) => {
            // Drawing the figures is CPU work: keep it off the async workers.
            let drawn = tokio::task::spawn_blocking(move || report::live_figures(&input))
                .await
                .map_err(|e| Error::Internal(format!("drawing the figures: {e}")))??;
            Ok(drawn)
        }
        Err(why) => Err(why.to_string()),
    };
    Ok(page::live_part(&view, figures.as_ref(), crate::db::now_ms(), actions::may_act(who)))
}

async fn sweep(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    match live_html(&state, &name, &who).await {
        Ok(live) => Html(page::sweep_page(&name, &live, actions::may_act(&who))).into_response(),
        Err(e) => failure(e),
    }
}

async fn live(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    match live_html(&state, &name, &who).await {
        Ok(live) => ([(header::CACHE_CONTROL, "no-store")], Html(live)).into_response(),
        Err(e) => failure(e),
    }
}

/// One message per job change or stored epoch of the sweep (`job` / `epoch` with the job id);
/// a watcher that fell behind gets `resync`.
async fn events(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = BroadcastStream::new(state.queue.events().subscribe()).filter_map(move |event| {
        let message = match event {
            Ok(event) if event.sweep() == name => Some(match event.as_ref() {
                Event::JobChanged(job) => format!("job {}", job.id.0),
                Event::EpochRecorded(record) => format!("epoch {}", record.job_id.0),
            }),
            Ok(_) => None,
            Err(_) => Some("resync".to_owned()),
        };
        futures::future::ready(message.map(|m| Ok(SseEvent::default().data(m))))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn csv_of(state: &AppState, name: &str, epochs: bool) -> Response {
    let view = match view::load(&state.queue, name).await {
        Ok(view) => view,
        Err(e) => return failure(e),
    };
    let input = &view.input;
    let mut out = Vec::new();
    let written = if epochs {
        report::tables::epochs_csv(input, &input.variants, &mut out)
    } else {
        report::tables::results_csv(input, &input.variants, &mut out)
    };
    match written {
        Ok(()) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response(),
        Err(e) => failure(Error::Format(format!("csv: {e}"))),
    }
}

async fn results_csv(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    csv_of(&state, &name, false).await
}

async fn epochs_csv(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    csv_of(&state, &name, true).await
}
