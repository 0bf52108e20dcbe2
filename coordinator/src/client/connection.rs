//! What the library's client functions talk through ([`IntoSweepClient`]): a connected channel
//! or a `SweepServiceClient` over one, with reply limits sized for big sweeps.

use sweep_proto::connect::{AuthChannel, BearerToken};
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
