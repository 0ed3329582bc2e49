//! Command-line flags of `tsn_server`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Primary,
    Secondary,
}

/// Serves one cluster's clients (as primary) or keeps a synchronous copy of
/// its data (as secondary). The coordinator decides the role: `-t` is the
/// role asked for when the cluster is new.
#[derive(Parser, Debug, Clone)]
#[command(name = "tsn_server", version)]
pub struct Config {
    /// Address of the coordinator, host:port, or of every member of the
    /// coordinator group, host:port,host:port,...
    #[arg(
        short = 'c',
        long = "coordinator",
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    pub coordinator: String,
    /// Port to listen on.
    #[arg(short = 'p', long = "port")]
    pub port: u16,
    /// Port of the listener for the MP3 variant of the client protocol
    /// (0: pick a free one). The coordinator learns it from the heartbeats
    /// and names the primary's in `FetchAssignment`.
    #[arg(long, default_value_t = 0)]
    pub mp3_port: u16,
    /// Cluster this server belongs to (1..).
    #[arg(short = 'i', long = "cluster", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cluster_id: u32,
    /// Role asked for: primary or secondary.
    #[arg(short = 't', long = "type", value_enum)]
    pub role: RoleArg,
    /// Root of the datastore; this server's files live in <dir>/<cluster>/<server-id>/.
    #[arg(long, default_value = "./datastore")]
    pub datastore: PathBuf,
    /// Id of this server within its cluster; names its datastore directory,
    /// so keep it across restarts (default: the port).
    #[arg(long)]
    pub server_id: Option<u32>,
    /// Host that clients and other servers use to reach this server.
    #[arg(long, default_value = "127.0.0.1")]
    pub advertise_host: String,
    /// Address to listen on (0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// How often to heartbeat the coordinator, in milliseconds.
    #[arg(long, default_value_t = tsn_cluster::limits::HEARTBEAT_INTERVAL_MS)]
    pub heartbeat_interval_ms: u64,
    /// How long the primary waits for a secondary's acknowledgement before
    /// it asks the coordinator to drop that secondary from the in-sync set.
    #[arg(long, default_value_t = 1_000)]
    pub mirror_timeout_ms: u64,
    /// Most connections each listener holds at a time; one past it is
    /// closed at once (default: what `RLIMIT_NOFILE` allows after a reserve
    /// for files and peers, shared by the two listeners).
    #[arg(long)]
    pub max_client_connections: Option<usize>,
    /// How long an accepted connection may stay silent before it is
    /// closed, in milliseconds.
    #[arg(long, default_value_t = tsn_cluster::net::FIRST_BYTE_TIMEOUT_MS)]
    pub first_byte_timeout_ms: u64,
    /// How far this server's cluster time may be from the coordinator's
    /// clock (half the best heartbeat round trip, plus drift) for it to
    /// lead its cluster, in milliseconds. Beyond it, or with no heartbeat
    /// answered for a while, it refuses writes and is not made primary.
    #[arg(long, default_value_t = tsn_cluster::clock::MAX_CLOCK_OFFSET_MS)]
    pub max_clock_offset_ms: u64,

    /// Every client call needs the session token of an account: ids that
    /// never signed up are refused too (classic clients then cannot act).
    #[arg(long)]
    pub require_accounts: bool,

    #[command(flatten)]
    pub secret: tsn_cluster::auth::SecretArgs,

    #[command(flatten)]
    pub admin: tsn_cluster::admin::AdminArgs,

    #[command(flatten)]
    pub tls: tsn_cluster::tls::TlsArgs,
}

impl Config {
    /// What the flags' parser cannot check alone.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.server_id() >= 1,
            "--server-id must be a positive integer"
        );
        Ok(())
    }

    /// The connection limit of each of the two listeners.
    pub fn conn_limit(&self) -> tsn_cluster::net::ConnLimit {
        let limit =
            tsn_cluster::net::ConnLimit::for_listeners(2).with_max(self.max_client_connections);
        tsn_cluster::net::ConnLimit {
            first_byte_timeout_ms: self.first_byte_timeout_ms,
            ..limit
        }
    }

    pub fn server_id(&self) -> u32 {
        self.server_id.unwrap_or(self.port as u32)
    }

    pub fn advertise_address(&self) -> String {
        format!("{}:{}", self.advertise_host, self.port)
    }
}
