//! The gRPC face of the coordinator: `tsn.Coordinator` and the classic
//! `csce438.CoordService`, both thin wrappers around [`ControlPlane`].
//!
//! Every handler takes the one state lock, reads the clock under it (so the
//! failure detector and the handlers see time move forward in one order),
//! decides and persists synchronously, and releases the lock before the
//! reply is sent. The lock is never held across an `.await`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::{Request, Response, Status};
use tsn_proto::csce438::{coord_service_server::CoordService, Id, ServerInfo};
use tsn_proto::tsn::{
    coordinator_server::Coordinator, AccountReply, AccountRequest, AssignReply, AssignRequest,
    ClustersReply, ClustersRequest, HeartbeatReply, HeartbeatRequest, InSyncChange, InSyncReply,
};

use crate::control::{ControlPlane, Error};

/// The shared state, as the service and the failure detector hold it.
pub type Shared = Arc<Mutex<ControlPlane>>;

// The state lock is `tsn_cluster::sync::lock`: a panic while it was held
// cannot have left a half-made change behind (changes are adopted in memory
// only after they are stored, in one assignment).
pub use tsn_cluster::sync::lock;

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
        let mut state = lock(&self.state);
        let reply = state.heartbeat(&req, arrived).map_err(|e| {
            // Every beat repeats a refusal: the sender logs it, not us.
            tracing::debug!(cluster = req.cluster_id, server = req.server_id, error = %e, "heartbeat refused");
            status(e)
        })?;
        Ok(Response::new(reply))
    }

    async fn change_in_sync(
        &self,
        request: Request<InSyncChange>,
    ) -> Result<Response<InSyncReply>, Status> {
        let change = request.into_inner();
        let reply = lock(&self.state)
            .change_in_sync(&change, Instant::now())
            .map_err(status)?;
        Ok(Response::new(reply))
    }

    async fn clusters(
        &self,
        _request: Request<ClustersRequest>,
    ) -> Result<Response<ClustersReply>, Status> {
        let clusters = lock(&self.state).clusters(Instant::now());
        Ok(Response::new(ClustersReply { clusters }))
    }

    async fn assign(
        &self,
        request: Request<AssignRequest>,
    ) -> Result<Response<AssignReply>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let users = request.into_inner().users;
        let clusters = lock(&self.state)
            .assign_for(peer, &users, Instant::now())
            .map_err(status)?;
        Ok(Response::new(AssignReply { clusters }))
    }

    async fn account(
        &self,
        request: Request<AccountRequest>,
    ) -> Result<Response<AccountReply>, Status> {
        let user = request.into_inner().user;
        let state = lock(&self.state);
        Ok(Response::new(match state.account_of(user) {
            Some(a) => AccountReply {
                found: true,
                handle: a.handle.clone(),
                password_hash: a.password_hash.clone(),
                cluster: a.cluster,
            },
            None => AccountReply::default(),
        }))
    }
}

#[tonic::async_trait]
impl CoordService for CoordinatorService {
    async fn get_server(&self, request: Request<Id>) -> Result<Response<ServerInfo>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let id = request.into_inner().id;
        let mut state = lock(&self.state);
        let info = state
            .get_server_for(peer, id, Instant::now())
            .map_err(status)?;
        Ok(Response::new(info))
    }
}
