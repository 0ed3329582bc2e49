//! The `Timeline` stream, in the shape of tonic's route_guide chat: one
//! task reads what the client sends (posts), another sends what the
//! client should see (the last 20 posts, then each new post of a followed
//! user as soon as it is committed into the user's timeline).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Response, Status, Streaming};
use tsn_cluster::parse_user_id;
use tsn_datastore::record::TimelineLine;
use tsn_datastore::store::{read_timeline, read_timeline_after};
use tsn_datastore::{Op, Post};
use tsn_proto::csce438::Message;
use tsn_proto::timestamp_of_ms;

use crate::node::{lock, Node, Role};
use crate::validate;

pub type MessageStream = Pin<Box<dyn Stream<Item = Result<Message, Status>> + Send>>;

/// Posts shown when a stream opens, as in the classic service.
pub const TIMELINE_FIRST_POSTS: usize = 20;
/// Most lines sent after a resume point in one go (the newest ones).
pub const RESUME_MAX_POSTS: usize = 1000;
/// Messages buffered toward a slow client before the sender waits.
const OUTBOUND_QUEUE_MAX_MESSAGES: usize = 256;
/// How long a client may take to say who it is.
const FIRST_MESSAGE_TIMEOUT_MS: u64 = 10_000;

/// Opens the timeline stream of the user the first message names, if the
/// call (`metadata`) may act as that user
/// ([`crate::session::authorize`]).
pub async fn open(
    node: Arc<Node>,
    metadata: &tonic::metadata::MetadataMap,
    mut inbound: Streaming<Message>,
) -> Result<Response<MessageStream>, Status> {
    let first = tokio::time::timeout(
        Duration::from_millis(FIRST_MESSAGE_TIMEOUT_MS),
        inbound.next(),
    )
    .await
    .map_err(|_| Status::deadline_exceeded("the first message (who you are) did not come in time"))?
    .ok_or_else(|| Status::invalid_argument("the stream ended before saying who you are"))??;
    let user = parse_user_id(&first.username).ok_or_else(|| {
        Status::invalid_argument(format!("{:?} is not a client id", first.username))
    })?;
    crate::session::authorize(&node, metadata, user)?;
    logged_in_here(&node, user)?;
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE_MAX_MESSAGES);
    tokio::spawn(send_posts(node.clone(), user, first.resume_after_seq, tx));
    tokio::spawn(take_posts(node, user, inbound));
    Ok(Response::new(
        Box::pin(ReceiverStream::new(rx)) as MessageStream
    ))
}

fn message(line: &TimelineLine) -> Message {
    Message {
        username: line.post.author.to_string(),
        msg: line.post.text.clone(),
        timestamp: Some(timestamp_of_ms(line.post.ts_ms)),
        post_id: line.post.id.clone(),
        seq: line.seq,
        resume_after_seq: 0,
    }
}

async fn send_posts(
    node: Arc<Node>,
    user: u32,
    resume_after: u64,
    tx: mpsc::Sender<Result<Message, Status>>,
) {
    // Subscribe before reading, so that no line committed in between is missed.
    let mut changed = node.watch_timeline(user);
    let feed = node.register_feed(user);
    let mut role = node.subscribe_role();
    let epoch = role.borrow_and_update().epoch;
    let layout = node.layout.clone();
    let mut last = node.commit_seq();
    let first: Vec<TimelineLine> = if resume_after > 0 {
        let upto = last;
        let l = layout.clone();
        tokio::task::spawn_blocking(move || {
            read_timeline_after(&l, user, resume_after, upto, RESUME_MAX_POSTS)
        })
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|line| line.post.author != user)
        .collect()
    } else {
        let upto = last;
        let l = layout.clone();
        tokio::task::spawn_blocking(move || read_timeline(&l, user, TIMELINE_FIRST_POSTS, upto))
            .await
            .unwrap_or_default()
    };
    for line in &first {
        if tx.send(Ok(message(line))).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            r = role.changed() => {
                let stepped_down = r.is_err() || {
                    let v = role.borrow_and_update();
                    v.role != Role::Primary || v.epoch != epoch
                };
                if stepped_down {
                    let _ = tx.send(Err(Status::unavailable("this server is no longer the primary; reconnect"))).await;
                    return;
                }
                continue;
            }
            _ = tx.closed() => return,
        }
        let upto = node.commit_seq();
        if upto <= last {
            continue;
        }
        // The writer's feed has the lines once this stream caught up with
        // it; before that (or after it overflowed), the file.
        let lines: Vec<Arc<TimelineLine>> = match feed.take(last, upto) {
            Some(lines) => lines,
            None => {
                let l = layout.clone();
                let after = last;
                tokio::task::spawn_blocking(move || {
                    read_timeline_after(&l, user, after, upto, RESUME_MAX_POSTS)
                })
                .await
                .unwrap_or_default()
                .into_iter()
                .map(Arc::new)
                .collect()
            }
        };
        last = upto;
        for line in lines.iter().filter(|l| l.post.author != user) {
            if tx.send(Ok(message(line))).await.is_err() {
                return;
            }
        }
    }
}

/// Every message after the first is a post by `user` (classic clients post
/// this way; they get no acknowledgement, so a refused post is logged).
async fn take_posts(node: Arc<Node>, user: u32, mut inbound: Streaming<Message>) {
    while let Some(Ok(m)) = inbound.next().await {
        if let Err(why) = validate::post_text(&m.msg) {
            tracing::info!(user, %why, "refused a post from a timeline stream");
            continue;
        }
        let id = match validate::post_id(user, &m.post_id) {
            Ok(id) => id,
            Err(why) => {
                tracing::info!(user, %why, "refused a post from a timeline stream");
                continue;
            }
        };
        let ts_ms = match node.cluster_now_ms() {
            Ok(ms) => ms,
            Err(e) => {
                tracing::info!(user, error = %e.message(), "a post from a timeline stream was not stored");
                continue;
            }
        };
        let op = Op::Post(Post {
            id,
            author: user,
            text: m.msg,
            ts_ms,
        });
        if let Err(e) = node.write(vec![op]).await {
            tracing::info!(user, error = %e.message(), "a post from a timeline stream was not stored");
        }
    }
}

/// A timeline is read by a user who logged in on this cluster (a stream
/// of the classic variant, a call of the MP3 variant alike).
pub(crate) fn logged_in_here(node: &Node, user: u32) -> Result<(), Status> {
    if lock(&node.store).state().user_cluster(user) != Some(node.cluster_id) {
        return Err(Status::failed_precondition(format!(
            "user {user} has not logged in on cluster {}",
            node.cluster_id
        )));
    }
    Ok(())
}
