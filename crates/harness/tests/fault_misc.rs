//! Fault-tolerance scenarios of tsn, each on its own deployment of the real
//! binaries with the product's failure timeout (500 ms):
//!
//! 1. a frozen primary that wakes up after a failover refuses every write;
//! 2. the classic protocol alone carries users through the death of a
//!    primary, and posts still flow both ways afterwards;
//! 3. a saturated machine causes no false failover;
//! 4. a client killed while its post waits is made whole at its next start,
//!    and the post is stored once however often it is sent;
//! 5. a restarted coordinator changes nothing for servers and clients, and
//!    primaries keep taking writes while it is down;
//! 6. a sync service killed twice in the middle of a stream of posts loses
//!    none and doubles none.
//!
//! Build the binaries first: `cargo build --bins`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Status};
use tsn_cluster::coord::{channel, server_address, stream_channel};
use tsn_datastore::limits::TIMELINE_READ_MAX_POSTS;
use tsn_datastore::record::{ClientLine, EdgeLine, TimelineLine};
use tsn_datastore::{Entry, Op};
use tsn_harness::check::{duplicate_ids, ids, post_texts, texts};
use tsn_harness::stream::texts_of;
use tsn_harness::{wait_for, Api, Config, Deployment, InteractiveClient, Member, TimelineStream};
use tsn_proto::csce438::coord_service_client::CoordServiceClient;
use tsn_proto::csce438::sns_service_client::SnsServiceClient;
use tsn_proto::csce438::{Id, ListReply, Request, ServerInfo};
use tsn_proto::tsn::posts_client::PostsClient;
use tsn_proto::tsn::{ClusterView, PostRequest, ProcessKind, TimelinePost};

/// The coordinator's failure timeout in these tests: the product default.
const FAILURE_TIMEOUT_MS: u64 = tsn_cluster::limits::FAILURE_TIMEOUT_MS;
/// The sync services' poll interval in these tests.
const Q_MS: u64 = 500;
/// How long a failover may take on a loaded machine before a test gives up:
/// it bounds how long a broken build takes to fail, it is no target.
const FAILOVER_DEADLINE_MS: u64 = 20_000;
/// How long a test waits for replicated state it knows is coming.
const CONVERGE_DEADLINE_MS: u64 = 30_000;
/// Time limit of one gRPC call a test makes directly to a process.
const DIRECT_CALL_TIMEOUT_MS: u64 = 5_000;
/// Pause between two attempts of the classic client to find its server.
const CLASSIC_RETRY_PAUSE_MS: u64 = 100;
/// Most times a test stops a primary to get a failover: a loaded machine
/// may drop the secondary from the in-sync set just before, and then no
/// failover may happen (see [`Failover::NoCandidate`]).
const FAILOVER_ATTEMPTS_MAX: u32 = 3;

/// Test 1: how long writes are sent to a primary that woke up after a
/// failover, and the most sent of each kind (post, follow, login).
const FROZEN_WRITES_FOR_MS: u64 = 1_000;
const FROZEN_WRITES_PER_KIND_MAX: u32 = 2_000;

/// Test 3: how long the machine is saturated, how many spinning threads do
/// it (next to a writer per cluster), and how often the coordinator's view
/// is looked at meanwhile.
const SATURATION_FOR_MS: u64 = 10_000;
const SATURATION_BUSY_THREADS: usize = 4;
const SATURATION_SAMPLE_INTERVAL_MS: u64 = 100;
/// Most problems kept from the samples (the first ones tell the story).
const SATURATION_PROBLEMS_MAX: usize = 50;
/// How many of the samples with the longest heartbeat silence are shown.
const SATURATION_SILENCES_KEPT: usize = 5;

/// Test 4: how long the crashed client would have kept retrying.
const PENDING_CLIENT_RETRY_FOR_MS: u64 = 60_000;

/// Test 5: how long the coordinator stays down while primaries take writes.
const COORDINATOR_DOWN_FOR_MS: u64 = 2_000;

/// Test 6: posts of the author (the test names after which ones the sync
/// service is killed and restarted).
const SYNC_CRASH_POSTS: u32 = 50;

/// Bounds of the walk over a deployment's datastore.
const DATA_WALK_DEPTH_MAX: usize = 8;
const DATA_FILES_MAX: usize = 10_000;

const SUCCESS: &str = "SUCCESS";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A deployment of `clusters` clusters, each a primary, `secondaries`
/// secondaries and a sync service, with the product's failure timeout.
async fn start(clusters: u32, secondaries: u32) -> Deployment {
    let mut config = Config::new(clusters, secondaries, Q_MS);
    config.failure_timeout_ms = FAILURE_TIMEOUT_MS;
    Deployment::start_with(config).await
}

async fn views(api: &Api) -> Vec<ClusterView> {
    match api.clusters().await {
        Ok(v) => v,
        Err(status) => panic!("Clusters(): {status}"),
    }
}

/// The epoch of every cluster, as the coordinator says now.
async fn epochs(api: &Api) -> BTreeMap<u32, u64> {
    views(api)
        .await
        .iter()
        .map(|v| (v.cluster_id, v.epoch))
        .collect()
}

/// Waits until `server_id` is alive, a secondary, and in the in-sync set of
/// `cluster`: only then may it be promoted, and only then does every
/// acknowledged write wait for it.
async fn wait_in_sync(d: &Deployment, cluster: u32, server_id: u32) {
    let api = d.api();
    wait_for(
        ms(CONVERGE_DEADLINE_MS),
        &format!("server {server_id} to be an in-sync secondary of cluster {cluster}"),
        || {
            let api = api.clone();
            async move {
                let views = api.coord().clusters().await.map_err(|s| s.to_string())?;
                let view = views
                    .iter()
                    .find(|v| v.cluster_id == cluster)
                    .ok_or_else(|| format!("no cluster {cluster} in {views:?}"))?;
                let alive = view.processes.iter().any(|p| {
                    p.kind == ProcessKind::Server as i32 && p.server_id == server_id && p.alive
                });
                if alive && view.primary_id != server_id && view.in_sync.contains(&server_id) {
                    Ok(())
                } else {
                    Err(format!("{view:?}"))
                }
            }
        },
    )
    .await
}

/// Waits until every secondary of every cluster is in sync.
async fn wait_all_in_sync(d: &Deployment) {
    for cluster in 1..=d.config().clusters {
        let (primary, _) = d.primary_of(cluster).await;
        for server_id in d.server_ids(cluster) {
            if server_id != primary {
                wait_in_sync(d, cluster, server_id).await;
            }
        }
    }
}

/// What became of a cluster whose primary stopped answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failover {
    /// A secondary was promoted under a newer epoch.
    Promoted(u32),
    /// The coordinator sees the primary dead but no secondary is in sync:
    /// nobody may be promoted. A primary drops a secondary that answers too
    /// slowly, which a loaded machine causes, so a test meets this now and
    /// then; it is the product being safe, not the scenario under test.
    NoCandidate,
}

/// The failover, if any, that one coordinator view shows for a cluster
/// whose primary `old` stopped at epoch `epoch_before`.
fn failover_in(view: &ClusterView, old: u32, epoch_before: u64) -> Option<Failover> {
    if view.epoch > epoch_before && view.primary_id != old && view.primary_id != 0 {
        return Some(Failover::Promoted(view.primary_id));
    }
    let old_alive = view
        .processes
        .iter()
        .any(|p| p.kind == ProcessKind::Server as i32 && p.server_id == old && p.alive);
    (view.primary_id == old && !old_alive && view.in_sync.is_empty())
        .then_some(Failover::NoCandidate)
}

/// Waits until the coordinator either promoted a secondary of `cluster`
/// in place of `old` or shows that it cannot.
async fn await_failover(api: &Api, cluster: u32, old: u32, epoch_before: u64) -> Failover {
    wait_for(
        ms(FAILOVER_DEADLINE_MS),
        &format!("the coordinator to replace server {old}, the primary of cluster {cluster}"),
        || {
            let api = api.clone();
            async move {
                let views = api.coord().clusters().await.map_err(|s| s.to_string())?;
                let view = views
                    .iter()
                    .find(|v| v.cluster_id == cluster)
                    .ok_or_else(|| format!("no cluster {cluster} in {views:?}"))?;
                failover_in(view, old, epoch_before).ok_or_else(|| format!("{view:?}"))
            }
        },
    )
    .await
}

/// Waits until every secondary of `cluster` is in sync; returns the
/// primary's id and address and the cluster's epoch.
async fn ready_for_failover(d: &Deployment, cluster: u32) -> (u32, String, u64) {
    let (primary, addr) = d.primary_of(cluster).await;
    for id in d.server_ids(cluster) {
        if id != primary {
            wait_in_sync(d, cluster, id).await;
        }
    }
    let epoch = epochs(&d.api()).await[&cluster];
    (primary, addr, epoch)
}

fn posts_client(addr: &str) -> PostsClient<Channel> {
    match channel(addr, DIRECT_CALL_TIMEOUT_MS) {
        Ok(ch) => PostsClient::new(ch),
        Err(e) => panic!("bad address {addr:?}: {e:#}"),
    }
}

fn sns_client(addr: &str) -> SnsServiceClient<Channel> {
    match channel(addr, DIRECT_CALL_TIMEOUT_MS) {
        Ok(ch) => SnsServiceClient::new(ch),
        Err(e) => panic!("bad address {addr:?}: {e:#}"),
    }
}

fn request(user: u32, arguments: &[&str]) -> Request {
    Request {
        username: user.to_string(),
        arguments: arguments.iter().map(|a| a.to_string()).collect(),
    }
}

fn post_request(user: u32, post_id: &str, text: &str) -> PostRequest {
    PostRequest {
        user,
        post_id: post_id.to_string(),
        text: text.to_string(),
    }
}

async fn post(api: &Api, user: u32, post_id: &str, text: &str) {
    if let Err(status) = api.post(user, post_id, text).await {
        panic!("user {user} post {post_id:?}: {status}");
    }
}

async fn read_all(api: &Api, user: u32) -> Vec<TimelinePost> {
    match api.read(user, TIMELINE_READ_MAX_POSTS as u32).await {
        Ok(posts) => posts,
        Err(status) => panic!("Posts.Read of user {user}: {status}"),
    }
}

/// Waits until `user`'s timeline holds a post with text `text`.
async fn wait_timeline_has(d: &Deployment, user: u32, text: &str) {
    let api = d.api();
    wait_for(
        ms(CONVERGE_DEADLINE_MS),
        &format!("user {user}'s timeline to hold {text:?}"),
        || {
            let api = api.clone();
            async move {
                let posts = api
                    .read(user, TIMELINE_READ_MAX_POSTS as u32)
                    .await
                    .map_err(|s| s.to_string())?;
                let got = post_texts(&posts);
                if got.iter().any(|t| t == text) {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            }
        },
    )
    .await
}

/// Every entry of a journal file that parses (none if it is missing).
fn journal_entries(path: &Path) -> Vec<Entry> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .split(|&b| b == b'\n')
        .filter_map(Entry::from_line)
        .collect()
}

// ------------------------------------------------------------ 1. frozen primary

/// The writes sent to a primary that woke up after a failover: none of
/// them may leave a trace in any file.
#[derive(Debug, Default)]
struct Refused {
    post_ids: BTreeSet<String>,
    users: BTreeSet<u32>,
    /// (user, target) of the refused follow.
    follow: Option<(u32, u32)>,
    /// A text that only the refused posts contain.
    text_marker: String,
}

/// Why one line of a datastore file is a trace of a refused write, if it is.
/// `file_name` says what the line is; `owner` is the client whose directory
/// holds the file (`local_clients/<owner>/…`).
fn line_trace(
    file_name: &str,
    owner: Option<u32>,
    line: &str,
    refused: &Refused,
) -> Option<&'static str> {
    if !refused.text_marker.is_empty() && line.contains(&refused.text_marker) {
        return Some("the text of a refused post");
    }
    match file_name {
        "journal.data" => op_trace(&Entry::from_line(line.as_bytes())?.op, refused),
        "timeline.data" => {
            let l: TimelineLine = serde_json::from_str(line).ok()?;
            refused
                .post_ids
                .contains(&l.post.id)
                .then_some("a refused post in a timeline")
        }
        "global_clients.data" => {
            let l: ClientLine = serde_json::from_str(line).ok()?;
            refused
                .users
                .contains(&l.user)
                .then_some("a refused login in the user list")
        }
        "following.data" | "followers.data" => {
            let (user, target) = refused.follow?;
            let l: EdgeLine = serde_json::from_str(line).ok()?;
            let hit = if file_name == "following.data" {
                owner == Some(user) && l.user == target
            } else {
                owner == Some(target) && l.user == user
            };
            hit.then_some("a refused follow in a follow list")
        }
        _ => None,
    }
}

/// Why a journal operation is a trace of a refused write, if it is.
fn op_trace(op: &Op, refused: &Refused) -> Option<&'static str> {
    match op {
        Op::User { user, .. } if refused.users.contains(user) => Some("a refused login"),
        Op::Follow { user, target, .. } if refused.follow == Some((*user, *target)) => {
            Some("a refused follow")
        }
        Op::AddFollower { user, follower, .. } if refused.follow == Some((*follower, *user)) => {
            Some("the follower edge of a refused follow")
        }
        Op::Post(p) | Op::Deliver { post: p, .. } if refused.post_ids.contains(&p.id) => {
            Some("a refused post")
        }
        _ => None,
    }
}

/// Every `.data` file under `root`, and every client directory, at most
/// [`DATA_FILES_MAX`] of them.
fn data_files(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut client_dirs = Vec::new();
    let mut todo = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if dir.file_name().is_some_and(|n| n == "local_clients") {
                    client_dirs.push(path.clone());
                }
                if depth < DATA_WALK_DEPTH_MAX {
                    todo.push((path, depth + 1));
                }
            } else if path.extension().is_some_and(|e| e == "data") {
                files.push(path);
            }
            assert!(
                files.len() + client_dirs.len() <= DATA_FILES_MAX,
                "more than {DATA_FILES_MAX} files under {}",
                root.display()
            );
        }
    }
    (files, client_dirs)
}

/// Every trace of `refused` in the datastore under `root`, one line each.
fn traces(root: &Path, refused: &Refused) -> Vec<String> {
    let (files, client_dirs) = data_files(root);
    let mut found = Vec::new();
    for dir in client_dirs {
        let owner = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok());
        if owner.is_some_and(|u| refused.users.contains(&u)) {
            found.push(format!("{}: a refused user has files", dir.display()));
        }
    }
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let owner = file
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok());
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default()).into_owned();
        for (i, line) in text.lines().enumerate() {
            if let Some(why) = line_trace(&name, owner, line, refused) {
                found.push(format!("{} line {}: {why}: {line}", file.display(), i + 1));
            }
        }
    }
    found
}

/// What the old primary answered to the writes sent to it after it woke up.
#[derive(Debug, Default)]
struct Answers {
    refused: Refused,
    sent: BTreeMap<&'static str, u32>,
    /// How many UNAVAILABLE refusals said each reason (the first clause of
    /// the message): it shows which fence refused, the lease or the role.
    reasons: BTreeMap<String, u32>,
    /// Everything that was not an UNAVAILABLE refusal.
    wrong: Vec<String>,
}

impl Answers {
    fn note(&mut self, kind: &'static str, what: String, result: Result<(), Status>) {
        *self.sent.entry(kind).or_default() += 1;
        match result {
            Err(status) if status.code() == Code::Unavailable => {
                let reason = status.message().split(';').next().unwrap_or_default();
                *self.reasons.entry(reason.to_string()).or_default() += 1;
            }
            other => self.wrong.push(format!("{what}: {other:?}")),
        }
    }
}

/// Sends posts (as `poster`), a follow and logins of new users (from
/// `login_base` on, every `clusters`-th id: all served by the same cluster)
/// through `posts` and `sns`, the three kinds at once, for [`FROZEN_WRITES_FOR_MS`]; every
/// answer is recorded.
async fn hammer(
    posts: PostsClient<Channel>,
    sns: SnsServiceClient<Channel>,
    poster: u32,
    follow: (u32, u32),
    login_base: u32,
    clusters: u32,
) -> Answers {
    let until = Instant::now() + ms(FROZEN_WRITES_FOR_MS);
    let posting = async {
        let mut got = Vec::new();
        let mut client = posts.clone();
        for i in 0..FROZEN_WRITES_PER_KIND_MAX {
            if Instant::now() >= until {
                break;
            }
            let id = format!("{poster}-frozen-{i}");
            let req = post_request(poster, &id, &format!("frozen-{i}"));
            let result = client.post(req).await.map(|_| ());
            got.push((id, result));
        }
        got
    };
    let following = async {
        let (user, target) = follow;
        let mut got = Vec::new();
        let mut client = sns.clone();
        for _ in 0..FROZEN_WRITES_PER_KIND_MAX {
            if Instant::now() >= until {
                break;
            }
            let req = request(user, &[&target.to_string()]);
            got.push(client.follow(req).await.map(|_| ()));
        }
        got
    };
    let logging_in = async {
        let mut got = Vec::new();
        let mut client = sns.clone();
        for i in 0..FROZEN_WRITES_PER_KIND_MAX {
            if Instant::now() >= until {
                break;
            }
            let user = login_base + i * clusters;
            got.push((user, client.login(request(user, &[])).await.map(|_| ())));
        }
        got
    };
    let (posted, followed, logged_in) = tokio::join!(posting, following, logging_in);
    let (user, target) = follow;
    let mut answers = Answers::default();
    answers.refused.follow = Some(follow);
    answers.refused.text_marker = "frozen-".to_string();
    for (id, result) in posted {
        answers.note("post", format!("Posts.Post {id}"), result);
        answers.refused.post_ids.insert(id);
    }
    for result in followed {
        answers.note("follow", format!("Follow {user} -> {target}"), result);
    }
    for (new_user, result) in logged_in {
        answers.note("login", format!("Login {new_user}"), result);
        answers.refused.users.insert(new_user);
    }
    answers
}

/// 1. A primary frozen (SIGSTOP) long enough to be replaced wakes up and is
/// sent writes at once: it refuses every one, none leaves a trace in any
/// file, and the post the new primary acknowledged reaches its follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_primary_refuses_writes_after_failover() {
    let mut d = start(3, 1).await;
    let api = d.api();
    // With 3 clusters: 1 and 4 on cluster 1, 2 on cluster 2, 3 on cluster 3.
    d.login_all(&[1, 2, 3, 4]).await;
    d.follow_and_wait(2, 1).await;
    let (old, old_addr, new) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (old, old_addr, epoch_before) = ready_for_failover(&d, 1).await;
            d.server(1, old).pause();
            match await_failover(&api, 1, old, epoch_before).await {
                Failover::Promoted(new) => break (old, old_addr, new),
                Failover::NoCandidate => {
                    assert!(
                        attempt < FAILOVER_ATTEMPTS_MAX,
                        "{attempt} times no secondary of cluster 1 was in sync when its primary froze"
                    );
                    eprintln!("no secondary was in sync when the primary froze; once more");
                    d.server(1, old).resume();
                }
            }
        }
    };
    post(&api, 1, "1-after-failover", "after-failover").await;

    // The clients exist before the old primary runs again, so that the
    // first writes leave right after it does.
    let (posts, sns) = (posts_client(&old_addr), sns_client(&old_addr));
    d.server(1, old).resume();
    // User 4 follows user 3; new users 7, 10, 13, … are all of cluster 1.
    let answers = hammer(posts, sns, 1, (4, 3), 7, 3).await;
    eprintln!(
        "writes sent to the woken primary: {:?}; refusals: {:?}",
        answers.sent, answers.reasons
    );
    for kind in ["post", "follow", "login"] {
        assert!(
            answers.sent.get(kind).is_some_and(|&n| n > 0),
            "no {kind} was sent to the woken primary"
        );
    }
    assert!(
        answers.wrong.is_empty(),
        "the woken primary did not refuse every write with UNAVAILABLE ({} of them):\n{}",
        answers.wrong.len(),
        answers
            .wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Once it has rejoined as a secondary, its files hold what the new
    // primary has: nothing of the refused writes anywhere.
    wait_in_sync(&d, 1, old).await;
    let (primary_now, _) = d.primary_of(1).await;
    assert_eq!(primary_now, new, "cluster 1 changed primary again");
    let found = traces(&d.datastore_root(), &answers.refused);
    assert!(
        found.is_empty(),
        "refused writes left traces:\n{}",
        found.join("\n")
    );
    wait_timeline_has(&d, 2, "after-failover").await;
}

// ------------------------------------------------------------ 2. classic client

/// A client that speaks only the classic protocol, as an unmodified Tiny
/// SNS client does: `CoordService.GetServer`, then `SNSService`.
struct Classic {
    user: u32,
    addr: String,
    sns: SnsServiceClient<Channel>,
}

impl Classic {
    /// Asks the coordinator for the user's server and logs in there, again
    /// and again until a server answers SUCCESS: right after a primary dies
    /// the coordinator still names it until it notices.
    async fn connect(coord_addr: &str, user: u32) -> Classic {
        let coord = match channel(coord_addr, DIRECT_CALL_TIMEOUT_MS) {
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
            if start.elapsed() >= ms(FAILOVER_DEADLINE_MS) {
                panic!(
                    "the classic client of user {user} found no server in {FAILOVER_DEADLINE_MS} ms \
                     ({attempts} attempts); last: {why}"
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

    async fn list(&self) -> ListReply {
        match self.sns.clone().list(request(self.user, &[])).await {
            Ok(r) => r.into_inner(),
            Err(status) => panic!(
                "classic LIST of user {} on {}: {status}",
                self.user, self.addr
            ),
        }
    }

    async fn follow(&self, target: u32) -> String {
        let req = request(self.user, &[&target.to_string()]);
        match self.sns.clone().follow(req).await {
            Ok(r) => r.into_inner().msg,
            Err(status) => panic!(
                "classic FOLLOW {target} of user {} on {}: {status}",
                self.user, self.addr
            ),
        }
    }

    async fn timeline(&self) -> TimelineStream {
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
    async fn wait_list(&self, what: &str, check: impl Fn(&ListReply) -> bool) -> ListReply {
        let start = Instant::now();
        loop {
            let listing = self.list().await;
            if check(&listing) {
                return listing;
            }
            if start.elapsed() >= ms(CONVERGE_DEADLINE_MS) {
                panic!("timed out waiting for {what}; last LIST: {listing:?}");
            }
            tokio::time::sleep(ms(tsn_harness::limits::POLL_INTERVAL_MS)).await;
        }
    }
}

fn id_set(list: &[String]) -> BTreeSet<String> {
    list.iter().cloned().collect()
}

/// 2. The classic scenario: the primary of cluster 2 dies; through nothing
/// but the classic protocol, user 2 finds its followers and timeline as
/// they were, a new user of cluster 2 joins, and posts flow both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_scenario_primary_of_cluster_2_dies() {
    let mut d = start(3, 1).await;
    let api = d.api();
    d.login_all(&[1, 2, 3]).await;
    d.follow_and_wait(1, 2).await;
    d.follow_and_wait(3, 2).await;
    d.follow_and_wait(2, 1).await;
    post(&api, 2, "2-hello", "hello from 2").await;
    post(&api, 1, "1-hello", "hello from 1").await;
    let before = vec!["hello from 1".to_string(), "hello from 2".to_string()];
    d.wait_timeline(2, &before).await;
    let killed = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (old, _, epoch_before) = ready_for_failover(&d, 2).await;
            let member = Member::Server {
                cluster: 2,
                server_id: old,
            };
            d.kill9(member);
            match await_failover(&api, 2, old, epoch_before).await {
                Failover::Promoted(_) => break old,
                Failover::NoCandidate => {
                    assert!(
                        attempt < FAILOVER_ATTEMPTS_MAX,
                        "{attempt} times no secondary of cluster 2 was in sync when its primary died"
                    );
                    eprintln!("no secondary was in sync when the primary died; once more");
                    d.restart(member).await;
                    d.wait_healthy().await;
                }
            }
        }
    };
    let coord = d.coord_addr();
    // Acting as a classic client would: nothing but GetServer and SNSService.
    let c2 = Classic::connect(&coord, 2).await;
    let (now, _) = d.primary_of(2).await;
    assert_ne!(
        now, killed,
        "cluster 2's primary is still the killed server"
    );

    let listing = c2.list().await;
    assert_eq!(id_set(&listing.followers), ids([1, 3]), "{listing:?}");
    assert!(
        ids([1, 2, 3]).is_subset(&id_set(&listing.all_users)),
        "{listing:?}"
    );
    let mut s2 = c2.timeline().await;
    let batch = match s2.collect(before.len(), ms(CONVERGE_DEADLINE_MS)).await {
        Ok(b) => b,
        Err(e) => panic!("user 2's timeline after the failover: {e}"),
    };
    assert_eq!(
        texts_of(&batch),
        before,
        "user 2's timeline after the failover"
    );

    // A new user of cluster 2 joins after the failover.
    let c5 = Classic::connect(&coord, 5).await;
    assert_eq!(c5.follow(1).await, SUCCESS, "user 5 FOLLOW 1");
    let c3 = Classic::connect(&coord, 3).await;
    assert_eq!(c3.follow(5).await, SUCCESS, "user 3 FOLLOW 5");
    c5.wait_list("user 5's followers to include 3", |l| {
        l.followers.contains(&"3".to_string())
    })
    .await;
    let c1 = Classic::connect(&coord, 1).await;
    c1.wait_list("user 1's followers to be 2 and 5", |l| {
        id_set(&l.followers) == ids([2, 5])
    })
    .await;

    let s3 = c3.timeline().await.record();
    let s5 = c5.timeline().await;
    if let Err(e) = s5.post("hello from 5").await {
        panic!("user 5 posting on its stream: {e}");
    }
    let s5 = s5.record();
    s3.wait_for_text("hello from 5", ms(CONVERGE_DEADLINE_MS))
        .await;

    let s1 = c1.timeline().await;
    if let Err(e) = s1.post("hello again from 1").await {
        panic!("user 1 posting on its stream: {e}");
    }
    s5.wait_for_text("hello again from 1", ms(CONVERGE_DEADLINE_MS))
        .await;
    // Posting through a stream has no acknowledgement: the author's own
    // timeline shows that each post was stored once.
    for (user, text) in [(5, "hello from 5"), (1, "hello again from 1")] {
        wait_timeline_has(&d, user, text).await;
        let own = read_all(&api, user).await;
        let n = own.iter().filter(|p| p.text == text).count();
        assert_eq!(n, 1, "user {user}'s timeline holds {text:?} {n} times");
    }
}

// ------------------------------------------------------------ 3. saturation

/// Threads that spin until dropped, to keep every core busy.
struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start(n: usize) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6364136223846793005).wrapping_add(1),
                            );
                        }
                    }
                })
            })
            .collect();
        Busy { stop, threads }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What is wrong in one coordinator view, compared with the epochs of
/// before: an epoch that moved, a cluster without primary, a process that
/// is not alive.
fn view_problems(views: &[ClusterView], epochs: &BTreeMap<u32, u64>) -> Vec<String> {
    let mut problems = Vec::new();
    for (cluster, epoch) in epochs {
        let Some(v) = views.iter().find(|v| v.cluster_id == *cluster) else {
            problems.push(format!("cluster {cluster} is missing"));
            continue;
        };
        if v.epoch != *epoch {
            problems.push(format!(
                "cluster {cluster}: epoch {} instead of {epoch} (primary {})",
                v.epoch, v.primary_id
            ));
        }
        if v.primary_id == 0 {
            problems.push(format!("cluster {cluster} has no primary"));
        }
        for p in v.processes.iter().filter(|p| !p.alive) {
            let what = if p.kind == ProcessKind::Server as i32 {
                format!("server {}", p.server_id)
            } else {
                "the sync service".to_string()
            };
            problems.push(format!(
                "cluster {cluster}: {what} is not alive ({} ms since its heartbeat)",
                p.since_heartbeat_ms
            ));
        }
    }
    problems
}

/// 3. Both cores saturated for ten seconds (spinning threads and a writer
/// per cluster posting as fast as it can): no epoch changes and every
/// process stays alive in the coordinator's eyes, with the product's
/// failure timeout and heartbeat interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_failover_under_saturation() {
    let mut d = start(3, 1).await;
    let api = d.api();
    d.login_all(&[1, 2, 3]).await;
    wait_all_in_sync(&d).await;
    let before = epochs(&api).await;
    let problems = view_problems(&views(&api).await, &before);
    assert!(problems.is_empty(), "before the load: {problems:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for cluster in 1..=d.config().clusters {
        let (_, addr) = d.primary_of(cluster).await;
        let client = posts_client(&addr);
        let stop = stop.clone();
        // User `cluster` is served by cluster `cluster`.
        let user = cluster;
        writers.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut failures = BTreeMap::<String, u64>::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let req = post_request(user, &format!("{user}-load-{n}"), &format!("load {n}"));
                match client.clone().post(req).await {
                    Ok(_) => ok += 1,
                    Err(status) => {
                        let reason = status.message().to_string();
                        if failures.len() < SATURATION_PROBLEMS_MAX
                            || failures.contains_key(&reason)
                        {
                            *failures.entry(reason).or_default() += 1;
                        }
                    }
                }
            }
            (user, ok, failures)
        }));
    }
    let busy = Busy::start(SATURATION_BUSY_THREADS);
    // This test lets time pass by design: it proves that nothing happens
    // under load. Meanwhile the coordinator's view is sampled.
    let load_start = Instant::now();
    let mut seen = Vec::new();
    let mut samples = 0u64;
    let mut unanswered = 0u64;
    // The samples with the longest silences, longest first: they tell a
    // stalled process from a stalled coordinator.
    let mut silences: Vec<(u64, String)> = Vec::new();
    while load_start.elapsed() < ms(SATURATION_FOR_MS) {
        let asked = Instant::now();
        match api.coord().clusters().await {
            Ok(v) => {
                samples += 1;
                let at_ms = load_start.elapsed().as_millis();
                for p in view_problems(&v, &before) {
                    if seen.len() < SATURATION_PROBLEMS_MAX {
                        seen.push(format!("at {at_ms} ms: {p}"));
                    }
                }
                if let Some((who, longest, median)) = longest_silence(&v) {
                    silences.push((
                        longest,
                        format!(
                            "at {at_ms} ms: {who} silent for {longest} ms, median {median} ms, \
                             Clusters() answered in {} ms",
                            asked.elapsed().as_millis()
                        ),
                    ));
                    silences.sort_by_key(|s| std::cmp::Reverse(s.0));
                    silences.truncate(SATURATION_SILENCES_KEPT);
                }
            }
            Err(_) => unanswered += 1,
        }
        tokio::time::sleep(ms(SATURATION_SAMPLE_INTERVAL_MS)).await;
    }
    let silences: Vec<String> = silences.into_iter().map(|(_, s)| s).collect();
    drop(busy);
    stop.store(true, Ordering::Relaxed);
    let mut posted = Vec::new();
    for w in writers {
        match w.await {
            Ok(r) => posted.push(r),
            Err(e) => panic!("a writer failed: {e}"),
        }
    }
    eprintln!(
        "under load: {samples} samples of the coordinator's view ({unanswered} unanswered); \
         posts (user, acknowledged, failures by reason): {posted:?}\nlongest silences:\n{}",
        silences.join("\n")
    );

    let after = views(&api).await;
    let mut problems = view_problems(&after, &before);
    problems.extend(seen);
    // What the coordinator said about liveness: whether it declared one
    // process dead or many at once tells a stalled process from a stalled
    // coordinator.
    let said = liveness_lines(&d.coordinator().stderr_since_start());
    assert!(
        problems.is_empty(),
        "false failure detection under load:\n{problems:#?}\nthe coordinator said:\n{}\n\
         longest silences seen in the samples:\n{}",
        said.join("\n"),
        silences.join("\n")
    );
    assert!(
        samples > 0,
        "the coordinator never answered during the load"
    );
    for (user, ok, failures) in &posted {
        assert!(
            *ok > 0,
            "user {user}'s writer got no post acknowledged: {failures:?}"
        );
    }
}

/// The longest silence in one coordinator view: who, how long since its
/// last heartbeat (ms), and the median of every process's silence. One
/// process silent among chatty ones was stalled itself; every process
/// silent at once means the coordinator did not listen.
fn longest_silence(views: &[ClusterView]) -> Option<(String, u64, u64)> {
    let mut all: Vec<(u64, String)> = views
        .iter()
        .flat_map(|v| {
            v.processes.iter().map(move |p| {
                let who = if p.kind == ProcessKind::Server as i32 {
                    format!("server {} of cluster {}", p.server_id, v.cluster_id)
                } else {
                    format!("the sync service of cluster {}", v.cluster_id)
                };
                (p.since_heartbeat_ms, who)
            })
        })
        .collect();
    all.sort();
    let median = all.get(all.len() / 2)?.0;
    let (longest, who) = all.pop()?;
    Some((who, longest, median))
}

/// The lines of a coordinator log about liveness: deaths, returns and
/// promotions, at most [`SATURATION_PROBLEMS_MAX`] of them.
fn liveness_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" is dead") || l.contains("alive again") || l.contains("promoted"))
        .take(SATURATION_PROBLEMS_MAX)
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------------------ 4. crashed client

/// The pending posts of a client state file: (post id, text) in order.
fn parse_pending(text: &str) -> Result<Vec<(String, String)>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text:?}"))?;
    let list = value
        .get("pending")
        .and_then(|p| p.as_array())
        .ok_or_else(|| format!("no \"pending\" array: {text:?}"))?;
    list.iter()
        .map(|p| {
            let field = |name: &str| {
                p.get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| format!("a pending post without {name}: {p}"))
            };
            Ok((field("post_id")?, field("text")?))
        })
        .collect()
}

/// The pending posts in the state file `path` (none if it is missing).
fn pending_in(path: &Path) -> Result<Vec<(String, String)>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_pending(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Checks that post `post_id` is stored exactly once: in `user`'s timeline
/// as the primary of `cluster` serves it, and in that primary's journal.
async fn stored_once(d: &Deployment, cluster: u32, user: u32, post_id: &str) {
    let timeline = read_all(&d.api(), user).await;
    let n = timeline.iter().filter(|p| p.post_id == post_id).count();
    assert_eq!(
        n, 1,
        "post {post_id} is {n} times in user {user}'s timeline: {timeline:?}"
    );
    assert!(duplicate_ids(&timeline).is_empty(), "{timeline:?}");
    let (primary, _) = d.primary_of(cluster).await;
    let journal = journal_entries(&d.layout(cluster, primary).journal());
    let n = journal
        .iter()
        .filter(|e| matches!(&e.op, Op::Post(p) if p.id == post_id))
        .count();
    assert_eq!(n, 1, "post {post_id} is {n} times in the primary's journal");
}

/// Runs `tsn_client list` for user 1 and checks that it re-sent exactly one
/// pending post.
async fn list_resends_one(d: &Deployment) {
    let (code, stdout, stderr) = d.client(&["-i", "1", "list"]).await;
    assert_eq!(
        code, 0,
        "tsn_client list failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("resent 1 pending post(s)"),
        "tsn_client list did not say it re-sent the pending post:\nstderr:\n{stderr}"
    );
}

/// 4. A client killed while its post waits for an unreachable cluster keeps
/// it in its state file; its next run re-sends it, and the post is stored
/// once — also when the same pending file is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_crash_pending_post_is_stored_once() {
    let mut d = start(1, 1).await;
    d.login_all(&[1]).await;
    wait_all_in_sync(&d).await;
    let (primary, _) = d.primary_of(1).await;
    let servers = d.server_ids(1);
    for &id in &servers {
        d.kill9(Member::Server {
            cluster: 1,
            server_id: id,
        });
    }

    let state_dir = d.client_state_dir();
    let state_file = state_dir.join("1.json");
    let coord = d.coord_addr();
    let retry_for = PENDING_CLIENT_RETRY_FOR_MS.to_string();
    let dir_arg = state_dir.to_string_lossy().into_owned();
    let mut client = InteractiveClient::spawn(&[
        "-c",
        &coord,
        "--state-dir",
        &dir_arg,
        "-i",
        "1",
        "--retry-for-ms",
        &retry_for,
        "post",
        "hello-pending",
    ]);
    let pending = wait_for(
        ms(CONVERGE_DEADLINE_MS),
        "the client's state file to list the pending post",
        || {
            let file = state_file.clone();
            async move {
                let posts = pending_in(&file)?;
                if posts.is_empty() {
                    Err("no pending post yet".to_string())
                } else {
                    Ok(posts)
                }
            }
        },
    )
    .await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let (post_id, text) = pending[0].clone();
    assert_eq!(text, "hello-pending");
    let saved = match std::fs::read(&state_file) {
        Ok(b) => b,
        Err(e) => panic!("reading {}: {e}", state_file.display()),
    };
    client.kill().await;
    assert_eq!(
        client.wait_exit(ms(CONVERGE_DEADLINE_MS)).await,
        Some(-1),
        "the client must have died of the kill; stdout:\n{}\nstderr:\n{}",
        client.stdout(),
        client.stderr()
    );

    // The primary first, so that it is the one asking for the role.
    let mut order = servers.clone();
    order.sort_by_key(|&id| id != primary);
    for id in order {
        d.restart(Member::Server {
            cluster: 1,
            server_id: id,
        })
        .await;
    }
    d.wait_healthy().await;

    list_resends_one(&d).await;
    stored_once(&d, 1, 1, &post_id).await;
    assert_eq!(pending_in(&state_file), Ok(Vec::new()), "still pending");

    // The same pending file once more: the server stores the id once.
    if let Err(e) = std::fs::write(&state_file, &saved) {
        panic!("restoring {}: {e}", state_file.display());
    }
    list_resends_one(&d).await;
    stored_once(&d, 1, 1, &post_id).await;
    assert_eq!(pending_in(&state_file), Ok(Vec::new()), "still pending");
}

// ------------------------------------------------------------ 5. coordinator restart

/// 5. kill -9 of the coordinator: each primary keeps taking writes while
/// it is down (its in-sync secondaries renew its lease); once it is back on
/// its state, epochs and primaries are as before, every process is alive
/// again, and `tsn_client` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_keeps_clients_working() {
    let mut d = start(3, 1).await;
    let api = d.api();
    let clusters = d.config().clusters;
    // User `c` is served by cluster `c`.
    let users: Vec<u32> = (1..=clusters).collect();
    d.login_all(&users).await;
    wait_all_in_sync(&d).await;
    let epochs_before = epochs(&api).await;
    let mut primaries = BTreeMap::new();
    let mut servers_before = BTreeMap::new();
    for &user in &users {
        primaries.insert(user, d.primary_of(user).await);
        match api.coord().get_server(user).await {
            Ok(info) => servers_before.insert(user, info),
            Err(status) => panic!("GetServer({user}): {status}"),
        };
    }

    d.kill9(Member::Coordinator);
    let clients: BTreeMap<u32, PostsClient<Channel>> = primaries
        .iter()
        .map(|(&user, (_, addr))| (user, posts_client(addr)))
        .collect();
    // This loop lets time pass by design: the leases must outlive the
    // coordinator's silence (the coordinator's own confirmation lapses
    // after 80% of the failure timeout; the secondaries renew it since).
    let down_since = Instant::now();
    let mut posted: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut round = 0u32;
    while down_since.elapsed() < ms(COORDINATOR_DOWN_FOR_MS) {
        round += 1;
        for (&user, client) in &clients {
            let text = format!("while down {round}");
            let req = post_request(user, &format!("{user}-down-{round}"), &text);
            let at_ms = down_since.elapsed().as_millis();
            match client.clone().post(req).await {
                Ok(_) => posted.entry(user).or_default().push(text),
                Err(status) => panic!(
                    "post {round} of user {user}, {at_ms} ms after the coordinator died: {status}"
                ),
            }
        }
    }
    eprintln!("posts acknowledged while the coordinator was down: {round} per cluster");
    assert!(
        round >= 2,
        "too few posts while the coordinator was down to tell anything"
    );

    d.restart(Member::Coordinator).await;
    assert_eq!(
        epochs(&api).await,
        epochs_before,
        "the restarted coordinator reports other epochs"
    );
    d.wait_healthy().await;
    assert_eq!(epochs(&api).await, epochs_before, "epochs changed");
    for &user in &users {
        let (id, addr) = d.primary_of(user).await;
        assert_eq!(
            (id, addr),
            primaries[&user].clone(),
            "cluster {user} changed primary"
        );
        match api.coord().get_server(user).await {
            Ok(info) => assert_eq!(info, servers_before[&user], "GetServer({user})"),
            Err(status) => panic!("GetServer({user}) after the restart: {status}"),
        }
    }
    for (user, texts) in &posted {
        let stored = post_texts(&read_all(&api, *user).await);
        for t in texts {
            assert_eq!(
                stored.iter().filter(|s| *s == t).count(),
                1,
                "user {user}'s timeline must hold {t:?} once: {stored:?}"
            );
        }
    }

    let (code, stdout, stderr) = d
        .client(&["-i", "1", "post", "after the coordinator restart"])
        .await;
    assert_eq!(
        code, 0,
        "tsn_client post failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    wait_timeline_has(&d, 1, "after the coordinator restart").await;
}

// ------------------------------------------------------------ 6. sync service crash

/// Posts `s<i>` as user 1 for every `i` of `range`, one after the other,
/// each acknowledged before the next.
async fn post_range(api: &Api, range: std::ops::RangeInclusive<u32>) {
    for i in range {
        post(api, 1, &format!("1-s{i}"), &format!("s{i}")).await;
    }
}

/// 6. The sync service of the author's cluster is killed twice in the
/// middle of a stream of 50 posts (once while it is delivering, once while
/// it is catching up after a restart): the follower on the other cluster
/// ends with exactly those 50 posts, once each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_service_crash_loses_and_duplicates_nothing() {
    let mut d = start(2, 0).await;
    let api = d.api();
    // User 1 on cluster 1, user 2 on cluster 2.
    d.login_all(&[1, 2]).await;
    d.follow_and_wait(2, 1).await;
    let sync1 = Member::Sync { cluster: 1 };

    // Phases, each ending at an acknowledged post:
    // 1..=15 with the sync service running, then killed at once (some
    // deliveries are in flight); 16..=25 while it is down; 26..=35 while it
    // restarts; killed again at once (it is catching up); 36..=42 while it
    // is down; 43..=50 while it restarts.
    post_range(&api, 1..=15).await;
    d.kill9(sync1);
    post_range(&api, 16..=25).await;
    tokio::join!(post_range(&api, 26..=35), d.restart(sync1));
    d.kill9(sync1);
    post_range(&api, 36..=42).await;
    tokio::join!(post_range(&api, 43..=SYNC_CRASH_POSTS), d.restart(sync1));
    assert_eq!(
        d.sync(1).starts(),
        3,
        "the sync service started three times"
    );

    let want = texts("s", (1..=SYNC_CRASH_POSTS).rev());
    let got = d.wait_timeline(2, &want).await;
    assert!(duplicate_ids(&got).is_empty(), "{got:?}");
    let (primary, _) = d.primary_of(2).await;
    let journal = journal_entries(&d.layout(2, primary).journal());
    let mut delivered = BTreeMap::<String, u32>::new();
    for e in &journal {
        if let Op::Deliver { to, post } = &e.op {
            if !to.contains(&2) {
                continue;
            }
            *delivered.entry(post.id.clone()).or_default() += 1;
        }
    }
    assert_eq!(
        delivered.len(),
        SYNC_CRASH_POSTS as usize,
        "deliveries into user 2's timeline: {delivered:?}"
    );
    assert!(
        delivered.values().all(|&n| n == 1),
        "a post was delivered twice: {delivered:?}"
    );
    d.wait_timeline(1, &want).await;
}

// ------------------------------------------------------------ helpers' own tests

#[cfg(test)]
mod helper_tests {
    use super::*;
    use tsn_datastore::Post;
    use tsn_proto::tsn::ProcessView;

    fn refused() -> Refused {
        Refused {
            post_ids: ["1-frozen-0".to_string()].into_iter().collect(),
            users: [7].into_iter().collect(),
            follow: Some((4, 3)),
            text_marker: "frozen-".to_string(),
        }
    }

    fn entry(op: Op) -> String {
        Entry {
            seq: 9,
            epoch: 2,
            op,
        }
        .to_line()
    }

    fn a_post(id: &str, text: &str) -> Post {
        Post {
            id: id.to_string(),
            author: 1,
            text: text.to_string(),
            ts_ms: 1,
        }
    }

    #[test]
    fn journal_lines_of_refused_writes_are_traces() {
        let r = refused();
        let user = entry(Op::User {
            user: 7,
            cluster: 1,
        });
        assert!(line_trace("journal.data", None, &user, &r).is_some());
        let other_user = entry(Op::User {
            user: 10,
            cluster: 1,
        });
        assert!(line_trace("journal.data", None, &other_user, &r).is_none());
        let follow = entry(Op::Follow {
            user: 4,
            target: 3,
            since_ms: 0,
        });
        assert!(line_trace("journal.data", None, &follow, &r).is_some());
        let reverse = entry(Op::Follow {
            user: 3,
            target: 4,
            since_ms: 0,
        });
        assert!(line_trace("journal.data", None, &reverse, &r).is_none());
        let edge = entry(Op::AddFollower {
            user: 3,
            follower: 4,
            since_ms: 0,
            version: 1,
        });
        assert!(line_trace("journal.data", None, &edge, &r).is_some());
        let deliver = entry(Op::Deliver {
            to: vec![2],
            post: a_post("1-frozen-0", "x"),
        });
        assert!(line_trace("journal.data", None, &deliver, &r).is_some());
        let fine = entry(Op::Post(a_post("1-after-failover", "after-failover")));
        assert!(line_trace("journal.data", None, &fine, &r).is_none());
        assert!(line_trace("journal.data", None, "not json", &r).is_none());
    }

    #[test]
    fn other_files_are_read_by_their_kind() {
        let r = refused();
        let timeline = r#"{"seq":3,"time":"t","id":"1-frozen-0","author":1,"text":"x","ts_ms":1}"#;
        assert!(line_trace("timeline.data", Some(2), timeline, &r).is_some());
        let marker = r#"{"seq":3,"time":"t","id":"1-z","author":1,"text":"frozen-5","ts_ms":1}"#;
        assert!(line_trace("timeline.data", Some(2), marker, &r).is_some());
        let client = r#"{"seq":4,"user":7,"cluster":1}"#;
        assert!(line_trace("global_clients.data", None, client, &r).is_some());
        let following = r#"{"seq":5,"op":"follow","user":3}"#;
        assert!(line_trace("following.data", Some(4), following, &r).is_some());
        assert!(line_trace("following.data", Some(1), following, &r).is_none());
        let follower = r#"{"seq":5,"op":"add","user":4}"#;
        assert!(line_trace("followers.data", Some(3), follower, &r).is_some());
        assert!(line_trace("followers.data", Some(2), follower, &r).is_none());
    }

    #[test]
    fn traces_are_found_in_a_directory_tree() {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = dir.path().join("1").join("2");
        let client = server.join("local_clients").join("7");
        std::fs::create_dir_all(&client).expect("mkdir");
        std::fs::write(
            server.join("journal.data"),
            format!(
                "{}\n",
                entry(Op::User {
                    user: 7,
                    cluster: 1
                })
            ),
        )
        .expect("write");
        std::fs::write(server.join("positions.json"), "frozen-1").expect("write");
        let found = traces(dir.path(), &refused());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(traces(dir.path(), &Refused::default()).is_empty());
    }

    #[test]
    fn pending_files_are_parsed() {
        let text = r#"{"pending":[{"post_id":"1-ab","text":"hi"}]}"#;
        assert_eq!(
            parse_pending(text),
            Ok(vec![("1-ab".to_string(), "hi".to_string())])
        );
        assert_eq!(parse_pending(r#"{"pending":[]}"#), Ok(Vec::new()));
        assert!(parse_pending("{").is_err());
        assert!(parse_pending(r#"{"pending":[{"post_id":"1-ab"}]}"#).is_err());
        assert!(parse_pending(r#"{"other":1}"#).is_err());
    }

    #[test]
    fn failover_is_read_from_a_view() {
        let view = |epoch, primary_id, old_alive, in_sync: Vec<u32>| ClusterView {
            cluster_id: 1,
            epoch,
            primary_id,
            processes: vec![ProcessView {
                server_id: 1,
                kind: ProcessKind::Server as i32,
                alive: old_alive,
                ..Default::default()
            }],
            in_sync,
        };
        assert_eq!(
            failover_in(&view(3, 2, false, vec![]), 1, 2),
            Some(Failover::Promoted(2))
        );
        assert_eq!(failover_in(&view(2, 1, true, vec![2]), 1, 2), None);
        assert_eq!(failover_in(&view(2, 1, false, vec![2]), 1, 2), None);
        assert_eq!(failover_in(&view(2, 1, true, vec![]), 1, 2), None);
        assert_eq!(
            failover_in(&view(2, 1, false, vec![]), 1, 2),
            Some(Failover::NoCandidate)
        );
    }

    #[test]
    fn longest_silence_names_the_process_and_the_median() {
        let p = |server_id, kind: ProcessKind, since| ProcessView {
            server_id,
            kind: kind as i32,
            since_heartbeat_ms: since,
            alive: true,
            ..Default::default()
        };
        let views = vec![ClusterView {
            cluster_id: 2,
            processes: vec![
                p(1, ProcessKind::Server, 40),
                p(2, ProcessKind::Server, 450),
                p(0, ProcessKind::SyncService, 60),
            ],
            ..Default::default()
        }];
        assert_eq!(
            longest_silence(&views),
            Some(("server 2 of cluster 2".to_string(), 450, 60))
        );
        assert_eq!(longest_silence(&[]), None);
    }

    #[test]
    fn liveness_lines_are_picked_from_a_log() {
        let log = "a INFO server 2 joined the in-sync set\n\
                   b WARN server 1 is dead: no heartbeat for 579 ms\n\
                   c WARN cluster 3: promoted server 2 (epoch 2)\n\
                   d INFO server 1 is alive again\n";
        let got = liveness_lines(log);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with('b') && got[2].starts_with('d'));
    }

    #[test]
    fn view_problems_name_moved_epochs_and_dead_processes() {
        let view = |epoch, alive| ClusterView {
            cluster_id: 1,
            epoch,
            primary_id: 1,
            processes: vec![ProcessView {
                server_id: 2,
                kind: ProcessKind::Server as i32,
                alive,
                ..Default::default()
            }],
            in_sync: vec![2],
        };
        let epochs: BTreeMap<u32, u64> = [(1, 3)].into_iter().collect();
        assert!(view_problems(&[view(3, true)], &epochs).is_empty());
        assert_eq!(view_problems(&[view(4, true)], &epochs).len(), 1);
        assert_eq!(view_problems(&[view(3, false)], &epochs).len(), 1);
        assert_eq!(view_problems(&[], &epochs).len(), 1);
    }
}
