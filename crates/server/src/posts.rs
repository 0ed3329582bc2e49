//! `tsn.Posts`: what the classic protocol has no room for — a post that is
//! acknowledged once durable (and stored once however often it is sent),
//! and a timeline read without a stream.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tsn_datastore::limits::TIMELINE_READ_MAX_POSTS;
use tsn_datastore::store::read_timeline;
use tsn_datastore::{Op, Post};
use tsn_proto::tsn::posts_server::Posts;
use tsn_proto::tsn::{PostReply, PostRequest, ReadReply, ReadRequest, TimelinePost};

use crate::node::{lock, Node};
use crate::session::authorize;
use crate::timeline::TIMELINE_FIRST_POSTS;
use crate::validate;
use crate::write_queue::WriteOutcome;

pub struct PostsService {
    pub node: Arc<Node>,
}

impl PostsService {
    fn local_user(&self, user: u32) -> Result<(), Status> {
        if lock(&self.node.store).state().user_cluster(user) == Some(self.node.cluster_id) {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "user {user} has not logged in on cluster {}",
                self.node.cluster_id
            )))
        }
    }
}

#[tonic::async_trait]
impl Posts for PostsService {
    async fn post(&self, request: Request<PostRequest>) -> Result<Response<PostReply>, Status> {
        self.node.may_write()?;
        let metadata = request.metadata().clone();
        let req = request.into_inner();
        validate::post_text(&req.text).map_err(Status::invalid_argument)?;
        let id = validate::post_id(req.user, &req.post_id).map_err(Status::invalid_argument)?;
        authorize(&self.node, &metadata, req.user)?;
        self.local_user(req.user)?;
        let ts_ms = self.node.cluster_now_ms()?;
        let op = Op::Post(Post {
            id,
            author: req.user,
            text: req.text,
            ts_ms,
        });
        let outcome = self.node.write(vec![op]).await?.pop();
        Ok(Response::new(match outcome {
            Some(WriteOutcome::Applied(seq)) => PostReply {
                seq,
                duplicate: false,
                ts_ms,
            },
            _ => PostReply {
                seq: 0,
                duplicate: true,
                ts_ms: 0,
            },
        }))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        self.node.may_write()?;
        let metadata = request.metadata().clone();
        let req = request.into_inner();
        authorize(&self.node, &metadata, req.user)?;
        self.local_user(req.user)?;
        let limit = match req.limit as usize {
            0 => TIMELINE_FIRST_POSTS,
            n => n.min(TIMELINE_READ_MAX_POSTS),
        };
        let layout = self.node.layout.clone();
        let upto = self.node.commit_seq();
        let lines =
            tokio::task::spawn_blocking(move || read_timeline(&layout, req.user, limit, upto))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ReadReply {
            posts: lines
                .into_iter()
                .map(|l| TimelinePost {
                    seq: l.seq,
                    post_id: l.post.id,
                    author: l.post.author,
                    text: l.post.text,
                    ts_ms: l.post.ts_ms,
                })
                .collect(),
        }))
    }
}
