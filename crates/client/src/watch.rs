//! A user's timeline stream (the classic `Timeline` call), kept open
//! through failovers without handing out a post twice or skipping one.
//!
//! The server first sends the newest posts, newest first, then each new post
//! as it is committed. Every post carries the `seq` of its timeline line,
//! which is the same on every replica of the cluster. [`Watcher`] remembers
//! the highest `seq` handed out; when the stream breaks, [`TimelineWatch`]
//! reconnects through the [`Router`] (to the new primary, if there was a
//! failover) and asks to resume after that `seq`, so the server sends
//! exactly the lines not yet seen, oldest first. Post ids already handed
//! out are dropped too, in case a server sends a line again.

use std::collections::{HashSet, VecDeque};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tsn_cluster::retry::Backoff;
use tsn_proto::csce438::Message;

use crate::error::CallError;
use crate::limits::{WATCH_OUTBOUND_QUEUE_MAX, WATCH_SHOWN_IDS_MAX};
use crate::retry::{is_retryable, RetryPolicy};
use crate::route::Route;
use crate::router::Router;

/// What the watcher has shown: the pure part of the resume logic.
#[derive(Debug, Default)]
pub struct Watcher {
    /// The highest `seq` shown so far (0: none).
    highest_seq: u64,
    /// The `seq` the current stream resumed after (0: it sent the newest
    /// posts, newest first, so lower seqs are still to come).
    resumed_after: u64,
    shown_ids: HashSet<String>,
    /// `shown_ids` in the order shown, to forget the oldest first.
    shown_order: VecDeque<String>,
}

impl Watcher {
    pub fn new() -> Watcher {
        Watcher::default()
    }

    /// Called as a stream is opened: the `resume_after_seq` to ask for.
    pub fn begin_stream(&mut self) -> u64 {
        self.resumed_after = self.highest_seq;
        self.highest_seq
    }

    /// Whether to show an arriving post, remembering it if so.
    pub fn accept(&mut self, seq: u64, post_id: &str) -> bool {
        if seq != 0 && seq <= self.resumed_after {
            return false;
        }
        if !post_id.is_empty() {
            if self.shown_ids.contains(post_id) {
                return false;
            }
            if self.shown_order.len() >= WATCH_SHOWN_IDS_MAX {
                if let Some(oldest) = self.shown_order.pop_front() {
                    self.shown_ids.remove(&oldest);
                }
            }
            self.shown_ids.insert(post_id.to_string());
            self.shown_order.push_back(post_id.to_string());
        }
        assert_eq!(self.shown_ids.len(), self.shown_order.len());
        self.highest_seq = self.highest_seq.max(seq);
        true
    }
}

/// What a [`TimelineWatch`] has to tell.
#[derive(Debug)]
pub enum Event {
    /// A stream was opened, resuming after this `seq` (0: the first one,
    /// which starts with the newest posts).
    Opened { resume_after_seq: u64 },
    /// A post not handed out before.
    Post(Message),
}

/// An open stream: the route it runs on, the sender of the request half
/// (dropping it would end the client's half of the stream), the replies.
struct Open {
    route: Route,
    _outbound: mpsc::Sender<Message>,
    inbound: Streaming<Message>,
}

/// `user`'s timeline stream, reopened on the current primary whenever it
/// breaks, for as long as the caller keeps asking for the next event.
pub struct TimelineWatch {
    router: Router,
    user: u32,
    policy: RetryPolicy,
    watcher: Watcher,
    open: Option<Open>,
    /// The pause before reopening a stream that broke; reset by each post.
    backoff: Backoff,
}

impl TimelineWatch {
    /// A watch of `user`'s timeline; opening a stream follows `policy`.
    pub fn new(router: Router, user: u32, policy: RetryPolicy) -> TimelineWatch {
        TimelineWatch {
            router,
            user,
            backoff: policy.backoff(),
            policy,
            watcher: Watcher::new(),
            open: None,
        }
    }

    /// The next event: a stream opened, or a new post. Fails only on a
    /// final refusal, or when opening a stream ran out of the policy's time.
    pub async fn next(&mut self) -> Result<Event, CallError> {
        loop {
            let Some(open) = self.open.as_mut() else {
                let resume_after_seq = self.watcher.begin_stream();
                let user = self.user;
                let open = self
                    .router
                    .call(user, &self.policy, |route| {
                        open_stream(route, user, resume_after_seq)
                    })
                    .await?;
                self.open = Some(open);
                return Ok(Event::Opened { resume_after_seq });
            };
            match open.inbound.message().await {
                Ok(Some(message)) => {
                    self.backoff.reset();
                    if message.msg.is_empty() && message.post_id.is_empty() {
                        continue;
                    }
                    if !self.watcher.accept(message.seq, &message.post_id) {
                        tracing::debug!(seq = message.seq, post_id = %message.post_id, "dropped a post already handed out");
                        continue;
                    }
                    return Ok(Event::Post(message));
                }
                Ok(None) => {
                    tracing::debug!("the server ended the timeline stream; reconnecting");
                }
                Err(status) if is_retryable(&status) => {
                    tracing::debug!(code = ?status.code(), error = %status.message(), "timeline stream broke; reconnecting");
                }
                Err(status) => return Err(CallError::Refused(status)),
            }
            if let Some(broken) = self.open.take() {
                self.router.forget(self.user, &broken.route);
            }
            tokio::time::sleep(self.backoff.next_delay()).await;
        }
    }
}

/// Opens `user`'s stream on `route`, resuming after `resume_after_seq`.
async fn open_stream(route: Route, user: u32, resume_after_seq: u64) -> Result<Open, Status> {
    let (tx, rx) = mpsc::channel(WATCH_OUTBOUND_QUEUE_MAX);
    let first = Message {
        username: user.to_string(),
        timestamp: Some(now()),
        resume_after_seq,
        ..Default::default()
    };
    tx.try_send(first)
        .map_err(|_| Status::internal("the outbound queue refused the first message"))?;
    let inbound = route
        .stream()
        .timeline(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Open {
        route,
        _outbound: tx,
        inbound,
    })
}

fn now() -> tsn_proto::Timestamp {
    let ms = tsn_datastore::record::now_ms();
    tsn_proto::Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: (ms.rem_euclid(1_000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(seq, post_id)` pairs; returns the seqs that would be shown.
    fn shown(watcher: &mut Watcher, incoming: &[(u64, &str)]) -> Vec<u64> {
        incoming
            .iter()
            .filter(|(seq, id)| watcher.accept(*seq, id))
            .map(|(seq, _)| *seq)
            .collect()
    }

    #[test]
    fn first_stream_shows_newest_first_then_new_posts() {
        let mut w = Watcher::new();
        assert_eq!(w.begin_stream(), 0);
        let got = shown(&mut w, &[(9, "1-i"), (7, "2-g"), (3, "1-c"), (12, "2-l")]);
        assert_eq!(got, vec![9, 7, 3, 12]);
    }

    #[test]
    fn reconnect_resumes_after_the_highest_seq_shown() {
        let mut w = Watcher::new();
        w.begin_stream();
        shown(&mut w, &[(9, "1-i"), (7, "2-g"), (12, "2-l")]);
        // The stream broke; the new primary is asked to resume after 12.
        assert_eq!(w.begin_stream(), 12);
        // A server that sends some of them again anyway shows nothing twice.
        let got = shown(
            &mut w,
            &[
                (9, "1-i"),
                (12, "2-l"),
                (13, "1-m"),
                (14, "2-n"),
                (7, "2-g"),
            ],
        );
        assert_eq!(got, vec![13, 14]);
        assert_eq!(w.begin_stream(), 14);
    }

    #[test]
    fn repeated_post_ids_are_dropped_whatever_their_seq() {
        let mut w = Watcher::new();
        w.begin_stream();
        let got = shown(&mut w, &[(5, "1-a"), (6, "1-a"), (6, "1-b"), (0, "1-b")]);
        assert_eq!(got, vec![5, 6]);
    }

    #[test]
    fn a_break_before_anything_was_shown_starts_over() {
        let mut w = Watcher::new();
        w.begin_stream();
        assert_eq!(w.begin_stream(), 0);
        assert_eq!(shown(&mut w, &[(4, "1-d"), (2, "1-b")]), vec![4, 2]);
    }

    #[test]
    fn posts_without_ids_or_seqs_are_shown() {
        // A classic server sends neither; nothing can be deduplicated.
        let mut w = Watcher::new();
        w.begin_stream();
        assert_eq!(shown(&mut w, &[(0, ""), (0, "")]), vec![0, 0]);
    }

    #[test]
    fn remembered_ids_are_bounded() {
        let mut w = Watcher::new();
        w.begin_stream();
        for i in 0..(WATCH_SHOWN_IDS_MAX as u64 + 10) {
            assert!(w.accept(i + 1, &format!("1-{i}")));
        }
        assert_eq!(w.shown_ids.len(), WATCH_SHOWN_IDS_MAX);
        // The newest are still known.
        assert!(!w.accept(0, &format!("1-{}", WATCH_SHOWN_IDS_MAX + 9)));
    }
}
