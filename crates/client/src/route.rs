//! A route: the connections to one server, and the clients of each tsn
//! service on them. Every client-facing call carries the session token of
//! the router's account, when it has one (`authorization: Bearer`).

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tsn_cluster::coord;
use tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES;
use tsn_proto::csce438::sns_service_client::SnsServiceClient;
use tsn_proto::tsn::posts_client::PostsClient;
use tsn_proto::tsn::sessions_client::SessionsClient;

/// Adds the session token, if any, to every call.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// The interceptor of `token`; `None` if it cannot be a header value.
    pub fn of(token: &str) -> Option<Bearer> {
        tsn_cluster::session::bearer_value(token).map(|v| Bearer(Some(v)))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(
                tsn_cluster::session::AUTHORIZATION_METADATA_KEY,
                value.clone(),
            );
        }
        Ok(request)
    }
}

/// A channel whose calls carry the session token.
pub type Authed = InterceptedService<Channel, Bearer>;

use crate::router::RouterConfig;

/// Connections to one server, named by the coordinator. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Route {
    /// `host:port` of the server.
    pub addr: String,
    /// The server's id and cluster as `GetServer` named them (0 for a
    /// fixed route).
    pub server_id: u32,
    pub cluster: u32,
    /// Channels with a per-call time limit, one per lane.
    lanes: Vec<Channel>,
    /// A channel without a per-call time limit, for long-lived streams.
    stream: Channel,
    bearer: Bearer,
}

impl Route {
    /// Opens (lazily) the connections to `addr`.
    pub(crate) fn connect(
        addr: &str,
        server_id: u32,
        cluster: u32,
        config: &RouterConfig,
        bearer: Bearer,
    ) -> anyhow::Result<Route> {
        assert!(config.lanes >= 1);
        let lanes = (0..config.lanes)
            .map(|_| coord::channel(addr, config.call_timeout_ms))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Route {
            addr: addr.to_string(),
            server_id,
            cluster,
            lanes,
            stream: coord::stream_channel(addr)?,
            bearer,
        })
    }

    /// `SNSService` for unary calls.
    pub fn sns(&self) -> SnsServiceClient<Authed> {
        SnsServiceClient::with_interceptor(self.lanes[0].clone(), self.bearer.clone())
            .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
    }

    /// `Sessions` (login, logout) on the first connection.
    pub fn sessions(&self) -> SessionsClient<Authed> {
        SessionsClient::with_interceptor(self.lanes[0].clone(), self.bearer.clone())
            .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
    }

    /// `Posts` on the first connection.
    pub fn posts(&self) -> PostsClient<Authed> {
        self.posts_on(0)
    }

    /// `Posts` on connection `lane` (any number: it wraps around).
    pub fn posts_on(&self, lane: usize) -> PostsClient<Authed> {
        let channel = self.lanes[lane % self.lanes.len()].clone();
        PostsClient::with_interceptor(channel, self.bearer.clone())
            .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
    }

    /// The first connection, bare: for a caller that brings its own
    /// service client. The client library itself calls only the open
    /// services; an internal one (`tsn.Replica`) needs the cluster secret,
    /// which the caller adds (`tsn_cluster::auth::ClusterAuth::wrap`).
    pub fn channel(&self) -> Channel {
        self.lanes[0].clone()
    }

    /// `SNSService` without a call time limit, for the timeline stream.
    pub fn stream(&self) -> SnsServiceClient<Authed> {
        SnsServiceClient::with_interceptor(self.stream.clone(), self.bearer.clone())
            .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
    }

    /// The stream connection, bare (no token): for a caller that brings
    /// its own service client.
    pub fn stream_channel(&self) -> Channel {
        self.stream.clone()
    }
}
