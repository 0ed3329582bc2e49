//! A client of the coordinator, and channels to any tsn process.
//!
//! Channels connect lazily and reconnect by themselves, so a restarted
//! coordinator or server is reached again without any special handling;
//! every call has a time limit.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tsn_proto::csce438::{coord_service_client::CoordServiceClient, Id, ServerInfo};
use tsn_proto::tsn::{
    accounts_client::AccountsClient, coordinator_client::CoordinatorClient, AccountReply,
    AccountRequest, AssignRequest, ClusterView, ClustersRequest, HeartbeatReply, HeartbeatRequest,
    InSyncChange, InSyncReply, ListAccountsReply, ListAccountsRequest, ResolveReply,
    ResolveRequest, SignUpReply, SignUpRequest,
};

use crate::auth::{Attach, AuthChannel, ClusterAuth};
use crate::limits::{CONNECT_TIMEOUT_MS, COORDINATOR_CALL_TIMEOUT_MS, GRPC_MESSAGE_MAX_BYTES};

/// A lazily connected channel to `addr` (`host:port`) whose calls time out
/// after `timeout_ms`.
pub fn channel(addr: &str, timeout_ms: u64) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| anyhow::anyhow!("bad address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(timeout_ms))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

/// A channel without a per-call time limit, for long-lived streams.
pub fn stream_channel(addr: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| anyhow::anyhow!("bad address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2));
    Ok(endpoint.connect_lazy())
}

/// A client of the coordinator: the classic `GetServer` and `tsn.Accounts`
/// (open to anyone) and the internal `tsn.Coordinator` calls, which carry the cluster secret
/// when the client has one.
#[derive(Clone)]
pub struct CoordClient {
    addr: String,
    control: CoordinatorClient<AuthChannel>,
    classic: CoordServiceClient<Channel>,
    accounts: AccountsClient<Channel>,
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
            classic: CoordServiceClient::new(ch.clone()),
            accounts: AccountsClient::new(ch),
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

    /// Signs up `handle` with `password` (open): the new account's id and
    /// cluster. `ALREADY_EXISTS` when the handle is taken.
    pub async fn sign_up(
        &self,
        handle: &str,
        password: &str,
    ) -> Result<SignUpReply, tonic::Status> {
        Ok(self
            .accounts
            .clone()
            .sign_up(SignUpRequest {
                handle: handle.to_string(),
                password: password.to_string(),
            })
            .await?
            .into_inner())
    }

    /// The account of `handle` (open). `NOT_FOUND` when there is none.
    pub async fn resolve(&self, handle: &str) -> Result<ResolveReply, tonic::Status> {
        Ok(self
            .accounts
            .clone()
            .resolve(ResolveRequest {
                handle: handle.to_string(),
            })
            .await?
            .into_inner())
    }

    /// The account of `user` as the coordinator's registry holds it
    /// (internal: needs the secret). `None`: the user never signed up.
    pub async fn account(&self, user: u32) -> Result<Option<AccountReply>, tonic::Status> {
        let reply = self
            .control
            .clone()
            .account(AccountRequest { user })
            .await?
            .into_inner();
        Ok(reply.found.then_some(reply))
    }

    /// The accounts whose handle matches the glob `pattern` (open), and
    /// whether more matched than were sent.
    pub async fn list_accounts(&self, pattern: &str) -> Result<ListAccountsReply, tonic::Status> {
        Ok(self
            .accounts
            .clone()
            .list(ListAccountsRequest {
                pattern: pattern.to_string(),
            })
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
