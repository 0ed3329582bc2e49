//! `tsn_server` as a library: one server of a cluster. The primary and the
//! secondaries run this same code; the coordinator tells each which it is.
//!
//! [`run`] is the whole process once its port is bound: the binary parses
//! its flags and calls it; tests mount the same services in-process on a
//! temporary datastore with [`Server::start`] and [`Server::serve`].
//!
//! * [`config`]: the command line.
//! * `node`: the state the tasks share, each piece with one owner, and the
//!   lock order.
//! * `write_queue`: what a request needs to submit a write; `writer`: the
//!   group-commit thread that drains it.
//! * `commit`, `lease`: the commit tracker and the coordinator's lease (pure).
//! * `replication`, `role`, `reconcile`: mirroring, acting on heartbeat
//!   replies, where a rejoining journal parts.
//! * `sns`, `timeline`, `posts`, `replica`, `directory`, `validate`: the
//!   gRPC services and what they need. `tsn.Replica` is internal: it is
//!   served behind the cluster secret's check (`tsn_cluster::auth`).
//! * `mp3`: the MP3 variant of `SNSService`, on its own listener.
//! * `session`: the one check of who may act as a user (`authorize`) and
//!   `tsn.Sessions`, login and logout of accounts; `online`: one
//!   interactive session of an account at a time (pure).

mod commit;
pub mod config;
mod directory;
mod feed;
mod lease;
mod metrics;
mod mp3;
mod node;
mod online;
mod posts;
mod reconcile;
mod replica;
mod replication;
mod role;
mod session;
mod sns;
mod timeline;
mod validate;
mod write_queue;
mod writer;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server as GrpcServer;
use tonic::Status;
use tsn_cluster::auth::ClusterAuth;
use tsn_cluster::clock::SharedClock;
use tsn_cluster::coord::CoordClient;
use tsn_cluster::heartbeat::{self, Identity};
use tsn_cluster::limits::{CONCURRENT_STREAMS_MAX, GRPC_MESSAGE_MAX_BYTES};
use tsn_cluster::shutdown::Shutdown;
use tsn_datastore::{Layout, Op, Store};
use tsn_proto::csce438::sns_service_server::SnsServiceServer;
use tsn_proto::mp3::sns_service_server::SnsServiceServer as Mp3SnsServiceServer;
use tsn_proto::tsn::posts_server::PostsServer;
use tsn_proto::tsn::replica_server::ReplicaServer;
use tsn_proto::tsn::sessions_server::SessionsServer;
use tsn_proto::tsn::{ProcessKind, Role as WireRole};

pub use crate::config::{Config, RoleArg};
pub use crate::replica::ReplicaService;
pub use crate::write_queue::{WriteOutcome, WRITE_QUEUE_MAX_REQUESTS};

use crate::node::{lock, Node};
use crate::replication::Replicators;

/// How long requests may still run once a stop is asked for (SIGTERM,
/// Ctrl-C), in milliseconds.
const SHUTDOWN_GRACE_MS: u64 = 1_000;

/// The two ports of a server: the classic protocol with tsn's own services,
/// and the MP3 variant (its `List` reply disagrees with the classic one on
/// field 1, so the two cannot share a port).
pub struct Listeners {
    pub main: TcpListener,
    pub mp3: TcpListener,
    /// The operator's port (`--admin-port`), when asked for.
    pub admin: Option<TcpListener>,
}

/// Binds the configured addresses: done before anything else, so that a
/// server that cannot serve does not touch its datastore.
pub async fn listen(cfg: &Config) -> anyhow::Result<Listeners> {
    cfg.validate()?;
    let bind = format!("{}:{}", cfg.bind, cfg.port);
    let main = TcpListener::bind(&bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    let mp3_bind = format!("{}:{}", cfg.bind, cfg.mp3_port);
    let mp3 = TcpListener::bind(&mp3_bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {mp3_bind} (--mp3-port): {e}"))?;
    let admin = cfg.admin.listen().await?;
    Ok(Listeners { main, mp3, admin })
}

/// Serves on `listeners` until `shutdown` fires: opens the datastore, says
/// on stdout that it listens, then serves every service.
pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mp3_address = format!(
        "{}:{}",
        cfg.advertise_host,
        listeners.mp3.local_addr()?.port()
    );
    let server = Server::start(&cfg, &mp3_address, shutdown.clone()).await?;
    println!(
        "tsn_server cluster {} server {} listening on {} (MP3 variant on {}) (datastore {})",
        cfg.cluster_id,
        server.node.server_id,
        cfg.advertise_address(),
        mp3_address,
        server.node.layout.dir().display()
    );
    let _ = std::io::stdout().flush();
    server.serve(listeners, shutdown).await
}

/// A running server: its datastore open, its writer thread, heartbeat and
/// role follower started; its gRPC services not yet served.
pub struct Server {
    node: Arc<Node>,
    replicators: Arc<Replicators>,
    conn_limit: tsn_cluster::net::ConnLimit,
    /// TLS of both listeners, when on.
    tls: Option<tsn_cluster::tls::Tls>,
}

impl Server {
    /// Opens the datastore under `cfg.datastore` and starts every task
    /// but the gRPC services; they stop when `shutdown` fires.
    /// `mp3_address` is the MP3 listener the heartbeats announce (empty:
    /// none).
    pub async fn start(
        cfg: &Config,
        mp3_address: &str,
        shutdown: Shutdown,
    ) -> anyhow::Result<Server> {
        cfg.validate()?;
        let server_id = cfg.server_id();
        let layout = Layout::new(&cfg.datastore, cfg.cluster_id, server_id);
        let cluster_id = cfg.cluster_id;
        let store = tokio::task::spawn_blocking(move || Store::open(layout, cluster_id))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot open the datastore: {e}"))?;
        tracing::info!(
            dir = %store.layout().dir().display(),
            last_seq = store.last_seq(),
            users = store.state().users().count(),
            "datastore open"
        );
        let auth = ClusterAuth::open(&cfg.secret)?;
        let tls = tsn_cluster::tls::open_for_process(&cfg.tls)?;
        let coord = CoordClient::with_auth(&cfg.coordinator, &auth)?;
        let (write_queue, write_rx) = write_queue::channel();
        let clock = SharedClock::new(cfg.max_clock_offset_ms);
        let mut node = Node::new(
            cfg.cluster_id,
            server_id,
            store,
            coord,
            auth.clone(),
            cfg.mirror_timeout_ms,
            cfg.heartbeat_interval_ms,
            clock.clone(),
            write_queue,
        );
        node.require_accounts = cfg.require_accounts;
        let node = Arc::new(node);
        writer::spawn(node.clone(), write_rx);

        let progress_node = node.clone();
        let heard = heartbeat::spawn(
            &cfg.coordinator,
            &auth,
            Identity {
                cluster_id: cfg.cluster_id,
                server_id,
                kind: ProcessKind::Server,
                address: cfg.advertise_address(),
                requested_role: match cfg.role {
                    RoleArg::Primary => WireRole::Primary,
                    RoleArg::Secondary => WireRole::Secondary,
                },
                mp3_address: mp3_address.to_string(),
            },
            cfg.heartbeat_interval_ms,
            Box::new(move || {
                let (last_seq, last_epoch) = progress_node.position();
                (progress_node.role().epoch, last_seq, last_epoch)
            }),
            clock,
            shutdown.clone(),
        )?;
        let replicators = Arc::new(Replicators::default());
        tokio::spawn(role::follow(
            node.clone(),
            heard,
            replicators.clone(),
            shutdown,
        ));
        Ok(Server {
            node,
            replicators,
            conn_limit: cfg.conn_limit(),
            tls,
        })
    }

    /// The `tsn.Replica` service of this server, to mount elsewhere (a
    /// test wraps it to watch or alter what crosses it). Serve it behind
    /// [`Server::auth`]'s guard: it is internal.
    pub fn replica(&self) -> ReplicaService {
        ReplicaService {
            node: self.node.clone(),
        }
    }

    /// The cluster secret this server carries and checks.
    pub fn auth(&self) -> &ClusterAuth {
        &self.node.auth
    }

    /// Decides and commits `ops` as a client's change would be (the
    /// primary only); returns once every applied op is committed.
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<WriteOutcome>, Status> {
        self.node.write(ops).await
    }

    /// Reads the datastore under its lock (the writer waits meanwhile).
    pub fn read_store<T>(&self, read: impl FnOnce(&Store) -> T) -> T {
        read(&lock(&self.node.store))
    }

    /// Serves the client-facing and replica services on `listeners` until
    /// `shutdown` fires, then stops mirroring. Requests still running
    /// [`SHUTDOWN_GRACE_MS`] after the stop are not waited for: one may
    /// wait for a commit that cannot come (the secondary and the
    /// coordinator are stopping too), and its client was not answered, so
    /// nothing acknowledged is lost.
    pub async fn serve(self, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
        let directory = Arc::new(directory::Directory::default());
        let sns = SnsServiceServer::new(sns::Sns {
            node: self.node.clone(),
            directory: directory.clone(),
        })
        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        let mp3_sns = Mp3SnsServiceServer::new(mp3::Mp3Sns::new(sns::Sns {
            node: self.node.clone(),
            directory,
        }))
        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        let posts = PostsServer::new(posts::PostsService {
            node: self.node.clone(),
        })
        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        let sessions = SessionsServer::new(session::SessionsService::new(self.node.clone()))
            .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        let replica = ReplicaServer::new(self.replica())
            .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
            .max_encoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        if let Some(listener) = listeners.admin {
            let mut registry = prometheus_client::registry::Registry::with_prefix("tsn");
            self.node.metrics.register(&mut registry);
            tsn_cluster::admin::serve(
                listener,
                registry,
                Arc::new(metrics::Observed(self.node.clone())),
                shutdown.clone(),
            );
        }
        // Client-facing services refuse calls on connections taken into
        // the internal reserve (`tsn_cluster::net`).
        use tsn_cluster::net::refuse_on_reserve;
        let mut stop = shutdown.clone();
        let classic = GrpcServer::builder()
            .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
            .add_service(refuse_on_reserve(sns))
            .add_service(refuse_on_reserve(posts))
            .add_service(refuse_on_reserve(sessions))
            .add_service(self.node.auth.guard(replica))
            .serve_with_incoming_shutdown(
                tsn_cluster::net::incoming(listeners.main, self.conn_limit, self.tls.clone()),
                async move { stop.wait().await },
            );
        let mut stop = shutdown.clone();
        let mp3 = GrpcServer::builder()
            .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
            .add_service(refuse_on_reserve(mp3_sns))
            .serve_with_incoming_shutdown(
                tsn_cluster::net::incoming(listeners.mp3, self.conn_limit, self.tls.clone()),
                async move { stop.wait().await },
            );
        let mut stop = shutdown;
        let grace = async move {
            stop.wait().await;
            tokio::time::sleep(Duration::from_millis(SHUTDOWN_GRACE_MS)).await;
            tracing::info!(
                "requests still running after {SHUTDOWN_GRACE_MS} ms; stopping without them"
            );
        };
        tokio::select! {
            r = async { tokio::try_join!(classic, mp3) } => { r?; }
            _ = grace => {}
        }
        self.replicators.stop_all();
        tracing::info!("stopped");
        Ok(())
    }
}
