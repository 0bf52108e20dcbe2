//! The coordinator's HTTP listener (`coordinator serve --http ADDR`, off by default): the live
//! [`crate::dashboard`], `/metrics` in the Prometheus text format and `/healthz`, behind the same
//! TLS certificate and tokens as the gRPC listener. With tokens on, every route but `/healthz`
//! needs a user or admin credential: a bearer token (scrapers), or the `sweep_token` cookie a
//! browser gets by opening any page once with `?token=…`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Principal, Role, Security, TokenStore};
use crate::dashboard::static_report::ReportCache;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::queue::Queue;

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every HTTP handler reads from.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) queue: Queue,
    pub(crate) reports: Arc<ReportCache>,
    metrics: Arc<Metrics>,
    tokens: Option<Arc<TokenStore>>,
}

/// The routes: the dashboard and `/metrics` behind [`authorize`], `/healthz` open (probes).
fn app(queue: Queue, metrics: Arc<Metrics>, tokens: Option<Arc<TokenStore>>) -> Result<Router> {
    let state = AppState { queue, reports: Arc::new(ReportCache::new()?), metrics, tokens };
    Ok(crate::dashboard::routes()
        .route("/metrics", get(scrape))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state))
}

/// The token a request carries: `Authorization: Bearer`, `?token=` or the `sweep_token` cookie.
fn presented(request: &Request) -> Option<(String, bool)> {
    let headers = request.headers();
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()?.strip_prefix("Bearer "));
    let query = request.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("sweep_token="));
    match (bearer, query, cookie) {
        (Some(t), _, _) => Some((t.trim().to_owned(), false)),
        (None, Some(t), _) => Some((t.to_owned(), true)),
        (None, None, Some(t)) => Some((t.to_owned(), false)),
        _ => None,
    }
}

/// Admits a user or admin credential when tokens are on, leaving its [`Principal`] on the
/// request. A token given as `?token=` is moved into an HttpOnly cookie by a redirect to the same
/// path, so it leaves the address bar.
async fn authorize(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(tokens) = &state.tokens else {
        request.extensions_mut().insert(Principal::Local);
        return next.run(request).await;
    };
    let token = presented(&request);
    let credential = token.as_ref().and_then(|(t, _)| tokens.verify(t));
    let Some(credential) = credential.filter(|c| matches!(c.role, Role::User | Role::Admin)) else {
        let why = "a bearer token of a user or admin credential is required (browsers: open the page once with ?token=…)\n";
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], why).into_response();
    };
    request.extensions_mut().insert(Principal::Token { name: credential.name, role: credential.role });
    match token {
        Some((token, true)) => {
            let cookie = format!("sweep_token={token}; HttpOnly; SameSite=Strict; Path=/");
            let path = request.uri().path().to_owned();
            (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, path)]).into_response()
        }
        _ => next.run(request).await,
    }
}

async fn scrape(State(state): State<AppState>) -> Response {
    match state.metrics.render().await {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
        }
    }
}

/// Serves the HTTP routes on `listener` with `security` until `stop` turns true.
pub async fn serve_http(
    listener: TcpListener,
    security: Security,
    queue: Queue,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let tls = security.tls.as_ref().map(|t| t.rustls_config()).transpose()?.map(TlsAcceptor::from);
    let app = app(queue, metrics, security.tokens.clone())?;
    tracing::info!(local = %listener.local_addr()?, tls = tls.is_some(), authentication = security.tokens.is_some(),
        "HTTP listening (dashboard, /metrics, /healthz)");
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return Ok(()),
        };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let served = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => builder.serve_connection(TokioIo::new(stream), service).await,
                        _ => return,
                    }
                }
                None => builder.serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Resolves once the server stops (the watch guard is dropped at once: it is not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
