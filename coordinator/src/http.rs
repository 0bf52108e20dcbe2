//! The coordinator's HTTP listener (`coordinator serve --http ADDR`, off by default): `/metrics`
//! in the Prometheus text format and `/healthz`, behind the same TLS certificate and tokens as the
//! gRPC listener (a bearer token of a user or admin credential when tokens are on).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Role, Security, TokenStore};
use crate::error::Result;
use crate::metrics::Metrics;

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    tokens: Option<Arc<TokenStore>>,
}

/// The routes, for tests and for [`serve_http`].
fn app(metrics: Arc<Metrics>, tokens: Option<Arc<TokenStore>>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(AppState { metrics, tokens })
}

async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(tokens) = &state.tokens {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let role = bearer.and_then(|token| tokens.verify(token.trim())).map(|c| c.role);
        if !matches!(role, Some(Role::User | Role::Admin)) {
            let why = "a bearer token of a user or admin credential is required\n";
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], why).into_response();
        }
    }
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
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let tls = security.tls.as_ref().map(|t| t.rustls_config()).transpose()?.map(TlsAcceptor::from);
    let app = app(metrics, security.tokens.clone());
    tracing::info!(local = %listener.local_addr()?, tls = tls.is_some(), authentication = security.tokens.is_some(),
        "HTTP listening (/metrics, /healthz)");
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
