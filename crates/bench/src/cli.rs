//! The command line of `tsn_bench`: every flag bounded, every bad value
//! refused with a message that names the flag and its bounds, before
//! anything is started.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::limits::{
    CLIENTS_MAX, CLUSTERS_MAX, CONNECTIONS_MAX, DISK_COUNT_MAX, DISK_INTERVAL_MAX_MS,
    DURATION_MAX_S, FAILOVER_COUNT_MAX, FOLLOWS_MAX, Q_MAX_MS, Q_MIN_MS, RATE_MAX_PER_S,
    RATE_MIN_PER_S, SAMPLE_FOLLOWERS_MAX, USERS_MAX, WARMUP_MAX_S,
};

/// Measures tsn: durable post throughput and acknowledgement latency,
/// delivery latency to followers' open Timeline streams (same cluster and
/// cross cluster), the write outage of a primary's failover, and the limit
/// of the RPC stack on this machine. Without -c it starts its own local
/// deployment (coordinator, and per cluster a primary, a secondary and a
/// sync service) in a temp dir.
#[derive(Parser, Debug)]
#[command(name = "tsn_bench", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// A bare tonic echo service (answers tsn.Posts/Post at once, storing
    /// nothing) with the same runtime and server settings as tsn_server:
    /// the limit of the RPC stack that post throughput is compared with.
    EchoServer(EchoArgs),
    /// Kill -9 the primary of cluster 1 again and again under a light load,
    /// restarting it each time and waiting until it is in sync again;
    /// reports each write outage, their median and maximum, and lost or
    /// duplicated posts.
    Failover(FailoverArgs),
    /// The disk alone: times appends of a journal-sized line, each followed
    /// by fdatasync, at a fixed interval; the floor of any durable post's
    /// acknowledgement latency on this machine.
    Disk(DiskArgs),
}

/// How the open loop spaces its posts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Exponential gaps (a Poisson process), as independent users post.
    Poisson,
    /// Equal gaps.
    Fixed,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct RunArgs {
    /// Coordinator of a running deployment to measure, host:port; without
    /// it a local deployment is started (and stopped at the end).
    #[arg(short = 'c', long = "coordinator", value_name = "HOST:PORT")]
    pub coordinator: Option<String>,

    /// The cluster secret of the deployment of -c (its audit and its view
    /// of the clusters are internal calls); without it, the default file
    /// ($XDG_CONFIG_HOME/tsn/cluster.secret, else
    /// ~/.config/tsn/cluster.secret). A local deployment makes its own.
    #[arg(long, value_name = "PATH")]
    pub cluster_secret_file: Option<std::path::PathBuf>,

    /// TLS to the deployment of -c: `--tls-ca` verifies its servers,
    /// `--tls-cert --tls-key` are the certificate its internal services
    /// (the audit, the view of the clusters) require.
    #[command(flatten)]
    #[serde(skip)]
    pub tls: tsn_cluster::tls::TlsArgs,

    /// Users to create (ids 1..=U, spread over the clusters by id).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=USERS_MAX as i64))]
    pub users: u32,

    /// Users each user follows.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=FOLLOWS_MAX as i64))]
    pub follows: u32,

    /// Share of each user's follows that are users of other clusters (0 to 1).
    #[arg(long, default_value_t = 0.5, value_parser = parse_share)]
    pub cross_share: f64,

    /// Concurrent posters of the closed loop (each posts, waits for the
    /// acknowledgement, posts again); the default unless --rate is given.
    #[arg(long, conflicts_with = "rate", value_parser = clap::value_parser!(u32).range(1..=CLIENTS_MAX as i64))]
    pub clients: Option<u32>,

    /// Open loop instead: this many posts per second on a schedule, each
    /// post's latency counted from its scheduled time.
    #[arg(long, value_name = "POSTS_PER_S", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Spacing of the open loop's posts.
    #[arg(long, value_enum, default_value_t = ScheduleKind::Poisson)]
    pub schedule: ScheduleKind,

    /// Seconds of each measured phase.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=DURATION_MAX_S))]
    pub duration_s: u64,

    /// Seconds of load before each measured phase, not counted.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=WARMUP_MAX_S))]
    pub warmup_s: u64,

    /// Clusters of the local deployment (ignored with -c: the coordinator
    /// says how many there are).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=CLUSTERS_MAX as i64))]
    pub clusters: u32,

    /// The sync services' poll interval of the local deployment, in ms.
    #[arg(short = 'q', long = "q-ms", default_value_t = 500, value_parser = clap::value_parser!(u64).range(Q_MIN_MS..=Q_MAX_MS))]
    pub q_ms: u64,

    /// Kill -9 the primary of cluster 1 this many seconds into the
    /// measured phase, and measure the write outage and lost posts
    /// (local deployment only).
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub kill_primary_at: Option<f64>,

    /// Directory for result.json and latency.svg (created if missing).
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,

    /// Skip the echo phase (the RPC stack's limit).
    #[arg(long)]
    pub no_echo: bool,

    /// Skip the Redis baseline (a Redis primary and replica started in a
    /// temp dir, the same closed loop, follow graph and watched
    /// followers); it is skipped too, with the reason, when redis-server
    /// is not on PATH.
    #[arg(long)]
    pub no_redis: bool,

    /// Skip the open-loop phase at half the measured maximum throughput.
    #[arg(long)]
    pub no_half_load: bool,

    /// Skip the disk probe (appends with fdatasync in the temp dir, before
    /// the local deployment starts: the floor of any durable
    /// acknowledgement); never made with -c, whose servers' disks are
    /// elsewhere.
    #[arg(long)]
    pub no_disk: bool,

    /// Followers whose Timeline streams are kept open to time deliveries.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=SAMPLE_FOLLOWERS_MAX as i64))]
    pub sample_followers: u32,

    /// HTTP/2 connections to each server, shared by the posters.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=CONNECTIONS_MAX as i64))]
    pub connections: u32,

    /// Seed of the follow graph, the sample and the posters' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What the closed loop uses when neither --clients nor --rate is given.
pub const CLIENTS_DEFAULT: u32 = 32;

/// The load of the main phase.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    Closed {
        clients: u32,
    },
    Open {
        rate_per_s: f64,
        schedule: ScheduleKind,
    },
}

impl RunArgs {
    pub fn load(&self) -> Load {
        match self.rate {
            Some(rate_per_s) => Load::Open {
                rate_per_s,
                schedule: self.schedule,
            },
            None => Load::Closed {
                clients: self.clients.unwrap_or(CLIENTS_DEFAULT),
            },
        }
    }

    /// Concurrent posters of the closed loops (the main phase when it is
    /// closed, and always the echo phase).
    pub fn clients(&self) -> u32 {
        self.clients.unwrap_or(CLIENTS_DEFAULT)
    }

    /// The checks that involve more than one flag.
    pub fn check(&self) -> Result<(), String> {
        if let Some(at) = self.kill_primary_at {
            if self.coordinator.is_some() {
                return Err(
                    "--kill-primary-at needs the local deployment: it cannot kill a process of a deployment given with -c"
                        .into(),
                );
            }
            if at >= self.duration_s as f64 {
                return Err(format!(
                    "--kill-primary-at {at} is not within the measured phase of --duration-s {} seconds",
                    self.duration_s
                ));
            }
        }
        if self.users < self.clusters {
            return Err(format!(
                "--users {} is fewer than --clusters {}: every cluster needs a user",
                self.users, self.clusters
            ));
        }
        Ok(())
    }
}

#[derive(Args, Debug, Clone)]
pub struct EchoArgs {
    /// Port to listen on.
    #[arg(short = 'p', long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct FailoverArgs {
    /// Failovers in a row.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=FAILOVER_COUNT_MAX as i64))]
    pub count: u32,

    /// Posts per second of the light load (fixed schedule, authors of
    /// cluster 1); it also sets how finely the outage is measured.
    #[arg(long, value_name = "POSTS_PER_S", default_value_t = 200.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Users to create (ids 1..=U, spread over the clusters by id).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=USERS_MAX as i64))]
    pub users: u32,

    /// Clusters of the local deployment.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=CLUSTERS_MAX as i64))]
    pub clusters: u32,

    /// The sync services' poll interval, in ms.
    #[arg(short = 'q', long = "q-ms", default_value_t = 500, value_parser = clap::value_parser!(u64).range(Q_MIN_MS..=Q_MAX_MS))]
    pub q_ms: u64,

    /// Directory for failover.json (created if missing).
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,

    /// HTTP/2 connections to each server, shared by the posters.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=CONNECTIONS_MAX as i64))]
    pub connections: u32,

    /// Seed of the posters' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Args, Debug, Clone)]
pub struct DiskArgs {
    /// Timed appends.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=DISK_COUNT_MAX as i64))]
    pub count: u32,

    /// Time from the start of one append to the start of the next, in ms.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=DISK_INTERVAL_MAX_MS))]
    pub interval_ms: u64,

    /// Directory to probe (a temp dir is made in it and removed after);
    /// the default is where a local deployment keeps its datastore.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub dir: PathBuf,
}

fn parse_share(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (RATE_MIN_PER_S..=RATE_MAX_PER_S).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{v} posts/s is not between {RATE_MIN_PER_S} and {RATE_MAX_PER_S}"
        ))
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if v.is_finite() && v >= 0.0 && v <= DURATION_MAX_S as f64 {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and {DURATION_MAX_S} seconds"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tsn_bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let cli = parse(&[]).unwrap();
        assert!(cli.command.is_none());
        let r = cli.run;
        assert_eq!((r.users, r.follows, r.cross_share), (1000, 10, 0.5));
        assert_eq!(r.load(), Load::Closed { clients: 32 });
        assert_eq!(
            (r.duration_s, r.warmup_s, r.clusters, r.q_ms),
            (20, 3, 3, 500)
        );
        assert_eq!(r.out, PathBuf::from("bench-results"));
        assert!(r.check().is_ok());
    }

    #[test]
    fn rate_makes_an_open_loop_and_excludes_clients() {
        let r = parse(&["--rate", "250", "--schedule", "fixed"])
            .unwrap()
            .run;
        assert_eq!(
            r.load(),
            Load::Open {
                rate_per_s: 250.0,
                schedule: ScheduleKind::Fixed
            }
        );
        assert!(parse(&["--rate", "250", "--clients", "4"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &["--users", "0"][..],
            &["--users", "1000000"],
            &["--cross-share", "1.5"],
            &["--cross-share", "x"],
            &["--clients", "0"],
            &["--clients", "5000"],
            &["--rate", "0"],
            &["--rate", "NaN"],
            &["--duration-s", "0"],
            &["--duration-s", "100000"],
            &["-q", "1"],
            &["--kill-primary-at", "-1"],
            &["--clusters", "17"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn cross_flag_checks() {
        let r = parse(&["--kill-primary-at", "25"]).unwrap().run;
        assert!(r.check().unwrap_err().contains("not within"));
        let r = parse(&["--kill-primary-at", "5", "-c", "127.0.0.1:9000"])
            .unwrap()
            .run;
        assert!(r.check().unwrap_err().contains("local deployment"));
        let r = parse(&["--users", "2", "--clusters", "3"]).unwrap().run;
        assert!(r.check().is_err());
    }

    #[test]
    fn subcommands_parse() {
        let cli = parse(&["echo-server", "-p", "7000"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::EchoServer(EchoArgs { port: 7000, .. }))
        ));
        let cli = parse(&["failover", "--count", "3"]).unwrap();
        match cli.command {
            Some(Command::Failover(f)) => assert_eq!((f.count, f.rate), (3, 200.0)),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["failover", "--count", "0"]).is_err());
        match parse(&["disk"]).unwrap().command {
            Some(Command::Disk(d)) => assert_eq!((d.count, d.interval_ms), (1_000, 10)),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["disk", "--count", "0"]).is_err());
        assert!(parse(&["disk", "--interval-ms", "1001"]).is_err());
    }
}
