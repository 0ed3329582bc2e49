//! The gRPC face of the handle registry: `tsn.Accounts`, open to every
//! client like `GetServer`.
//!
//! Answered by the leader of the coordinator group, which holds the
//! registry as replicated state; another member refuses, naming the leader
//! (the coordinator client follows it).
//!
//! A sign-up is checked (handle, password, the caller's sign-up bucket, the
//! handle still free) by the control plane, then its password is hashed
//! with the lock released and on a blocking thread (at most
//! [`SIGNUP_HASHES_AT_ONCE_MAX`] at once, so sign-ups never take every core
//! from the failure detector), then decided under the lock again: the
//! second look settles a race between two sign-ups of one handle, so
//! exactly one of them wins.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use tsn_cluster::password::Password;
use tsn_datastore::handle::{Handle, Pattern};
use tsn_proto::tsn::accounts_server::Accounts;
use tsn_proto::tsn::{
    ListAccountsReply, ListAccountsRequest, ResolveReply, ResolveRequest, SignUpReply,
    SignUpRequest,
};

use crate::service::{status, Shared};

/// Most accounts one `List` answers.
pub const LIST_HANDLES_MAX: usize = 1_000;

/// Password hashes computed at once by sign-ups.
pub const SIGNUP_HASHES_AT_ONCE_MAX: usize = 1;

#[derive(Clone)]
pub struct AccountsService {
    state: Shared,
    hashing: Arc<Semaphore>,
}

impl AccountsService {
    pub fn new(state: Shared) -> AccountsService {
        AccountsService {
            state,
            hashing: Arc::new(Semaphore::new(SIGNUP_HASHES_AT_ONCE_MAX)),
        }
    }
}

fn handle_of(raw: &str) -> Result<Handle, Status> {
    Handle::parse(raw).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[tonic::async_trait]
impl Accounts for AccountsService {
    async fn sign_up(
        &self,
        request: Request<SignUpRequest>,
    ) -> Result<Response<SignUpReply>, Status> {
        let peer = tsn_cluster::net::remote_addr(&request).map(|a| a.ip());
        let req = request.into_inner();
        let handle = handle_of(&req.handle)?;
        let password =
            Password::new(req.password).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.state
            .decide(|c| c.admit_signup(peer, &handle, Instant::now()))
            .await?
            .map_err(status)?;
        let hash = {
            let _permit = self
                .hashing
                .acquire()
                .await
                .map_err(|_| Status::unavailable("the coordinator is stopping"))?;
            tokio::task::spawn_blocking(move || password.hash())
                .await
                .map_err(|e| Status::internal(format!("hashing stopped: {e}")))?
                .map_err(|e| Status::internal(e.to_string()))?
        };
        let account = self
            .state
            .decide(|c| c.sign_up(&handle, hash, now_ms()))
            .await?
            .map_err(status)?;
        Ok(Response::new(SignUpReply {
            user: account.user,
            cluster: account.cluster,
            handle: account.handle,
        }))
    }

    async fn resolve(
        &self,
        request: Request<ResolveRequest>,
    ) -> Result<Response<ResolveReply>, Status> {
        let handle = handle_of(&request.into_inner().handle)?;
        let reply = self
            .state
            .decide(|c| {
                c.resolve(&handle).map(|a| ResolveReply {
                    user: a.user,
                    cluster: a.cluster,
                    handle: a.handle.clone(),
                })
            })
            .await?
            .map_err(status)?;
        Ok(Response::new(reply))
    }

    async fn list(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsReply>, Status> {
        let pattern =
            Pattern::parse(&request.into_inner().pattern).map_err(Status::invalid_argument)?;
        let reply = self
            .state
            .decide(|c| {
                let (found, truncated) = c.list_accounts(&pattern, LIST_HANDLES_MAX);
                ListAccountsReply {
                    accounts: found
                        .into_iter()
                        .map(|a| ResolveReply {
                            user: a.user,
                            cluster: a.cluster,
                            handle: a.handle.clone(),
                        })
                        .collect(),
                    truncated,
                }
            })
            .await?;
        Ok(Response::new(reply))
    }
}
