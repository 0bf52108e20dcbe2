//! TLS: a client must speak TLS to a TLS coordinator, trust its CA, and present a certificate
//! when the coordinator requires one; each failure is a clear error and changes nothing.

use std::time::Duration;

use sweep_proto::connect::{self, ClientSecurity};
use sweep_proto::pb;
use sweep_proto::pb::sweep_service_client::SweepServiceClient;

use crate::common::spec;
use crate::secure::{SecureServer, Who};

/// Tries to connect and submit a sweep; the error text when either fails.
async fn try_submit(url: &str, security: &ClientSecurity) -> Result<(), String> {
    let attempt = async {
        let channel = connect::connect(url, security).await.map_err(|e| e.to_string())?;
        let request = pb::SubmitSweepRequest { spec: Some(spec("tls", &["natural_softmax"], &[0], 1)) };
        let mut client = SweepServiceClient::new(channel);
        client.submit_sweep(request).await.map(|_| ()).map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    };
    tokio::time::timeout(Duration::from_secs(20), attempt).await.expect("fails fast, not hangs")
}

#[tokio::test]
async fn a_plaintext_client_cannot_talk_to_a_tls_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let server = SecureServer::start(dir.path(), coordinator::Config::default(), true, false).await;
    let before = server.snapshot().await;
    let plain_url = server.url.replacen("https://", "http://", 1);
    let token_only = ClientSecurity { token: server.tokens.of(Who::User), ..ClientSecurity::default() };
    let err = try_submit(&plain_url, &token_only).await.unwrap_err();
    assert!(
        err.contains("cannot connect") && err.contains("if the coordinator serves TLS, use an https://"),
        "{err}"
    );
    // TLS options with an http:// address are refused before anything is sent.
    let err = try_submit(&plain_url, &server.security(Who::User)).await.unwrap_err();
    assert!(err.contains("need an https:// coordinator address"), "{err}");
    assert_eq!(server.snapshot().await, before);
    // The same client over https with the CA gets through.
    try_submit(&server.url, &server.security(Who::User)).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn the_coordinator_certificate_must_chain_to_a_trusted_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = SecureServer::start(dir.path(), coordinator::Config::default(), true, false).await;
    // Without --ca-cert the public web CAs are trusted, and they did not sign the test certificate.
    let public_roots = ClientSecurity { token: server.tokens.of(Who::User), ..ClientSecurity::default() };
    let err = try_submit(&server.url, &public_roots).await.unwrap_err();
    assert!(err.contains("cannot connect") && err.to_lowercase().contains("certificate"), "{err}");
    // Another CA is no better.
    let other = crate::secure::pki();
    let wrong_ca = ClientSecurity { ca_cert: Some(other.ca.into_bytes()), ..public_roots };
    assert!(try_submit(&server.url, &wrong_ca).await.is_err());
    assert!(server.snapshot().await.contains("sweeps: []"));
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = SecureServer::start(dir.path(), coordinator::Config::default(), true, true).await;
    let no_cert = ClientSecurity { identity: None, ..server.security(Who::User) };
    assert!(try_submit(&server.url, &no_cert).await.is_err());
    let other = crate::secure::pki();
    let foreign = ClientSecurity {
        identity: Some(tonic::transport::Identity::from_pem(other.client_cert, other.client_key)),
        ..server.security(Who::User)
    };
    assert!(try_submit(&server.url, &foreign).await.is_err());
    assert!(server.snapshot().await.contains("sweeps: []"));
    try_submit(&server.url, &server.security(Who::User)).await.unwrap();
    // The certificate proves the machine, not the role: a token is still required.
    let anonymous = server.security(Who::Anonymous);
    let err = try_submit(&server.url, &anonymous).await.unwrap_err();
    assert!(err.starts_with("Unauthenticated"), "{err}");
    server.stop().await;
}
