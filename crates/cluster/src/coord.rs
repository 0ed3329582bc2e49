//! A client of the coordinator, and channels to any tsn process.
//!
//! Channels connect lazily and reconnect by themselves, so a restarted
//! coordinator or server is reached again without any special handling;
//! every call has a time limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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

/// The gRPC metadata key under which a coordinator that does not lead its
/// group names the leader's address (`host:port`).
pub const LEADER_METADATA_KEY: &str = "tsn-coordinator-leader";
/// The gRPC metadata key that marks a coordinator's refusal because it
/// does not lead its group (the client then asks another member).
pub const NOT_LEADER_METADATA_KEY: &str = "tsn-coordinator-not-leader";

/// A client of the coordinator: the classic `GetServer` and `tsn.Accounts`
/// (open to anyone) and the internal `tsn.Coordinator` calls, which carry the
/// cluster secret when the client has one.
///
/// It is given one address or the list of the coordinator group's members
/// (`h1:p1,h2:p2,h3:p3`). With a list, each call goes to the member that
/// answered last; a member that cannot be reached, or that does not lead
/// (it says which one does), passes the call on to the leader it names or
/// to the next member, each member tried at most once or twice per call.
#[derive(Clone)]
pub struct CoordClient {
    addr: String,
    members: Arc<Vec<Member>>,
    /// The member the next call goes to first.
    current: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Member {
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
        let addrs = crate::address::parse_address_list(addr)
            .map_err(|e| anyhow::anyhow!("bad coordinator address {addr:?}: {e}"))?;
        let mut members = Vec::with_capacity(addrs.len());
        for a in addrs {
            let ch = channel(&a, COORDINATOR_CALL_TIMEOUT_MS)?;
            members.push(Member {
                control: CoordinatorClient::with_interceptor(ch.clone(), attach.clone())
                    .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
                classic: CoordServiceClient::new(ch.clone()),
                accounts: AccountsClient::new(ch),
                addr: a,
            });
        }
        Ok(CoordClient {
            addr: addr.to_string(),
            members: Arc::new(members),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The address (or list) this client was given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Runs `call` on the member that leads, as far as this client can
    /// tell: see [`CoordClient`].
    async fn on_leader<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: Fn(Member) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let n = self.members.len();
        let mut i = self.current.load(Ordering::Relaxed) % n;
        if n == 1 {
            return call(self.members[0].clone()).await;
        }
        let mut last = None;
        for _ in 0..=n {
            // Moved on before the call: if the caller gives up on a member
            // that does not answer, its next call tries the next one.
            self.current.store((i + 1) % n, Ordering::Relaxed);
            match call(self.members[i].clone()).await {
                Ok(v) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(s) if passes_on(&s) => {
                    let named = s
                        .metadata()
                        .get(LEADER_METADATA_KEY)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|a| self.members.iter().position(|m| m.addr == a));
                    i = match named {
                        Some(leader) if leader != i => leader,
                        _ => (i + 1) % n,
                    };
                    last = Some(s);
                }
                Err(s) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Err(s);
                }
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no coordinator answered")))
    }

    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatReply, tonic::Status> {
        self.on_leader(|m| {
            let req = req.clone();
            async move { Ok(m.control.clone().heartbeat(req).await?.into_inner()) }
        })
        .await
    }

    /// The current primary of `user`'s cluster (the classic lookup).
    pub async fn get_server(&self, user: u32) -> Result<ServerInfo, tonic::Status> {
        self.on_leader(|m| async move {
            Ok(m.classic
                .clone()
                .get_server(Id { id: user as i32 })
                .await?
                .into_inner())
        })
        .await
    }

    /// Signs up `handle` with `password` (open): the new account's id and
    /// cluster. `ALREADY_EXISTS` when the handle is taken.
    pub async fn sign_up(
        &self,
        handle: &str,
        password: &str,
    ) -> Result<SignUpReply, tonic::Status> {
        let req = SignUpRequest {
            handle: handle.to_string(),
            password: password.to_string(),
        };
        self.on_leader(|m| {
            let req = req.clone();
            async move { Ok(m.accounts.clone().sign_up(req).await?.into_inner()) }
        })
        .await
    }

    /// The account of `handle` (open). `NOT_FOUND` when there is none.
    pub async fn resolve(&self, handle: &str) -> Result<ResolveReply, tonic::Status> {
        let req = ResolveRequest {
            handle: handle.to_string(),
        };
        self.on_leader(|m| {
            let req = req.clone();
            async move { Ok(m.accounts.clone().resolve(req).await?.into_inner()) }
        })
        .await
    }

    /// The account of `user` as the coordinator's registry holds it
    /// (internal: needs the secret). `None`: the user never signed up.
    pub async fn account(&self, user: u32) -> Result<Option<AccountReply>, tonic::Status> {
        let reply = self
            .on_leader(|m| async move {
                Ok(m.control
                    .clone()
                    .account(AccountRequest { user })
                    .await?
                    .into_inner())
            })
            .await?;
        Ok(reply.found.then_some(reply))
    }

    /// The accounts whose handle matches the glob `pattern` (open), and
    /// whether more matched than were sent.
    pub async fn list_accounts(&self, pattern: &str) -> Result<ListAccountsReply, tonic::Status> {
        let req = ListAccountsRequest {
            pattern: pattern.to_string(),
        };
        self.on_leader(|m| {
            let req = req.clone();
            async move { Ok(m.accounts.clone().list(req).await?.into_inner()) }
        })
        .await
    }

    /// The cluster serving each user, in the order asked.
    pub async fn assign(&self, users: &[u32]) -> Result<Vec<u32>, tonic::Status> {
        let reply = self
            .on_leader(|m| async move {
                Ok(m.control
                    .clone()
                    .assign(AssignRequest {
                        users: users.to_vec(),
                    })
                    .await?
                    .into_inner())
            })
            .await?;
        if reply.clusters.len() != users.len() {
            return Err(tonic::Status::internal("assign reply has the wrong length"));
        }
        Ok(reply.clusters)
    }

    pub async fn clusters(&self) -> Result<Vec<ClusterView>, tonic::Status> {
        self.on_leader(|m| async move {
            Ok(m.control
                .clone()
                .clusters(ClustersRequest {})
                .await?
                .into_inner()
                .clusters)
        })
        .await
    }

    pub async fn change_in_sync(&self, change: InSyncChange) -> Result<InSyncReply, tonic::Status> {
        self.on_leader(|m| async move {
            Ok(m.control.clone().change_in_sync(change).await?.into_inner())
        })
        .await
    }
}

/// Whether another member may answer what `status` refused: a member that
/// does not lead, or one that could not be reached in time.
fn passes_on(status: &tonic::Status) -> bool {
    status.metadata().get(NOT_LEADER_METADATA_KEY).is_some()
        || matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ) && status.metadata().is_empty()
}

/// `host:port` of the primary named by a classic `ServerInfo`.
pub fn server_address(info: &ServerInfo) -> String {
    format!("{}:{}", info.hostname, info.port)
}
