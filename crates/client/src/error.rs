//! Why a call through the [`Router`](crate::router::Router) did not
//! succeed, said the way a user reads it.

use std::fmt;

use tonic::{Code, Status};

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
    #[error("{stage} unreachable after retries for {waited_ms} ms: {}", status_text(.last))]
    GaveUp {
        stage: Stage,
        waited_ms: u64,
        last: Status,
    },
}

impl CallError {
    /// The status a caller that speaks gRPC sees: the final answer, or the
    /// last retryable failure when the time ran out.
    pub fn into_status(self) -> Status {
        match self {
            CallError::Refused(status) => status,
            CallError::LoginRefused(why) => Status::permission_denied(why),
            CallError::GaveUp { last, .. } => last,
        }
    }
}

/// One line describing a final status: just the message for
/// `INVALID_ARGUMENT` (it is written for the user), else code and message.
/// A failed TLS handshake or a plaintext connection to a TLS listener
/// ends with a transport error, which says so in a line for the user.
pub fn status_text(status: &Status) -> String {
    let message = one_line(status.message());
    let text = match status.code() {
        Code::InvalidArgument if !message.is_empty() => message,
        code if message.is_empty() => code.description().to_string(),
        code => format!("{}: {message}", code.description()),
    };
    match tls_hint(status) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

/// What a transport error under `status` says about TLS, if anything.
fn tls_hint(status: &Status) -> Option<&'static str> {
    let mut chain = String::new();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        chain.push_str(&e.to_string());
        chain.push(' ');
        source = e.source();
    }
    if chain.is_empty() {
        return None;
    }
    if chain.contains("InvalidContentType") || chain.contains("CorruptMessage") {
        Some("the server does not speak TLS: leave out --tls-ca")
    } else if chain.contains("certificate") || chain.contains("Certificate") {
        Some("TLS: the server's certificate is not trusted by --tls-ca or does not name the address dialed")
    } else if chain.contains("FRAME_SIZE_ERROR") || status.message().contains("h2 protocol error") {
        Some("the server may require TLS: give its CA with --tls-ca")
    } else {
        None
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn tls_mismatches_are_explained() {
        let transport =
            |text: &str| Status::from_error(Box::new(std::io::Error::other(text.to_string())));
        let plain_server = transport("received corrupt message of type InvalidContentType");
        assert!(status_text(&plain_server).contains("leave out --tls-ca"));
        let stranger = transport("invalid peer certificate: UnknownIssuer");
        assert!(status_text(&stranger).contains("not trusted by --tls-ca"));
        // A server's own answer is shown as it is.
        let answer = Status::internal("h2 protocol error in a message");
        assert_eq!(
            status_text(&answer),
            "Internal error: h2 protocol error in a message"
        );
    }

    #[test]
    fn a_gave_up_call_keeps_its_last_status() {
        let error = CallError::GaveUp {
            stage: Stage::Server,
            waited_ms: 30,
            last: Status::unavailable("no primary"),
        };
        assert_eq!(
            error.to_string(),
            "server unreachable after retries for 30 ms: The service is currently unavailable: no primary"
        );
        assert_eq!(error.into_status().code(), Code::Unavailable);
    }
}
