//! The gRPC face of the coordinator: `tsn.Coordinator` and the classic
//! `csce438.CoordService`, both thin wrappers around [`ControlPlane`].
//!
//! Every handler takes the one state lock, reads the clock under it (so the
//! failure detector and the handlers see time move forward in one order),
//! decides and persists synchronously, and releases the lock before the
//! reply is sent. The lock is never held across an `.await`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tsn_cluster::limits::COORDINATOR_CALL_TIMEOUT_MS;
use tsn_proto::csce438::coord_service_client::CoordServiceClient;
use tsn_proto::csce438::{coord_service_server::CoordService, Id, ServerInfo};
use tsn_proto::tsn::{
    coordinator_server::Coordinator, AccountReply, AccountRequest, AssignReply, AssignRequest,
    ClustersReply, ClustersRequest, HeartbeatReply, HeartbeatRequest, InSyncChange, InSyncReply,
};

use crate::control::{ControlPlane, Error};
use tsn_cluster::coord::{LEADER_METADATA_KEY, NOT_LEADER_METADATA_KEY};
use tsn_cluster::sync::lock;

/// The shared state, as the service and the failure detector hold it.
/// What this member decides with: the control plane while it leads the
/// coordinator group, nothing otherwise.
pub struct Member {
    /// An async lock: a decision holds it while the group commits, and
    /// whoever waits for it must not hold a worker thread meanwhile.
    control: tokio::sync::Mutex<Option<ControlPlane>>,
    /// host:port of the leader, when this member knows it and is not it.
    leader: Mutex<Option<String>>,
}

pub type Shared = Arc<Member>;

impl Member {
    pub fn new() -> Shared {
        Arc::new(Member {
            control: tokio::sync::Mutex::new(None),
            leader: Mutex::new(None),
        })
    }

    /// Runs `f` on the control plane if this member leads; otherwise the
    /// refusal that names the leader, if known.
    pub async fn decide<T>(&self, f: impl FnOnce(&mut ControlPlane) -> T) -> Result<T, Status> {
        let mut control = self.control.lock().await;
        match control.as_mut() {
            Some(c) => Ok(f(c)),
            None => Err(self.not_leader()),
        }
    }

    /// The control plane, if this member leads (for the failure detector).
    pub async fn control(&self) -> tokio::sync::MutexGuard<'_, Option<ControlPlane>> {
        self.control.lock().await
    }

    /// `f` on the control plane if this member leads and no decision holds
    /// it right now; `None` otherwise. For readers that must not wait (the
    /// operator's scrape): they show what they can.
    pub fn try_read<T>(&self, f: impl FnOnce(&ControlPlane) -> T) -> Option<T> {
        let control = self.control.try_lock().ok()?;
        control.as_ref().map(f)
    }

    pub fn set_leader(&self, addr: Option<String>) {
        *lock(&self.leader) = addr;
    }

    /// The leader's address, if this member knows it and is not it.
    pub fn leader(&self) -> Option<String> {
        lock(&self.leader).clone()
    }

    /// Whether `status` is this member's refusal because it does not lead.
    pub fn is_not_leader(status: &Status) -> bool {
        status.metadata().get(NOT_LEADER_METADATA_KEY).is_some()
    }

    fn not_leader(&self) -> Status {
        let leader = lock(&self.leader).clone();
        let mut status = Status::unavailable(match &leader {
            Some(addr) => {
                format!("this coordinator does not lead the group; the leader is at {addr}")
            }
            None => {
                "this coordinator does not lead the group, and no leader is known yet".to_string()
            }
        });
        // The coordinator client (`tsn_cluster::coord`) follows these.
        let meta = status.metadata_mut();
        meta.insert(
            NOT_LEADER_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        if let Some(value) = leader.and_then(|a| a.parse().ok()) {
            meta.insert(LEADER_METADATA_KEY, value);
        }
        status
    }
}

#[derive(Clone)]
pub struct CoordinatorService {
    state: Shared,
}

impl CoordinatorService {
    pub fn new(state: Shared) -> CoordinatorService {
        CoordinatorService { state }
    }
}

pub(crate) fn status(e: Error) -> Status {
    match e {
        Error::InvalidArgument(m) => Status::invalid_argument(m),
        Error::AlreadyExists(m) => Status::already_exists(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::ResourceExhausted(m) => Status::resource_exhausted(m),
        Error::Unavailable(m) => Status::unavailable(m),
        // Callers retry; the disk may come back.
        e @ Error::Storage(_) => {
            tracing::error!(error = %e, "request failed");
            Status::unavailable(e.to_string())
        }
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let req = request.into_inner();
        // The time it arrived, not the time the lock was free.
        let arrived = Instant::now();
        let mut reply = self.state.decide(|c| c.heartbeat(&req, arrived)).await?.map_err(|e| {
            // Every beat repeats a refusal: the sender logs it, not us.
            tracing::debug!(cluster = req.cluster_id, server = req.server_id, error = %e, "heartbeat refused");
            status(e)
        })?;
        // The reference of every cluster time, read as late as possible:
        // the sender places it halfway through its round trip.
        reply.coordinator_time_ms = tsn_datastore::record::now_ms();
        Ok(Response::new(reply))
    }

    async fn change_in_sync(
        &self,
        request: Request<InSyncChange>,
    ) -> Result<Response<InSyncReply>, Status> {
        let change = request.into_inner();
        let reply = self
            .state
            .decide(|c| c.change_in_sync(&change, Instant::now()))
            .await?
            .map_err(status)?;
        Ok(Response::new(reply))
    }

    async fn clusters(
        &self,
        _request: Request<ClustersRequest>,
    ) -> Result<Response<ClustersReply>, Status> {
        let clusters = self.state.decide(|c| c.clusters(Instant::now())).await?;
        Ok(Response::new(ClustersReply { clusters }))
    }

    async fn assign(
        &self,
        request: Request<AssignRequest>,
    ) -> Result<Response<AssignReply>, Status> {
        let peer = tsn_cluster::net::remote_addr(&request).map(|a| a.ip());
        let users = request.into_inner().users;
        let clusters = self
            .state
            .decide(|c| c.assign_for(peer, &users, Instant::now()))
            .await?
            .map_err(status)?;
        Ok(Response::new(AssignReply { clusters }))
    }

    async fn account(
        &self,
        request: Request<AccountRequest>,
    ) -> Result<Response<AccountReply>, Status> {
        let user = request.into_inner().user;
        let found = self
            .state
            .decide(|c| {
                c.account_of(user).map(|a| AccountReply {
                    found: true,
                    handle: a.handle.clone(),
                    password_hash: a.password_hash.clone(),
                    cluster: a.cluster,
                })
            })
            .await?;
        Ok(Response::new(found.unwrap_or_default()))
    }
}

#[tonic::async_trait]
impl CoordService for CoordinatorService {
    /// Answered by the leader; a member that does not lead passes the
    /// lookup on to the leader once, so that a classic client given any
    /// one member's address is answered.
    async fn get_server(&self, request: Request<Id>) -> Result<Response<ServerInfo>, Status> {
        let peer = tsn_cluster::net::remote_addr(&request).map(|a| a.ip());
        let forwarded = request.metadata().get(FORWARDED_METADATA_KEY).is_some();
        let id = request.into_inner().id;
        let decided = self
            .state
            .decide(|c| c.get_server_for(peer, id, Instant::now()))
            .await;
        let info = match decided {
            Ok(answer) => answer.map_err(status)?,
            Err(refused) if !forwarded && Member::is_not_leader(&refused) => {
                let Some(leader) = self.state.leader() else {
                    return Err(refused);
                };
                let channel = tsn_cluster::coord::channel(&leader, COORDINATOR_CALL_TIMEOUT_MS)
                    .map_err(|_| refused.clone())?;
                let mut call = Request::new(Id { id });
                call.metadata_mut()
                    .insert(FORWARDED_METADATA_KEY, MetadataValue::from_static("1"));
                CoordServiceClient::new(channel)
                    .get_server(call)
                    .await?
                    .into_inner()
            }
            Err(refused) => return Err(refused),
        };
        Ok(Response::new(info))
    }
}

/// Marks a lookup a member passed on to the leader: it is not passed on
/// again, so two members with stale views cannot bounce it.
pub const FORWARDED_METADATA_KEY: &str = "tsn-coordinator-forwarded";
