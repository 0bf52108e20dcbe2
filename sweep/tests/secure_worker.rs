//! The multi-machine set-up of the README, on one machine: a coordinator serving TLS that requires
//! client certificates and tokens, the real worker agent (CPU, tiny random data) attached with a
//! worker token, a user submitting and following a sweep with a user token. A worker presenting a
//! user's token is refused at registration and stops instead of retrying.

use std::sync::Arc;
use std::time::Duration;

use coordinator::auth::{Role, ServerTls, TokenStore};
use coordinator::{Config, Database, Listener, Security};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use sweep_proto::connect::{self, ClientSecurity, Secret};
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::{DataOptions, SubmitSweepRequest, SweepSpec};
use tokio::sync::watch;
use tonic::transport::Identity;
use worker::Cifar10;
use worker::agent::{AgentConfig, AgentError, SlotChoice, run_agent_with};
use worker::device::DeviceChoice;
use worker::training::FuseChoice;

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str, usage| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages.push(usage);
        (params.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
    };
    let server = leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
    let client = leaf("gpu-01.lab", ExtendedKeyUsagePurpose::ClientAuth);
    Pki { ca, server, client }
}

/// 320 training and 64 test images of random pixels.
fn tiny_data() -> Arc<Cifar10> {
    let image = 3 * 32 * 32;
    let pixels = |n: usize, salt: usize| (0..n * image).map(|i| ((i * 31 + salt) % 251) as u8).collect();
    let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect();
    Arc::new(Cifar10::from_parts(pixels(320, 7), labels(320), pixels(64, 3), labels(64)))
}

fn agent_config(url: &str, id: &str) -> AgentConfig {
    AgentConfig {
        commands: Default::default(),
        coordinator: url.to_owned(),
        worker_id: id.into(),
        hostname: "gpu-01".into(),
        devices: vec![DeviceChoice::Cpu],
        slots: SlotChoice::Fixed(1),
        fuse: FuseChoice::Fixed(1),
        kernels: Default::default(),
        checkpoints: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_trains_over_mutual_tls_with_a_worker_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&format!("sqlite://{}?mode=rwc", dir.path().join("sweep.db").display()))
        .await
        .unwrap();
    let pki = pki();
    let store = Arc::new(TokenStore::in_memory());
    let worker_token = store.add(Role::Worker, "gpu-fleet").unwrap();
    let user_token = store.add(Role::User, "alice").unwrap();
    let tls = ServerTls::from_pem(
        pki.server.0.clone().into_bytes(),
        pki.server.1.clone().into_bytes(),
        Some(pki.ca.clone().into_bytes()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let listeners = vec![Listener { listener, security: Security { tls: Some(tls), tokens: Some(store) } }];
    let (stop_server, mut stopped) = watch::channel(false);
    let server =
        tokio::spawn(coordinator::run_listeners(listeners, db.clone(), Config::default(), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));

    let security = |token: &Secret| ClientSecurity {
        ca_cert: Some(pki.ca.clone().into_bytes()),
        identity: Some(Identity::from_pem(&pki.client.0, &pki.client.1)),
        token: Some(token.clone()),
    };
    // A worker with a user's token is refused at once and does not retry.
    let (_keep, stop) = watch::channel(false);
    let refused = run_agent_with(agent_config(&url, "impostor"), security(&user_token), tiny_data(), stop);
    let refused = tokio::time::timeout(Duration::from_secs(20), refused).await.expect("stops, not retries");
    assert!(matches!(refused, Err(AgentError::Refused(ref s)) if s.code() == tonic::Code::PermissionDenied));

    let channel = connect::connect(&url, &security(&user_token)).await.unwrap();
    let spec = SweepSpec {
        name: "secure".into(),
        variants: vec!["natural_softmax".into()],
        seeds: vec![0, 1],
        epochs: 1,
        batch_size: 32,
        data: Some(DataOptions {
            train_limit: 320,
            test_limit: 64,
            width_multiplier: 0.125,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut user = SweepServiceClient::new(channel.clone());
    user.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await.unwrap();
    let (stop_worker, stop) = watch::channel(false);
    let agent = tokio::spawn(run_agent_with(
        agent_config(&url, "gpu-01-1"),
        security(&worker_token),
        tiny_data(),
        stop,
    ));
    let follow =
        coordinator::client::watch::follow(channel, "secure", coordinator::client::watch::Progress::Hidden);
    let done = tokio::time::timeout(Duration::from_secs(180), follow).await.expect("sweep ends").unwrap();
    assert_eq!((done.succeeded, done.failed, done.epochs_done), (2, 0, 2));
    let _ = stop_worker.send(true);
    agent.await.unwrap().unwrap();

    let owner: String = sqlx::query_scalar("SELECT owner FROM workers WHERE id = 'gpu-01-1'")
        .fetch_one(db.sqlite_reader().expect("a SQLite database"))
        .await
        .unwrap();
    assert_eq!(owner, "gpu-fleet");
    let _ = stop_server.send(true);
    server.await.unwrap().unwrap();
    db.close().await;
}
