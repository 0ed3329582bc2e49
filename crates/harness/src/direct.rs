//! gRPC clients straight to one process, bypassing the routing of
//! [`crate::api::Api`]: for tests that must talk to a given server (an old
//! primary, a primary while the coordinator is down) and see its own
//! answers, not those of whoever serves the user now.

use tonic::transport::Channel;
use tsn_cluster::coord::channel;
use tsn_proto::csce438::sns_service_client::SnsServiceClient;
use tsn_proto::csce438::Request;
use tsn_proto::tsn::posts_client::PostsClient;
use tsn_proto::tsn::sessions_client::SessionsClient;
use tsn_proto::tsn::PostRequest;

use crate::limits::CALL_TIMEOUT_MS;

/// A `Posts` client of the process at `addr`; panics on a bad address.
pub fn posts_client(addr: &str) -> PostsClient<Channel> {
    match channel(addr, CALL_TIMEOUT_MS) {
        Ok(ch) => PostsClient::new(ch),
        Err(e) => panic!("bad address {addr:?}: {e:#}"),
    }
}

/// An `SNSService` client of the process at `addr`; panics on a bad
/// address.
pub fn sns_client(addr: &str) -> SnsServiceClient<Channel> {
    match channel(addr, CALL_TIMEOUT_MS) {
        Ok(ch) => SnsServiceClient::new(ch),
        Err(e) => panic!("bad address {addr:?}: {e:#}"),
    }
}

/// A `Sessions` client of the process at `addr`; panics on a bad address.
pub fn sessions_client(addr: &str) -> SessionsClient<Channel> {
    match channel(addr, CALL_TIMEOUT_MS) {
        Ok(ch) => SessionsClient::new(ch),
        Err(e) => panic!("bad address {addr:?}: {e:#}"),
    }
}

/// A classic request of `user` with `arguments`.
pub fn request(user: u32, arguments: &[&str]) -> Request {
    Request {
        username: user.to_string(),
        arguments: arguments.iter().map(|a| a.to_string()).collect(),
    }
}

/// A `Posts.Post` request.
pub fn post_request(user: u32, post_id: &str, text: &str) -> PostRequest {
    PostRequest {
        user,
        post_id: post_id.to_string(),
        text: text.to_string(),
    }
}
