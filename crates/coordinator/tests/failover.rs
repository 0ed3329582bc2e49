//! The real `tsn_coordinator` binary, driven over gRPC by two fake servers:
//! election, GetServer, promotion after the primary goes silent, and a
//! SIGKILL + restart that keeps the epoch and the primary.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tsn_cluster::auth::{ClusterAuth, SecretArgs};
use tsn_cluster::coord::CoordClient;
use tsn_harness::free_port;
use tsn_harness::wait::try_wait_for;
use tsn_proto::tsn::{HeartbeatRequest, InSyncChange, ProcessKind, Role};

const FAILURE_TIMEOUT_MS: u64 = 300;
const HEARTBEAT_INTERVAL_MS: u64 = 50;
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
const CONDITION_DEADLINE: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running coordinator, killed when dropped.
struct Coordinator {
    child: Child,
    log: PathBuf,
}

impl Coordinator {
    fn start(port: u16, state_dir: &Path, log: PathBuf) -> Coordinator {
        match Coordinator::try_start(port, state_dir, log.clone()) {
            Some(c) => c,
            None => panic!(
                "the coordinator exited at start; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }

    /// Starts the binary and waits for its listening line; None if it exits
    /// first (the port is still held by a socket of a killed predecessor).
    fn try_start(port: u16, state_dir: &Path, log: PathBuf) -> Option<Coordinator> {
        let mut child = command(port, state_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            ))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let coordinator = Coordinator { child, log };
        match rx.recv_timeout(STARTUP_DEADLINE) {
            Ok(line) => {
                assert_eq!(
                    line,
                    format!("tsn_coordinator listening on 127.0.0.1:{port} (clusters: 3)")
                );
                Some(coordinator)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(e) => panic!("no listening line ({e}); log:\n{}", coordinator.log()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to clean up.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(port: u16, state_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsn_coordinator"));
    cmd.args(["-p", &port.to_string(), "--clusters", "3", "--state-dir"])
        .arg(state_dir)
        .args(["--failure-timeout-ms", &FAILURE_TIMEOUT_MS.to_string()])
        .arg("--cluster-secret-file")
        .arg(secret_path(state_dir));
    cmd
}

/// The cluster secret of the coordinator keeping its state in `state_dir`:
/// beside it, never in the user's home.
fn secret_path(state_dir: &Path) -> PathBuf {
    state_dir.with_file_name("cluster.secret")
}

/// A fake server of cluster 1 that heartbeats until stopped.
struct FakeServer {
    running: Arc<AtomicBool>,
    /// The epoch of its last reply, and its role (as i32).
    epoch: Arc<AtomicU64>,
    role: Arc<AtomicU64>,
}

impl FakeServer {
    fn spawn(coord: CoordClient, server_id: u32, requested: Role) -> FakeServer {
        let running = Arc::new(AtomicBool::new(true));
        let epoch = Arc::new(AtomicU64::new(0));
        let role = Arc::new(AtomicU64::new(0));
        let (r, e, ro) = (running.clone(), epoch.clone(), role.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
            while r.load(Ordering::SeqCst) {
                tick.tick().await;
                let req = HeartbeatRequest {
                    cluster_id: 1,
                    server_id,
                    kind: ProcessKind::Server as i32,
                    address: format!("127.0.0.1:{}", 40_000 + server_id),
                    requested_role: requested as i32,
                    epoch: e.load(Ordering::SeqCst),
                    // An empty journal: nothing to raise the epoch with.
                    last_seq: 0,
                    last_epoch: 0,
                    mp3_address: String::new(),
                    clock_unbounded: false,
                };
                if let Ok(reply) = coord.heartbeat(req).await {
                    e.store(reply.epoch, Ordering::SeqCst);
                    ro.store(reply.role as u64, Ordering::SeqCst);
                }
            }
        });
        FakeServer {
            running,
            epoch,
            role,
        }
    }

    fn stop(&self) {
        self.running.store(false, Ordering::SeqCst);
    }

    fn role(&self) -> u64 {
        self.role.load(Ordering::SeqCst)
    }
}

/// Polls `probe` until it returns Some, or panics after the deadline with
/// the coordinator's log.
async fn wait_for<T, F, Fut>(what: &str, coordinator: &Coordinator, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let polled = try_wait_for(CONDITION_DEADLINE, || {
        let seen = probe();
        async move { seen.await.ok_or_else(|| "not yet".to_string()) }
    })
    .await;
    match polled {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}; log:\n{}", coordinator.log()),
    }
}

/// (server id, port) named by GetServer for client 1, if any.
async fn primary_of_client_1(coord: &CoordClient) -> Option<(i32, String)> {
    let info = coord.get_server(1).await.ok()?;
    assert_eq!((info.cluster_id, info.is_master), (1, true));
    assert_eq!(
        (info.hostname.as_str(), info.r#type.as_str()),
        ("127.0.0.1", "server")
    );
    Some((info.server_id, info.port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotes_secondary_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let log = dir.path().join("coordinator.log");
    let port = free_port();
    tsn_cluster::auth::create_secret_file(&secret_path(&state_dir)).unwrap();
    let auth = ClusterAuth::open(&SecretArgs::file(&secret_path(&state_dir))).unwrap();
    let coordinator = Coordinator::start(port, &state_dir, log.clone());
    let coord = CoordClient::with_auth(&format!("127.0.0.1:{port}"), &auth).unwrap();
    // Without the secret, the control plane is closed; GetServer is open.
    let outsider = CoordClient::new(&format!("127.0.0.1:{port}")).unwrap();
    let refused = wait_for("the coordinator to answer", &coordinator, || async {
        match outsider.clusters().await {
            Err(s) if s.code() == tonic::Code::Unavailable => None,
            other => Some(other),
        }
    })
    .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);

    let first = FakeServer::spawn(coord.clone(), 1, Role::Primary);
    let second = FakeServer::spawn(coord.clone(), 2, Role::Secondary);
    wait_for("server 1 to be primary", &coordinator, || async {
        (first.role() == Role::Primary as u64 && second.role() == Role::Secondary as u64)
            .then_some(())
    })
    .await;
    let named = wait_for("GetServer to name server 1", &coordinator, || {
        primary_of_client_1(&coord)
    })
    .await;
    assert_eq!(named, (1, "40001".to_string()));

    // A stale primary is refused; the current one adds server 2.
    let change = |epoch| InSyncChange {
        cluster_id: 1,
        primary_id: 1,
        epoch,
        server_id: 2,
        in_sync: true,
    };
    let stale = coord.change_in_sync(change(0)).await.unwrap();
    assert!(!stale.ok);
    let added = coord.change_in_sync(change(1)).await.unwrap();
    assert!(added.ok);
    assert_eq!(added.in_sync, vec![2]);

    // The primary goes silent: server 2 takes over in epoch 2.
    first.stop();
    let named = wait_for("GetServer to name server 2", &coordinator, || async {
        primary_of_client_1(&coord).await.filter(|(id, _)| *id == 2)
    })
    .await;
    assert_eq!(named, (2, "40002".to_string()));
    // Waited for, not read once: a coordinator that was starved of CPU for
    // a moment (a loaded machine) counts everyone alive for one failure
    // timeout after it notices, rather than declare the silent dead.
    let cluster = wait_for("server 1 reported dead", &coordinator, || async {
        let cluster = coord.clusters().await.ok()?.remove(0);
        let old = cluster.processes.iter().find(|p| p.server_id == 1)?;
        (!old.alive).then_some(cluster)
    })
    .await;
    assert_eq!((cluster.epoch, cluster.primary_id), (2, 2));
    assert!(cluster.in_sync.is_empty());

    // SIGKILL, then a restart on the same state: epoch and primary are kept.
    coordinator.kill();
    let coordinator = wait_for_restart(port, &state_dir, log).await;
    let cluster = wait_for(
        "the restarted coordinator to answer",
        &coordinator,
        || async { coord.clusters().await.ok().map(|mut c| c.remove(0)) },
    )
    .await;
    assert_eq!((cluster.epoch, cluster.primary_id), (2, 2));
    let named = wait_for("GetServer to name server 2 again", &coordinator, || {
        primary_of_client_1(&coord)
    })
    .await;
    assert_eq!(named, (2, "40002".to_string()));
    wait_for(
        "server 2 to hear it is primary of epoch 2",
        &coordinator,
        || async {
            (second.role() == Role::Primary as u64 && second.epoch.load(Ordering::SeqCst) == 2)
                .then_some(())
        },
    )
    .await;
    second.stop();
}

/// Restarts on the same port; a socket of the killed coordinator may hold
/// it for a moment.
async fn wait_for_restart(port: u16, state_dir: &Path, log: PathBuf) -> Coordinator {
    let restarted = try_wait_for(STARTUP_DEADLINE, || {
        let started = Coordinator::try_start(port, state_dir, log.clone());
        async move { started.ok_or_else(|| "exited at start".to_string()) }
    })
    .await;
    match restarted {
        Ok(c) => c,
        Err(_) => panic!(
            "the coordinator did not restart on port {port}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ),
    }
}

#[test]
fn port_in_use_is_one_line_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut child = command(port, &dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + STARTUP_DEADLINE;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the coordinator did not exit");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(code, Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(&port.to_string()), "{stderr}");
    drop(taken);
}
