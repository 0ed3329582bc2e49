//! A client of the coordinator, and channels to any tsn process.
//!
//! Channels connect lazily and reconnect by themselves, so a restarted
//! coordinator or server is reached again without any special handling;
//! every call has a time limit.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tsn_proto::csce438::{coord_service_client::CoordServiceClient, Id, ServerInfo};
use tsn_proto::tsn::{
    coordinator_client::CoordinatorClient, AssignRequest, ClusterView, ClustersRequest,
    HeartbeatReply, HeartbeatRequest, InSyncChange, InSyncReply,
};

use crate::auth::{Attach, AuthChannel, ClusterAuth};
use crate::limits::{CONNECT_TIMEOUT_MS, COORDINATOR_CALL_TIMEOUT_MS, GRPC_MESSAGE_MAX_BYTES};
use crate::tls::Tls;

/// A lazily connected channel to `addr` (`host:port`) whose calls time out
/// after `timeout_ms`; over TLS when the process has it
/// ([`crate::tls::process_tls`]).
pub fn channel(addr: &str, timeout_ms: u64) -> anyhow::Result<Channel> {
    channel_with(addr, timeout_ms, crate::tls::process_tls().as_ref())
}

/// [`channel`] over `tls` (plaintext when `None`), whatever the process has.
pub fn channel_with(addr: &str, timeout_ms: u64, tls: Option<&Tls>) -> anyhow::Result<Channel> {
    let endpoint = endpoint(addr)?
        .timeout(Duration::from_millis(timeout_ms))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(connect_lazy(endpoint, tls))
}

/// A channel without a per-call time limit, for long-lived streams.
pub fn stream_channel(addr: &str) -> anyhow::Result<Channel> {
    stream_channel_with(addr, crate::tls::process_tls().as_ref())
}

/// [`stream_channel`] over `tls` (plaintext when `None`).
pub fn stream_channel_with(addr: &str, tls: Option<&Tls>) -> anyhow::Result<Channel> {
    let endpoint = endpoint(addr)?
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2));
    Ok(connect_lazy(endpoint, tls))
}

fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| anyhow::anyhow!("bad address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true))
}

/// Every channel of tsn is made here: with TLS, each new connection dials
/// through [`crate::tls::Connector`] with the configuration current then.
fn connect_lazy(endpoint: Endpoint, tls: Option<&Tls>) -> Channel {
    match tls {
        None => endpoint.connect_lazy(),
        Some(tls) => endpoint.connect_with_connector_lazy(crate::tls::Connector::new(tls.clone())),
    }
}

/// A client of the coordinator: the classic `GetServer` (open to anyone)
/// and the internal `tsn.Coordinator` calls, which carry the cluster secret
/// when the client has one.
#[derive(Clone)]
pub struct CoordClient {
    addr: String,
    control: CoordinatorClient<AuthChannel>,
    classic: CoordServiceClient<Channel>,
}

impl CoordClient {
    /// A client without the cluster secret: `get_server` works, the
    /// internal calls are refused (`UNAUTHENTICATED`).
    pub fn new(addr: &str) -> anyhow::Result<CoordClient> {
        CoordClient::with_attach(addr, Attach::none())
    }

    /// A client whose internal calls carry `auth`'s secret.
    pub fn with_auth(addr: &str, auth: &ClusterAuth) -> anyhow::Result<CoordClient> {
        CoordClient::with_attach(addr, auth.attach())
    }

    fn with_attach(addr: &str, attach: Attach) -> anyhow::Result<CoordClient> {
        let ch = channel(addr, COORDINATOR_CALL_TIMEOUT_MS)?;
        Ok(CoordClient {
            addr: addr.to_string(),
            control: CoordinatorClient::with_interceptor(ch.clone(), attach)
                .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
            classic: CoordServiceClient::new(ch),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatReply, tonic::Status> {
        Ok(self.control.clone().heartbeat(req).await?.into_inner())
    }

    /// The current primary of `user`'s cluster (the classic lookup).
    pub async fn get_server(&self, user: u32) -> Result<ServerInfo, tonic::Status> {
        Ok(self
            .classic
            .clone()
            .get_server(Id { id: user as i32 })
            .await?
            .into_inner())
    }

    /// The cluster serving each user, in the order asked.
    pub async fn assign(&self, users: &[u32]) -> Result<Vec<u32>, tonic::Status> {
        let reply = self
            .control
            .clone()
            .assign(AssignRequest {
                users: users.to_vec(),
            })
            .await?
            .into_inner();
        if reply.clusters.len() != users.len() {
            return Err(tonic::Status::internal("assign reply has the wrong length"));
        }
        Ok(reply.clusters)
    }

    pub async fn clusters(&self) -> Result<Vec<ClusterView>, tonic::Status> {
        Ok(self
            .control
            .clone()
            .clusters(ClustersRequest {})
            .await?
            .into_inner()
            .clusters)
    }

    pub async fn change_in_sync(&self, change: InSyncChange) -> Result<InSyncReply, tonic::Status> {
        Ok(self
            .control
            .clone()
            .change_in_sync(change)
            .await?
            .into_inner())
    }
}

/// `host:port` of the primary named by a classic `ServerInfo`.
pub fn server_address(info: &ServerInfo) -> String {
    format!("{}:{}", info.hostname, info.port)
}
