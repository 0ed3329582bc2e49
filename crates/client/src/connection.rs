//! Finding the primary of the user's cluster, connecting, and reconnecting
//! through a failover.
//!
//! The client never remembers a server address for long: whenever a call
//! fails in a way a failover explains (the primary died, a secondary refuses
//! with `UNAVAILABLE`, a call timed out), it asks the coordinator again
//! which server is the primary now, connects to it, logs in, and retries
//! the call, pausing with [`Backoff`] between attempts. Every other status
//! is the server's final answer and is returned at once.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Status};
use tsn_cluster::coord::{self, CoordClient};
use tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES;
use tsn_proto::csce438::sns_service_client::SnsServiceClient;
use tsn_proto::csce438::Request;
use tsn_proto::tsn::posts_client::PostsClient;

use crate::limits::{RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_START_MS, SERVER_CALL_TIMEOUT_MS};
use crate::reply;
use tsn_cluster::retry::Backoff;

/// Clients of one server, logged in as the user. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    /// `SNSService` for unary calls (each with a time limit).
    pub sns: SnsServiceClient<Channel>,
    pub posts: PostsClient<Channel>,
    /// `SNSService` on a channel without a call time limit, for the
    /// long-lived timeline stream.
    pub stream: SnsServiceClient<Channel>,
}

/// Who failed to answer: the coordinator or the server it named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Coordinator,
    Server,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Coordinator => "coordinator",
            Stage::Server => "server",
        })
    }
}

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// A final answer: retrying would get the same one.
    #[error("{}", status_text(.0))]
    Refused(Status),
    /// The server would not log the user in.
    #[error("login refused: {0}")]
    LoginRefused(String),
    /// Every attempt failed in a retryable way until the time ran out.
    #[error("{stage} unreachable after retries for {waited_ms} ms: {last}")]
    GaveUp {
        stage: Stage,
        waited_ms: u64,
        last: String,
    },
}

/// One line describing a final status: just the message for
/// `INVALID_ARGUMENT` (it is written for the user), else code and message.
pub fn status_text(status: &Status) -> String {
    let message = one_line(status.message());
    match status.code() {
        Code::InvalidArgument if !message.is_empty() => message,
        code if message.is_empty() => code.description().to_string(),
        code => format!("{}: {message}", code.description()),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Statuses that a failover, a restart or a slow machine explain; anything
/// else is the server's final answer. Transport errors (connection refused
/// or reset) reach the caller as `UNAVAILABLE` or `UNKNOWN`.
pub fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// The outcome of one failed attempt.
enum Attempt {
    Retry { stage: Stage, status: Status },
    Final(CallError),
}

impl Attempt {
    fn from_status(stage: Stage, status: Status) -> Attempt {
        if is_retryable(&status) {
            Attempt::Retry { stage, status }
        } else {
            Attempt::Final(CallError::Refused(status))
        }
    }
}

/// The user's way to tsn: the coordinator and, once found, a logged-in
/// session with the current primary.
pub struct Connection {
    coord: CoordClient,
    user: u32,
    session: Option<Session>,
}

impl Connection {
    pub fn new(coord: CoordClient, user: u32) -> Connection {
        assert!(user >= 1);
        Connection {
            coord,
            user,
            session: None,
        }
    }

    pub fn user(&self) -> u32 {
        self.user
    }

    /// A second connection of the same user, with its own session (the
    /// timeline stream runs on one while posts go through the other).
    pub fn fork(&self) -> Connection {
        Connection::new(self.coord.clone(), self.user)
    }

    /// Drops the current session, so the next call asks the coordinator.
    pub fn forget_session(&mut self) {
        self.session = None;
    }

    /// Runs `op` on a logged-in session, reconnecting and retrying on a
    /// retryable failure until `retry_for` has passed since the first
    /// attempt (forever with `None`). `op` must be safe to repeat: every
    /// tsn call the client makes is (a post carries its own id).
    pub async fn call<T, F, Fut>(
        &mut self,
        retry_for: Option<Duration>,
        mut op: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let mut backoff = Backoff::new(RETRY_BACKOFF_START_MS, RETRY_BACKOFF_MAX_MS);
        let mut attempts: u64 = 0;
        loop {
            attempts += 1;
            let failure = match self.session().await {
                Ok(session) => match op(session).await {
                    Ok(value) => return Ok(value),
                    Err(status) => Attempt::from_status(Stage::Server, status),
                },
                Err(failure) => failure,
            };
            let (stage, status) = match failure {
                Attempt::Final(error) => return Err(error),
                Attempt::Retry { stage, status } => (stage, status),
            };
            self.session = None;
            let waited = started.elapsed();
            let mut delay = backoff.next_delay();
            if let Some(limit) = retry_for {
                if waited >= limit {
                    return Err(CallError::GaveUp {
                        stage,
                        waited_ms: waited.as_millis() as u64,
                        last: status_text(&status),
                    });
                }
                delay = delay.min(limit - waited);
            }
            tracing::debug!(
                %stage,
                attempts,
                code = ?status.code(),
                error = %status.message(),
                delay_ms = delay.as_millis() as u64,
                "call failed; asking the coordinator again"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// The current session, or a new one: ask the coordinator for the
    /// primary, open channels to it, and log in.
    async fn session(&mut self) -> Result<Session, Attempt> {
        if let Some(session) = &self.session {
            return Ok(session.clone());
        }
        let info = self
            .coord
            .get_server(self.user)
            .await
            .map_err(|s| Attempt::from_status(Stage::Coordinator, s))?;
        if info.hostname.is_empty() || info.port.is_empty() {
            return Err(Attempt::Retry {
                stage: Stage::Coordinator,
                status: Status::unavailable("the coordinator named no server"),
            });
        }
        let addr = coord::server_address(&info);
        let bad_address = |e: anyhow::Error| Attempt::Retry {
            stage: Stage::Coordinator,
            status: Status::unavailable(format!("the coordinator named a bad address: {e}")),
        };
        let unary = coord::channel(&addr, SERVER_CALL_TIMEOUT_MS).map_err(bad_address)?;
        let long = coord::stream_channel(&addr).map_err(bad_address)?;
        let mut sns =
            SnsServiceClient::new(unary.clone()).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        let reply = sns
            .login(Request {
                username: self.user.to_string(),
                arguments: Vec::new(),
            })
            .await
            .map_err(|s| Attempt::from_status(Stage::Server, s))?
            .into_inner();
        if !reply::is_success(&reply) {
            return Err(Attempt::Final(CallError::LoginRefused(reply::describe(
                &reply,
            ))));
        }
        tracing::debug!(server = %addr, user = self.user, "logged in");
        let session = Session {
            sns,
            posts: PostsClient::new(unary).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
            stream: SnsServiceClient::new(long).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
        };
        self.session = Some(session.clone());
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_statuses_are_retryable() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
        ] {
            assert!(is_retryable(&Status::new(code, "x")), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::ResourceExhausted,
            Code::Internal,
        ] {
            assert!(!is_retryable(&Status::new(code, "x")), "{code:?}");
        }
    }

    #[test]
    fn invalid_argument_shows_just_its_message() {
        let s = Status::invalid_argument("post is longer than 1024 bytes");
        assert_eq!(status_text(&s), "post is longer than 1024 bytes");
        let s = Status::not_found("no such\nuser");
        assert_eq!(
            status_text(&s),
            "Some requested entity was not found: no such user"
        );
        assert_eq!(
            status_text(&Status::internal("")),
            Code::Internal.description()
        );
    }
}
