//! The coordinator's Prometheus metrics: counters the queue updates as things happen, RPC
//! latency per method (a tower layer around the gRPC server), and gauges read when scraped (jobs
//! by state, workers alive, each worker's images/s, the database writer's queue). `/metrics` on
//! the HTTP listener renders them in the text format.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use sweep_proto::domain::JobState;

use crate::error::{Error, Result};
use crate::queue::Queue;

/// The RPC names latency is recorded under; any other path counts as `other`, so a client cannot
/// create series at will.
const METHODS: [&str; 20] = [
    "SubmitSweep",
    "ListSweeps",
    "GetSweep",
    "ListJobs",
    "GetJob",
    "ListWorkers",
    "WatchSweep",
    "CancelJob",
    "CancelSweep",
    "RetryJobs",
    "RegisterWorker",
    "LeaseJob",
    "Heartbeat",
    "ReportEpochs",
    "CompleteJob",
    "FailJob",
    "ReleaseJob",
    "PutCheckpoint",
    "GetCheckpoint",
    "Check",
];

/// Events the queue counts.
#[derive(Debug, Clone)]
pub struct QueueCounters {
    pub leases_granted: IntCounter,
    pub leases_expired: IntCounter,
    pub epochs_stored: IntCounter,
}

impl Default for QueueCounters {
    fn default() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid counter");
        QueueCounters {
            leases_granted: counter("sweep_leases_granted_total", "Job leases granted to workers"),
            leases_expired: counter("sweep_leases_expired_total", "Leases that expired without a heartbeat"),
            epochs_stored: counter(
                "sweep_epochs_stored_total",
                "Epoch reports stored (duplicates not counted)",
            ),
        }
    }
}

/// Every metric of one coordinator and where its scrape-time values come from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    queue: Queue,
    rpc_seconds: HistogramVec,
    jobs: IntGaugeVec,
    workers_alive: IntGauge,
    worker_images_per_second: GaugeVec,
    writer_queue_depth: IntGauge,
}

impl Metrics {
    /// The metrics of `queue` (its counters and its database's writer included).
    pub fn new(queue: Queue) -> Result<Arc<Metrics>> {
        let registry = Registry::new();
        let rpc_seconds = HistogramVec::new(
            HistogramOpts::new("sweep_rpc_duration_seconds", "gRPC call latency to the response headers")
                .buckets(prometheus::exponential_buckets(0.0001, 4.0, 10).expect("valid buckets")),
            &["method"],
        )
        .map_err(internal)?;
        let jobs = IntGaugeVec::new(Opts::new("sweep_jobs", "Jobs by state, over all sweeps"), &["state"])
            .map_err(internal)?;
        let workers_alive =
            IntGauge::new("sweep_workers_alive", "Workers heard from within three lease TTLs")
                .map_err(internal)?;
        let worker_images_per_second = GaugeVec::new(
            Opts::new(
                "sweep_worker_images_per_second",
                "Training throughput of each worker's running jobs, last epoch",
            ),
            &["worker"],
        )
        .map_err(internal)?;
        let writer_queue_depth =
            IntGauge::new("sweep_db_writer_queue_depth", "Writes waiting for the database writer")
                .map_err(internal)?;
        let counters = queue.counters();
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(rpc_seconds.clone()),
            Box::new(jobs.clone()),
            Box::new(workers_alive.clone()),
            Box::new(worker_images_per_second.clone()),
            Box::new(writer_queue_depth.clone()),
            Box::new(counters.leases_granted.clone()),
            Box::new(counters.leases_expired.clone()),
            Box::new(counters.epochs_stored.clone()),
            Box::new(queue.db().write_batch_sizes()),
        ];
        for collector in collectors {
            registry.register(collector).map_err(internal)?;
        }
        Ok(Arc::new(Metrics {
            registry,
            queue,
            rpc_seconds,
            jobs,
            workers_alive,
            worker_images_per_second,
            writer_queue_depth,
        }))
    }

    /// The layer that times every gRPC call.
    pub fn rpc_layer(&self) -> RpcTimer {
        RpcTimer { histogram: self.rpc_seconds.clone() }
    }

    /// Reads the scrape-time gauges and renders every metric in the Prometheus text format.
    pub async fn render(&self) -> Result<String> {
        let mut by_state = [0i64; 5];
        for summary in self.queue.summaries().await? {
            for (i, n) in
                [summary.queued, summary.running, summary.succeeded, summary.failed, summary.cancelled]
                    .into_iter()
                    .enumerate()
            {
                by_state[i] += i64::from(n);
            }
        }
        let states =
            [JobState::Queued, JobState::Running, JobState::Succeeded, JobState::Failed, JobState::Cancelled];
        for (state, n) in states.into_iter().zip(by_state) {
            self.jobs.with_label_values(&[state.as_str()]).set(n);
        }
        let alive_after = crate::db::now_ms() - 3 * self.queue.lease_ttl().as_millis() as i64;
        let workers = self.queue.workers().await?;
        self.workers_alive.set(workers.iter().filter(|w| w.last_seen_ms >= alive_after).count() as i64);
        self.worker_images_per_second.reset();
        for (worker, images_per_sec) in self.queue.running_throughput().await? {
            self.worker_images_per_second.with_label_values(&[worker.as_str()]).add(images_per_sec);
        }
        self.writer_queue_depth.set(self.queue.db().writer_queue_depth() as i64);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).map_err(internal)?;
        String::from_utf8(out).map_err(internal)
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("metrics: {e}"))
}

/// A tower layer recording each gRPC call's latency under its method name.
#[derive(Debug, Clone)]
pub struct RpcTimer {
    histogram: HistogramVec,
}

impl<S> tower::Layer<S> for RpcTimer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed { inner, histogram: self.histogram.clone() }
    }
}

/// See [`RpcTimer`].
#[derive(Debug, Clone)]
pub struct Timed<S> {
    inner: S,
    histogram: HistogramVec,
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Boxed<std::result::Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let name = request.uri().path().rsplit('/').next().unwrap_or_default();
        let method = METHODS.iter().find(|m| **m == name).copied().unwrap_or("other");
        let (histogram, started) = (self.histogram.clone(), Instant::now());
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            histogram.with_label_values(&[method]).observe(started.elapsed().as_secs_f64());
            response
        })
    }
}
