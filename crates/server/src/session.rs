//! Accounts on the server: the one check of who may act as a user
//! ([`authorize`]), and `tsn.Sessions` (login and logout).
//!
//! Where the password is checked: on the user's primary, against the
//! Argon2id hash its own cluster journal holds (`Op::Account`). The primary
//! copies the hash from the coordinator's handle registry the first time
//! the account logs in, so every later login, and every token check, needs
//! nothing but the cluster itself: it goes on while the coordinator is
//! restarting, and the hash survives failovers like any entry. A login
//! then writes `Op::Session` with the SHA-256 of a fresh token and its
//! expiry; a logout writes `Op::Logout`. Both are journal entries, so a
//! promoted secondary knows every session.
//!
//! [`authorize`] is called by every handler of `SNSService` (classic and
//! MP3) and `tsn.Posts` that acts as a user, before anything is read or
//! written: a user whose cluster holds its account (a claimed id) needs a
//! token of a live session; other ids work without one, as classic
//! clients expect, unless the server runs with `--require-accounts`.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tsn_cluster::password::Password;
use tsn_cluster::session::{bearer, new_token, token_sha256, SESSION_TTL_MS};
use tsn_datastore::record::now_ms;
use tsn_datastore::validate;
use tsn_datastore::Op;
use tsn_proto::tsn::sessions_server::Sessions;
use tsn_proto::tsn::{
    AttachReply, AttachRequest, LoginReply, LoginRequest, LogoutReply, LogoutRequest,
};

use crate::online::{Attach, Online};

use crate::node::{lock, Node};

/// Password checks run at once by logins: each takes a core for tens of
/// milliseconds and 19 MiB, so one at a time keeps a burst of logins from
/// starving the writer and the heartbeats.
pub const LOGIN_HASHES_AT_ONCE_MAX: usize = 1;

/// Whether the call whose metadata is `metadata` may act as `user`: Ok for
/// an id without an account (unless every call needs a token), else only
/// with the token of a session of that user that is neither ended nor
/// expired. Reads the fold under the store lock, briefly.
pub fn authorize(node: &Node, metadata: &MetadataMap, user: u32) -> Result<(), Status> {
    let token = bearer(metadata);
    let store = lock(&node.store);
    let Some(account) = store.state().account(user) else {
        if node.require_accounts {
            return Err(Status::unauthenticated(format!(
                "this deployment needs an account: user {user} has none; sign up and log in"
            )));
        }
        return Ok(());
    };
    let Some(token) = token else {
        return Err(Status::unauthenticated(format!(
            "user {user} is the account {}: log in first",
            account.handle
        )));
    };
    if account.session_valid(&token_sha256(token), now_ms()) {
        Ok(())
    } else {
        Err(Status::unauthenticated(format!(
            "the session token of {} is not valid (ended, expired or wrong): log in again",
            account.handle
        )))
    }
}

pub struct SessionsService {
    pub node: Arc<Node>,
    hashing: Arc<Semaphore>,
    online: std::sync::Mutex<Online>,
}

/// Longest interactive session id, in bytes.
pub const SESSION_ID_MAX_BYTES: usize = 64;

impl SessionsService {
    pub fn new(node: Arc<Node>) -> SessionsService {
        SessionsService {
            node,
            hashing: Arc::new(Semaphore::new(LOGIN_HASHES_AT_ONCE_MAX)),
            online: std::sync::Mutex::new(Online::default()),
        }
    }

    /// The account of `user` on this cluster: from the journal, else from
    /// the coordinator's registry, written into the journal first (with
    /// the user itself, if it never logged in here).
    async fn account(&self, user: u32) -> Result<(String, String), Status> {
        let known = lock(&self.node.store)
            .state()
            .account(user)
            .map(|a| (a.handle.clone(), a.password_hash.clone()));
        if let Some(known) = known {
            return Ok(known);
        }
        let reply = self.node.coord.account(user).await.map_err(|s| {
            Status::unavailable(format!("cannot ask the coordinator: {}", s.message()))
        })?;
        let Some(reply) = reply else {
            return Err(Status::unauthenticated(format!(
                "user {user} has no account; sign up first"
            )));
        };
        if reply.cluster != self.node.cluster_id {
            return Err(Status::failed_precondition(format!(
                "user {user} is served by cluster {}, not {}",
                reply.cluster, self.node.cluster_id
            )));
        }
        let mut ops = Vec::with_capacity(2);
        if lock(&self.node.store).state().user_cluster(user) != Some(self.node.cluster_id) {
            ops.push(Op::User {
                user,
                cluster: self.node.cluster_id,
            });
        }
        ops.push(Op::Account {
            user,
            handle: reply.handle.clone(),
            password_hash: reply.password_hash.clone(),
        });
        self.node.write(ops).await?;
        Ok((reply.handle, reply.password_hash))
    }
}

#[tonic::async_trait]
impl Sessions for SessionsService {
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginReply>, Status> {
        self.node.may_write()?;
        let req = request.into_inner();
        validate::user_id(req.user).map_err(Status::invalid_argument)?;
        let password =
            Password::new(req.password).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (handle, hash) = self.account(req.user).await?;
        let matches = {
            let _permit = self
                .hashing
                .acquire()
                .await
                .map_err(|_| Status::unavailable("the server is stopping"))?;
            tokio::task::spawn_blocking(move || password.verify(&hash))
                .await
                .map_err(|e| Status::internal(format!("checking the password stopped: {e}")))?
        };
        if !matches {
            tracing::info!(user = req.user, "login refused: wrong password");
            return Err(Status::unauthenticated(format!(
                "wrong password for {handle}"
            )));
        }
        let token = new_token().map_err(|e| Status::internal(format!("no randomness: {e}")))?;
        let expires_ms = now_ms().saturating_add(SESSION_TTL_MS);
        self.node
            .write(vec![Op::Session {
                user: req.user,
                token_sha256: token_sha256(&token),
                expires_ms,
            }])
            .await?;
        Ok(Response::new(LoginReply {
            token,
            expires_ms,
            handle,
            cluster: self.node.cluster_id,
        }))
    }

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<AttachReply>, Status> {
        self.node.may_write()?;
        let req = request.get_ref();
        validate::user_id(req.user).map_err(Status::invalid_argument)?;
        if req.session_id.is_empty() || req.session_id.len() > SESSION_ID_MAX_BYTES {
            return Err(Status::invalid_argument(format!(
                "a session id is 1 to {SESSION_ID_MAX_BYTES} bytes"
            )));
        }
        if lock(&self.node.store).state().account(req.user).is_none() {
            return Err(Status::unauthenticated(format!(
                "user {} has no account here",
                req.user
            )));
        }
        authorize(&self.node, request.metadata(), req.user)?;
        let now = std::time::Instant::now();
        let outcome = lock(&self.online).attach(req.user, &req.session_id, req.take_over, now);
        match outcome {
            Attach::Ok => Ok(Response::new(AttachReply {})),
            Attach::Elsewhere => Err(Status::failed_precondition(
                "this account is logged in elsewhere in an interactive session; use --take-over to end it",
            )),
            Attach::TakenOver => Err(Status::aborted(
                "this session was taken over by a login elsewhere",
            )),
        }
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutReply>, Status> {
        self.node.may_write()?;
        let user = request.get_ref().user;
        validate::user_id(user).map_err(Status::invalid_argument)?;
        if lock(&self.node.store).state().account(user).is_none() {
            return Err(Status::unauthenticated(format!(
                "user {user} has no account here"
            )));
        }
        authorize(&self.node, request.metadata(), user)?;
        let Some(token) = bearer(request.metadata()) else {
            return Err(Status::unauthenticated("no session token"));
        };
        self.node
            .write(vec![Op::Logout {
                user,
                token_sha256: token_sha256(token),
            }])
            .await?;
        Ok(Response::new(LogoutReply {}))
    }
}
