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
//!   gRPC services and what they need.

mod commit;
pub mod config;
mod directory;
mod lease;
mod node;
mod posts;
mod reconcile;
mod replica;
mod replication;
mod role;
mod sns;
mod timeline;
mod validate;
mod write_queue;
mod writer;

use std::io::Write;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::Server as GrpcServer;
use tonic::Status;
use tsn_cluster::coord::CoordClient;
use tsn_cluster::heartbeat::{self, Identity};
use tsn_cluster::limits::{CONCURRENT_STREAMS_MAX, GRPC_MESSAGE_MAX_BYTES};
use tsn_cluster::shutdown::Shutdown;
use tsn_datastore::{Layout, Op, Store};
use tsn_proto::csce438::sns_service_server::SnsServiceServer;
use tsn_proto::tsn::posts_server::PostsServer;
use tsn_proto::tsn::replica_server::ReplicaServer;
use tsn_proto::tsn::{ProcessKind, Role as WireRole};

pub use crate::config::{Config, RoleArg};
pub use crate::replica::ReplicaService;
pub use crate::write_queue::{WriteOutcome, WRITE_QUEUE_MAX_REQUESTS};

use crate::node::{lock, Node};
use crate::replication::Replicators;

/// Binds the configured address: done before anything else, so that a
/// server that cannot serve does not touch its datastore.
pub async fn listen(cfg: &Config) -> anyhow::Result<TcpListener> {
    cfg.validate()?;
    let bind = format!("{}:{}", cfg.bind, cfg.port);
    TcpListener::bind(&bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))
}

/// Serves on `listener` until `shutdown` fires: opens the datastore, says
/// on stdout that it listens, then serves every service.
pub async fn run(cfg: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let server = Server::start(&cfg, shutdown.clone()).await?;
    println!(
        "tsn_server cluster {} server {} listening on {} (datastore {})",
        cfg.cluster_id,
        server.node.server_id,
        cfg.advertise_address(),
        server.node.layout.dir().display()
    );
    let _ = std::io::stdout().flush();
    server.serve(listener, shutdown).await
}

/// A running server: its datastore open, its writer thread, heartbeat and
/// role follower started; its gRPC services not yet served.
pub struct Server {
    node: Arc<Node>,
    replicators: Arc<Replicators>,
}

impl Server {
    /// Opens the datastore under `cfg.datastore` and starts every task
    /// but the gRPC services; they stop when `shutdown` fires.
    pub async fn start(cfg: &Config, shutdown: Shutdown) -> anyhow::Result<Server> {
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
        let coord = CoordClient::new(&cfg.coordinator)?;
        let (write_queue, write_rx) = write_queue::channel();
        let node = Arc::new(Node::new(
            cfg.cluster_id,
            server_id,
            store,
            coord,
            cfg.mirror_timeout_ms,
            cfg.heartbeat_interval_ms,
            write_queue,
        ));
        writer::spawn(node.clone(), write_rx);

        let progress_node = node.clone();
        let heard = heartbeat::spawn(
            &cfg.coordinator,
            Identity {
                cluster_id: cfg.cluster_id,
                server_id,
                kind: ProcessKind::Server,
                address: cfg.advertise_address(),
                requested_role: match cfg.role {
                    RoleArg::Primary => WireRole::Primary,
                    RoleArg::Secondary => WireRole::Secondary,
                },
            },
            cfg.heartbeat_interval_ms,
            Box::new(move || {
                let (last_seq, last_epoch) = progress_node.position();
                (progress_node.role().epoch, last_seq, last_epoch)
            }),
            shutdown.clone(),
        )?;
        let replicators = Arc::new(Replicators::default());
        tokio::spawn(role::follow(
            node.clone(),
            heard,
            replicators.clone(),
            shutdown,
        ));
        Ok(Server { node, replicators })
    }

    /// The `tsn.Replica` service of this server, to mount elsewhere (a
    /// test wraps it to watch or alter what crosses it).
    pub fn replica(&self) -> ReplicaService {
        ReplicaService {
            node: self.node.clone(),
        }
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

    /// Serves the client-facing and replica services on `listener` until
    /// `shutdown` fires, then stops mirroring.
    pub async fn serve(self, listener: TcpListener, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let directory = Arc::new(directory::Directory::default());
        let sns = SnsServiceServer::new(sns::Sns {
            node: self.node.clone(),
            directory,
        })
        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        let posts = PostsServer::new(posts::PostsService {
            node: self.node.clone(),
        })
        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        let replica = ReplicaServer::new(self.replica())
            .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
            .max_encoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        let incoming = tsn_cluster::net::incoming(listener);
        GrpcServer::builder()
            .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
            .add_service(sns)
            .add_service(posts)
            .add_service(replica)
            .serve_with_incoming_shutdown(incoming, async move { shutdown.wait().await })
            .await?;
        self.replicators.stop_all();
        tracing::info!("stopped");
        Ok(())
    }
}
