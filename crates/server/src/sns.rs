//! `csce438.SNSService`: the classic client-facing service, rule for rule.
//!
//! Only the primary serves clients; every other server answers UNAVAILABLE
//! so that clients ask the coordinator for the current primary.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};
use tsn_cluster::parse_user_id;
use tsn_datastore::Op;
use tsn_proto::csce438::sns_service_server::SnsService;
use tsn_proto::csce438::{ListReply, Message, Reply, Request as SnsRequest};

use crate::directory::{Directory, Existence};
use crate::node::{lock, Node};
use crate::session::authorize;
use crate::timeline;
use crate::write_queue::WriteOutcome;

pub const SUCCESS: &str = "SUCCESS";
pub const FAILURE_ALREADY_EXISTS: &str = "FAILURE_ALREADY_EXISTS";
pub const FAILURE_NOT_EXISTS: &str = "FAILURE_NOT_EXISTS";
pub const FAILURE_INVALID_USERNAME: &str = "FAILURE_INVALID_USERNAME";
pub const FAILURE_INVALID: &str = "FAILURE_INVALID";
pub const FAILURE_UNKNOWN: &str = "FAILURE_UNKNOWN";

pub struct Sns {
    pub node: Arc<Node>,
    pub directory: Arc<Directory>,
}

fn respond(msg: &str, detail: impl Into<String>) -> Response<Reply> {
    Response::new(reply(msg, detail))
}

fn reply(msg: &str, detail: impl Into<String>) -> Reply {
    Reply {
        msg: msg.to_string(),
        detail: detail.into(),
    }
}

impl Sns {
    /// The caller: a valid id of a user that logged in on this cluster.
    fn caller(&self, username: &str) -> Result<u32, Reply> {
        let Some(user) = parse_user_id(username) else {
            return Err(reply(
                FAILURE_INVALID_USERNAME,
                format!("{username:?} is not a client id (a positive integer)"),
            ));
        };
        let registered =
            lock(&self.node.store).state().user_cluster(user) == Some(self.node.cluster_id);
        if !registered {
            return Err(reply(
                FAILURE_NOT_EXISTS,
                format!(
                    "user {user} has not logged in on cluster {}",
                    self.node.cluster_id
                ),
            ));
        }
        Ok(user)
    }

    fn target(&self, req: &SnsRequest) -> Result<u32, Reply> {
        let text = req.arguments.first().map(String::as_str).unwrap_or("");
        parse_user_id(text).ok_or_else(|| {
            reply(
                FAILURE_INVALID_USERNAME,
                format!("{text:?} is not a client id (a positive integer)"),
            )
        })
    }

    /// The caller and the user named in the first argument (FOLLOW, UNFOLLOW).
    fn caller_and_target(&self, req: &SnsRequest) -> Result<(u32, u32), Reply> {
        Ok((self.caller(&req.username)?, self.target(req)?))
    }

    /// What FOLLOW and UNFOLLOW check first: the primary takes writes, and
    /// the caller and the target are two users; `yourself` is the reply
    /// when they are one (its code and text differ between the two).
    fn relation(
        &self,
        request: Request<SnsRequest>,
        yourself: (&'static str, &'static str),
    ) -> Result<Result<(u32, u32), Reply>, Status> {
        self.node.may_write()?;
        let metadata = request.metadata().clone();
        Ok(match self.caller_and_target(&request.into_inner()) {
            Ok((user, target)) => {
                authorize(&self.node, &metadata, user)?;
                if user == target {
                    Err(reply(yourself.0, yourself.1))
                } else {
                    Ok((user, target))
                }
            }
            other => other,
        })
    }

    async fn write_one(&self, op: Op) -> Result<WriteOutcome, Status> {
        let mut outcomes = self.node.write(vec![op]).await?;
        Ok(outcomes.pop().unwrap_or(WriteOutcome::Duplicate))
    }
}

fn outcome_reply(o: WriteOutcome) -> Reply {
    match o {
        WriteOutcome::Applied(_) | WriteOutcome::Duplicate => reply(SUCCESS, ""),
        WriteOutcome::Rejected(code) => reply(code, ""),
    }
}

#[tonic::async_trait]
impl SnsService for Sns {
    async fn login(&self, request: Request<SnsRequest>) -> Result<Response<Reply>, Status> {
        self.node.may_write()?;
        let metadata = request.metadata().clone();
        let username = request.into_inner().username;
        let Some(user) = parse_user_id(&username) else {
            return Ok(respond(
                FAILURE_INVALID_USERNAME,
                format!("{username:?} is not a client id (a positive integer)"),
            ));
        };
        authorize(&self.node, &metadata, user)?;
        if lock(&self.node.store).state().user_cluster(user) == Some(self.node.cluster_id) {
            return Ok(respond(SUCCESS, ""));
        }
        let home = match self.directory.home(&self.node, user).await {
            Ok(h) => h,
            Err(e) => return Ok(respond(FAILURE_UNKNOWN, e)),
        };
        if home != self.node.cluster_id {
            return Ok(respond(
                FAILURE_INVALID,
                format!(
                    "user {user} is served by cluster {home}, not {}",
                    self.node.cluster_id
                ),
            ));
        }
        let o = self
            .write_one(Op::User {
                user,
                cluster: self.node.cluster_id,
            })
            .await?;
        Ok(Response::new(outcome_reply(o)))
    }

    async fn list(&self, request: Request<SnsRequest>) -> Result<Response<ListReply>, Status> {
        self.node.may_write()?;
        let metadata = request.metadata().clone();
        let username = request.into_inner().username;
        let user = parse_user_id(&username)
            .ok_or_else(|| Status::invalid_argument(format!("{username:?} is not a client id")))?;
        authorize(&self.node, &metadata, user)?;
        let store = lock(&self.node.store);
        let state = store.state();
        Ok(Response::new(ListReply {
            all_users: state.users().map(|(u, _)| u.to_string()).collect(),
            followers: state
                .followers(user)
                .into_iter()
                .map(|(u, _)| u.to_string())
                .collect(),
        }))
    }

    async fn follow(&self, request: Request<SnsRequest>) -> Result<Response<Reply>, Status> {
        let yourself = (FAILURE_ALREADY_EXISTS, "you cannot follow yourself");
        let (user, target) = match self.relation(request, yourself)? {
            Ok(pair) => pair,
            Err(r) => return Ok(Response::new(r)),
        };
        if lock(&self.node.store).state().follows(user, target) {
            return Ok(respond(
                FAILURE_ALREADY_EXISTS,
                format!("you already follow {target}"),
            ));
        }
        let mut ops = Vec::with_capacity(2);
        match self.directory.exists(&self.node, target).await {
            Existence::Yes => {}
            Existence::No => {
                return Ok(respond(
                    FAILURE_INVALID_USERNAME,
                    format!("user {target} does not exist"),
                ))
            }
            Existence::Unknown(why) => return Ok(respond(FAILURE_UNKNOWN, why)),
        }
        if lock(&self.node.store)
            .state()
            .user_cluster(target)
            .is_none()
        {
            // Known to exist on its cluster, not yet synced here: record it
            // now so LIST shows it (the sync service's copy is a duplicate).
            if let Ok(home) = self.directory.home(&self.node, target).await {
                ops.push(Op::User {
                    user: target,
                    cluster: home,
                });
            }
        }
        ops.push(Op::Follow {
            user,
            target,
            since_ms: self.node.cluster_now_ms()?,
        });
        let outcomes = self.node.write(ops).await?;
        let last = outcomes.last().cloned().unwrap_or(WriteOutcome::Duplicate);
        Ok(Response::new(outcome_reply(last)))
    }

    async fn un_follow(&self, request: Request<SnsRequest>) -> Result<Response<Reply>, Status> {
        let yourself = (FAILURE_INVALID_USERNAME, "you cannot unfollow yourself");
        let (user, target) = match self.relation(request, yourself)? {
            Ok(pair) => pair,
            Err(r) => return Ok(Response::new(r)),
        };
        {
            let store = lock(&self.node.store);
            let state = store.state();
            if !state.follows(user, target) && state.user_cluster(target).is_none() {
                return Ok(respond(
                    FAILURE_INVALID_USERNAME,
                    format!("user {target} does not exist"),
                ));
            }
        }
        let o = self.write_one(Op::Unfollow { user, target }).await?;
        Ok(Response::new(outcome_reply(o)))
    }

    type TimelineStream = timeline::MessageStream;

    async fn timeline(
        &self,
        request: Request<Streaming<Message>>,
    ) -> Result<Response<Self::TimelineStream>, Status> {
        self.node.may_write()?;
        let metadata = request.metadata().clone();
        timeline::open(self.node.clone(), &metadata, request.into_inner()).await
    }
}
