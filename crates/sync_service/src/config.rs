//! The command line of `tsn_sync_service`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::limits::{
    HEARTBEAT_INTERVAL_MAX_MS, HEARTBEAT_INTERVAL_MIN_MS, POLL_INTERVAL_MAX_MS,
    POLL_INTERVAL_MIN_MS,
};

/// The sync service of one tsn cluster: reads the cluster's committed changes
/// from its primary and carries users, follows and posts to every cluster
/// that needs them, its own included.
#[derive(Debug, Parser)]
#[command(name = "tsn_sync_service", version)]
pub struct Config {
    /// Address of the coordinator, host:port, or of every member of the
    /// coordinator group, host:port,host:port,...
    #[arg(
        short = 'c',
        long = "coordinator",
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    pub coordinator: String,

    /// The cluster this sync service serves (1 and up).
    #[arg(
        short = 's',
        long = "cluster",
        value_name = "ID",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::limits::CLUSTERS_MAX))
    )]
    pub cluster_id: u32,

    /// Port to serve the tsn.Sync service on.
    #[arg(
        short = 'p',
        long = "port",
        value_name = "PORT",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub port: u16,

    /// Longest wait of one poll for new changes of this cluster, in ms; new
    /// changes are sent at once, this bounds the idle poll.
    #[arg(
        short = 'q',
        long = "poll-interval-ms",
        value_name = "MS",
        default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(POLL_INTERVAL_MIN_MS..=POLL_INTERVAL_MAX_MS)
    )]
    pub poll_interval_ms: u64,

    /// Root directory of the datastore; positions go to
    /// <DIR>/<cluster>/sync/positions.json.
    #[arg(long = "datastore", value_name = "DIR", default_value = "./datastore")]
    pub datastore: PathBuf,

    /// Host other processes use to reach this one (<HOST>:<port> is what the
    /// coordinator hands out).
    #[arg(
        long = "advertise-host",
        value_name = "HOST",
        default_value = "127.0.0.1"
    )]
    pub advertise_host: String,

    /// IP address to listen on.
    #[arg(long = "bind", value_name = "IP", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// How often to heartbeat the coordinator, in ms.
    #[arg(
        long = "heartbeat-interval-ms",
        value_name = "MS",
        default_value_t = tsn_cluster::limits::HEARTBEAT_INTERVAL_MS,
        value_parser = clap::value_parser!(u64)
            .range(HEARTBEAT_INTERVAL_MIN_MS..=HEARTBEAT_INTERVAL_MAX_MS)
    )]
    pub heartbeat_interval_ms: u64,

    #[command(flatten)]
    pub secret: tsn_cluster::auth::SecretArgs,

    #[command(flatten)]
    pub admin: tsn_cluster::admin::AdminArgs,

    #[command(flatten)]
    pub tls: tsn_cluster::tls::TlsArgs,
}

impl Config {
    /// The address others reach this service at.
    pub fn advertise_address(&self) -> String {
        format!("{}:{}", self.advertise_host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("tsn_sync_service").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let c = parse(&["-c", "127.0.0.1:9000", "-s", "2", "-p", "9102"]).unwrap();
        assert_eq!(c.cluster_id, 2);
        assert_eq!(c.poll_interval_ms, 500);
        assert_eq!(c.datastore, PathBuf::from("./datastore"));
        assert_eq!(c.advertise_address(), "127.0.0.1:9102");
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!(
            c.heartbeat_interval_ms,
            tsn_cluster::limits::HEARTBEAT_INTERVAL_MS
        );
    }

    #[test]
    fn out_of_range_flags_are_refused() {
        for bad in [
            &["-c", "h:1", "-s", "0", "-p", "9000"][..],
            &["-c", "h:1", "-s", "1", "-p", "0"],
            &["-c", "h:1", "-s", "1", "-p", "70000"],
            &["-c", "h:1", "-s", "1", "-p", "9000", "-q", "9"],
            &["-c", "h:1", "-s", "1", "-p", "9000", "-q", "60001"],
            &["-c", "h:1", "-s", "1", "-p", "9000", "--bind", "nowhere"],
            &["-s", "1", "-p", "9000"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let c = parse(&["-c", "h:1", "-s", "1", "-p", "9000", "-q", "10"]).unwrap();
        assert_eq!(c.poll_interval_ms, 10);
    }
}
