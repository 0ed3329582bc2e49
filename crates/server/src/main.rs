//! `tsn_server`: one server of a cluster. The primary and the secondaries
//! run this same program; the coordinator tells each which it is.

mod commit;
mod config;
mod directory;
mod lease;
mod mp3;
mod node;
mod posts;
mod reconcile;
mod replica;
mod replication;
mod role;
mod sns;
mod timeline;
mod validate;
mod writer;

/// mimalloc: the servers allocate and free many small buffers per request
/// (protobuf messages, JSON lines); profiles showed glibc malloc at about
/// an eighth of the CPU time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tsn_cluster::coord::CoordClient;
use tsn_cluster::heartbeat::{self, Identity};
use tsn_cluster::limits::{CONCURRENT_STREAMS_MAX, GRPC_MESSAGE_MAX_BYTES};
use tsn_cluster::shutdown::Shutdown;
use tsn_datastore::{Layout, Store};
use tsn_proto::csce438::sns_service_server::SnsServiceServer;
use tsn_proto::mp3::sns_service_server::SnsServiceServer as Mp3SnsServiceServer;
use tsn_proto::tsn::posts_server::PostsServer;
use tsn_proto::tsn::replica_server::ReplicaServer;
use tsn_proto::tsn::{ProcessKind, Role as WireRole};

use crate::config::{Config, RoleArg};
use crate::node::{Node, WRITE_QUEUE_MAX_REQUESTS};

/// How long requests may still run once a stop is asked for (SIGTERM,
/// Ctrl-C), in milliseconds.
const SHUTDOWN_GRACE_MS: u64 = 1_000;
/// How long the runtime waits for blocking work (reads of files) at exit.
const RUNTIME_STOP_MAX_MS: u64 = 500;

fn main() {
    let cfg = Config::parse();
    tsn_cluster::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(run(cfg));
    runtime.shutdown_timeout(Duration::from_millis(RUNTIME_STOP_MAX_MS));
    if let Err(e) = result {
        fail(format!("{e:#}"));
    }
}

fn fail(msg: String) -> ! {
    eprintln!("tsn_server: error: {msg}");
    std::process::exit(1);
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let server_id = cfg.server_id();
    anyhow::ensure!(server_id >= 1, "--server-id must be a positive integer");
    let bind = format!("{}:{}", cfg.bind, cfg.port);
    let listener = TcpListener::bind(&bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    let mp3_bind = format!("{}:{}", cfg.bind, cfg.mp3_port);
    let mp3_listener = TcpListener::bind(&mp3_bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {mp3_bind} (--mp3-port): {e}"))?;
    let mp3_address = format!(
        "{}:{}",
        cfg.advertise_host,
        mp3_listener.local_addr()?.port()
    );
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
    let shutdown = Shutdown::on_signals();
    let (write_tx, write_rx) = tokio::sync::mpsc::channel(WRITE_QUEUE_MAX_REQUESTS);
    let node = Arc::new(Node::new(
        cfg.cluster_id,
        server_id,
        store,
        coord.clone(),
        cfg.mirror_timeout_ms,
        cfg.heartbeat_interval_ms,
        write_tx,
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
            mp3_address: mp3_address.clone(),
        },
        cfg.heartbeat_interval_ms,
        Box::new(move || {
            let (last_seq, last_epoch) = progress_node.position();
            (progress_node.role().epoch, last_seq, last_epoch)
        }),
        shutdown.clone(),
    )?;
    let replicators = Arc::new(replication::Replicators::default());
    tokio::spawn(role::follow(
        node.clone(),
        heard,
        replicators.clone(),
        shutdown.clone(),
    ));

    let directory = Arc::new(directory::Directory::default());
    let sns = SnsServiceServer::new(sns::Sns {
        node: node.clone(),
        directory: directory.clone(),
    })
    .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
    let mp3_sns = Mp3SnsServiceServer::new(mp3::Mp3Sns::new(sns::Sns {
        node: node.clone(),
        directory,
    }))
    .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
    let posts = PostsServer::new(posts::PostsService { node: node.clone() })
        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
    let replica = ReplicaServer::new(replica::ReplicaService { node: node.clone() })
        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
        .max_encoding_message_size(GRPC_MESSAGE_MAX_BYTES);

    println!(
        "tsn_server cluster {} server {} listening on {} (MP3 variant on {}) (datastore {})",
        cfg.cluster_id,
        server_id,
        cfg.advertise_address(),
        mp3_address,
        node.layout.dir().display()
    );
    let _ = std::io::stdout().flush();
    let mut stop = shutdown.clone();
    let incoming = tsn_cluster::net::incoming(listener);
    let classic = Server::builder()
        .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
        .add_service(sns)
        .add_service(posts)
        .add_service(replica)
        .serve_with_incoming_shutdown(incoming, async move { stop.wait().await });
    let mut stop = shutdown.clone();
    let mp3_incoming = tsn_cluster::net::incoming(mp3_listener);
    let mp3 = Server::builder()
        .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
        .add_service(mp3_sns)
        .serve_with_incoming_shutdown(mp3_incoming, async move { stop.wait().await });
    let mut stop = shutdown.clone();
    // A request may wait for a commit that cannot come (the secondary and
    // the coordinator are stopping too): after the grace period the server
    // stops without it. The client was not answered, so nothing is lost.
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
    replicators.stop_all();
    tracing::info!("stopped");
    Ok(())
}
