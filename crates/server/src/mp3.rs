//! The MP3 variant of `csce438.SNSService`, served on the server's second
//! listener (`--mp3-port`).
//!
//! `Login`, `Follow` and `UnFollow` are the classic service's rules
//! ([`Sns`]), their replies put in the MP3 `Reply`; `List` puts the classic
//! `ListReply` into it. `Timeline` is one call per typed line: store the
//! line, show the posts not shown yet (see [`cursor`]), move the user's
//! cursor through the journal, end the call.

mod cursor;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::Mutex as AsyncMutex;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tsn_cluster::parse_user_id;
use tsn_datastore::record::TimelineLine;
use tsn_datastore::store::read_timeline_after;
use tsn_datastore::{Op, Post};
use tsn_proto::csce438::sns_service_server::SnsService;
use tsn_proto::csce438::Request as ClassicRequest;
use tsn_proto::mp3::sns_service_server::SnsService as Mp3SnsService;
use tsn_proto::mp3::{Message, Reply, Request as Mp3Request};
use tsn_proto::timestamp_of_ms;

use crate::node::{lock, Node};
use crate::sns::{Sns, FAILURE_INVALID_USERNAME, SUCCESS};
use crate::validate;

use cursor::{unseen, Unseen, CALL_READ_MAX_LINES};

/// How long a client may take to send its messages and close its side.
const CALL_INBOUND_TIMEOUT_MS: u64 = 10_000;
/// Most messages one `Timeline` call may send (INIT and the typed line).
const CALL_MAX_MESSAGES: usize = 16;
/// `Timeline` calls of users that share a stripe run one at a time, so that
/// two calls of one user never read the same cursor.
const USER_LOCK_STRIPES: usize = 64;

pub struct Mp3Sns {
    pub classic: Sns,
    stripes: Vec<AsyncMutex<()>>,
}

impl Mp3Sns {
    pub fn new(classic: Sns) -> Mp3Sns {
        Mp3Sns {
            classic,
            stripes: (0..USER_LOCK_STRIPES)
                .map(|_| AsyncMutex::new(()))
                .collect(),
        }
    }

    fn node(&self) -> &Arc<Node> {
        &self.classic.node
    }
}

fn classic(req: Mp3Request) -> Request<ClassicRequest> {
    Request::new(ClassicRequest {
        username: req.username,
        arguments: req.arguments,
    })
}

/// The MP3 reply codes are the classic ones but FAILURE_NOT_A_FOLLOWER,
/// which an MP3 client does not know: unfollowing someone not followed is
/// an invalid username to it.
fn mp3_code(classic: String) -> String {
    if classic == "FAILURE_NOT_A_FOLLOWER" {
        FAILURE_INVALID_USERNAME.to_string()
    } else {
        classic
    }
}

fn mp3_reply(r: tsn_proto::csce438::Reply) -> Response<Reply> {
    if !r.detail.is_empty() {
        tracing::debug!(msg = %r.msg, detail = %r.detail, "MP3 request refused");
    }
    Response::new(Reply {
        msg: mp3_code(r.msg),
        ..Reply::default()
    })
}

fn message(line: &TimelineLine) -> Message {
    Message {
        username: line.post.author.to_string(),
        msg: line.post.text.clone(),
        timestamp: Some(timestamp_of_ms(line.post.ts_ms)),
    }
}

pub type MessageStream = Pin<Box<dyn Stream<Item = Result<Message, Status>> + Send>>;

/// Every message the client sends until it closes its side, in time.
async fn read_call(mut inbound: Streaming<Message>) -> Result<Vec<Message>, Status> {
    let read = async {
        let mut messages = Vec::new();
        while let Some(m) = inbound.next().await {
            if messages.len() == CALL_MAX_MESSAGES {
                return Err(Status::invalid_argument(format!(
                    "a Timeline call sends at most {CALL_MAX_MESSAGES} messages"
                )));
            }
            messages.push(m?);
        }
        Ok(messages)
    };
    tokio::time::timeout(Duration::from_millis(CALL_INBOUND_TIMEOUT_MS), read)
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "the client did not close its side within {CALL_INBOUND_TIMEOUT_MS} ms"
            ))
        })?
}

#[tonic::async_trait]
impl Mp3SnsService for Mp3Sns {
    /// `arguments = ["first"]` on a client's first login changes nothing:
    /// logging in is the same whether or not it is the first time.
    async fn login(&self, request: Request<Mp3Request>) -> Result<Response<Reply>, Status> {
        let r = self.classic.login(classic(request.into_inner())).await?;
        Ok(mp3_reply(r.into_inner()))
    }

    async fn list(&self, request: Request<Mp3Request>) -> Result<Response<Reply>, Status> {
        let req = request.into_inner();
        if parse_user_id(&req.username).is_none() {
            return Ok(Response::new(Reply {
                msg: FAILURE_INVALID_USERNAME.into(),
                ..Reply::default()
            }));
        }
        let r = self.classic.list(classic(req)).await?.into_inner();
        Ok(Response::new(Reply {
            msg: SUCCESS.into(),
            all_users: r.all_users,
            following_users: r.followers,
        }))
    }

    async fn follow(&self, request: Request<Mp3Request>) -> Result<Response<Reply>, Status> {
        let r = self.classic.follow(classic(request.into_inner())).await?;
        Ok(mp3_reply(r.into_inner()))
    }

    async fn un_follow(&self, request: Request<Mp3Request>) -> Result<Response<Reply>, Status> {
        let r = self
            .classic
            .un_follow(classic(request.into_inner()))
            .await?;
        Ok(mp3_reply(r.into_inner()))
    }

    type TimelineStream = MessageStream;

    async fn timeline(
        &self,
        request: Request<Streaming<Message>>,
    ) -> Result<Response<MessageStream>, Status> {
        let node = self.node().clone();
        node.may_write()?;
        let metadata = request.metadata().clone();
        let messages = read_call(request.into_inner()).await?;
        let Some(first) = messages.first() else {
            return Err(Status::invalid_argument(
                "the call ended before saying who you are",
            ));
        };
        let user = parse_user_id(&first.username).ok_or_else(|| {
            Status::invalid_argument(format!("{:?} is not a client id", first.username))
        })?;
        crate::session::authorize(&node, &metadata, user)?;
        crate::timeline::logged_in_here(&node, user)?;
        let _one_call_per_user = self.stripes[user as usize % USER_LOCK_STRIPES].lock().await;
        // The first message is the client's "INIT"; every later one is a
        // typed line.
        for m in messages.iter().skip(1) {
            if let Err(why) = validate::post_text(&m.msg) {
                tracing::info!(user, %why, "refused a post from an MP3 timeline call");
                continue;
            }
            let post = Op::Post(Post {
                id: validate::post_id(user, "").map_err(Status::internal)?,
                author: user,
                text: m.msg.clone(),
                ts_ms: node.cluster_now_ms()?,
            });
            node.write(vec![post]).await?;
        }
        let from = lock(&node.store).state().shown_seq(user);
        let upto = node.commit_seq();
        let layout = node.layout.clone();
        let lines = tokio::task::spawn_blocking(move || {
            read_timeline_after(&layout, user, from, upto, CALL_READ_MAX_LINES)
        })
        .await
        .map_err(|e| Status::internal(format!("reading the timeline failed: {e}")))?;
        let Unseen { show, cursor } = unseen(user, from, lines);
        if cursor > from {
            // Committed before anything is shown: after a failover the
            // new primary shows none of these again.
            node.write(vec![Op::Shown { user, seq: cursor }]).await?;
        }
        let out: Vec<Result<Message, Status>> = show.iter().map(|l| Ok(message(l))).collect();
        Ok(Response::new(
            Box::pin(tokio_stream::iter(out)) as MessageStream
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_follower_is_an_invalid_username_to_an_mp3_client() {
        assert_eq!(
            mp3_code("FAILURE_NOT_A_FOLLOWER".into()),
            FAILURE_INVALID_USERNAME
        );
        assert_eq!(mp3_code(SUCCESS.into()), SUCCESS);
        assert_eq!(
            mp3_code("FAILURE_ALREADY_EXISTS".into()),
            "FAILURE_ALREADY_EXISTS"
        );
    }
}
