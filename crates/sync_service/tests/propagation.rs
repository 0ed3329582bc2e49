//! The sync service binary against the real coordinator and the real
//! servers' services, mounted in-process on temporary directories:
//! propagation between and inside clusters, a partition that stalls only
//! the unreachable cluster, backfill, restart from persisted positions, and
//! the command line's failure modes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tsn_cluster::auth::{ClusterAuth, SecretArgs};
use tsn_cluster::coord::CoordClient;
use tsn_cluster::shutdown::{Shutdown, Trigger};
use tsn_datastore::{Op, Post};
use tsn_harness::free_port;
use tsn_proto::tsn::replica_server::{Replica, ReplicaServer};
use tsn_proto::tsn::*;
use tsn_server::{ReplicaService, RoleArg};

const DEADLINE_MS: u64 = 20_000;
/// The in-process coordinator's failure timeout.
const FAILURE_TIMEOUT_MS: u64 = 1_000;
/// Heartbeat interval of every process the tests start.
const HEARTBEAT_INTERVAL_MS: u64 = 50;

/// Polls `check` until it holds, failing the test after [`DEADLINE_MS`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Duration::from_millis(DEADLINE_MS);
    tsn_harness::wait_until(deadline, what, || std::future::ready(check())).await
}

/// The cluster secret every process of this test binary shares, in a temp
/// dir of its own (never the user's home).
fn secret_file() -> &'static Path {
    static DIR: std::sync::OnceLock<TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        tsn_cluster::auth::create_secret_file(&dir.path().join("cluster.secret")).unwrap();
        dir
    });
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| dir.path().join("cluster.secret"))
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

// ------------------------------------------------------------- primary

/// What the tests watch of a primary's `tsn.Replica`, and the one fault
/// they inject into it.
#[derive(Default)]
struct Probe {
    /// The `after_seq` of every `ReadChanges` reply that carried entries.
    reads: Mutex<Vec<u64>>,
    /// While set, every `PostsSince` reply also carries a post that does
    /// not parse.
    corrupt_backfills: AtomicBool,
    /// `PostsSince` calls answered.
    backfill_calls: AtomicU64,
}

/// The real `tsn.Replica` of a server, seen through a [`Probe`].
struct Watched {
    replica: ReplicaService,
    probe: Arc<Probe>,
}

#[tonic::async_trait]
impl Replica for Watched {
    async fn append(&self, r: Request<AppendRequest>) -> Result<Response<AppendReply>, Status> {
        self.replica.append(r).await
    }

    async fn epoch_history(
        &self,
        r: Request<EpochHistoryRequest>,
    ) -> Result<Response<EpochHistoryReply>, Status> {
        self.replica.epoch_history(r).await
    }

    async fn apply(&self, r: Request<ApplyRequest>) -> Result<Response<ApplyReply>, Status> {
        self.replica.apply(r).await
    }

    async fn read_changes(
        &self,
        request: Request<ReadChangesRequest>,
    ) -> Result<Response<ReadChangesReply>, Status> {
        let after_seq = request.get_ref().after_seq;
        let reply = self.replica.read_changes(request).await?;
        if !reply.get_ref().entries.is_empty() {
            self.probe.reads.lock().unwrap().push(after_seq);
        }
        Ok(reply)
    }

    async fn followers(
        &self,
        r: Request<FollowersRequest>,
    ) -> Result<Response<FollowersReply>, Status> {
        self.replica.followers(r).await
    }

    async fn posts_since(
        &self,
        request: Request<PostsSinceRequest>,
    ) -> Result<Response<PostsSinceReply>, Status> {
        let mut reply = self.replica.posts_since(request).await?;
        if self.probe.corrupt_backfills.load(Ordering::SeqCst) {
            // No author: it does not convert to a post.
            reply.get_mut().posts.push(PostRecord {
                id: "1-torn".into(),
                text: "torn".into(),
                ..Default::default()
            });
        }
        self.probe.backfill_calls.fetch_add(1, Ordering::SeqCst);
        Ok(reply)
    }

    async fn user_exists(
        &self,
        r: Request<UserExistsRequest>,
    ) -> Result<Response<UserExistsReply>, Status> {
        self.replica.user_exists(r).await
    }
}

/// The primary of one cluster: the real server on a temporary datastore,
/// its `tsn.Replica` served through a [`Probe`].
struct PrimaryHandle {
    server: tsn_server::Server,
    probe: Arc<Probe>,
    _stop: Trigger,
    _dir: TempDir,
}

impl PrimaryHandle {
    async fn start(cluster: u32, coord: &Coordinator) -> PrimaryHandle {
        let dir = tempfile::tempdir().unwrap();
        let (l, addr) = listener().await;
        let config = tsn_server::Config {
            coordinator: coord.addr.to_string(),
            port: addr.port(),
            cluster_id: cluster,
            role: RoleArg::Primary,
            datastore: dir.path().to_path_buf(),
            server_id: Some(1),
            advertise_host: "127.0.0.1".into(),
            bind: "127.0.0.1".into(),
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            mirror_timeout_ms: 1_000,
            max_client_connections: None,
            first_byte_timeout_ms: tsn_cluster::net::FIRST_BYTE_TIMEOUT_MS,
            max_clock_offset_ms: tsn_cluster::clock::MAX_CLOCK_OFFSET_MS,
            mp3_port: 0,
            require_accounts: false,
            secret: SecretArgs::file(secret_file()),
            admin: Default::default(),
            tls: Default::default(),
        };
        let (stop, shutdown) = Shutdown::new();
        let server = tsn_server::Server::start(&config, "", shutdown.clone())
            .await
            .unwrap();
        let probe = Arc::new(Probe::default());
        let replica = server.auth().guard(ReplicaServer::new(Watched {
            replica: server.replica(),
            probe: probe.clone(),
        }));
        let mut until = shutdown;
        tokio::spawn(
            Server::builder()
                .add_service(replica)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(l),
                    async move { until.wait().await },
                ),
        );
        let primary = PrimaryHandle {
            server,
            probe,
            _stop: stop,
            _dir: dir,
        };
        primary.commit(vec![]).await;
        primary
    }

    /// Commits `ops` through the server's writer (duplicates skipped),
    /// once the coordinator has made it primary and while its lease holds.
    async fn commit(&self, ops: Vec<Op>) {
        let deadline = Duration::from_millis(DEADLINE_MS);
        tsn_harness::wait_for(deadline, "the primary to commit", || async {
            self.server
                .write(ops.clone())
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    }

    fn has_post(&self, owner: u32, id: &str) -> bool {
        self.server.read_store(|s| s.state().has_post(owner, id))
    }

    fn user_cluster(&self, user: u32) -> Option<u32> {
        self.server.read_store(|s| s.state().user_cluster(user))
    }

    fn followers(&self, user: u32) -> Vec<u32> {
        self.server.read_store(|s| {
            s.state()
                .followers(user)
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        })
    }

    fn last_seq(&self) -> u64 {
        self.server.read_store(|s| s.last_seq())
    }

    /// The positions read from more than once with entries in the reply.
    fn positions_read_twice(&self) -> Vec<u64> {
        let mut reads = self.probe.reads.lock().unwrap().clone();
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
        self.probe.reads.lock().unwrap().len()
    }
}

// ---------------------------------------------------------- coordinator

/// The real coordinator, in-process on a temporary state directory.
struct Coordinator {
    addr: SocketAddr,
    _stop: Trigger,
    _dir: TempDir,
}

async fn start_coordinator(clusters: u32) -> Coordinator {
    let dir = tempfile::tempdir().unwrap();
    let (l, addr) = listener().await;
    let args = tsn_coordinator::Args {
        port: addr.port(),
        clear: false,
        clusters,
        state_dir: dir.path().join("coordinator"),
        bind: addr.ip(),
        failure_timeout_ms: FAILURE_TIMEOUT_MS,
        secret: SecretArgs::file(secret_file()),
        tls: Default::default(),
        users_max: tsn_coordinator::config::ASSIGNED_USERS_MAX,
        admin: Default::default(),
        id: 1,
        peers: Default::default(),
        join: false,
    };
    let (stop, shutdown) = Shutdown::new();
    tokio::spawn(tsn_coordinator::run(args, l, shutdown));
    Coordinator {
        addr,
        _stop: stop,
        _dir: dir,
    }
}

/// Whether the coordinator counts `cluster`'s sync service alive, as a
/// sync service (kind, and server id 0).
async fn sync_service_known(coord: &Coordinator, cluster: u32) -> bool {
    let auth = ClusterAuth::open(&SecretArgs::file(secret_file())).unwrap();
    let client = CoordClient::with_auth(&coord.addr.to_string(), &auth).unwrap();
    let Ok(clusters) = client.clusters().await else {
        return false;
    };
    clusters
        .iter()
        .filter(|c| c.cluster_id == cluster)
        .flat_map(|c| &c.processes)
        .any(|p| p.kind == ProcessKind::SyncService as i32 && p.server_id == 0 && p.alive)
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
        .arg("--cluster-secret-file")
        .arg(secret_file())
        .kill_on_drop(true);
    cmd
}

async fn start_sync(coord: &Coordinator, cluster: u32, port: u16, datastore: &Path) -> SyncProcess {
    let mut child = sync_command(coord.addr, cluster, port, datastore)
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

/// Users 1 and 2 become users of their clusters, as any user a delivery
/// or a follower change names must be (their logins reach the other
/// cluster once both sync services run).
async fn log_in_both(p1: &PrimaryHandle, p2: &PrimaryHandle) {
    p1.commit(vec![Op::User {
        user: 1,
        cluster: 1,
    }])
    .await;
    p2.commit(vec![Op::User {
        user: 2,
        cluster: 2,
    }])
    .await;
}

fn follow(user: u32, target: u32, since_ms: i64) -> Op {
    Op::Follow {
        user,
        target,
        since_ms,
    }
}

/// A coordinator of two clusters, the primary of each, and a datastore
/// directory for each cluster's sync service.
async fn two_clusters() -> (PrimaryHandle, PrimaryHandle, Coordinator, TempDir, TempDir) {
    let coord = start_coordinator(2).await;
    let p1 = PrimaryHandle::start(1, &coord).await;
    let p2 = PrimaryHandle::start(2, &coord).await;
    let dir = || tempfile::tempdir().unwrap();
    (p1, p2, coord, dir(), dir())
}

// --------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_cluster_and_a_partition_stalls_only_its_cluster() {
    let (p1, p2, coord, ds1, ds2) = two_clusters().await;
    let port2 = free_port();
    let s1 = start_sync(&coord, 1, free_port(), ds1.path()).await;
    let s2 = start_sync(&coord, 2, port2, ds2.path()).await;
    tsn_harness::wait_until(
        Duration::from_millis(DEADLINE_MS),
        "both sync services heartbeating as sync services",
        || async { sync_service_known(&coord, 1).await && sync_service_known(&coord, 2).await },
    )
    .await;

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
    ])
    .await;
    p2.commit(vec![Op::User {
        user: 2,
        cluster: 2,
    }])
    .await;
    // 2 follows 1 across clusters, 3 follows 1 inside cluster 1.
    p2.commit(vec![follow(2, 1, 1_000)]).await;
    p1.commit(vec![follow(3, 1, 1_000)]).await;
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

    p1.commit(vec![post(1, "1-old", 500), post(1, "1-a", 2_000)])
        .await;
    eventually("1-a in both followers' timelines", || {
        p2.has_post(2, "1-a") && p1.has_post(3, "1-a")
    })
    .await;
    assert!(!p2.has_post(2, "1-old"), "posts before the follow stay out");
    assert!(!p1.has_post(3, "1-old"), "posts before the follow stay out");

    // Cluster 2 cannot be reached: cluster 1 still fans out inside itself.
    s2.kill().await;
    p1.commit(vec![post(1, "1-b", 3_000)]).await;
    eventually("1-b delivered inside cluster 1", || p1.has_post(3, "1-b")).await;
    assert!(!p2.has_post(2, "1-b"));

    // Back: cluster 2 catches up.
    let s2 = start_sync(&coord, 2, port2, ds2.path()).await;
    eventually("1-b delivered to cluster 2", || p2.has_post(2, "1-b")).await;

    // An unfollow reaches the followed user's cluster.
    p1.commit(vec![Op::Unfollow { user: 3, target: 1 }]).await;
    eventually("3 no longer follows 1", || p1.followers(1) == vec![2]).await;
    p1.commit(vec![post(1, "1-c", 4_000)]).await;
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
    let s1 = start_sync(&coord, 1, free_port(), ds1.path()).await;

    // 2 follows 1 from 1000 on, but cluster 2's sync service is not running,
    // so cluster 1 processes the posts while 1 has no followers.
    p2.commit(vec![follow(2, 1, 1_000)]).await;
    p1.commit(vec![post(1, "1-old", 500), post(1, "1-a", 2_000)])
        .await;
    let end = p1.last_seq();
    eventually("cluster 1 passed the posts for cluster 2", || {
        position(ds1.path(), 1, 2) == end
    })
    .await;
    assert!(!p2.has_post(2, "1-a"));

    log_in_both(&p1, &p2).await;
    let s2 = start_sync(&coord, 2, free_port(), ds2.path()).await;
    eventually("1-a backfilled to 2", || p2.has_post(2, "1-a")).await;
    assert!(!p2.has_post(2, "1-old"));
    s1.kill().await;
    s2.kill().await;
}

/// A backfill whose reply holds a post that does not parse is an error
/// that is retried, never a post skipped: nothing of it is delivered while
/// the reply is bad, and all of it once the primary answers well again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_post_that_does_not_parse_is_retried_not_skipped() {
    let (p1, p2, coord, ds1, ds2) = two_clusters().await;
    p1.probe.corrupt_backfills.store(true, Ordering::SeqCst);
    let s1 = start_sync(&coord, 1, free_port(), ds1.path()).await;
    p2.commit(vec![follow(2, 1, 1_000)]).await;
    p1.commit(vec![post(1, "1-a", 2_000)]).await;
    let end = p1.last_seq();
    eventually("cluster 1 passed the post for cluster 2", || {
        position(ds1.path(), 1, 2) == end
    })
    .await;
    log_in_both(&p1, &p2).await;
    let s2 = start_sync(&coord, 2, free_port(), ds2.path()).await;
    eventually("the backfill asked for three times", || {
        p1.probe.backfill_calls.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(
        !p2.has_post(2, "1-a"),
        "delivered from a reply with a bad post"
    );
    assert!(!p2.has_post(2, "1-torn"));

    p1.probe.corrupt_backfills.store(false, Ordering::SeqCst);
    eventually("1-a backfilled to 2", || p2.has_post(2, "1-a")).await;
    s1.kill().await;
    s2.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_in_step_read_each_batch_once() {
    let (p1, p2, coord, ds1, ds2) = two_clusters().await;
    let s1 = start_sync(&coord, 1, free_port(), ds1.path()).await;
    let s2 = start_sync(&coord, 2, free_port(), ds2.path()).await;

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
    ])
    .await;
    p2.commit(vec![
        Op::User {
            user: 2,
            cluster: 2,
        },
        follow(2, 1, 1_000),
    ])
    .await;
    eventually("both followers of 1 recorded", || {
        p1.followers(1) == vec![2, 3]
    })
    .await;
    for n in 0..20 {
        let id = format!("1-{n}");
        p1.commit(vec![post(1, &id, 2_000 + n)]).await;
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

#[tokio::test]
async fn a_secret_file_others_can_read_or_that_is_malformed_is_a_one_line_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let loose = dir.path().join("loose.secret");
    std::fs::copy(secret_file(), &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let malformed = dir.path().join("malformed.secret");
    std::fs::write(&malformed, "not a secret\n").unwrap();
    std::fs::set_permissions(&malformed, std::fs::Permissions::from_mode(0o600)).unwrap();
    let missing = dir.path().join("missing.secret");
    for (file, says) in [
        (&loose, "chmod 600"),
        (&malformed, "malformed"),
        (&missing, "cannot read"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tsn_sync_service"))
            .args([
                "-c",
                "127.0.0.1:1",
                "-s",
                "1",
                "-p",
                &free_port().to_string(),
            ])
            .arg("--datastore")
            .arg(dir.path())
            .arg("--cluster-secret-file")
            .arg(file)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains("cluster secret"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
