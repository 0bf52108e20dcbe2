//! What the library's client functions talk through ([`IntoSweepClient`]): a connected channel
//! or a `SweepServiceClient` over one, with reply limits sized for big sweeps; and reading a
//! whole sweep's jobs and epochs ([`sweep_details`]).

use sweep_proto::connect::{AuthChannel, BearerToken};
use sweep_proto::pb;
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Largest reply a client accepts (job lists and epoch tables of big sweeps).
pub const CLIENT_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Anything the library's client functions can talk through: a connected [`AuthChannel`] or
/// plain [`Channel`] (cheap to clone), or a `SweepServiceClient` over one (owned or borrowed).
pub trait IntoSweepClient {
    fn into_sweep_client(self) -> SweepServiceClient<AuthChannel>;
}

impl IntoSweepClient for AuthChannel {
    fn into_sweep_client(self) -> SweepServiceClient<AuthChannel> {
        SweepServiceClient::new(self).max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
    }
}

impl IntoSweepClient for Channel {
    fn into_sweep_client(self) -> SweepServiceClient<AuthChannel> {
        InterceptedService::new(self, BearerToken::default()).into_sweep_client()
    }
}

impl IntoSweepClient for SweepServiceClient<AuthChannel> {
    fn into_sweep_client(self) -> SweepServiceClient<AuthChannel> {
        self.max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
    }
}

impl IntoSweepClient for &mut SweepServiceClient<AuthChannel> {
    fn into_sweep_client(self) -> SweepServiceClient<AuthChannel> {
        self.clone().into_sweep_client()
    }
}

/// Every job of `sweep` with its stored epochs, by job id: one `ExportSweep` call, or one
/// `GetJob` per listed job from a coordinator that predates it.
pub async fn sweep_details(
    client: &mut SweepServiceClient<AuthChannel>,
    sweep: &str,
) -> Result<Vec<pb::JobDetail>, tonic::Status> {
    match client.export_sweep(pb::ExportSweepRequest { sweep: sweep.to_owned() }).await {
        Ok(stream) => {
            let mut stream = stream.into_inner();
            let mut details = Vec::new();
            while let Some(detail) = stream.message().await? {
                details.push(detail);
            }
            Ok(details)
        }
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            let listed =
                client.list_jobs(pb::ListJobsRequest { sweep: sweep.to_owned(), ..Default::default() });
            let mut details = Vec::new();
            for job in listed.await?.into_inner().jobs {
                let mut detail = client.get_job(pb::GetJobRequest { job_id: job.id }).await?.into_inner();
                detail.job.get_or_insert(job);
                details.push(detail);
            }
            Ok(details)
        }
        Err(status) => Err(status),
    }
}
