//! The sync service binary against an in-process coordinator and in-process
//! primaries (each a real `tsn_datastore::Store` behind `tsn.Replica`):
//! propagation between and inside clusters, a partition that stalls only
//! the unreachable cluster, backfill, restart from persisted positions, and
//! the command line's failure modes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tsn_datastore::{Layout, Op, Post, Store};
use tsn_proto::tsn::coordinator_server::{Coordinator, CoordinatorServer};
use tsn_proto::tsn::replica_server::{Replica, ReplicaServer};
use tsn_proto::tsn::*;

const DEADLINE_MS: u64 = 20_000;
const POLL_MS: u64 = 20;

/// Polls `check` until it holds, failing the test after [`DEADLINE_MS`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(DEADLINE_MS);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ------------------------------------------------------------- primary

struct FakePrimary {
    store: Mutex<Store>,
    last_seq: watch::Sender<u64>,
    /// The `after_seq` of every `ReadChanges` reply that carried entries.
    reads: Mutex<Vec<u64>>,
    /// While set, every `PostsSince` reply also carries a post that does
    /// not convert (it has no author).
    corrupt_backfills: AtomicBool,
    /// `PostsSince` calls answered.
    backfill_calls: AtomicU64,
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
struct PrimaryHandle(Arc<FakePrimary>);

impl PrimaryHandle {
    async fn start(cluster: u32) -> (PrimaryHandle, SocketAddr) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Layout::new(dir.path(), cluster, 1), cluster).unwrap();
        let (last_seq, _) = watch::channel(store.last_seq());
        let handle = PrimaryHandle(Arc::new(FakePrimary {
            store: Mutex::new(store),
            last_seq,
            reads: Mutex::new(Vec::new()),
            corrupt_backfills: AtomicBool::new(false),
            backfill_calls: AtomicU64::new(0),
            _dir: dir,
        }));
        let (l, addr) = listener().await;
        let svc = ReplicaServer::new(handle.clone());
        tokio::spawn(
            Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpIncoming::from(l)),
        );
        (handle, addr)
    }

    /// Commits `ops` as the primary's writer would: duplicates skipped.
    fn commit(&self, ops: Vec<Op>) -> (u32, u32) {
        let mut store = self.0.store.lock().unwrap();
        let (mut applied, mut duplicates) = (0, 0);
        for op in ops {
            if store.state().is_duplicate(&op) {
                duplicates += 1;
            } else {
                store.stage(op, 1);
                applied += 1;
            }
        }
        store.commit_staged().unwrap();
        self.0.last_seq.send_replace(store.last_seq());
        (applied, duplicates)
    }

    fn has_post(&self, owner: u32, id: &str) -> bool {
        self.0.store.lock().unwrap().state().has_post(owner, id)
    }

    fn user_cluster(&self, user: u32) -> Option<u32> {
        self.0.store.lock().unwrap().state().user_cluster(user)
    }

    fn followers(&self, user: u32) -> Vec<u32> {
        let store = self.0.store.lock().unwrap();
        store
            .state()
            .followers(user)
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    fn last_seq(&self) -> u64 {
        self.0.store.lock().unwrap().last_seq()
    }

    /// The positions read from more than once with entries in the reply.
    fn positions_read_twice(&self) -> Vec<u64> {
        let mut reads = self.0.reads.lock().unwrap().clone();
        reads.sort_unstable();
        let mut twice: Vec<u64> = reads
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        twice.dedup();
        twice
    }

    fn reads_with_entries(&self) -> usize {
        self.0.reads.lock().unwrap().len()
    }
}

#[tonic::async_trait]
impl Replica for PrimaryHandle {
    async fn append(&self, _: Request<AppendRequest>) -> Result<Response<AppendReply>, Status> {
        Err(Status::unimplemented("append"))
    }

    async fn epoch_history(
        &self,
        _: Request<EpochHistoryRequest>,
    ) -> Result<Response<EpochHistoryReply>, Status> {
        Err(Status::unimplemented("epoch_history"))
    }

    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<ApplyReply>, Status> {
        let mut ops = Vec::new();
        for op in request.into_inner().ops {
            ops.push(Op::try_from(op).map_err(|e| Status::invalid_argument(e.to_string()))?);
        }
        let (applied, duplicates) = self.commit(ops);
        Ok(Response::new(ApplyReply {
            applied,
            duplicates,
        }))
    }

    async fn read_changes(
        &self,
        request: Request<ReadChangesRequest>,
    ) -> Result<Response<ReadChangesReply>, Status> {
        let r = request.into_inner();
        let mut seqs = self.0.last_seq.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_millis(r.wait_ms.into()),
            seqs.wait_for(|s| *s > r.after_seq),
        )
        .await;
        let store = self.0.store.lock().unwrap();
        let entries: Vec<JournalEntry> = store
            .read_journal_lines(r.after_seq, r.max_entries as usize, 4 << 20)
            .iter()
            .map(JournalEntry::from)
            .collect();
        if !entries.is_empty() {
            self.0.reads.lock().unwrap().push(r.after_seq);
        }
        Ok(Response::new(ReadChangesReply {
            entries,
            commit_seq: store.last_seq(),
            epoch: 1,
            // Like a primary that ignores `skip_deliveries`.
            scanned_to_seq: 0,
        }))
    }

    async fn followers(
        &self,
        request: Request<FollowersRequest>,
    ) -> Result<Response<FollowersReply>, Status> {
        let store = self.0.store.lock().unwrap();
        let lists = request
            .into_inner()
            .users
            .into_iter()
            .map(|user| FollowerList {
                user,
                followers: store
                    .state()
                    .followers(user)
                    .into_iter()
                    .map(|(user, since_ms)| Follower { user, since_ms })
                    .collect(),
            })
            .collect();
        Ok(Response::new(FollowersReply { lists }))
    }

    async fn posts_since(
        &self,
        request: Request<PostsSinceRequest>,
    ) -> Result<Response<PostsSinceReply>, Status> {
        let r = request.into_inner();
        let store = self.0.store.lock().unwrap();
        let mut posts: Vec<PostRecord> = tsn_datastore::store::read_posts_since(
            store.layout(),
            r.author,
            r.since_ms,
            r.limit as usize,
        )
        .into_iter()
        .map(PostRecord::from)
        .collect();
        if self.0.corrupt_backfills.load(Ordering::SeqCst) {
            // No author: it does not convert to a post.
            posts.push(PostRecord {
                id: "1-torn".into(),
                text: "torn".into(),
                ..Default::default()
            });
        }
        self.0.backfill_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(PostsSinceReply { posts }))
    }

    async fn user_exists(
        &self,
        _: Request<UserExistsRequest>,
    ) -> Result<Response<UserExistsReply>, Status> {
        Err(Status::unimplemented("user_exists"))
    }
}

// ---------------------------------------------------------- coordinator

struct FakeCoordinator {
    clusters: u32,
    primaries: HashMap<u32, String>,
    syncs: Mutex<HashMap<u32, (String, Instant)>>,
}

#[tonic::async_trait]
impl Coordinator for FakeCoordinator {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let r = request.into_inner();
        assert_eq!(r.kind, ProcessKind::SyncService as i32);
        assert_eq!(r.server_id, 0);
        self.syncs
            .lock()
            .unwrap()
            .insert(r.cluster_id, (r.address, Instant::now()));
        Ok(Response::new(HeartbeatReply {
            epoch: 1,
            primary_id: 1,
            primary_address: self
                .primaries
                .get(&r.cluster_id)
                .cloned()
                .unwrap_or_default(),
            failure_timeout_ms: 500,
            cluster_count: self.clusters,
            ..Default::default()
        }))
    }

    async fn change_in_sync(
        &self,
        _: Request<InSyncChange>,
    ) -> Result<Response<InSyncReply>, Status> {
        Err(Status::unimplemented("change_in_sync"))
    }

    async fn clusters(
        &self,
        _: Request<ClustersRequest>,
    ) -> Result<Response<ClustersReply>, Status> {
        let syncs = self.syncs.lock().unwrap();
        let clusters = (1..=self.clusters)
            .map(|c| ClusterView {
                cluster_id: c,
                epoch: 1,
                primary_id: 1,
                processes: syncs
                    .get(&c)
                    .map(|(address, seen)| ProcessView {
                        kind: ProcessKind::SyncService as i32,
                        address: address.clone(),
                        alive: seen.elapsed() < Duration::from_millis(500),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                in_sync: vec![],
            })
            .collect();
        Ok(Response::new(ClustersReply { clusters }))
    }

    async fn assign(
        &self,
        request: Request<AssignRequest>,
    ) -> Result<Response<AssignReply>, Status> {
        let clusters = request
            .into_inner()
            .users
            .iter()
            .map(|u| tsn_cluster::home_cluster(*u, self.clusters))
            .collect();
        Ok(Response::new(AssignReply { clusters }))
    }
}

async fn start_coordinator(clusters: u32, primaries: HashMap<u32, String>) -> SocketAddr {
    let coord = FakeCoordinator {
        clusters,
        primaries,
        syncs: Mutex::new(HashMap::new()),
    };
    let (l, addr) = listener().await;
    tokio::spawn(
        Server::builder()
            .add_service(CoordinatorServer::new(coord))
            .serve_with_incoming(TcpIncoming::from(l)),
    );
    addr
}

// --------------------------------------------------------- sync service

struct SyncProcess {
    child: Child,
}

fn sync_command(coord: SocketAddr, cluster: u32, port: u16, datastore: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsn_sync_service"));
    cmd.args(["-c", &coord.to_string(), "-s", &cluster.to_string()])
        .args(["-p", &port.to_string(), "-q", "100"])
        .args(["--heartbeat-interval-ms", "50"])
        .arg("--datastore")
        .arg(datastore)
        .kill_on_drop(true);
    cmd
}

async fn start_sync(coord: SocketAddr, cluster: u32, port: u16, datastore: &Path) -> SyncProcess {
    let mut child = sync_command(coord, cluster, port, datastore)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut first = String::new();
    tokio::time::timeout(
        Duration::from_millis(DEADLINE_MS),
        BufReader::new(stdout).read_line(&mut first),
    )
    .await
    .expect("the sync service prints its address")
    .unwrap();
    assert_eq!(
        first.trim_end(),
        format!("tsn_sync_service cluster {cluster} listening on 127.0.0.1:{port}")
    );
    SyncProcess { child }
}

impl SyncProcess {
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM, and the exit status once it stopped.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap() as libc::pid_t;
        // SAFETY: sends a signal to a child this test started and has not
        // yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        tokio::time::timeout(Duration::from_millis(DEADLINE_MS), self.child.wait())
            .await
            .expect("the sync service stops on SIGTERM")
            .unwrap()
    }
}

fn position(datastore: &Path, cluster: u32, dest: u32) -> u64 {
    let path: PathBuf = datastore
        .join(cluster.to_string())
        .join("sync")
        .join("positions.json");
    let Ok(bytes) = std::fs::read(path) else {
        return 0;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return 0;
    };
    v["positions"][dest.to_string()].as_u64().unwrap_or(0)
}

fn post(author: u32, id: &str, ts_ms: i64) -> Op {
    Op::Post(Post {
        id: id.into(),
        author,
        text: format!("text of {id}"),
        ts_ms,
    })
}

fn follow(user: u32, target: u32, since_ms: i64) -> Op {
    Op::Follow {
        user,
        target,
        since_ms,
    }
}

/// Two clusters' primaries, a coordinator that knows them, and a
/// datastore directory for each cluster's sync service.
async fn two_clusters() -> (PrimaryHandle, PrimaryHandle, SocketAddr, TempDir, TempDir) {
    let (p1, a1) = PrimaryHandle::start(1).await;
    let (p2, a2) = PrimaryHandle::start(2).await;
    let coord =
        start_coordinator(2, HashMap::from([(1, a1.to_string()), (2, a2.to_string())])).await;
    let dir = || tempfile::tempdir().unwrap();
    (p1, p2, coord, dir(), dir())
}

// --------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_cluster_and_a_partition_stalls_only_its_cluster() {
    let (p1, p2, coord, ds1, ds2) = two_clusters().await;
    let port2 = free_port();
    let s1 = start_sync(coord, 1, free_port(), ds1.path()).await;
    let s2 = start_sync(coord, 2, port2, ds2.path()).await;

    // Users 1 and 3 live in cluster 1, user 2 in cluster 2.
    p1.commit(vec![
        Op::User {
            user: 1,
            cluster: 1,
        },
        Op::User {
            user: 3,
            cluster: 1,
        },
    ]);
    p2.commit(vec![Op::User {
        user: 2,
        cluster: 2,
    }]);
    // 2 follows 1 across clusters, 3 follows 1 inside cluster 1.
    p2.commit(vec![follow(2, 1, 1_000)]);
    p1.commit(vec![follow(3, 1, 1_000)]);
    eventually("users known everywhere", || {
        p1.user_cluster(2) == Some(2)
            && p2.user_cluster(1) == Some(1)
            && p2.user_cluster(3) == Some(1)
    })
    .await;
    eventually("both followers of 1 recorded", || {
        p1.followers(1) == vec![2, 3]
    })
    .await;

    p1.commit(vec![post(1, "1-old", 500), post(1, "1-a", 2_000)]);
    eventually("1-a in both followers' timelines", || {
        p2.has_post(2, "1-a") && p1.has_post(3, "1-a")
    })
    .await;
    assert!(!p2.has_post(2, "1-old"), "posts before the follow stay out");
    assert!(!p1.has_post(3, "1-old"), "posts before the follow stay out");

    // Cluster 2 cannot be reached: cluster 1 still fans out inside itself.
    s2.kill().await;
    p1.commit(vec![post(1, "1-b", 3_000)]);
    eventually("1-b delivered inside cluster 1", || p1.has_post(3, "1-b")).await;
    assert!(!p2.has_post(2, "1-b"));

    // Back: cluster 2 catches up.
    let s2 = start_sync(coord, 2, port2, ds2.path()).await;
    eventually("1-b delivered to cluster 2", || p2.has_post(2, "1-b")).await;

    // An unfollow reaches the followed user's cluster.
    p1.commit(vec![Op::Unfollow { user: 3, target: 1 }]);
    eventually("3 no longer follows 1", || p1.followers(1) == vec![2]).await;
    p1.commit(vec![post(1, "1-c", 4_000)]);
    eventually("1-c delivered to 2", || p2.has_post(2, "1-c")).await;
    assert!(!p1.has_post(3, "1-c"));

    // Every position reaches the end of its journal, and survives SIGTERM.
    eventually("positions at the end of the journals", || {
        let (e1, e2) = (p1.last_seq(), p2.last_seq());
        position(ds1.path(), 1, 1) == e1
            && position(ds1.path(), 1, 2) == e1
            && position(ds2.path(), 2, 1) == e2
            && position(ds2.path(), 2, 2) == e2
    })
    .await;
    assert!(s1.terminate().await.success());
    assert!(s2.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_that_arrives_after_the_post_is_backfilled() {
    let (p1, p2, coord, ds1, ds2) = two_clusters().await;
    let s1 = start_sync(coord, 1, free_port(), ds1.path()).await;

    // 2 follows 1 from 1000 on, but cluster 2's sync service is not running,
    // so cluster 1 processes the posts while 1 has no followers.
    p2.commit(vec![follow(2, 1, 1_000)]);
    p1.commit(vec![post(1, "1-old", 500), post(1, "1-a", 2_000)]);
    let end = p1.last_seq();
    eventually("cluster 1 passed the posts for cluster 2", || {
        position(ds1.path(), 1, 2) == end
    })
    .await;
    assert!(!p2.has_post(2, "1-a"));

    let s2 = start_sync(coord, 2, free_port(), ds2.path()).await;
    eventually("1-a backfilled to 2", || p2.has_post(2, "1-a")).await;
    assert!(!p2.has_post(2, "1-old"));
    s1.kill().await;
    s2.kill().await;
}

/// A backfill whose reply holds a post that does not parse (its fields do
/// not make a valid post) is an error that is retried, never a post skipped: nothing of it is delivered while
/// the reply is bad, and all of it once the primary answers well again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_post_that_does_not_parse_is_retried_not_skipped() {
    let (p1, p2, coord, ds1, ds2) = two_clusters().await;
    p1.0.corrupt_backfills.store(true, Ordering::SeqCst);
    let s1 = start_sync(coord, 1, free_port(), ds1.path()).await;
    p2.commit(vec![follow(2, 1, 1_000)]);
    p1.commit(vec![post(1, "1-a", 2_000)]);
    let end = p1.last_seq();
    eventually("cluster 1 passed the post for cluster 2", || {
        position(ds1.path(), 1, 2) == end
    })
    .await;
    let s2 = start_sync(coord, 2, free_port(), ds2.path()).await;
    eventually("the backfill asked for three times", || {
        p1.0.backfill_calls.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(
        !p2.has_post(2, "1-a"),
        "delivered from a reply with a bad post"
    );
    assert!(!p2.has_post(2, "1-torn"));

    p1.0.corrupt_backfills.store(false, Ordering::SeqCst);
    eventually("1-a backfilled to 2", || p2.has_post(2, "1-a")).await;
    s1.kill().await;
    s2.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_in_step_read_each_batch_once() {
    let (p1, p2, coord, ds1, ds2) = two_clusters().await;
    let s1 = start_sync(coord, 1, free_port(), ds1.path()).await;
    let s2 = start_sync(coord, 2, free_port(), ds2.path()).await;

    // 1 (cluster 1) is followed by 3 (cluster 1) and 2 (cluster 2): both
    // feeds of cluster 1's sync service take every batch (the feed of
    // cluster 2 delivers the posts to 2; 3 has them from the posts' own
    // entries, and the feed of cluster 1 passes the batches by).
    p1.commit(vec![
        Op::User {
            user: 1,
            cluster: 1,
        },
        Op::User {
            user: 3,
            cluster: 1,
        },
        follow(3, 1, 1_000),
    ]);
    p2.commit(vec![
        Op::User {
            user: 2,
            cluster: 2,
        },
        follow(2, 1, 1_000),
    ]);
    eventually("both followers of 1 recorded", || {
        p1.followers(1) == vec![2, 3]
    })
    .await;
    for n in 0..20 {
        let id = format!("1-{n}");
        p1.commit(vec![post(1, &id, 2_000 + n)]);
        eventually("the post in both followers' timelines", || {
            p2.has_post(2, &id) && p1.has_post(3, &id)
        })
        .await;
    }
    // Every batch was read by one feed and shared with the other: no
    // position was read twice (a batch is kept until both passed it).
    assert!(p1.reads_with_entries() >= 20);
    assert_eq!(p1.positions_read_twice(), Vec::<u64>::new());
    assert_eq!(p2.positions_read_twice(), Vec::<u64>::new());
    s1.kill().await;
    s2.kill().await;
}

#[tokio::test]
async fn a_port_in_use_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ds = tempfile::tempdir().unwrap();
    let coord: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let out = sync_command(coord, 1, port, ds.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn bad_flags_are_refused() {
    for args in [
        &["-c", "127.0.0.1:1", "-s", "1", "-p", "9", "-q", "5"][..],
        &["-c", "127.0.0.1:1", "-s", "0", "-p", "9"],
        &["-s", "1", "-p", "9"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tsn_sync_service"))
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
    }
}
