//! `/sweeps/NAME/report/FILE`: the sweep's static report (what `coordinator report` writes),
//! written into a directory this process owns and written again only when the sweep changed
//! since (the GIF and PNGs take seconds for a large sweep).

use std::collections::HashMap;
use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;

use super::view;
use crate::error::Error;
use crate::http::AppState;

/// Reports written so far, by sweep, with the state they were written from.
#[derive(Debug)]
pub struct ReportCache {
    dir: tempfile::TempDir,
    written: Mutex<HashMap<String, (String, report::ReportFiles)>>,
}

impl ReportCache {
    pub fn new() -> std::io::Result<ReportCache> {
        Ok(ReportCache {
            dir: tempfile::Builder::new().prefix("sweep-dashboard-").tempdir()?,
            written: Mutex::default(),
        })
    }
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("csv") => "text/csv; charset=utf-8",
        _ => "text/markdown; charset=utf-8",
    }
}

/// The report file `file` of sweep `name` (`index.html` for an empty name).
pub async fn report_file(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
) -> Response {
    match fetch(&state, &name, &file).await {
        Ok(Some(bytes)) => ([(header::CONTENT_TYPE, content_type(&file))], bytes).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such report file\n").into_response(),
        Err(e) => super::failure(e),
    }
}

async fn fetch(state: &AppState, name: &str, file: &str) -> Result<Option<Vec<u8>>, Error> {
    let view = view::load(&state.queue, name).await?;
    let s = &view.summary;
    let stamp =
        format!("{} {} {} {} {} {}", s.queued, s.running, s.succeeded, s.failed, s.cancelled, s.epochs_done);
    let cache = &state.reports;
    let mut written = cache.written.lock().await;
    let files = match written.get(name) {
        Some((at, files)) if *at == stamp => files.clone(),
        _ => {
            let out: PathBuf = cache.dir.path().join(name);
            let input = super::drawable(&view)?;
            let files = tokio::task::spawn_blocking(move || report::write_report(&input, &out))
                .await
                .map_err(|e| Error::Internal(format!("writing the report: {e}")))??;
            written.insert(name.to_owned(), (stamp, files.clone()));
            files
        }
    };
    drop(written);
    // Only the files the report wrote: a name is never joined onto a path.
    let Some(path) = files.all().into_iter().find(|p| p.file_name().is_some_and(|n| n == file)) else {
        return Ok(None);
    };
    Ok(Some(tokio::fs::read(path).await?))
}
