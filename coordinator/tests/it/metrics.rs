//! `/metrics` on the HTTP listener: a scrape in the Prometheus text format whose values follow
//! what the coordinator did, and with tokens on, only a user or admin bearer token may read it.

use std::sync::Arc;
use std::time::Duration;

use coordinator::auth::TokenStore;
use coordinator::{Config, Database, Listener, Role, Security};
use sweep_proto::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::common::*;

/// A coordinator serving gRPC on one port and HTTP on another, both with `security`.
pub struct Served {
    pub grpc: String,
    pub http: std::net::SocketAddr,
    pub stop: oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<coordinator::Result<()>>,
}

pub async fn start(dir: &std::path::Path, security: Security) -> Served {
    let db = Database::open(&db_url(dir)).await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let listeners = vec![Listener { listener: grpc, security: security.clone() }];
    let task = tokio::spawn(coordinator::run_with_http(
        listeners,
        Some(Listener { listener: http, security }),
        db,
        Config::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Served { grpc: format!("http://{grpc_addr}"), http: http_addr, stop, task }
}

/// `GET path` over HTTP/1.1; the status code and the body.
pub async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: coordinator\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The value of the sample `name` (with its labels, e.g. `sweep_jobs{state="queued"}`).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn a_scrape_follows_the_queue_and_the_rpcs() {
    let dir = tempfile::tempdir().unwrap();
    let served = start(dir.path(), Security::none()).await;
    let mut sweeps =
        pb::sweep_service_client::SweepServiceClient::connect(served.grpc.clone()).await.unwrap();
    let mut w = pb::worker_service_client::WorkerServiceClient::connect(served.grpc.clone()).await.unwrap();
    submit(&mut sweeps, spec("m", &["natural_softmax"], &[0, 1], 2)).await.unwrap();
    register(&mut w, "gpu-box").await;
    let f = fence(&lease(&mut w, "gpu-box").await.unwrap());
    let (acks, err) = report(&mut w, vec![epoch_report(&f, 1, 0.4)]).await;
    assert!(err.is_none() && acks.len() == 1);

    let (status, text) = get(served.http, "/metrics", None).await;
    assert_eq!(status, 200, "{text}");
    let expected = [
        ("sweep_jobs{state=\"queued\"}", 1.0),
        ("sweep_jobs{state=\"running\"}", 1.0),
        ("sweep_jobs{state=\"succeeded\"}", 0.0),
        ("sweep_leases_granted_total", 1.0),
        ("sweep_leases_expired_total", 0.0),
        ("sweep_epochs_stored_total", 1.0),
        ("sweep_workers_alive", 1.0),
        ("sweep_worker_images_per_second{worker=\"gpu-box\"}", 1000.0),
        ("sweep_db_writer_queue_depth", 0.0),
        ("sweep_rpc_duration_seconds_count{method=\"LeaseJob\"}", 1.0),
        ("sweep_rpc_duration_seconds_count{method=\"SubmitSweep\"}", 1.0),
    ];
    for (name, value) in expected {
        assert_eq!(sample(&text, name), Some(value), "{name} in:\n{text}");
    }
    assert!(sample(&text, "sweep_db_write_batch_size_count").is_some_and(|n| n >= 3.0), "{text}");
    assert!(text.contains("# TYPE sweep_rpc_duration_seconds histogram"), "{text}");

    // A re-sent epoch is a duplicate and is not counted again; the next scrape sees it.
    let (acks, _) = report(&mut w, vec![epoch_report(&f, 1, 0.4)]).await;
    assert!(acks[0].duplicate);
    let (_, text) = get(served.http, "/metrics", None).await;
    assert_eq!(sample(&text, "sweep_epochs_stored_total"), Some(1.0));
    assert_eq!(sample(&text, "sweep_rpc_duration_seconds_count{method=\"ReportEpochs\"}"), Some(2.0));
    assert_eq!(get(served.http, "/healthz", None).await, (200, "ok\n".to_owned()));
    assert_eq!(get(served.http, "/nothing", None).await.0, 404);
    let _ = served.stop.send(());
    tokio::time::timeout(Duration::from_secs(10), served.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn with_tokens_only_a_user_or_admin_token_may_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TokenStore::in_memory());
    let (user, worker) = (store.add(Role::User, "grafana").unwrap(), store.add(Role::Worker, "gpu").unwrap());
    let served = start(dir.path(), Security { tls: None, tokens: Some(store) }).await;
    for token in [None, Some("swp_not-a-token"), Some(worker.expose())] {
        let (status, body) = get(served.http, "/metrics", token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(body.contains("bearer token"), "{body}");
    }
    let (status, body) = get(served.http, "/metrics", Some(user.expose())).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sweep_jobs{state=\"queued\"} 0"), "{body}");
    let _ = served.stop.send(());
    tokio::time::timeout(Duration::from_secs(10), served.task).await.unwrap().unwrap().unwrap();
}

/// `GET /metrics` over TLS, trusting `ca` and presenting `client` (certificate, key) if given;
/// `None` when the handshake or the request fails.
async fn get_tls(
    addr: std::net::SocketAddr,
    ca: &str,
    client: Option<(&str, &str)>,
    token: &str,
) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring::default_provider};
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
    let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.ok()?;
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await.ok()?;
    Some(response)
}

#[tokio::test]
async fn over_tls_the_listener_uses_the_grpc_certificate_and_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::secure::pki();
    let tokens = crate::secure::Tokens::new();
    let tls = coordinator::auth::ServerTls::from_pem(
        pki.server_cert.clone().into_bytes(),
        pki.server_key.clone().into_bytes(),
        Some(pki.ca.clone().into_bytes()),
    );
    let served = start(dir.path(), Security { tls: Some(tls), tokens: Some(tokens.store.clone()) }).await;
    let user = tokens.of(crate::secure::Who::User).unwrap();
    let client = Some((pki.client_cert.as_str(), pki.client_key.as_str()));
    let response = get_tls(served.http, &pki.ca, client, user.expose()).await.expect("a TLS scrape");
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains("sweep_jobs{state=\"queued\"} 0"),
        "{response}"
    );
    let refused = get_tls(served.http, &pki.ca, None, user.expose()).await;
    assert!(
        refused.as_ref().is_none_or(|r| !r.contains("sweep_jobs")),
        "a client without a certificate got {refused:?}"
    );
    let (status, _) = get(served.http, "/metrics", Some(user.expose())).await;
    assert_eq!(status, 0, "plaintext gets no HTTP answer from a TLS listener");
    let _ = served.stop.send(());
    tokio::time::timeout(Duration::from_secs(10), served.task).await.unwrap().unwrap().unwrap();
}
