//! openraft's messages between the members, over tonic: `tsn.Raft`, an
//! internal service like the others (every call carries the deployment
//! secret, and the service is served behind `ClusterAuth::guard`). Each
//! request and reply is openraft's own message as JSON in a
//! `RaftMessage`; a reply holds openraft's `Result`, so a remote error
//! comes back as what it was.

use std::collections::BTreeMap;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tsn_cluster::auth::{Attach, ClusterAuth};
use tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES;
use tsn_proto::tsn::raft_client::RaftClient;
use tsn_proto::tsn::raft_server;
use tsn_proto::tsn::RaftMessage;

use super::{NodeId, TypeConfig};
use crate::config::{GROUP_MEMBERS_MAX, MEMBER_CATCH_UP_TIMEOUT_MS, RAFT_UNREACHABLE_RETRY_MS};

/// The longest any one message between members may take, whatever
/// openraft asks for.
pub const RAFT_CALL_TIMEOUT_MS: u64 = 2_000;

/// Makes a client for each member openraft talks to.
pub struct Network {
    auth: ClusterAuth,
}

impl Network {
    pub fn new(auth: ClusterAuth) -> Network {
        Network { auth }
    }
}

/// The client of one member.
pub struct Peer {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<InterceptedService<Channel, Attach>>, String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let client = tsn_cluster::coord::channel(&node.addr, RAFT_CALL_TIMEOUT_MS)
            .map(|ch| {
                RaftClient::with_interceptor(ch, self.auth.attach())
                    .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
                    .max_encoding_message_size(GRPC_MESSAGE_MAX_BYTES)
            })
            .map_err(|e| e.to_string());
        Peer {
            target,
            addr: node.addr.clone(),
            client,
        }
    }
}

/// Why a call to a member failed, as openraft wants it.
#[derive(Debug, thiserror::Error)]
#[error("coordinator member {target} at {addr}: {message}")]
struct CallError {
    target: NodeId,
    addr: String,
    message: String,
}

impl Peer {
    /// Sends `req` to the member and decodes its `Result<Resp, E>`.
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let err = |message: String| CallError {
            target: self.target,
            addr: self.addr.clone(),
            message,
        };
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&err(e.clone())))),
        };
        let json = serde_json::to_vec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&err(e.to_string()))))?;
        let mut request = Request::new(RaftMessage { json });
        let ttl = option
            .hard_ttl()
            .min(std::time::Duration::from_millis(RAFT_CALL_TIMEOUT_MS));
        request.set_timeout(ttl);
        let mut client = client;
        let reply = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        };
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let e = err(format!("{}: {}", s.code(), s.message()));
                return Err(match s.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        RPCError::Unreachable(Unreachable::new(&e))
                    }
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        let result: Result<Resp, E> = serde_json::from_slice(&reply.json).map_err(|e| {
            RPCError::Network(NetworkError::new(&err(format!(
                "a reply that does not parse: {e}"
            ))))
        })?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                BasicNode::new(self.addr.clone()),
                e,
            ))
        })
    }
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Peer {
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(std::time::Duration::from_millis(
            RAFT_UNREACHABLE_RETRY_MS,
        )))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Method::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Method::Vote, &rpc, &option).await
    }
}

/// `tsn.Raft`: hands each message to this member's openraft.
#[derive(Clone)]
pub struct RaftService {
    id: NodeId,
    raft: Raft<TypeConfig>,
}

impl RaftService {
    pub fn new(id: NodeId, raft: Raft<TypeConfig>) -> RaftService {
        RaftService { id, raft }
    }

    /// The refusal of a member that does not lead, naming the leader.
    fn not_leader(&self) -> Status {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics
            .current_leader
            .and_then(|l| metrics.membership_config.membership().get_node(&l).cloned())
            .map(|n| n.addr);
        let mut status = Status::unavailable(match &leader {
            Some(addr) => {
                format!("this coordinator does not lead the group; the leader is at {addr}")
            }
            None => "this coordinator does not lead the group, and no leader is known yet".into(),
        });
        let meta = status.metadata_mut();
        meta.insert(
            tsn_cluster::coord::NOT_LEADER_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        if let Some(value) = leader.and_then(|a| a.parse().ok()) {
            meta.insert(tsn_cluster::coord::LEADER_METADATA_KEY, value);
        }
        status
    }
}

/// Checks the members an operator asks for.
pub fn check_members(members: &BTreeMap<NodeId, String>) -> Result<(), String> {
    if members.is_empty() || members.len() > GROUP_MEMBERS_MAX {
        return Err(format!(
            "a group has 1..={GROUP_MEMBERS_MAX} members, not {}",
            members.len()
        ));
    }
    for (id, addr) in members {
        if *id == 0 {
            return Err("member ids are positive".into());
        }
        tsn_cluster::parse_host_port(addr).map_err(|e| format!("member {id}: {e}"))?;
    }
    Ok(())
}

/// Decodes a request; a message that does not parse is refused and
/// changes nothing.
fn decode<T: DeserializeOwned>(msg: RaftMessage) -> Result<T, Status> {
    serde_json::from_slice(&msg.json)
        .map_err(|e| Status::invalid_argument(format!("not a Raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    serde_json::to_vec(value)
        .map(|json| Response::new(RaftMessage { json }))
        .map_err(|e| Status::internal(format!("cannot encode a Raft reply: {e}")))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<NodeId> = decode(request.into_inner())?;
        encode(&self.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&self.raft.install_snapshot(req).await)
    }

    /// Makes the members exactly those asked: each new one is added as a
    /// learner and waited for until it caught up, then the voters are
    /// changed (openraft's joint consensus), so a majority of the old and
    /// of the new members agree at every step.
    async fn change_members(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let wanted: BTreeMap<NodeId, String> = decode(request.into_inner())?;
        check_members(&wanted).map_err(Status::invalid_argument)?;
        if self.raft.current_leader().await != Some(self.id) {
            return Err(self.not_leader());
        }
        let current: BTreeMap<NodeId, BasicNode> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        let refused = |e: String| Status::failed_precondition(format!("membership change: {e}"));
        for (id, addr) in &wanted {
            if current.get(id).is_some_and(|n| &n.addr == addr) {
                continue;
            }
            let added = tokio::time::timeout(
                std::time::Duration::from_millis(MEMBER_CATCH_UP_TIMEOUT_MS),
                self.raft
                    .add_learner(*id, BasicNode::new(addr.clone()), true),
            )
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "member {id} at {addr} did not catch up within {MEMBER_CATCH_UP_TIMEOUT_MS} ms"
                ))
            })?;
            added.map_err(|e| refused(e.to_string()))?;
            tracing::info!(member = id, %addr, "added a learner to the coordinator group");
        }
        let voters: std::collections::BTreeSet<NodeId> = wanted.keys().copied().collect();
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| refused(e.to_string()))?;
        tracing::info!(members = ?wanted, "the coordinator group's members changed");
        encode(&wanted)
    }
}

#[cfg(test)]
mod fuzz {
    //! The decoder of every `tsn.Raft` request, fed arbitrary bytes and
    //! arbitrary JSON: it refuses or decodes, never panics.
    use super::*;
    use proptest::prelude::*;

    fn all_decoders(json: Vec<u8>) {
        let msg = || RaftMessage { json: json.clone() };
        let _ = decode::<AppendEntriesRequest<TypeConfig>>(msg());
        let _ = decode::<VoteRequest<NodeId>>(msg());
        let _ = decode::<InstallSnapshotRequest<TypeConfig>>(msg());
        if let Ok(members) = decode::<BTreeMap<NodeId, String>>(msg()) {
            let _ = check_members(&members);
        }
    }

    /// JSON values of a few levels, with the keys of Raft messages, so
    /// that decoding gets past the first brace often.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                Just("vote".to_string()),
                Just("prev_log_id".to_string()),
                Just("entries".to_string()),
                Just("leader_commit".to_string()),
                Just("leader_id".to_string()),
                Just("term".to_string()),
                Just("node_id".to_string()),
                Just("index".to_string()),
                Just("meta".to_string()),
                Just("offset".to_string()),
                Just("data".to_string()),
                Just("done".to_string()),
                Just("1".to_string()),
                ".{0,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(key, inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            all_decoders(bytes);
        }

        #[test]
        fn arbitrary_json_never_panics(value in json_value()) {
            all_decoders(serde_json::to_vec(&value).unwrap_or_default());
        }
    }
}
