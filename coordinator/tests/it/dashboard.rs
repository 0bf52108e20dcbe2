//! The dashboard over HTTP: the sweep list, a sweep's page whose box plot, curves and job table
//! follow the database, the Server-Sent Events that tell a browser to redraw, the CSV downloads,
//! and with tokens on, the browser's way in (`?token=` becomes an HttpOnly cookie).

use std::sync::Arc;
use std::time::Duration;

use coordinator::auth::TokenStore;
use coordinator::{Role, Security};
use sweep_proto::pb;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::common::*;
use crate::metrics::{Served, get, start};

/// The whole response (status line, headers, body) to `GET path` with extra header lines.
async fn get_raw(addr: std::net::SocketAddr, path: &str, headers: &str) -> String {
    send(addr, "GET", path, headers).await
}

/// The status of `POST path` with extra header lines.
async fn post(addr: std::net::SocketAddr, path: &str, headers: &str) -> u16 {
    let response = send(addr, "POST", path, &format!("Content-Length: 0\r\n{headers}")).await;
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

async fn send(addr: std::net::SocketAddr, method: &str, path: &str, headers: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: coordinator\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// The job-table rows of a page: (job id, state, epochs) in page order.
fn job_rows(html: &str) -> Vec<(i64, String, String)> {
    html.split("<tr data-job=\"")
        .skip(1)
        .map(|row| {
            let id = row.split('"').next().unwrap().parse().unwrap();
            let cells: Vec<&str> = row
                .split("<td")
                .skip(1)
                .map(|c| c.split_once('>').unwrap().1.split("</td>").next().unwrap())
                .collect();
            (id, cells[3].to_owned(), cells[6].to_owned())
        })
        .collect()
}

async fn stop(served: Served) {
    let _ = served.stop.send(());
    tokio::time::timeout(Duration::from_secs(10), served.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn the_page_follows_the_sweep_and_events_say_when_to_redraw() {
    let dir = tempfile::tempdir().unwrap();
    let served = start(dir.path(), Security::none()).await;
    let mut sweeps =
        pb::sweep_service_client::SweepServiceClient::connect(served.grpc.clone()).await.unwrap();
    let mut w = pb::worker_service_client::WorkerServiceClient::connect(served.grpc.clone()).await.unwrap();
    submit(&mut sweeps, spec("live", &["natural_softmax", "normal_lr1e-3"], &[0, 1], 2)).await.unwrap();

    let (status, list) = get(served.http, "/", None).await;
    assert_eq!(status, 200);
    assert!(list.contains("<a href=\"/sweeps/live\">live</a>") && list.contains("4 queued"), "{list}");
    assert_eq!(get(served.http, "/sweeps/nope", None).await.0, 404);

    let (status, page) = get(served.http, "/sweeps/live", None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<figure id=\"boxplot\"><svg") && page.contains("<figure id=\"curves\"><svg"),
        "{page}"
    );
    assert!(page.contains("new EventSource("));
    assert!(!page.contains(" src=") && !page.contains("<link"), "no external assets: works offline");
    assert!(page.contains("width=device-width"), "fits a phone");
    let rows = job_rows(&page);
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|(_, state, epochs)| state == "queued" && epochs == "0/2"), "{rows:?}");

    // A browser's event stream: it hears of the lease and the stored epoch of this sweep.
    let mut events = tokio::net::TcpStream::connect(served.http).await.unwrap();
    events
        .write_all(b"GET /sweeps/live/events HTTP/1.1\r\nHost: c\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut events = BufReader::new(events);
    let mut line = String::new();
    events.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    register(&mut w, "gpu-box").await;
    let f = fence(&lease(&mut w, "gpu-box").await.unwrap());
    let (acks, _) = report(&mut w, vec![epoch_report(&f, 1, 0.61)]).await;
    assert_eq!(acks.len(), 1);
    let mut heard = Vec::new();
    while !heard.contains(&format!("data: epoch {}", f.job_id)) {
        line.clear();
        tokio::time::timeout(Duration::from_secs(5), events.read_line(&mut line))
            .await
            .expect("an event")
            .unwrap();
        if line.starts_with("data: ") {
            heard.push(line.trim().to_owned());
        }
    }
    assert_eq!(heard, [format!("data: job {}", f.job_id), format!("data: epoch {}", f.job_id)]);

    // What the redraw fetches now shows the running job, its epoch and the worker.
    let (status, live) = get(served.http, "/sweeps/live/live", None).await;
    assert_eq!(status, 200);
    let rows = job_rows(&live);
    let row = rows.iter().find(|r| r.0 == f.job_id).unwrap();
    assert_eq!((row.1.as_str(), row.2.as_str()), ("running", "1/2"));
    assert!(live.contains("61.00 % @1") && live.contains("<td>gpu-box</td>"), "{live}");
    assert!(live.contains(&format!("<td>{} (", f.job_id)), "the worker's row names its job: {live}");
    let (_, text) = report(&mut w, vec![epoch_report(&f, 2, 0.7)]).await;
    assert!(text.is_none());
    w.complete_job(pb::CompleteJobRequest { fence: Some(f.clone()) }).await.unwrap();
    let (_, live) = get(served.http, "/sweeps/live/live", None).await;
    let detail = sweeps.get_job(pb::GetJobRequest { job_id: f.job_id }).await.unwrap().into_inner();
    let row = job_rows(&live).into_iter().find(|r| r.0 == f.job_id).unwrap();
    assert_eq!((row.1.as_str(), detail.job.unwrap().state), ("succeeded", pb::JobState::Succeeded as i32));

    // The buttons (authentication off: every caller may act), and their guard against other sites.
    let other = rows.iter().find(|r| r.1 == "queued").unwrap().0;
    assert!(live.contains(&format!("data-post=\"/jobs/{other}/cancel\"")), "{live}");
    assert_eq!(
        post(served.http, &format!("/jobs/{other}/cancel"), "").await,
        403,
        "no X-Sweep-Action header"
    );
    assert_eq!(post(served.http, &format!("/jobs/{other}/cancel"), "X-Sweep-Action: 1\r\n").await, 204);
    let state = |id| {
        let mut sweeps = sweeps.clone();
        async move {
            sweeps.get_job(pb::GetJobRequest { job_id: id }).await.unwrap().into_inner().job.unwrap().state
        }
    };
    assert_eq!(state(other).await, pb::JobState::Cancelled as i32);
    assert_eq!(post(served.http, &format!("/jobs/{other}/retry"), "X-Sweep-Action: 1\r\n").await, 204);
    assert_eq!(state(other).await, pb::JobState::Queued as i32);
    assert_eq!(post(served.http, &format!("/jobs/{}/retry", f.job_id), "X-Sweep-Action: 1\r\n").await, 409);
    assert_eq!(post(served.http, "/jobs/999/cancel", "X-Sweep-Action: 1\r\n").await, 404);

    // The static report, as `coordinator report` writes it; only its own files are served.
    let redirect = get_raw(served.http, "/sweeps/live/report", "").await;
    assert!(redirect.to_lowercase().contains("location: /sweeps/live/report/index.html"), "{redirect}");
    let (status, index) = get(served.http, "/sweeps/live/report/index.html", None).await;
    assert!(status == 200 && index.contains("Sweep report: live"), "{status}: {index}");
    let gif = get_raw(served.http, "/sweeps/live/report/curves.gif", "").await;
    assert!(
        gif.starts_with("HTTP/1.1 200") && gif.to_lowercase().contains("content-type: image/gif"),
        "{gif}"
    );
    assert_eq!(get(served.http, "/sweeps/live/report/..%2Fsweep.db", None).await.0, 404);
    assert_eq!(get(served.http, "/sweeps/live/report/sweep.db", None).await.0, 404);

    let (status, csv) = get(served.http, "/sweeps/live/results.csv", None).await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 5, "a header and one row per job:\n{csv}");
    let (_, csv) = get(served.http, "/sweeps/live/epochs.csv", None).await;
    assert_eq!(csv.lines().count(), 3, "a header and the two stored epochs:\n{csv}");
    stop(served).await;
}

#[tokio::test]
async fn with_tokens_a_browser_comes_in_once_with_its_token_and_keeps_a_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TokenStore::in_memory());
    let (user, worker) = (store.add(Role::User, "alice").unwrap(), store.add(Role::Worker, "gpu").unwrap());
    let admin = store.add(Role::Admin, "root").unwrap();
    let served = start(dir.path(), Security { tls: None, tokens: Some(store) }).await;
    assert_eq!(get(served.http, "/", None).await.0, 401);
    assert_eq!(get(served.http, &format!("/?token={}", worker.expose()), None).await.0, 401);
    let response = get_raw(served.http, &format!("/?token={}", user.expose()), "").await;
    assert!(response.starts_with("HTTP/1.1 303"), "{response}");
    let cookie = format!("sweep_token={}; HttpOnly; SameSite=Strict; Path=/", user.expose());
    assert!(
        response.to_lowercase().contains(&format!("set-cookie: {}", cookie.to_lowercase())),
        "{response}"
    );
    assert!(
        response.to_lowercase().contains("location: /\r\n"),
        "the token leaves the address bar: {response}"
    );
    let page = get_raw(served.http, "/", &format!("Cookie: sweep_token={}\r\n", user.expose())).await;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<h1>Sweeps</h1>"), "{page}");
    assert_eq!(get(served.http, "/healthz", None).await.0, 200, "probes need no token");

    // A user sees no buttons and may not act; an admin may.
    let channel =
        tonic::transport::Channel::from_shared(served.grpc.clone()).unwrap().connect().await.unwrap();
    let bearer = format!("Bearer {}", user.expose());
    let mut sweeps = pb::sweep_service_client::SweepServiceClient::with_interceptor(
        channel,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.parse().unwrap());
            Ok(r)
        },
    );
    let owned = pb::SubmitSweepRequest { spec: Some(spec("owned", &["natural_softmax"], &[0], 1)) };
    sweeps.submit_sweep(owned).await.unwrap();
    let as_user = format!("Cookie: sweep_token={}\r\n", user.expose());
    let page = get_raw(served.http, "/sweeps/owned", &as_user).await;
    assert!(page.contains("<tr data-job=") && !page.contains("data-post="), "{page}");
    let cancel = "/sweeps/owned/cancel";
    assert_eq!(post(served.http, cancel, &format!("{as_user}X-Sweep-Action: 1\r\n")).await, 403);
    let as_admin = format!("Authorization: Bearer {}\r\nX-Sweep-Action: 1\r\n", admin.expose());
    assert!(
        get_raw(served.http, "/sweeps/owned", &as_admin).await.contains("data-post=\"/sweeps/owned/cancel\"")
    );
    assert_eq!(post(served.http, cancel, &as_admin).await, 204);
    let summary = sweeps.get_sweep(pb::GetSweepRequest { sweep: "owned".into() }).await.unwrap().into_inner();
    assert_eq!(summary.cancelled, 1);
    stop(served).await;
}

#[tokio::test]
async fn a_command_sweep_is_drawn_on_its_objective_for_each_parameter_point() {
    let dir = tempfile::tempdir().unwrap();
    let served = start(dir.path(), Security::none()).await;
    let mut sweeps =
        pb::sweep_service_client::SweepServiceClient::connect(served.grpc.clone()).await.unwrap();
    let mut w = pb::worker_service_client::WorkerServiceClient::connect(served.grpc.clone()).await.unwrap();
    let spec = pb::SweepSpec {
        name: "byo".into(),
        seeds: vec![0, 1],
        epochs: 2,
        command: Some(pb::CommandSpec {
            template: "python3 train.py --lr {lr}".into(),
            grid: [("lr".to_string(), pb::ParamValues { values: vec!["0.1".into(), "0.01".into()] })].into(),
            ..Default::default()
        }),
        objective: Some(pb::Objective { metric: "val_loss".into(), mode: pb::objective::Mode::Min as i32 }),
        ..Default::default()
    };
    submit(&mut sweeps, spec.clone()).await.unwrap();
    // Ranked by a metric its jobs never report: nothing to draw.
    let bare = pb::SweepSpec {
        name: "bare".into(),
        objective: Some(pb::Objective { metric: "top5".into(), mode: pb::objective::Mode::Max as i32 }),
        ..spec
    };
    submit(&mut sweeps, bare).await.unwrap();
    register(&mut w, "w").await;
    let kinds = vec![pb::JobKind::Command as i32];
    while let Some(job) = w
        .lease_job(pb::LeaseJobRequest { worker_id: "w".into(), slot: 0, kinds: kinds.clone() })
        .await
        .unwrap()
        .into_inner()
        .job
    {
        let f = fence(&job);
        let reports = (1..=2)
            .map(|epoch| {
                let loss = 1.0 / f64::from(epoch) + job.seed as f64 / 100.0;
                let m = pb::EpochMetrics {
                    epoch,
                    val_loss: Some(loss),
                    train_loss: Some(loss),
                    ..Default::default()
                };
                pb::EpochReport { fence: Some(f.clone()), metrics: Some(m) }
            })
            .collect();
        assert!(report(&mut w, reports).await.1.is_none());
        w.complete_job(pb::CompleteJobRequest { fence: Some(f) }).await.unwrap();
    }
    let (status, page) = get(served.http, "/sweeps/byo", None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<figure id=\"boxplot\"><svg") && page.contains("lowest validation loss"),
        "{page}"
    );
    assert!(page.contains("lr=0.01") && page.contains("<th>lowest val_loss</th>"), "{page}");
    // The worker registered one slot and reported none busy since.
    assert!(page.contains("<th>slots idle</th>") && page.contains("<td>1 of 1</td>"), "{page}");
    let (status, index) = get(served.http, "/sweeps/byo/report/index.html", None).await;
    assert!(status == 200 && index.contains("Lowest validation loss per variant"), "{status}: {index}");
    let (status, page) = get(served.http, "/sweeps/bare", None).await;
    assert!(status == 200 && page.contains("No figures: ") && page.contains("reported no top5"), "{page}");
    let (status, why) = get(served.http, "/sweeps/bare/report/index.html", None).await;
    assert!(status == 409 && why.contains("reported no top5"), "{status}: {why}");
    stop(served).await;
}
