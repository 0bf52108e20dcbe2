//! Harness of the security tests: certificates generated with rcgen (a CA, a server certificate
//! for 127.0.0.1 and a client certificate), a token store with one credential per role, and a
//! real coordinator on 127.0.0.1:0 serving with them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coordinator::auth::{Role, ServerTls, TokenStore};
use coordinator::{Config, Database, Listener, Security};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sweep_proto::connect::{self, AuthChannel, ClientSecurity, Secret};
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Identity;

/// PEM files of one test PKI.
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

fn leaf(
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, "sweep test");
    params.extended_key_usages.push(usage);
    (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
}

/// A fresh CA with a server certificate (127.0.0.1, localhost) and a client certificate.
pub fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "sweep test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let (server_cert, server_key) = leaf(names, ExtendedKeyUsagePurpose::ServerAuth, &issuer);
    let (client_cert, client_key) =
        leaf(vec!["worker.test".into()], ExtendedKeyUsagePurpose::ClientAuth, &issuer);
    Pki { ca, server_cert, server_key, client_cert, client_key }
}

/// Who calls, in the role tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Anonymous,
    /// A token the coordinator does not know.
    Forged,
    Worker,
    OtherWorker,
    User,
    OtherUser,
    Admin,
}

impl Who {
    pub const ALL: [Who; 7] =
        [Who::Anonymous, Who::Forged, Who::Worker, Who::OtherWorker, Who::User, Who::OtherUser, Who::Admin];
}

/// The tokens of one secured server: worker `gpu-a`, worker `gpu-b`, user `alice`, user `bob`,
/// admin `root`.
#[derive(Clone)]
pub struct Tokens {
    pub store: Arc<TokenStore>,
    worker: Secret,
    other_worker: Secret,
    user: Secret,
    other_user: Secret,
    admin: Secret,
}

impl Tokens {
    pub fn new() -> Tokens {
        let store = Arc::new(TokenStore::in_memory());
        let add = |role, name| store.add(role, name).unwrap();
        Tokens {
            worker: add(Role::Worker, "gpu-a"),
            other_worker: add(Role::Worker, "gpu-b"),
            user: add(Role::User, "alice"),
            other_user: add(Role::User, "bob"),
            admin: add(Role::Admin, "root"),
            store,
        }
    }

    pub fn of(&self, who: Who) -> Option<Secret> {
        match who {
            Who::Anonymous => None,
            Who::Forged => {
                Some(Secret::new("swp_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"))
            }
            Who::Worker => Some(self.worker.clone()),
            Who::OtherWorker => Some(self.other_worker.clone()),
            Who::User => Some(self.user.clone()),
            Who::OtherUser => Some(self.other_user.clone()),
            Who::Admin => Some(self.admin.clone()),
        }
    }
}

/// A coordinator serving with TLS (optionally requiring client certificates) and tokens.
pub struct SecureServer {
    pub url: String,
    pub db: Database,
    pub pki: Pki,
    pub tokens: Tokens,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<coordinator::Result<()>>>,
}

impl SecureServer {
    /// `tls`: https with the test PKI (`client_certs`: clients must present one); otherwise
    /// plaintext with tokens.
    pub async fn start(dir: &Path, config: Config, tls: bool, client_certs: bool) -> SecureServer {
        let db = Database::open(&crate::common::sqlite_url(dir)).await.expect("open database");
        let pki = pki();
        let tokens = Tokens::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_tls = tls.then(|| {
            let client_ca = client_certs.then(|| pki.ca.clone().into_bytes());
            ServerTls::from_pem(
                pki.server_cert.clone().into_bytes(),
                pki.server_key.clone().into_bytes(),
                client_ca,
            )
        });
        let security = Security { tls: server_tls, tokens: Some(tokens.store.clone()) };
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = vec![Listener { listener, security }];
        let task = tokio::spawn(coordinator::run_listeners(listeners, db.clone(), config, async {
            let _ = stopped.await;
        }));
        let url = format!("{}://{addr}", if tls { "https" } else { "http" });
        SecureServer { url, db, pki, tokens, stop: Some(stop), task: Some(task) }
    }

    /// What `who` presents: the test CA (for https), a client certificate and its token.
    pub fn security(&self, who: Who) -> ClientSecurity {
        let https = self.url.starts_with("https://");
        ClientSecurity {
            ca_cert: https.then(|| self.pki.ca.clone().into_bytes()),
            identity: https.then(|| Identity::from_pem(&self.pki.client_cert, &self.pki.client_key)),
            token: self.tokens.of(who),
        }
    }

    pub async fn channel(&self, who: Who) -> AuthChannel {
        connect::connect(&self.url, &self.security(who)).await.expect("connect")
    }

    pub async fn sweeps(&self, who: Who) -> SweepServiceClient<AuthChannel> {
        SweepServiceClient::new(self.channel(who).await)
    }

    pub async fn workers(&self, who: Who) -> WorkerServiceClient<AuthChannel> {
        WorkerServiceClient::new(self.channel(who).await)
    }

    /// Every row of every table, to show that a refused call changed nothing.
    pub async fn snapshot(&self) -> String {
        let pool = self.db.sqlite_reader().expect("a SQLite database");
        let mut out = String::new();
        for table in ["sweeps", "jobs", "epochs", "workers"] {
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1)")
                .bind(table)
                .fetch_all(pool)
                .await
                .unwrap();
            let sql = format!(
                "SELECT json_group_array(json_array({})) FROM (SELECT * FROM {table} ORDER BY 1, 2)",
                columns.join(", ")
            );
            let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.unwrap();
            out.push_str(&format!("{table}: {rows}\n"));
        }
        out
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("server stops").unwrap().unwrap();
        self.db.clone().close().await;
    }
}
