//! The Redis pair the baseline posts to: a primary and a replica, each a
//! `redis-server` child on a free port of 127.0.0.1 with its own directory
//! in a temp dir, as durable as Redis can be made per write.
//!
//! * `appendonly yes` and `appendfsync always` on both: every write is in
//!   the append-only file and fsynced before the server replies to it (the
//!   primary) or acknowledges its replication offset (the replica).
//! * `min-replicas-to-write 1`, `min-replicas-max-lag` [`MIN_REPLICAS_MAX_LAG_S`]:
//!   the primary refuses writes while it has no replica that answered
//!   recently, as tsn refuses writes without an in-sync secondary.
//! * RDB snapshots off (`save ""`): the AOF is the one durable copy, and
//!   no fork for a snapshot lands in the measured span.
//!
//! A post then waits for the replica too (`WAIT` or `WAITAOF`, see
//! `posts.rs`), so that, as in tsn, an acknowledged post is on two disks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tsn_harness::{Proc, Ready};

use crate::limits::{POLL_INTERVAL_MS, POST_CALL_TIMEOUT_MS};

/// The Redis server program, looked up on `PATH` (Debian's
/// `redis-server` package).
pub const REDIS_SERVER_BIN: &str = "redis-server";
/// The primary refuses writes when no replica acknowledged its offset
/// within this many seconds (Redis's own unit for the setting).
pub const MIN_REPLICAS_MAX_LAG_S: u32 = 10;
/// How long the replica has to finish its first sync with the primary.
pub const REPLICA_SYNC_DEADLINE_MS: u64 = 30_000;

/// The path of `redis-server` on `PATH`, or why there is none.
pub fn find_redis_server() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(REDIS_SERVER_BIN))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{REDIS_SERVER_BIN} is not on PATH (Debian package redis-server; `make bench` and .ci/run install it)"
            )
        })
}

/// The two running servers; dropping it kills both.
pub struct RedisPair {
    pub primary: Proc,
    pub replica: Proc,
    /// Keeps the directories until the pair is gone.
    _dir: tempfile::TempDir,
}

impl RedisPair {
    /// Starts the primary, then the replica of it, and waits until the
    /// replica's link is up and the primary counts it.
    pub async fn start(bin: &Path) -> anyhow::Result<RedisPair> {
        let dir = tempfile::Builder::new()
            .prefix("tsn_bench-redis-")
            .tempdir()
            .map_err(|e| anyhow::anyhow!("cannot make a temp dir for Redis: {e}"))?;
        let logs = dir.path().join("logs");
        let primary_dir = make_dir(dir.path(), "primary")?;
        let replica_dir = make_dir(dir.path(), "replica")?;
        let primary =
            Proc::start_on_free_port("redis-primary", bin, &logs, Ready::Listening, |port| {
                server_args(port, &primary_dir, None)
            })
            .await?;
        let primary_port = primary.port();
        let replica =
            Proc::start_on_free_port("redis-replica", bin, &logs, Ready::Listening, |port| {
                server_args(port, &replica_dir, Some(primary_port))
            })
            .await?;
        let pair = RedisPair {
            primary,
            replica,
            _dir: dir,
        };
        pair.wait_replica_synced().await?;
        Ok(pair)
    }

    pub fn primary_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.primary.port())
    }

    async fn wait_replica_synced(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.primary_url())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_millis(POST_CALL_TIMEOUT_MS)));
        let mut con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let start = Instant::now();
        let mut last = String::from("never asked");
        while start.elapsed() < Duration::from_millis(REPLICA_SYNC_DEADLINE_MS) {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut con)
                .await?;
            if online_replicas(&info) >= 1 {
                return Ok(());
            }
            last = info;
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
        anyhow::bail!(
            "the Redis replica was not online within {REPLICA_SYNC_DEADLINE_MS} ms; the primary said:\n{last}"
        )
    }
}

fn make_dir(parent: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The command line of one server: everything on it, no config file.
fn server_args(port: u16, dir: &Path, primary_port: Option<u16>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--daemonize",
        "no",
        "--min-replicas-to-write",
        "1",
        "--min-replicas-max-lag",
        &MIN_REPLICAS_MAX_LAG_S.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(p) = primary_port {
        args.extend(["--replicaof".into(), "127.0.0.1".into(), p.to_string()]);
    }
    args
}

/// Replicas the primary's `INFO replication` lists as online.
pub fn online_replicas(info: &str) -> usize {
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .count()
}

/// The `redis_version` of an `INFO server` reply, as (major, minor).
pub fn version_of(info: &str) -> Option<(u32, u32)> {
    let v = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?
        .trim();
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_replicas_are_counted() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
                    slave0:ip=127.0.0.1,port=1,state=online,offset=1,lag=0\r\n\
                    slave1:ip=127.0.0.1,port=2,state=wait_bgsave,offset=0,lag=0\r\n";
        assert_eq!(online_replicas(info), 1);
        assert_eq!(online_replicas("role:master\r\nconnected_slaves:0\r\n"), 0);
    }

    #[test]
    fn versions_are_read() {
        assert_eq!(
            version_of("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n"),
            Some((7, 0))
        );
        assert_eq!(version_of("redis_version:7.2.4\r\n"), Some((7, 2)));
        assert_eq!(version_of("nothing"), None);
    }

    #[test]
    fn the_replica_names_its_primary() {
        let args = server_args(7001, Path::new("/tmp/x"), Some(7000));
        let at = args.iter().position(|a| a == "--replicaof").unwrap();
        assert_eq!(args[at + 1..at + 3], ["127.0.0.1", "7000"]);
        assert!(args.windows(2).any(|w| w == ["--appendfsync", "always"]));
        assert!(!server_args(7000, Path::new("/tmp/x"), None).contains(&"--replicaof".into()));
    }
}
