//! The dashboard's buttons for admins: cancel a sweep, cancel a job, retry a failed or cancelled
//! job. Each is a POST that must carry the `X-Sweep-Action` header, which a page from another site
//! cannot add (so a link or form elsewhere cannot trigger one with the browser's cookie).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sweep_proto::domain::{JobId, RetryTarget};

use crate::auth::{Principal, Role};
use crate::error::Error;
use crate::http::AppState;

/// The header every action must carry.
pub const ACTION_HEADER: &str = "x-sweep-action";

/// Whether `who` sees and may use the buttons: an admin, or anyone when authentication is off.
pub fn may_act(who: &Principal) -> bool {
    matches!(who, Principal::Local | Principal::Token { role: Role::Admin, .. })
}

/// Runs `action` for `who` once the request passed the checks, and maps its result to a status.
async fn act(
    who: &Principal,
    headers: &HeaderMap,
    action: impl Future<Output = Result<(), Error>>,
) -> Response {
    if !headers.contains_key(ACTION_HEADER) {
        return (StatusCode::FORBIDDEN, "actions must come from the dashboard's page\n").into_response();
    }
    if !may_act(who) {
        return (StatusCode::FORBIDDEN, "only an admin credential may act here\n").into_response();
    }
    let result = action.await;
    let status = match &result {
        Ok(()) => return StatusCode::NO_CONTENT.into_response(),
        Err(Error::NotFound(_)) => StatusCode::NOT_FOUND,
        Err(Error::PermissionDenied(_)) => StatusCode::FORBIDDEN,
        Err(Error::InvalidInput(_)) => StatusCode::BAD_REQUEST,
        Err(Error::Precondition(_) | Error::Conflict(_)) => StatusCode::CONFLICT,
        Err(Error::ResourceExhausted(_)) => StatusCode::TOO_MANY_REQUESTS,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let text = result.err().map(|e| format!("{e}\n")).unwrap_or_default();
    (status, text).into_response()
}

pub async fn cancel_sweep(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    act(&who, &headers, async { state.queue.cancel_sweep(&name, &who).await.map(|_| ()) }).await
}

pub async fn cancel_job(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    act(&who, &headers, async { state.queue.cancel(JobId(id), &who).await.map(|_| ()) }).await
}

pub async fn retry_job(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    act(&who, &headers, async { state.queue.retry(RetryTarget::Job(JobId(id)), &who).await.map(|_| ()) })
        .await
}
