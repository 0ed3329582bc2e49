//! A route: the connections to one server, and the clients of each tsn
//! service on them.

use tonic::transport::Channel;
use tsn_cluster::coord;
use tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES;
use tsn_proto::csce438::sns_service_client::SnsServiceClient;
use tsn_proto::tsn::posts_client::PostsClient;

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
}

impl Route {
    /// Opens (lazily) the connections to `addr`.
    pub(crate) fn connect(
        addr: &str,
        server_id: u32,
        cluster: u32,
        config: &RouterConfig,
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
        })
    }

    /// `SNSService` for unary calls.
    pub fn sns(&self) -> SnsServiceClient<Channel> {
        SnsServiceClient::new(self.lanes[0].clone())
            .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
    }

    /// `Posts` on the first connection.
    pub fn posts(&self) -> PostsClient<Channel> {
        self.posts_on(0)
    }

    /// `Posts` on connection `lane` (any number: it wraps around).
    pub fn posts_on(&self, lane: usize) -> PostsClient<Channel> {
        let channel = self.lanes[lane % self.lanes.len()].clone();
        PostsClient::new(channel).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
    }

    /// The first connection, bare: for a caller that brings its own
    /// service client. The client library itself calls only the open
    /// services; an internal one (`tsn.Replica`) needs the cluster secret,
    /// which the caller adds (`tsn_cluster::auth::ClusterAuth::wrap`).
    pub fn channel(&self) -> Channel {
        self.lanes[0].clone()
    }

    /// `SNSService` without a call time limit, for the timeline stream.
    pub fn stream(&self) -> SnsServiceClient<Channel> {
        SnsServiceClient::new(self.stream.clone()).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
    }
}
