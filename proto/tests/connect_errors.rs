//! What a client is told when it cannot reach the coordinator: a refused connection names the
//! address and where it is set, an address without a scheme suggests one, and TLS is never
//! dropped for an `https://` address nor plaintext used when TLS options were given.

use std::time::Duration;

use sweep_proto::connect::{self, ADDRESS_SET_BY, ClientSecurity, ConnectArgs, ConnectError};
use tokio::io::AsyncReadExt;

/// A local port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

#[tokio::test]
async fn a_refused_connection_names_the_address_and_asks_if_it_is_running() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let err = connect::connect(&url, &ClientSecurity::default()).await.unwrap_err();
    assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&url) && text.contains("connection refused; is it running?"), "{text}");
    assert!(!text.contains("TLS"), "a refused connection is not a TLS mismatch: {text}");
    assert!(!text.contains("--coordinator"), "a bare URL did not come from the flag: {text}");

    // Through the client flags, the message also says which flag and env var set the address.
    let text = ConnectArgs::plain(url.as_str()).connect().await.unwrap_err().to_string();
    assert!(text.contains(&url) && text.contains("is it running?"), "{text}");
    assert!(text.contains("--coordinator or SWEEP_COORDINATOR"), "{text}");
}

#[test]
fn the_named_flag_and_env_var_are_the_ones_that_set_the_address() {
    use clap::Args;
    let command = ConnectArgs::augment_args(clap::Command::new("client"));
    let arg = command.get_arguments().find(|a| a.get_id() == "coordinator").expect("--coordinator");
    let long = format!("--{}", arg.get_long().unwrap());
    let env = arg.get_env().unwrap().to_str().unwrap().to_owned();
    assert!(ADDRESS_SET_BY.contains(&format!("{long} or {env}")), "{ADDRESS_SET_BY} vs {long}, {env}");
}

#[tokio::test]
async fn a_refused_call_on_a_lazy_channel_gets_the_same_question() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let channel = connect::connect_lazy(&url, &ClientSecurity::default()).unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status =
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap_err();
    let hint = connect::plaintext_hint(&url, &status);
    assert!(hint.contains("connection refused: is the coordinator running?"), "{hint}");
    assert!(hint.contains("--coordinator or SWEEP_COORDINATOR"), "{hint}");
}

#[tokio::test]
async fn an_address_without_a_scheme_is_rejected_before_connecting() {
    let err = ConnectArgs::plain("127.0.0.1:50051").connect().await.unwrap_err();
    assert!(matches!(err, ConnectError::NoScheme { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("\"127.0.0.1:50051\" has no scheme"), "{text}");
    assert!(
        text.contains("use http://127.0.0.1:50051 (plaintext) or https://127.0.0.1:50051 (TLS)"),
        "{text}"
    );
    assert!(text.contains("--coordinator or SWEEP_COORDINATOR"), "{text}");
    // Long-running clients build their endpoint (or lazy channel) first: the same error, at once.
    let err = connect::connect_lazy("127.0.0.1:50051", &ClientSecurity::default()).unwrap_err();
    assert!(matches!(err, ConnectError::NoScheme { .. }), "{err:?}");
}

#[tokio::test]
async fn tls_options_with_an_http_address_fail_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    // The port is closed: an attempt to connect would be a refused connection instead.
    let url = format!("http://127.0.0.1:{}", closed_port());
    let mut args = ConnectArgs::plain(url.as_str());
    args.ca_cert = Some(ca);
    let err = args.connect().await.unwrap_err();
    assert!(matches!(err, ConnectError::TlsOverPlaintext(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("need an https:// coordinator address"), "{text}");
    assert!(text.contains(&url.replacen("http://", "https://", 1)), "{text}");
}

#[tokio::test]
async fn an_https_address_without_a_ca_flag_still_speaks_tls() {
    // A server that records the first bytes it receives, then hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut first = [0u8; 3];
        socket.read_exact(&mut first).await.unwrap();
        first
    });
    let err = ConnectArgs::plain(url.as_str()).connect().await.unwrap_err();
    assert!(matches!(err, ConnectError::Connect { .. }), "{err:?}");
    let first = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    // 0x16 0x03: a TLS handshake record (a ClientHello), not the plaintext HTTP/2 preface "PRI".
    assert_eq!(&first[..2], &[0x16, 0x03], "the client sent {first:?}");
}
