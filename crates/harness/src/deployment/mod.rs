//! A whole tsn deployment on one machine: a coordinator, and per cluster a
//! primary, its secondaries and a sync service, all sharing one temp dir.
//!
//! The deployment owns every process: dropping it kills them all. When it is
//! dropped because a test panicked, it first prints the tail of every
//! process's logs and keeps the temp dir, so a failure can be read without
//! running it again. Setting `TSN_E2E_KEEP` keeps the dir of passing tests
//! too.
//!
//! * `health.rs`: whether every cluster and process is up, as the
//!   coordinator sees it.
//! * `users.rs`: what users do and see, and the waits for it to converge.

mod health;
mod users;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tsn_cluster::auth::{create_secret_file, ClusterAuth, SecretArgs, SECRET_GRACE_MS};
use tsn_cluster::tls::generate::Authority;
use tsn_cluster::tls::{set_process_tls, Tls, TlsArgs, TlsFiles};
use tsn_datastore::Layout;
use tsn_proto::tsn::Role;

use crate::api::Api;
use crate::bins::{bin_path, COORDINATOR, SERVER, SYNC_SERVICE};
use crate::limits::{
    DEPLOYMENTS_CONCURRENT_LIMIT, DEPLOYMENTS_CONCURRENT_MAX, FAILURE_TIMEOUT_DEFAULT_MS,
    HEALTHY_DEADLINE_MS,
};
use crate::netns::Network;
use crate::proc::{Proc, Ready};
use crate::wait::wait_for;

/// What the coordinator prints on stdout once it listens.
pub const COORDINATOR_READY_LINE: &str = "tsn_coordinator listening on";
/// The cluster secret's file in a deployment's directory.
pub const SECRET_FILE_NAME: &str = "cluster.secret";
/// The environment variable that keeps the temp dir of passing tests.
pub const KEEP_ENV: &str = "TSN_E2E_KEEP";
/// The environment variable that overrides [`DEPLOYMENTS_CONCURRENT_MAX`].
pub const DEPLOYMENTS_MAX_ENV: &str = "TSN_E2E_DEPLOYMENTS_MAX";
/// The environment variable that runs every deployment with TLS (`1`):
/// certificates from one CA per test process, given to every process and
/// client the harness starts.
pub const TLS_ENV: &str = "TSN_TEST_TLS";
/// The directory of a deployment's certificates, under its root.
pub const TLS_DIR_NAME: &str = "tls";
/// The name of the certificate the harness's own clients present.
pub const HARNESS_CERT_NAME: &str = "harness";
/// Starts a process with more environment variables (`env K=V bin args`).
const ENV_BIN: &str = "/usr/bin/env";
/// Most clusters a test deployment may have.
pub const CLUSTERS_MAX: u32 = 16;
/// Most members of a test deployment's coordinator group.
pub const COORDINATORS_MAX: u32 = 7;
/// Most secondaries per cluster a test deployment may have.
pub const SECONDARIES_PER_CLUSTER_MAX: u32 = 4;
/// Largest sync poll interval a test may ask for.
pub const Q_MAX_MS: u64 = 60_000;
/// The server id of the server started as a cluster's primary; secondaries
/// follow from 2. Ids are given explicitly so that a restart on another
/// port keeps the same datastore directory.
pub const FIRST_SERVER_ID: u32 = 1;

/// The shape of a deployment.
#[derive(Clone, Debug)]
pub struct Config {
    pub clusters: u32,
    pub secondaries_per_cluster: u32,
    /// The sync services' poll interval (`-q`).
    pub q_ms: u64,
    /// The coordinator's `--failure-timeout-ms`.
    pub failure_timeout_ms: u64,
    /// The servers' `--heartbeat-interval-ms`; their default if `None`.
    pub heartbeat_interval_ms: Option<u64>,
    /// Fixed ports instead of free ones: the coordinator on `base`, server
    /// `i` of cluster `c` on `base + 100 c + i`, the sync service of
    /// cluster `c` on `base + 100 c + 50`.
    pub base_port: Option<u16>,
    /// A directory to keep everything in, instead of a temp dir removed at
    /// the end.
    pub root: Option<PathBuf>,
    /// The cluster secret every process is given (`--cluster-secret-file`);
    /// if `None`, one is generated into the deployment's directory (never
    /// the user's home).
    pub secret_file: Option<PathBuf>,
    /// Every process's `--secret-grace-ms`; their default if `None`.
    pub secret_grace_ms: Option<u64>,
    /// More flags given to every server (e.g. `--max-client-connections`).
    pub server_args: Vec<String>,
    /// Every process gets an admin port (`--admin-port 0`: a free one);
    /// [`Deployment::admin_addr`] says which.
    pub admin_ports: bool,
    /// TLS on every listener and channel (certificates from
    /// [`authority`]); by default as [`TLS_ENV`] says. The harness's own
    /// channels use the process's TLS (`tsn_cluster::tls::process_tls`),
    /// set by the first deployment started with it, so the deployments of
    /// one test process are all TLS or all plaintext.
    pub tls: bool,
    /// Environment variables given to one server or sync service, at every
    /// start (e.g. libfaketime's, to set its clock apart).
    pub env: Vec<(Member, String, String)>,
    /// A test network: every member runs in its host's namespace and
    /// listens on its host's address ([`crate::netns`]). The deployment
    /// must then be started and used from the client host
    /// ([`crate::netns::Network::run_in`]).
    pub network: Option<Arc<Network>>,
    /// Members of the coordinator group (`--id 1..=n`, `--peers`); every
    /// process is given all of their addresses.
    pub coordinators: u32,
}

impl Config {
    /// The fixed port of `member`, when `base_port` is set.
    pub fn port_of(&self, member: Member) -> Option<u16> {
        let base = self.base_port?;
        Some(match member {
            Member::Coordinator => base,
            // Below the clusters' ports (base + 100 c + i, c >= 1).
            Member::GroupMember { id } => base + id as u16 - 1,
            Member::Server { cluster, server_id } => base + 100 * cluster as u16 + server_id as u16,
            Member::Sync { cluster } => base + 100 * cluster as u16 + 50,
        })
    }
}

impl Config {
    pub fn new(clusters: u32, secondaries_per_cluster: u32, q_ms: u64) -> Config {
        Config {
            clusters,
            secondaries_per_cluster,
            q_ms,
            failure_timeout_ms: FAILURE_TIMEOUT_DEFAULT_MS,
            heartbeat_interval_ms: None,
            base_port: None,
            root: None,
            secret_file: None,
            secret_grace_ms: None,
            server_args: Vec::new(),
            tls: tls_from_env(),
            admin_ports: false,
            env: Vec::new(),
            network: None,
            coordinators: 1,
        }
    }

    /// `--admin-port 0` when every process gets an admin port.
    fn admin_flags(&self) -> Vec<String> {
        if self.admin_ports {
            strings(&["--admin-port", "0"])
        } else {
            Vec::new()
        }
    }

    /// The address `member` listens on.
    fn host_of(&self, member: Member) -> String {
        match &self.network {
            Some(net) => net.host_of(member).ip.clone(),
            None => "127.0.0.1".to_string(),
        }
    }

    /// `--bind` and `--advertise-host` for `member` in a test network
    /// (none otherwise: the binaries' defaults are loopback).
    fn address_flags(&self, member: Member, advertise: bool) -> Vec<String> {
        if self.network.is_none() {
            return Vec::new();
        }
        let ip = self.host_of(member);
        let mut flags = strings(&["--bind", &ip]);
        if advertise {
            flags.extend(strings(&["--advertise-host", &ip]));
        }
        flags
    }

    /// The binary to start for `member` and the arguments before its own:
    /// `bin` itself, or `env` (which execs it, keeping the pid) when the
    /// member has environment variables of its own.
    fn launcher(&self, member: Member, bin: PathBuf) -> (PathBuf, Vec<String>) {
        let vars: Vec<String> = self
            .env
            .iter()
            .filter(|(m, _, _)| *m == member)
            .map(|(_, k, v)| format!("{k}={v}"))
            .collect();
        let mut words = match &self.network {
            Some(net) => net.exec_prefix(net.host_of(member)),
            None => Vec::new(),
        };
        if !vars.is_empty() {
            words.push(ENV_BIN.to_string());
            words.extend(vars);
        }
        if words.is_empty() {
            return (bin, Vec::new());
        }
        words.push(path_arg(&bin));
        let first = PathBuf::from(words.remove(0));
        (first, words)
    }

    fn check(&self) {
        assert!(
            (1..=CLUSTERS_MAX).contains(&self.clusters),
            "clusters must be 1..={CLUSTERS_MAX}"
        );
        assert!(
            self.secondaries_per_cluster <= SECONDARIES_PER_CLUSTER_MAX,
            "at most {SECONDARIES_PER_CLUSTER_MAX} secondaries per cluster"
        );
        assert!(
            (1..=Q_MAX_MS).contains(&self.q_ms),
            "q_ms must be 1..={Q_MAX_MS}"
        );
        assert!(
            (1..=COORDINATORS_MAX).contains(&self.coordinators),
            "coordinators must be 1..={COORDINATORS_MAX}"
        );
        assert!(
            self.failure_timeout_ms > 0,
            "failure timeout must be positive"
        );
    }
}

/// Names one process of a deployment, to kill or restart it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    /// The coordinator, member 1 of the coordinator group.
    Coordinator,
    /// Member `id` (2 and up) of the coordinator group.
    GroupMember {
        id: u32,
    },
    Server {
        cluster: u32,
        server_id: u32,
    },
    Sync {
        cluster: u32,
    },
}

struct ServerProc {
    cluster: u32,
    server_id: u32,
    proc: Proc,
}

struct SyncProc {
    cluster: u32,
    proc: Proc,
}

pub struct Deployment {
    config: Config,
    root: PathBuf,
    coordinator: Proc,
    /// Members 2..=n of the coordinator group.
    group: Vec<Proc>,
    servers: Vec<ServerProc>,
    syncs: Vec<SyncProc>,
    api: Api,
    /// The secret every process was given, as this deployment's own
    /// clients hold it.
    auth: ClusterAuth,
    /// The files of the harness's own clients, when TLS is on.
    tls: Option<TlsFiles>,
    /// Dropped after the processes (fields drop in order), so nothing
    /// writes into a removed directory.
    dir: Option<tempfile::TempDir>,
    _slot: SemaphorePermit<'static>,
}

fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let n = std::env::var(DEPLOYMENTS_MAX_ENV)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| (1..=DEPLOYMENTS_CONCURRENT_LIMIT).contains(n))
            .unwrap_or(DEPLOYMENTS_CONCURRENT_MAX);
        Semaphore::new(n)
    })
}

impl Deployment {
    /// Starts `clusters` clusters of one primary, `secondaries_per_cluster`
    /// secondaries and a sync service polling every `q_ms`, and waits until
    /// the coordinator sees all of them alive.
    pub async fn start(clusters: u32, secondaries_per_cluster: u32, q_ms: u64) -> Deployment {
        Deployment::start_with(Config::new(clusters, secondaries_per_cluster, q_ms)).await
    }

    pub async fn start_with(config: Config) -> Deployment {
        config.check();
        // Wait for a slot before starting anything: the deadlines below
        // assume the machine is not running every test at once.
        let slot = match slots().acquire().await {
            Ok(permit) => permit,
            Err(_) => panic!("the deployment slots are never closed"),
        };
        let (dir, root) = match &config.root {
            Some(root) => {
                if let Err(e) = std::fs::create_dir_all(root) {
                    panic!("cannot create {}: {e}", root.display());
                }
                (None, root.clone())
            }
            None => match tempfile::Builder::new().prefix("tsn-e2e-").tempdir() {
                Ok(d) => {
                    let root = d.path().to_path_buf();
                    (Some(d), root)
                }
                Err(e) => panic!("cannot create a temp dir: {e}"),
            },
        };
        let secret_file = match &config.secret_file {
            Some(file) => file.clone(),
            None => {
                let file = root.join(SECRET_FILE_NAME);
                if let Err(e) = create_secret_file(&file) {
                    panic!("cannot create the cluster secret: {e:#}");
                }
                file
            }
        };
        let secret_args = SecretArgs {
            cluster_secret_file: Some(secret_file),
            secret_grace_ms: config.secret_grace_ms.unwrap_or(SECRET_GRACE_MS),
        };
        let auth = match ClusterAuth::open(&secret_args) {
            Ok(a) => a,
            Err(e) => panic!("the cluster secret: {e:#}"),
        };
        let secret_flags = secret_flags(&secret_args);
        let admin_flags = config.admin_flags();
        let tls = config.tls.then(|| {
            let files = issue(&root, HARNESS_CERT_NAME);
            match Tls::open(&files) {
                // What every channel of this process (the harness's
                // clients) uses from now on.
                Ok(t) => set_process_tls(Some(t)),
                Err(e) => panic!("the harness's TLS files: {e:#}"),
            }
            files
        });
        let n = config.coordinators;
        // A group's members must know each other's addresses before they
        // start: their ports are picked first.
        let group_ports: Vec<u16> = (1..=n)
            .map(|id| {
                let member = if id == 1 {
                    Member::Coordinator
                } else {
                    Member::GroupMember { id }
                };
                config
                    .port_of(member)
                    .unwrap_or_else(crate::port::free_port)
            })
            .collect();
        let peers = group_ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut coordinators = Vec::new();
        for id in 1..=n {
            let state_dir = if id == 1 {
                root.join("coordinator")
            } else {
                root.join(format!("coordinator{id}"))
            };
            let name = if id == 1 {
                "coordinator".to_string()
            } else {
                format!("coordinator{id}")
            };
            let clusters = config.clusters;
            let failure_timeout_ms = config.failure_timeout_ms;
            let fixed = if n == 1 {
                config.port_of(Member::Coordinator)
            } else {
                Some(group_ports[id as usize - 1])
            };
            let peers = peers.clone();
            let member = if id == 1 {
                Member::Coordinator
            } else {
                Member::GroupMember { id }
            };
            let coord_tls = tls_flags(config.tls, &root, &name);
            let (bin, before) = config.launcher(member, bin_path(COORDINATOR));
            let address_flags = config.address_flags(member, false);
            let started = Proc::start_at(
                &name,
                &bin,
                &root.join("logs"),
                Ready::StdoutContains(COORDINATOR_READY_LINE.to_string()),
                &config.host_of(member),
                fixed,
                |port| {
                    let mut args = before.clone();
                    args.extend(strings(&[
                        "-p",
                        &port.to_string(),
                        "--clusters",
                        &clusters.to_string(),
                        "--state-dir",
                        &path_arg(&state_dir),
                        "--failure-timeout-ms",
                        &failure_timeout_ms.to_string(),
                    ]));
                    args.extend(address_flags.iter().cloned());
                    if n > 1 {
                        args.extend(strings(&["--id", &id.to_string(), "--peers", &peers]));
                    }
                    args.extend(secret_flags.iter().cloned());
                    args.extend(admin_flags.iter().cloned());
                    args.extend(coord_tls.iter().cloned());
                    args
                },
            )
            .await;
            match started {
                Ok(p) => coordinators.push(p),
                Err(e) => {
                    let kept = dir.map_or(root, |d| d.keep());
                    panic!(
                        "{name} did not start: {e:#}\n(logs kept in {})",
                        kept.display()
                    );
                }
            }
        }
        let group = coordinators.split_off(1);
        let Some(coordinator) = coordinators.pop() else {
            panic!("a deployment has at least one coordinator");
        };
        let coord_addr = std::iter::once(&coordinator)
            .chain(group.iter())
            .map(Proc::addr)
            .collect::<Vec<_>>()
            .join(",");
        let api = Api::new(&coord_addr, &auth);
        let mut d = Deployment {
            config,
            root,
            coordinator,
            group,
            servers: Vec::new(),
            syncs: Vec::new(),
            api,
            auth,
            tls,
            dir,
            _slot: slot,
        };
        // Primaries first: the first server asking for the primary role of
        // a fresh cluster gets it, so start them before any secondary.
        for cluster in 1..=d.config.clusters {
            d.add_server(cluster, FIRST_SERVER_ID, Role::Primary).await;
        }
        d.wait_primaries_are_first().await;
        for cluster in 1..=d.config.clusters {
            for i in 0..d.config.secondaries_per_cluster {
                d.add_server(cluster, FIRST_SERVER_ID + 1 + i, Role::Secondary)
                    .await;
            }
            d.add_sync(cluster).await;
        }
        d.wait_healthy().await;
        d
    }

    async fn add_server(&mut self, cluster: u32, server_id: u32, role: Role) {
        let coord = self.coord_addr();
        let datastore = path_arg(&self.datastore_root());
        let role_arg = if role == Role::Primary {
            "primary"
        } else {
            "secondary"
        };
        let heartbeat = self.config.heartbeat_interval_ms;
        let secret_flags = self.secret_flags();
        let mut extra = self.config.server_args.clone();
        extra.extend(self.config.admin_flags());
        let name = format!("c{cluster}-server{server_id}");
        let tls = tls_flags(self.config.tls, &self.root, &name);
        let member = Member::Server { cluster, server_id };
        let (bin, before) = self.config.launcher(member, bin_path(SERVER));
        let address_flags = self.config.address_flags(member, true);
        let started = Proc::start_at(
            &name,
            &bin,
            &self.logs_dir(),
            Ready::Listening,
            &self.config.host_of(member),
            self.config.port_of(member),
            |port| {
                let mut args = before.clone();
                args.extend(strings(&[
                    "-c",
                    &coord,
                    "-p",
                    &port.to_string(),
                    "-i",
                    &cluster.to_string(),
                    "-t",
                    role_arg,
                    "--datastore",
                    &datastore,
                    "--server-id",
                    &server_id.to_string(),
                ]));
                if let Some(ms) = heartbeat {
                    args.extend(strings(&["--heartbeat-interval-ms", &ms.to_string()]));
                }
                args.extend(address_flags.iter().cloned());
                args.extend(secret_flags.iter().cloned());
                args.extend(tls.iter().cloned());
                args.extend(extra.iter().cloned());
                args
            },
        )
        .await;
        match started {
            Ok(proc) => self.servers.push(ServerProc {
                cluster,
                server_id,
                proc,
            }),
            Err(e) => panic!("{name} did not start: {e:#}"),
        }
    }

    async fn add_sync(&mut self, cluster: u32) {
        let coord = self.coord_addr();
        let datastore = path_arg(&self.datastore_root());
        let q_ms = self.config.q_ms;
        let secret_flags = self.secret_flags();
        let admin_flags = self.config.admin_flags();
        let name = format!("c{cluster}-sync");
        let tls = tls_flags(self.config.tls, &self.root, &name);
        let member = Member::Sync { cluster };
        let (bin, before) = self.config.launcher(member, bin_path(SYNC_SERVICE));
        let address_flags = self.config.address_flags(member, true);
        let started = Proc::start_at(
            &name,
            &bin,
            &self.logs_dir(),
            Ready::Listening,
            &self.config.host_of(member),
            self.config.port_of(member),
            |port| {
                let mut args = before.clone();
                args.extend(strings(&[
                    "-c",
                    &coord,
                    "-s",
                    &cluster.to_string(),
                    "-p",
                    &port.to_string(),
                    "-q",
                    &q_ms.to_string(),
                    "--datastore",
                    &datastore,
                ]));
                args.extend(address_flags.iter().cloned());
                args.extend(secret_flags.iter().cloned());
                args.extend(admin_flags.iter().cloned());
                args.extend(tls.iter().cloned());
                args
            },
        )
        .await;
        match started {
            Ok(proc) => self.syncs.push(SyncProc { cluster, proc }),
            Err(e) => panic!("{name} did not start: {e:#}"),
        }
    }

    /// The secret flags every process of this deployment is given.
    fn secret_flags(&self) -> Vec<String> {
        secret_flags(&SecretArgs {
            cluster_secret_file: Some(self.secret_file().to_path_buf()),
            secret_grace_ms: self.config.secret_grace_ms.unwrap_or(SECRET_GRACE_MS),
        })
    }

    // ------------------------------------------------------------ access

    /// The TLS files of the harness's own clients (they present a
    /// certificate of the deployment's CA), when TLS is on.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The flags a `tsn_client` run needs to reach this deployment
    /// (`--tls-ca` when TLS is on; a plain client presents no certificate).
    pub fn client_tls_flags(&self) -> Vec<String> {
        match &self.tls {
            Some(f) => strings(&["--tls-ca", &path_arg(&f.ca)]),
            None => Vec::new(),
        }
    }

    /// The directory of this deployment's certificates.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join(TLS_DIR_NAME)
    }

    /// The certificate files of `member` (see [`Deployment::member_name`]).
    pub fn member_tls(&self, member: Member) -> TlsFiles {
        let dir = self.tls_dir();
        let name = member_name(member);
        TlsFiles::process(
            &dir.join(format!("{name}.crt")),
            &dir.join(format!("{name}.key")),
            &dir.join(tsn_cluster::tls::generate::CA_FILE_NAME),
        )
    }

    /// Replaces `member`'s certificate and key on disk with a new pair of
    /// the same CA (the process follows its files); returns the files.
    pub fn rotate_certificate(&self, member: Member) -> TlsFiles {
        issue(&self.root, &member_name(member))
    }

    /// The cluster secret of this deployment, as its processes hold it.
    pub fn auth(&self) -> &ClusterAuth {
        &self.auth
    }

    /// The file every process reads the cluster secret from (rotate it
    /// with `tsn_cluster::auth::replace_secret_file`).
    pub fn secret_file(&self) -> &Path {
        self.auth.path()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The temp dir holding logs, datastore and state.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The `--datastore` root shared by every server and sync service.
    pub fn datastore_root(&self) -> PathBuf {
        self.root.join("datastore")
    }

    /// The `--state-dir` given to `tsn_client` runs.
    pub fn client_state_dir(&self) -> PathBuf {
        self.root.join("client")
    }

    /// The files of server `server_id` of `cluster`.
    pub fn layout(&self, cluster: u32, server_id: u32) -> Layout {
        Layout::new(&self.datastore_root(), cluster, server_id)
    }

    /// Every server of `cluster`, named as in its logs, with its files:
    /// what [`crate::fault_check::journals_agree`] compares.
    pub fn replica_layouts(&self, cluster: u32) -> Vec<(String, Layout)> {
        self.server_ids(cluster)
            .into_iter()
            .map(|s| (format!("c{cluster}-server{s}"), self.layout(cluster, s)))
            .collect()
    }

    /// The coordinator's address, or the list of the coordinator group's
    /// members (`h:p,h:p,...`), as every process is given it.
    pub fn coord_addr(&self) -> String {
        std::iter::once(&self.coordinator)
            .chain(self.group.iter())
            .map(Proc::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A gRPC client of this deployment.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub fn coordinator(&mut self) -> &mut Proc {
        &mut self.coordinator
    }

    /// The ids of `cluster`'s servers, the one started as primary first.
    pub fn server_ids(&self, cluster: u32) -> Vec<u32> {
        self.servers
            .iter()
            .filter(|s| s.cluster == cluster)
            .map(|s| s.server_id)
            .collect()
    }

    pub fn server(&mut self, cluster: u32, server_id: u32) -> &mut Proc {
        match self
            .servers
            .iter_mut()
            .find(|s| s.cluster == cluster && s.server_id == server_id)
        {
            Some(s) => &mut s.proc,
            None => panic!("no server {server_id} in cluster {cluster}"),
        }
    }

    pub fn sync(&mut self, cluster: u32) -> &mut Proc {
        match self.syncs.iter_mut().find(|s| s.cluster == cluster) {
            Some(s) => &mut s.proc,
            None => panic!("no sync service in cluster {cluster}"),
        }
    }

    pub fn member(&mut self, member: Member) -> &mut Proc {
        match member {
            Member::Coordinator => self.coordinator(),
            Member::GroupMember { id } => match self.group.get_mut((id as usize).wrapping_sub(2)) {
                Some(p) => p,
                None => panic!("no member {id} in the coordinator group"),
            },
            Member::Server { cluster, server_id } => self.server(cluster, server_id),
            Member::Sync { cluster } => self.sync(cluster),
        }
    }

    /// The admin port's address of `member` since its last start, as it
    /// printed it (see [`Config::admin_ports`]).
    pub fn admin_addr(&mut self, member: Member) -> Option<String> {
        let out = self.member(member).stdout_since_start();
        out.lines().find_map(|l| {
            l.strip_prefix(tsn_cluster::admin::ADMIN_READY_LINE)
                .map(|a| a.trim().to_string())
        })
    }

    /// Every process, coordinator first (the group's members after it).
    pub fn members(&self) -> Vec<Member> {
        let mut all = vec![Member::Coordinator];
        all.extend((0..self.group.len()).map(|i| Member::GroupMember { id: i as u32 + 2 }));
        all.extend(self.servers.iter().map(|s| Member::Server {
            cluster: s.cluster,
            server_id: s.server_id,
        }));
        all.extend(
            self.syncs
                .iter()
                .map(|s| Member::Sync { cluster: s.cluster }),
        );
        all
    }

    // ------------------------------------------------------------ faults

    /// The current primary of `cluster` as the coordinator names it,
    /// waiting for it to name one.
    pub async fn primary_of(&self, cluster: u32) -> (u32, String) {
        let api = self.api();
        wait_for(
            Duration::from_millis(HEALTHY_DEADLINE_MS),
            &format!("the coordinator to name a primary of cluster {cluster}"),
            || {
                let api = api.clone();
                async move {
                    match api.primary_of(cluster).await {
                        Ok(Some(p)) => Ok(p),
                        Ok(None) => Err(format!("cluster {cluster} has no primary")),
                        Err(status) => Err(format!("Clusters failed: {status}")),
                    }
                }
            },
        )
        .await
    }

    /// The files of `cluster`'s current primary.
    pub async fn primary_layout(&self, cluster: u32) -> Layout {
        let (server_id, _) = self.primary_of(cluster).await;
        self.layout(cluster, server_id)
    }

    /// SIGKILLs the current primary of `cluster`; returns its server id.
    pub async fn kill9_primary(&mut self, cluster: u32) -> u32 {
        let (server_id, _) = self.primary_of(cluster).await;
        self.server(cluster, server_id).kill9();
        server_id
    }

    pub fn kill9(&mut self, member: Member) {
        self.member(member).kill9();
    }

    /// Starts `member` again with its arguments; panics if it does not
    /// come up. Does not wait for the coordinator to see it.
    pub async fn restart(&mut self, member: Member) {
        let proc = self.member(member);
        if let Err(e) = proc.restart().await {
            panic!("restarting {member:?} failed: {e:#}");
        }
    }

    /// SIGKILLs every process: sync services, servers, the coordinator.
    pub fn kill9_all(&mut self) {
        for s in &mut self.syncs {
            s.proc.kill9();
        }
        for s in &mut self.servers {
            s.proc.kill9();
        }
        for c in &mut self.group {
            c.kill9();
        }
        self.coordinator.kill9();
    }

    /// Stops every process gracefully (SIGTERM; SIGKILL after the stop
    /// deadline): sync services, servers, then the coordinator. Returns each
    /// one's exit code (`None`: killed by a signal).
    pub async fn stop_all(&mut self) -> Vec<(Member, Option<i32>)> {
        let mut members = self.members();
        // The coordinator group last: the others may talk to it while they
        // stop.
        members.rotate_left(1 + self.group.len());
        let mut codes = Vec::with_capacity(members.len());
        for member in members {
            let code = self.member(member).stop().await;
            codes.push((member, code));
        }
        codes
    }

    /// Restarts every process that is not running (coordinator, servers,
    /// sync services, in that order) and waits until the deployment is
    /// healthy again.
    pub async fn restart_all(&mut self) {
        for member in self.members() {
            if !self.member(member).is_running() {
                self.restart(member).await;
            }
        }
        self.wait_healthy().await;
    }

    // ------------------------------------------------------------ logs

    /// The log tails of every process.
    pub fn log_tails(&self) -> String {
        let mut out = self.coordinator.log_tails();
        for c in &self.group {
            out.push_str(&c.log_tails());
        }
        for s in &self.servers {
            out.push('\n');
            out.push_str(&s.proc.log_tails());
        }
        for s in &self.syncs {
            out.push('\n');
            out.push_str(&s.proc.log_tails());
        }
        out
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.kill9_all();
        let keep = std::env::var_os(KEEP_ENV).is_some();
        if std::thread::panicking() {
            eprintln!(
                "\n======== tsn_harness: the test failed; process logs follow\n{}\n======== end of logs",
                self.log_tails()
            );
        }
        if std::thread::panicking() || keep {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "tsn_harness: logs and data kept in {}",
                    dir.keep().display()
                );
            }
        }
    }
}

/// The name of `member`'s log and certificate files.
pub fn member_name(member: Member) -> String {
    match member {
        Member::Coordinator => "coordinator".to_string(),
        Member::GroupMember { id } => format!("coordinator{id}"),
        Member::Server { cluster, server_id } => format!("c{cluster}-server{server_id}"),
        Member::Sync { cluster } => format!("c{cluster}-sync"),
    }
}

fn tls_from_env() -> bool {
    std::env::var(TLS_ENV).is_ok_and(|v| v == "1")
}

/// The CA of every deployment of this process (one, so that the
/// process's own clients trust each of them).
pub fn authority() -> &'static Authority {
    static CA: OnceLock<Authority> = OnceLock::new();
    CA.get_or_init(|| match Authority::new("tsn test CA") {
        Ok(a) => a,
        Err(e) => panic!("cannot make a test CA: {e:#}"),
    })
}

/// A new certificate named `name` under `root`'s TLS directory.
fn issue(root: &Path, name: &str) -> TlsFiles {
    match authority().issue(&root.join(TLS_DIR_NAME), name) {
        Ok(f) => f,
        Err(e) => panic!("cannot make the certificate of {name}: {e:#}"),
    }
}

/// The TLS flags of the process `name`, with a new certificate, when `on`.
fn tls_flags(on: bool, root: &Path, name: &str) -> Vec<String> {
    if !on {
        return Vec::new();
    }
    TlsArgs::of(Some(&issue(root, name))).to_flags()
}

/// `--cluster-secret-file` and `--secret-grace-ms` as `args` say.
fn secret_flags(args: &SecretArgs) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(file) = &args.cluster_secret_file {
        flags.extend(strings(&["--cluster-secret-file", &path_arg(file)]));
    }
    flags.extend(strings(&[
        "--secret-grace-ms",
        &args.secret_grace_ms.to_string(),
    ]));
    flags
}

pub(crate) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

pub(crate) fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "clusters must be")]
    fn zero_clusters_is_refused() {
        Config::new(0, 0, 500).check();
    }

    #[test]
    #[should_panic(expected = "q_ms must be")]
    fn zero_q_is_refused() {
        Config::new(1, 0, 0).check();
    }

    #[test]
    fn defaults_are_sane() {
        let c = Config::new(3, 1, 500);
        c.check();
        assert_eq!(c.failure_timeout_ms, FAILURE_TIMEOUT_DEFAULT_MS);
        assert_eq!(c.heartbeat_interval_ms, None);
    }

    #[test]
    fn a_member_with_an_environment_of_its_own_starts_through_env() {
        let mut c = Config::new(2, 0, 500);
        let server = Member::Server {
            cluster: 2,
            server_id: 1,
        };
        c.env.push((server, "FAKETIME".into(), "+30s".into()));
        let bin = PathBuf::from("/x/tsn_server");
        assert_eq!(
            c.launcher(server, bin.clone()),
            (
                PathBuf::from(ENV_BIN),
                strings(&["FAKETIME=+30s", "/x/tsn_server"])
            )
        );
        let other = Member::Sync { cluster: 2 };
        assert_eq!(c.launcher(other, bin.clone()), (bin, Vec::new()));
        assert_eq!(c.host_of(other), "127.0.0.1");
        assert!(c.address_flags(other, true).is_empty(), "loopback defaults");
    }
}
