//! A client that speaks only the classic protocol, as an unmodified Tiny
//! SNS client does: `CoordService.GetServer`, then `SNSService`. Tests use
//! it to prove that the classic protocol alone carries a user through a
//! failover.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tsn_cluster::coord::{channel, server_address, stream_channel};
use tsn_proto::csce438::coord_service_client::CoordServiceClient;
use tsn_proto::csce438::sns_service_client::SnsServiceClient;
use tsn_proto::csce438::{Id, ListReply, ServerInfo};

use crate::direct::{request, sns_client};
use crate::limits::{
    CALL_TIMEOUT_MS, CLASSIC_CONNECT_DEADLINE_MS, CLASSIC_RETRY_PAUSE_MS, CONVERGE_DEADLINE_MS,
    POLL_INTERVAL_MS,
};
use crate::stream::TimelineStream;

const SUCCESS: &str = "SUCCESS";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One user logged in on the server the coordinator named for it.
pub struct Classic {
    user: u32,
    addr: String,
    sns: SnsServiceClient<Channel>,
}

impl Classic {
    /// Asks the coordinator for the user's server and logs in there, again
    /// and again until a server answers SUCCESS: right after a primary dies
    /// the coordinator still names it until it notices.
    pub async fn connect(coord_addr: &str, user: u32) -> Classic {
        let coord = match channel(coord_addr, CALL_TIMEOUT_MS) {
            Ok(ch) => CoordServiceClient::new(ch),
            Err(e) => panic!("bad coordinator address {coord_addr:?}: {e:#}"),
        };
        let start = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let why = match Classic::try_connect(coord.clone(), user).await {
                Ok(c) => return c,
                Err(why) => why,
            };
            if start.elapsed() >= ms(CLASSIC_CONNECT_DEADLINE_MS) {
                panic!(
                    "the classic client of user {user} found no server in \
                     {CLASSIC_CONNECT_DEADLINE_MS} ms ({attempts} attempts); last: {why}"
                );
            }
            // A classic client's pause between two tries.
            tokio::time::sleep(ms(CLASSIC_RETRY_PAUSE_MS)).await;
        }
    }

    async fn try_connect(
        mut coord: CoordServiceClient<Channel>,
        user: u32,
    ) -> Result<Classic, String> {
        let info: ServerInfo = coord
            .get_server(Id { id: user as i32 })
            .await
            .map_err(|s| format!("GetServer({user}): {s}"))?
            .into_inner();
        let addr = server_address(&info);
        let mut sns = sns_client(&addr);
        let reply = sns
            .login(request(user, &[]))
            .await
            .map_err(|s| format!("Login on {addr}: {s}"))?
            .into_inner();
        if reply.msg == SUCCESS {
            Ok(Classic { user, addr, sns })
        } else {
            Err(format!("Login on {addr}: {reply:?}"))
        }
    }

    /// LIST; panics if the call fails.
    pub async fn list(&self) -> ListReply {
        match self.sns.clone().list(request(self.user, &[])).await {
            Ok(r) => r.into_inner(),
            Err(status) => panic!(
                "classic LIST of user {} on {}: {status}",
                self.user, self.addr
            ),
        }
    }

    /// FOLLOW `target`; the reply's message. Panics if the call fails.
    pub async fn follow(&self, target: u32) -> String {
        let req = request(self.user, &[&target.to_string()]);
        match self.sns.clone().follow(req).await {
            Ok(r) => r.into_inner().msg,
            Err(status) => panic!(
                "classic FOLLOW {target} of user {} on {}: {status}",
                self.user, self.addr
            ),
        }
    }

    /// TIMELINE: the user's stream; panics if it cannot be opened.
    pub async fn timeline(&self) -> TimelineStream {
        let ch = match stream_channel(&self.addr) {
            Ok(ch) => ch,
            Err(e) => panic!("bad address {:?}: {e:#}", self.addr),
        };
        match TimelineStream::open(SnsServiceClient::new(ch), self.user).await {
            Ok(s) => s,
            Err(status) => panic!(
                "classic TIMELINE of user {} on {}: {status}",
                self.user, self.addr
            ),
        }
    }

    /// Waits until LIST satisfies `check` (the change comes from another
    /// cluster through the sync services); returns that LIST.
    pub async fn wait_list(&self, what: &str, check: impl Fn(&ListReply) -> bool) -> ListReply {
        let start = Instant::now();
        loop {
            let listing = self.list().await;
            if check(&listing) {
                return listing;
            }
            if start.elapsed() >= ms(CONVERGE_DEADLINE_MS) {
                panic!("timed out waiting for {what}; last LIST: {listing:?}");
            }
            tokio::time::sleep(ms(POLL_INTERVAL_MS)).await;
        }
    }
}
