//! The coordinator's face toward the MP3 variant of the Tiny SNS:
//! `csce438.SNSCoordinatorService` (only `FetchAssignment` is served) and
//! `tsn.Mp3Directory` (every server's MP3 listener, for tsn_demo and tests).
//!
//! The MP3 service also declares the MP3 servers' own calls
//! (`RegisterServer`, `Heartbeat`, ...). tsn's servers and sync services
//! register through `tsn.Coordinator` instead, so those are refused with
//! UNIMPLEMENTED and a message that says where registration happens.

use std::pin::Pin;
use std::time::Instant;

use futures::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tsn_cluster::limits::COORDINATOR_CALL_TIMEOUT_MS;
use tsn_cluster::parse_user_id;
use tsn_proto::mp3::sns_coordinator_service_client::SnsCoordinatorServiceClient;
use tsn_proto::mp3::sns_coordinator_service_server::SnsCoordinatorService;
use tsn_proto::mp3::{Assignment, Request as Mp3Request};
use tsn_proto::tsn::mp3_directory_server::Mp3Directory;
use tsn_proto::tsn::{Mp3Listener, Mp3ListenersReply, Mp3ListenersRequest};

use crate::control::split_address;
use crate::service::{Member, Shared, FORWARDED_METADATA_KEY};

/// What every field of an [`Assignment`] says when no server can be named.
pub const NOT_FOUND: &str = "404";

#[derive(Clone)]
pub struct Mp3Coordinator {
    state: Shared,
}

impl Mp3Coordinator {
    pub fn new(state: Shared) -> Mp3Coordinator {
        Mp3Coordinator { state }
    }
}

fn not_found() -> Assignment {
    Assignment {
        sid: NOT_FOUND.into(),
        hostname: NOT_FOUND.into(),
        port: NOT_FOUND.into(),
    }
}

/// The assignment for a cluster and its primary's MP3 listener, if any.
pub fn assignment(cluster: u32, mp3_address: Option<&str>) -> Assignment {
    match mp3_address {
        Some(address) => {
            let (hostname, port) = split_address(address);
            Assignment {
                sid: cluster.to_string(),
                hostname: hostname.to_string(),
                port: port.to_string(),
            }
        }
        None => not_found(),
    }
}

type Refusal = Pin<Box<dyn Stream<Item = Result<(), Status>> + Send>>;

fn refuse(rpc: &str) -> Result<Response<Refusal>, Status> {
    Err(Status::unimplemented(format!(
        "tsn_coordinator does not serve csce438.SNSCoordinatorService/{rpc}: tsn servers and \
         sync services register through tsn.Coordinator/Heartbeat; only FetchAssignment is \
         served here"
    )))
}

#[tonic::async_trait]
impl SnsCoordinatorService for Mp3Coordinator {
    /// "404" everywhere for an id that is not a client id or a cluster
    /// without a live primary: the MP3 client asks again later.
    async fn fetch_assignment(
        &self,
        request: Request<Mp3Request>,
    ) -> Result<Response<Assignment>, Status> {
        let peer = tsn_cluster::net::remote_addr(&request).map(|a| a.ip());
        let forwarded = request.metadata().get(FORWARDED_METADATA_KEY).is_some();
        let asked = request.into_inner();
        let username = asked.username.clone();
        let Some(user) = parse_user_id(&username) else {
            return Ok(Response::new(not_found()));
        };
        let decided = self
            .state
            .decide(|c| c.mp3_primary(peer, user, Instant::now()))
            .await;
        let found = match decided {
            Ok(found) => found,
            // Passed on to the leader once, as `GetServer` is.
            Err(refused) if !forwarded && Member::is_not_leader(&refused) => {
                let Some(leader) = self.state.leader() else {
                    return Err(refused);
                };
                let channel = tsn_cluster::coord::channel(&leader, COORDINATOR_CALL_TIMEOUT_MS)
                    .map_err(|_| refused.clone())?;
                let mut call = Request::new(asked);
                call.metadata_mut()
                    .insert(FORWARDED_METADATA_KEY, MetadataValue::from_static("1"));
                let answer = SnsCoordinatorServiceClient::new(channel)
                    .fetch_assignment(call)
                    .await?;
                return Ok(answer);
            }
            Err(refused) => return Err(refused),
        };
        Ok(Response::new(match found {
            Ok((cluster, address)) => assignment(cluster, address.as_deref()),
            Err(e) => {
                tracing::debug!(user, error = %e, "no MP3 assignment");
                not_found()
            }
        }))
    }

    type RegisterServerStream = Refusal;
    async fn register_server(
        &self,
        _: Request<Streaming<()>>,
    ) -> Result<Response<Refusal>, Status> {
        refuse("RegisterServer")
    }

    type HeartbeatStream = Refusal;
    async fn heartbeat(&self, _: Request<Streaming<()>>) -> Result<Response<Refusal>, Status> {
        refuse("Heartbeat")
    }

    type FollowUpdateStream = Refusal;
    async fn follow_update(&self, _: Request<Streaming<()>>) -> Result<Response<Refusal>, Status> {
        refuse("FollowUpdate")
    }

    type RegisterSyncServiceStream = Refusal;
    async fn register_sync_service(
        &self,
        _: Request<Streaming<()>>,
    ) -> Result<Response<Refusal>, Status> {
        refuse("RegisterSyncService")
    }

    type FetchGlobalClientsStream = Refusal;
    async fn fetch_global_clients(
        &self,
        _: Request<Streaming<()>>,
    ) -> Result<Response<Refusal>, Status> {
        refuse("FetchGlobalClients")
    }

    type FetchFollowersStream = Refusal;
    async fn fetch_followers(
        &self,
        _: Request<Streaming<()>>,
    ) -> Result<Response<Refusal>, Status> {
        refuse("FetchFollowers")
    }

    type ForwardEntryStreamStream = Refusal;
    async fn forward_entry_stream(
        &self,
        _: Request<Streaming<()>>,
    ) -> Result<Response<Refusal>, Status> {
        refuse("ForwardEntryStream")
    }
}

#[tonic::async_trait]
impl Mp3Directory for Mp3Coordinator {
    async fn listeners(
        &self,
        _: Request<Mp3ListenersRequest>,
    ) -> Result<Response<Mp3ListenersReply>, Status> {
        let listeners = self
            .state
            .decide(|c| c.mp3_listeners(Instant::now()))
            .await?
            .into_iter()
            .map(|(cluster_id, server_id, address, alive)| Mp3Listener {
                cluster_id,
                server_id,
                address,
                alive,
            })
            .collect();
        Ok(Response::new(Mp3ListenersReply { listeners }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_names_the_cluster_and_the_mp3_listener() {
        let a = assignment(2, Some("127.0.0.1:4567"));
        assert_eq!(
            (a.sid.as_str(), a.hostname.as_str(), a.port.as_str()),
            ("2", "127.0.0.1", "4567")
        );
        let none = assignment(2, None);
        assert_eq!(
            (
                none.sid.as_str(),
                none.hostname.as_str(),
                none.port.as_str()
            ),
            (NOT_FOUND, NOT_FOUND, NOT_FOUND)
        );
    }
}
