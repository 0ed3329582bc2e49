//! A user's open Timeline stream, read by a test.
//!
//! The stream has no marker between the initial batch (the last 20 posts)
//! and the live posts that follow, so a test says how many messages it
//! expects and how long it is willing to wait for them. A [`Recorder`]
//! reads a stream in the background and notes when each message arrived,
//! which is what a delivery-time measurement needs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};
use tsn_cluster::sync::lock;
use tsn_proto::csce438::sns_service_client::SnsServiceClient;
use tsn_proto::csce438::Message;

use crate::limits::{POLL_INTERVAL_MS, RECORDED_MESSAGES_MAX};

/// Messages the test may queue towards the server before sending blocks.
const OUTBOUND_QUEUE_MAX: usize = 64;

pub struct TimelineStream {
    user: u32,
    outbound: mpsc::Sender<Message>,
    inbound: Streaming<Message>,
}

impl TimelineStream {
    /// Opens the stream: the first message only says who the user is.
    pub async fn open(
        mut sns: SnsServiceClient<Channel>,
        user: u32,
    ) -> Result<TimelineStream, Status> {
        let (outbound, rx) = mpsc::channel(OUTBOUND_QUEUE_MAX);
        let hello = Message {
            username: user.to_string(),
            ..Default::default()
        };
        if outbound.send(hello).await.is_err() {
            return Err(Status::internal("outbound queue closed before use"));
        }
        let inbound = sns.timeline(ReceiverStream::new(rx)).await?.into_inner();
        Ok(TimelineStream {
            user,
            outbound,
            inbound,
        })
    }

    pub fn user(&self) -> u32 {
        self.user
    }

    /// Posts `text` through the stream, as the classic client does.
    pub async fn post(&self, text: &str) -> Result<(), String> {
        let msg = Message {
            username: self.user.to_string(),
            msg: text.to_string(),
            ..Default::default()
        };
        self.outbound
            .send(msg)
            .await
            .map_err(|_| "the timeline stream is closed".to_string())
    }

    /// The next message, or `Ok(None)` if none came within `timeout`.
    /// `Err` when the stream ended or failed.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Option<Message>, String> {
        match tokio::time::timeout(timeout, self.inbound.message()).await {
            Err(_) => Ok(None),
            Ok(Ok(Some(msg))) => Ok(Some(msg)),
            Ok(Ok(None)) => Err(format!("user {}'s timeline stream ended", self.user)),
            Ok(Err(status)) => Err(format!(
                "user {}'s timeline stream failed: {status}",
                self.user
            )),
        }
    }

    /// Exactly `n` messages, waiting at most `deadline` for all of them.
    /// The error says how many came.
    pub async fn collect(&mut self, n: usize, deadline: Duration) -> Result<Vec<Message>, String> {
        let start = Instant::now();
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let left = deadline.saturating_sub(start.elapsed());
            match self.next_within(left).await {
                Ok(Some(msg)) => got.push(msg),
                Ok(None) => {
                    return Err(format!(
                        "user {}'s stream: {} of {n} messages in {} ms: {:?}",
                        self.user,
                        got.len(),
                        deadline.as_millis(),
                        texts_of(&got)
                    ))
                }
                Err(e) => return Err(format!("{e} after {} of {n} messages", got.len())),
            }
        }
        Ok(got)
    }

    /// Reads the stream in the background from now on.
    pub fn record(self) -> Recorder {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let user = self.user;
        let outbound = self.outbound;
        let mut inbound = self.inbound;
        let writer = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let end = match inbound.message().await {
                    Ok(Some(msg)) => {
                        let mut s = lock(&writer);
                        if s.messages.len() >= RECORDED_MESSAGES_MAX {
                            Some(format!("more than {RECORDED_MESSAGES_MAX} messages"))
                        } else {
                            s.messages.push((msg, Instant::now()));
                            None
                        }
                    }
                    Ok(None) => Some("the stream ended".to_string()),
                    Err(status) => Some(format!("the stream failed: {status}")),
                };
                if let Some(why) = end {
                    lock(&writer).ended = Some(why);
                    return;
                }
            }
        });
        Recorder {
            user,
            seen,
            task,
            _outbound: outbound,
        }
    }
}

#[derive(Default)]
struct Seen {
    messages: Vec<(Message, Instant)>,
    ended: Option<String>,
}

/// A Timeline stream read in the background; each message is kept with the
/// moment it arrived.
pub struct Recorder {
    user: u32,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
    /// Kept so that the request side stays open: a closed request stream
    /// may end the call.
    _outbound: mpsc::Sender<Message>,
}

impl Recorder {
    pub fn user(&self) -> u32 {
        self.user
    }

    /// Every message so far, in arrival order.
    pub fn messages(&self) -> Vec<Message> {
        lock(&self.seen)
            .messages
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Why the stream ended, if it did.
    pub fn ended(&self) -> Option<String> {
        lock(&self.seen).ended.clone()
    }

    /// When the first message with text `text` arrived, if it did.
    pub fn arrival_of(&self, text: &str) -> Option<Instant> {
        lock(&self.seen)
            .messages
            .iter()
            .find(|(m, _)| m.msg == text)
            .map(|(_, at)| *at)
    }

    /// Waits until a message with text `text` arrived; returns when it did.
    /// Panics after `deadline`, or at once if the stream ended.
    pub async fn wait_for_text(&self, text: &str, deadline: Duration) -> Instant {
        let start = Instant::now();
        loop {
            if let Some(at) = self.arrival_of(text) {
                return at;
            }
            if let Some(why) = self.ended() {
                panic!(
                    "user {}'s stream ended before {text:?} arrived: {why}; got {:?}",
                    self.user,
                    texts_of(&self.messages())
                );
            }
            if start.elapsed() >= deadline {
                panic!(
                    "user {}'s stream: {text:?} did not arrive within {} ms; got {:?}",
                    self.user,
                    deadline.as_millis(),
                    texts_of(&self.messages())
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The texts of some messages, in order.
pub fn texts_of(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.msg.clone()).collect()
}
