//! The MP3 variant of the Tiny SNS protocol against the real binaries,
//! driven with the exact call sequence of its client (a client made from
//! the MP3 `.proto`, here): FetchAssignment before every call, Login with
//! `["first"]`, LIST across clusters, FOLLOW/UNFOLLOW and their failure
//! replies, one Timeline call per typed line (INIT, the line, close), a
//! `kill -9` failover of the primary in the middle — and a classic (MP2.2)
//! client on the same deployment at the same time.
//!
//! Build the binaries first: `cargo build --bins`.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::Status;
use tsn_harness::wait::wait_for;
use tsn_harness::Deployment;
use tsn_proto::mp3::sns_coordinator_service_client::SnsCoordinatorServiceClient;
use tsn_proto::mp3::sns_service_client::SnsServiceClient;
use tsn_proto::mp3::{Assignment, Message, Reply, Request};

/// The sync services' poll interval in these tests.
const Q_MS: u64 = 500;
/// How long a test waits for something it knows is coming (deliveries
/// across clusters, a failover).
const ARRIVAL_DEADLINE_MS: u64 = 30_000;

const SUCCESS: &str = "SUCCESS";
const ALREADY_EXISTS: &str = "FAILURE_ALREADY_EXISTS";
const INVALID_USERNAME: &str = "FAILURE_INVALID_USERNAME";
const NOT_FOUND: &str = "404";

fn deadline() -> Duration {
    Duration::from_millis(ARRIVAL_DEADLINE_MS)
}

/// The MP3 client's calls, each preceded by FetchAssignment as it does.
struct Mp3Client {
    coord: String,
}

fn request(user: u32, arguments: &[&str]) -> Request {
    Request {
        username: user.to_string(),
        arguments: arguments.iter().map(|a| a.to_string()).collect(),
    }
}

/// A channel as the MP3 client opens one (over TLS when the deployment
/// runs with it: the harness's one way to a process).
fn mp3_channel(addr: &str) -> Result<Channel, Status> {
    tsn_cluster::coord::channel(addr, tsn_harness::limits::CALL_TIMEOUT_MS)
        .map_err(|e| Status::unavailable(e.to_string()))
}

impl Mp3Client {
    async fn fetch_assignment(&self, username: &str) -> Result<Assignment, Status> {
        let mut coord = SnsCoordinatorServiceClient::new(mp3_channel(&self.coord)?);
        Ok(coord
            .fetch_assignment(Request {
                username: username.into(),
                arguments: Vec::new(),
            })
            .await?
            .into_inner())
    }

    /// FetchAssignment, then a connection to the server it names.
    async fn sns(&self, user: u32) -> Result<SnsServiceClient<Channel>, Status> {
        let a = self.fetch_assignment(&user.to_string()).await?;
        if a.port == NOT_FOUND {
            return Err(Status::unavailable(format!("no server for {user} yet")));
        }
        Ok(SnsServiceClient::new(mp3_channel(&format!(
            "{}:{}",
            a.hostname, a.port
        ))?))
    }

    /// Retries what fails while a cluster has no primary, as a user of the
    /// MP3 client would by typing the command again.
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        wait_for(deadline(), what, || {
            let attempt = f();
            async move { attempt.await.map_err(|s| s.to_string()) }
        })
        .await
    }

    async fn login(&self, user: u32, arguments: &[&str]) -> String {
        self.call(&format!("LOGIN of {user}"), || async {
            let r = self
                .sns(user)
                .await?
                .login(request(user, arguments))
                .await?;
            Ok(r.into_inner().msg)
        })
        .await
    }

    async fn list(&self, user: u32) -> Reply {
        self.call(&format!("LIST of {user}"), || async {
            Ok(self
                .sns(user)
                .await?
                .list(request(user, &[]))
                .await?
                .into_inner())
        })
        .await
    }

    async fn follow(&self, user: u32, target: &str) -> String {
        self.call(&format!("FOLLOW {target} by {user}"), || async {
            let r = self
                .sns(user)
                .await?
                .follow(request(user, &[target]))
                .await?;
            Ok(r.into_inner().msg)
        })
        .await
    }

    async fn unfollow(&self, user: u32, target: &str) -> String {
        self.call(&format!("UNFOLLOW {target} by {user}"), || async {
            let r = self
                .sns(user)
                .await?
                .un_follow(request(user, &[target]))
                .await?;
            Ok(r.into_inner().msg)
        })
        .await
    }

    /// One Timeline call as the client makes it per typed line: INIT, the
    /// line when not empty, close; then every message until the call ends.
    async fn timeline_once(&self, user: u32, line: &str) -> Result<Vec<Message>, Status> {
        let mut sns = self.sns(user).await?;
        let mut out = vec![Message {
            username: user.to_string(),
            msg: "INIT".into(),
            timestamp: None,
        }];
        if !line.is_empty() {
            out.push(Message {
                username: user.to_string(),
                msg: line.into(),
                timestamp: None,
            });
        }
        let mut inbound = sns.timeline(tokio_stream::iter(out)).await?.into_inner();
        let mut got = Vec::new();
        while let Some(m) = inbound.message().await? {
            got.push(m);
        }
        Ok(got)
    }
}

/// What one user was shown over all its calls, to check that no post is
/// shown twice.
#[derive(Default)]
struct Shown {
    texts: Vec<String>,
}

impl Shown {
    fn add(&mut self, messages: Vec<Message>) {
        for m in messages {
            assert!(m.timestamp.is_some(), "every post has its time");
            self.texts.push(m.msg);
        }
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for t in &self.texts {
            *counts.entry(t.clone()).or_default() += 1;
        }
        counts
    }

    fn assert_each_once(&self) {
        let twice: Vec<_> = self.counts().into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(twice.is_empty(), "shown more than once: {twice:?}");
    }
}

/// Empty Timeline calls of `user` (as the client makes when the user
/// presses enter) until every one of `texts` was shown.
async fn read_until(client: &Mp3Client, user: u32, shown: &mut Shown, texts: &[&str]) {
    let what = format!("user {user} to be shown {texts:?}");
    let mut last = String::new();
    let start = std::time::Instant::now();
    while start.elapsed() < deadline() {
        match client.timeline_once(user, "").await {
            Ok(messages) => shown.add(messages),
            Err(s) => last = s.to_string(),
        }
        shown.assert_each_once();
        if texts.iter().all(|t| shown.texts.iter().any(|s| s == t)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {what}; shown {:?}; last error {last}",
        shown.texts
    );
}

/// Posts `line` with one Timeline call, retried (as the user would type it
/// again) only while the call fails before the post could be stored.
async fn post(client: &Mp3Client, user: u32, line: &str, shown: &mut Shown) {
    let messages = client
        .call(&format!("user {user} posting {line:?}"), || {
            client.timeline_once(user, line)
        })
        .await;
    shown.add(messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp3_client_with_failover_next_to_a_classic_client() {
    // Two clusters: ids 1 and 3 on cluster 1, 2 and 4 on cluster 2.
    let mut d = Deployment::start(2, 1, Q_MS).await;
    let client = Mp3Client {
        coord: d.coord_addr(),
    };

    // FetchAssignment names the cluster and its primary's MP3 listener.
    let a = client
        .call("an assignment for 1", || async {
            let a = client.fetch_assignment("1").await?;
            if a.port == NOT_FOUND {
                return Err(Status::unavailable("404"));
            }
            Ok(a)
        })
        .await;
    assert_eq!(a.sid, "1");
    assert_eq!(a.hostname, "127.0.0.1");
    let b = client.fetch_assignment("not-a-number").await.unwrap();
    assert_eq!(
        (b.sid.as_str(), b.hostname.as_str(), b.port.as_str()),
        (NOT_FOUND, NOT_FOUND, NOT_FOUND)
    );

    for u in [1, 2, 3] {
        assert_eq!(
            client.login(u, &["first"]).await,
            SUCCESS,
            "first login of {u}"
        );
    }
    assert_eq!(client.login(1, &[]).await, SUCCESS, "a later login");

    // The classic client, on the same deployment at the same time.
    let classic = d.api();
    assert_eq!(classic.login(4).await.unwrap(), SUCCESS);
    assert_eq!(classic.follow(4, "2").await.unwrap(), SUCCESS);

    // LIST across clusters.
    wait_for(
        deadline(),
        "LIST to show the users of both clusters",
        || async {
            let r = client.list(1).await;
            let all: Vec<&str> = r.all_users.iter().map(String::as_str).collect();
            if r.msg == SUCCESS && ["1", "2", "3", "4"].iter().all(|u| all.contains(u)) {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
    )
    .await;

    // A post before the follow is never shown to the follower.
    let mut shown2 = Shown::default();
    post(&client, 2, "before the follow", &mut shown2).await;

    // FOLLOW / UNFOLLOW and their failure replies.
    assert_eq!(client.follow(1, "2").await, SUCCESS);
    assert_eq!(client.follow(1, "2").await, ALREADY_EXISTS);
    assert_eq!(client.follow(1, "1").await, ALREADY_EXISTS);
    assert_eq!(client.follow(1, "99").await, INVALID_USERNAME);
    assert_eq!(client.follow(1, "abc").await, INVALID_USERNAME);
    assert_eq!(
        client.unfollow(1, "3").await,
        INVALID_USERNAME,
        "not followed"
    );
    assert_eq!(client.follow(3, "1").await, SUCCESS);
    assert_eq!(client.follow(1, "3").await, SUCCESS);
    assert_eq!(client.unfollow(1, "3").await, SUCCESS);

    // LIST's following_users are the caller's followers.
    wait_for(deadline(), "user 2's followers to be 1 and 4", || async {
        let r = client.list(2).await;
        let mut f = r.following_users.clone();
        f.sort();
        if f == ["1", "4"] {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;

    let mut classic_stream = classic.open_timeline(4).await.unwrap();

    let mut shown1 = Shown::default();
    post(&client, 2, "p1", &mut shown2).await;
    post(&client, 2, "p2", &mut shown2).await;
    read_until(&client, 1, &mut shown1, &["p1", "p2"]).await;
    assert_eq!(
        shown1.texts.len(),
        2,
        "only the posts after the follow: {:?}",
        shown1.texts
    );

    // A post of user 1 reaches its follower 3 on the same cluster.
    let mut shown3 = Shown::default();
    post(&client, 1, "from 1 before the failover", &mut shown1).await;
    read_until(&client, 3, &mut shown3, &["from 1 before the failover"]).await;

    // kill -9 of cluster 1's primary, with a post on its way to it.
    post(&client, 2, "p3", &mut shown2).await;
    let killed = d.kill9_primary(1).await;
    post(&client, 2, "p4", &mut shown2).await;
    read_until(&client, 1, &mut shown1, &["p1", "p2", "p3", "p4"]).await;
    let (now, _) = d.primary_of(1).await;
    assert_ne!(now, killed, "a secondary took over");
    // Nothing more comes: nothing shown before the failover comes again.
    for _ in 0..3 {
        shown1.add(client.timeline_once(1, "").await.unwrap());
    }
    shown1.assert_each_once();
    let mut texts = shown1.texts.clone();
    texts.sort();
    assert_eq!(texts, ["p1", "p2", "p3", "p4"]);

    post(&client, 1, "from 1 after the failover", &mut shown1).await;
    read_until(&client, 3, &mut shown3, &["from 1 after the failover"]).await;
    assert_eq!(
        shown3.counts().keys().cloned().collect::<Vec<_>>(),
        ["from 1 after the failover", "from 1 before the failover"]
    );
    assert!(
        shown2.texts.is_empty(),
        "user 2 follows nobody: {:?}",
        shown2.texts
    );

    // The classic client (following 2 since before all of them) saw the
    // MP3 client's posts on its open stream.
    let got = classic_stream
        .collect(5, deadline())
        .await
        .unwrap_or_else(|e| panic!("the classic stream: {e}"));
    let texts: Vec<&str> = got.iter().map(|m| m.msg.as_str()).collect();
    assert_eq!(texts, ["before the follow", "p1", "p2", "p3", "p4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_refuses_the_mp3_servers_own_calls_clearly() {
    let d = Deployment::start(1, 0, Q_MS).await;
    let mut coord = SnsCoordinatorServiceClient::new(mp3_channel(&d.coord_addr()).unwrap());
    let status = coord
        .heartbeat(tokio_stream::iter(vec![()]))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(
        status.message().contains("tsn.Coordinator/Heartbeat"),
        "says where registration happens: {}",
        status.message()
    );
}
