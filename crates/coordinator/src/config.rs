//! Command-line flags and the coordinator's limits.
//!
//! Every limit is a named constant with its unit last, so a reader sees at
//! once how much of anything the coordinator accepts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tsn_cluster::limits::FAILURE_TIMEOUT_MS;

/// Most clusters one coordinator manages (`--clusters`).
pub const CLUSTERS_MAX: u32 = 64;
/// Most servers registered in one cluster. Dead secondaries are forgotten to
/// make room before a new server is refused.
pub const SERVERS_PER_CLUSTER_MAX: usize = 64;
/// Most users one `Assign` call may name.
pub const ASSIGN_USERS_PER_CALL_MAX: usize = 10_000;
/// Default of `--users-max`: most users the coordinator remembers an
/// assignment for. Every client id that ever asked costs memory and a line
/// on disk, so there is a ceiling.
pub const ASSIGNED_USERS_MAX: usize = 1_000_000;
/// Longest `host:port` a process may register.
pub const ADDRESS_MAX_BYTES: usize = 255;
/// Largest epoch a heartbeat may report or the state file may hold. Far
/// beyond any real count of failovers, and it leaves room so that `epoch + 1`
/// can never overflow.
pub const EPOCH_MAX: u64 = 1 << 53;
/// Largest epoch a heartbeat may make the coordinator adopt: below
/// [`EPOCH_MAX`] by room for 2^32 promotions, so that a claim can never use
/// the epochs up.
pub const EPOCH_CLAIM_MAX: u64 = EPOCH_MAX - (1 << 32);
/// Largest server id: the classic `ServerInfo.serverID` is an `int32`.
pub const SERVER_ID_MAX: u32 = i32::MAX as u32;
/// Most members of a coordinator group (`--peers`).
pub const GROUP_MEMBERS_MAX: usize = 7;
/// How often the leader of the group tells the others it is alive.
pub const RAFT_HEARTBEAT_INTERVAL_MS: u64 = 50;
/// A member that hears no leader for a random time between these two
/// stands for election: a dead leader is replaced within about the upper
/// bound and one round of votes.
pub const RAFT_ELECTION_TIMEOUT_MIN_MS: u64 = 250;
pub const RAFT_ELECTION_TIMEOUT_MAX_MS: u64 = 500;
/// How long the leader waits before it tries again a member it could not
/// reach: short, so that a restarted member hears the leader before its
/// own election timeout and does not stand for election needlessly.
pub const RAFT_UNREACHABLE_RETRY_MS: u64 = 50;
/// Longest a decision waits to be committed by a majority; past it the
/// decision is not taken (and the member rebuilds its view from what the
/// group committed).
pub const RAFT_COMMIT_TIMEOUT_MS: u64 = 2_000;
/// Longest a new member may take to catch up with the log before a
/// membership change gives up (nothing changed then).
pub const MEMBER_CATCH_UP_TIMEOUT_MS: u64 = 30_000;
/// A snapshot is taken after this many log entries since the last one,
/// and the log before it is purged.
pub const RAFT_SNAPSHOT_LOGS: u64 = 5_000;
/// Bounds of `--failure-timeout-ms`.
pub const FAILURE_TIMEOUT_MIN_MS: u64 = 20;
pub const FAILURE_TIMEOUT_MAX_MS: u64 = 600_000;
/// The failure detector runs this many times per failure timeout...
pub const LIVENESS_TICKS_PER_FAILURE_TIMEOUT: u64 = 10;
/// ...but never more often than this.
pub const LIVENESS_TICK_MIN_MS: u64 = 10;

/// tsn_coordinator: knows every cluster's servers and sync service, learns
/// their liveness from heartbeats, decides each server's role, promotes a
/// secondary when a primary dies, and tells clients which server serves them.
#[derive(Parser, Debug, Clone)]
#[command(name = "tsn_coordinator", version)]
pub struct Args {
    /// Port to serve tsn.Coordinator and csce438.CoordService on.
    #[arg(short = 'p', long = "port")]
    pub port: u16,

    /// Delete the stored state (epochs, primaries, in-sync sets and client
    /// assignments) before starting.
    #[arg(short = 'c', long = "clear")]
    pub clear: bool,

    /// Number of clusters; new clients are spread over them by
    /// ((id - 1) mod N) + 1.
    #[arg(long = "clusters", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=CLUSTERS_MAX as i64))]
    pub clusters: u32,

    /// Directory of the stored state (clusters.json, assignments.data).
    #[arg(long = "state-dir", default_value = "./coordinator_state")]
    pub state_dir: PathBuf,

    /// IP address to listen on (0.0.0.0 to serve other machines).
    #[arg(long = "bind", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Milliseconds without a heartbeat after which a process is dead (and a
    /// dead primary is replaced by an in-sync secondary).
    #[arg(long = "failure-timeout-ms", default_value_t = FAILURE_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(FAILURE_TIMEOUT_MIN_MS..=FAILURE_TIMEOUT_MAX_MS))]
    pub failure_timeout_ms: u64,

    #[command(flatten)]
    pub secret: tsn_cluster::auth::SecretArgs,

    #[command(flatten)]
    pub admin: tsn_cluster::admin::AdminArgs,

    #[command(flatten)]
    pub tls: tsn_cluster::tls::TlsArgs,

    /// Most users the coordinator assigns a cluster to (each costs memory
    /// and a line on disk); past it, new users are refused.
    #[arg(long = "users-max", default_value_t = ASSIGNED_USERS_MAX)]
    pub users_max: usize,

    /// This member's id in the coordinator group.
    #[arg(long = "id", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,

    /// Every member of the coordinator group, this one included, as
    /// `id=host:port,...` (the address each serves on). Empty: a group of
    /// one, this member alone. Read only when the group is first formed:
    /// afterwards the membership is what the group committed.
    #[arg(long = "peers", default_value = "", value_parser = parse_peers)]
    pub peers: Peers,

    /// Start as a new member of a running group: form no group, wait to be
    /// added (`tsn.Raft/ChangeMembers` on the leader).
    #[arg(long = "join")]
    pub join: bool,
}

/// The members named by `--peers`: id -> host:port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<u64, String>);

/// Parses `id=host:port,...`.
pub fn parse_peers(s: &str) -> Result<Peers, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = part.split_once('=') else {
            return Err(format!("{part:?} is not id=host:port"));
        };
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| format!("member id {id:?} is not a positive integer"))?;
        let addr =
            tsn_cluster::parse_host_port(addr.trim()).map_err(|e| format!("member {id}: {e}"))?;
        if peers.insert(id, addr).is_some() {
            return Err(format!("member {id} is named twice"));
        }
    }
    if peers.len() > GROUP_MEMBERS_MAX {
        return Err(format!(
            "{} members; a group has at most {GROUP_MEMBERS_MAX}",
            peers.len()
        ));
    }
    Ok(Peers(peers))
}

impl Args {
    /// The members the group is formed with: `--peers`, or this member
    /// alone at its own address. Refused if `--peers` does not name `--id`.
    pub fn members(&self, local: std::net::SocketAddr) -> anyhow::Result<BTreeMap<u64, String>> {
        if self.peers.0.is_empty() {
            return Ok(BTreeMap::from([(self.id, local.to_string())]));
        }
        if !self.peers.0.contains_key(&self.id) {
            anyhow::bail!(
                "--peers does not name this member (--id {}): every member, this one included",
                self.id
            );
        }
        Ok(self.peers.0.clone())
    }

    pub fn failure_timeout(&self) -> Duration {
        Duration::from_millis(self.failure_timeout_ms)
    }

    /// How often the failure detector looks at every process.
    pub fn liveness_tick(&self) -> Duration {
        let ms = (self.failure_timeout_ms / LIVENESS_TICKS_PER_FAILURE_TIMEOUT)
            .max(LIVENESS_TICK_MIN_MS);
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("tsn_coordinator").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let a = parse(&["-p", "9000"]).unwrap();
        assert_eq!(a.port, 9000);
        assert!(!a.clear);
        assert_eq!(a.clusters, 3);
        assert_eq!(a.state_dir, PathBuf::from("./coordinator_state"));
        assert_eq!(a.bind.to_string(), "127.0.0.1");
        assert_eq!(a.failure_timeout_ms, FAILURE_TIMEOUT_MS);
        assert_eq!(a.liveness_tick(), Duration::from_millis(50));
    }

    #[test]
    fn peers_are_id_equals_host_port() {
        let a = parse(&[
            "-p",
            "9000",
            "--id",
            "2",
            "--peers",
            "1=127.0.0.1:9001,2=127.0.0.1:9000, 3=localhost:9003",
        ])
        .unwrap();
        assert_eq!(a.id, 2);
        assert_eq!(a.peers.0.len(), 3);
        assert_eq!(a.peers.0[&3], "localhost:9003");
        let local = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(a.members(local).unwrap().len(), 3);
        let alone = parse(&["-p", "9000"]).unwrap();
        assert_eq!(
            alone.members(local).unwrap(),
            BTreeMap::from([(1, "127.0.0.1:9000".to_string())])
        );
        let stranger = parse(&["-p", "9000", "--id", "4", "--peers", "1=a:1,2=b:2"]).unwrap();
        assert!(stranger.members(local).is_err());
        for bad in [
            "1",
            "0=a:1",
            "x=a:1",
            "1=a",
            "1=a:1,1=b:2",
            "1=a:99999",
            "1=a:1,2=a:2,3=a:3,4=a:4,5=a:5,6=a:6,7=a:7,8=a:8",
        ] {
            assert!(parse(&["-p", "9000", "--peers", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["-p", "9000", "--id", "0"]).is_err());
    }

    #[test]
    fn limits_are_enforced() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["-p", "9000", "--clusters", "0"]).is_err());
        assert!(parse(&["-p", "9000", "--clusters", "65"]).is_err());
        assert!(parse(&["-p", "9000", "--failure-timeout-ms", "5"]).is_err());
        assert!(parse(&["-p", "70000"]).is_err());
        let a = parse(&[
            "-p",
            "1",
            "-c",
            "--clusters",
            "64",
            "--failure-timeout-ms",
            "20",
        ])
        .unwrap();
        assert!(a.clear);
        assert_eq!(
            a.liveness_tick(),
            Duration::from_millis(LIVENESS_TICK_MIN_MS)
        );
    }
}
