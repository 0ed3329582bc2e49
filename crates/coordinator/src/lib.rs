//! tsn_coordinator: the control plane of tsn, as a library.
//!
//! [`run`] is the whole process once its port is bound: the binary parses
//! its flags and calls it; tests mount it in-process on a temporary state
//! directory.
//!
//! Startup: parse the flags, bind the port, read the cluster secret, load
//! (or clear) the stored
//! state, say on stdout that it listens, then serve `tsn.Coordinator`, the
//! classic `csce438.CoordService`, `tsn.Accounts` and the MP3 variant's
//! `csce438.SNSCoordinatorService` on that one port next to the failure
//! detector loop, until the shutdown signal (Ctrl-C or SIGTERM for the
//! binary). `tsn.Coordinator` and `tsn.Mp3Directory` are internal: they
//! refuse a caller without the cluster secret (`tsn_cluster::auth`).
//!
//! * [`config`]: flags and limits.
//! * `control`: every decision (registry, roles and epochs, failure
//!   detection, in-sync sets, assignment), pure, persistence injected.
//! * `persist`: the state files.
//! * `service`: the gRPC handlers.
//! * `liveness`: the failure detector loop.
//! * `mp3`: the MP3 variant's `FetchAssignment` and the MP3 listener directory.
//! * `accounts`: `tsn.Accounts`, sign-ups and handle lookups (open).

mod accounts;
pub mod config;
mod control;
mod liveness;
mod mp3;
mod persist;
mod service;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tsn_cluster::limits::{CONCURRENT_STREAMS_MAX, GRPC_MESSAGE_MAX_BYTES};
use tsn_cluster::shutdown::Shutdown;
use tsn_proto::csce438::coord_service_server::CoordServiceServer;
use tsn_proto::mp3::sns_coordinator_service_server::SnsCoordinatorServiceServer;
use tsn_proto::tsn::accounts_server::AccountsServer;
use tsn_proto::tsn::coordinator_server::CoordinatorServer;
use tsn_proto::tsn::mp3_directory_server::Mp3DirectoryServer;

pub use crate::config::Args;
use crate::service::CoordinatorService;

/// Binds the configured address. Done first: a coordinator that cannot
/// serve must not touch the stored state (think of `-c` next to a
/// coordinator already running).
pub async fn listen(args: &Args) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(args.bind, args.port);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (port {})", args.port))
}

/// Loads (or clears) the stored state under `args.state_dir`, says on
/// stdout that it listens, then serves on `listener` next to the failure
/// detector until `shutdown` fires.
pub async fn run(args: Args, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let auth = tsn_cluster::auth::ClusterAuth::open(&args.secret)?;

    let files = persist::Files::open(&args.state_dir, args.clear)?;
    let loaded = files.load()?;
    let state = control::ControlPlane::open(
        loaded,
        Box::new(files),
        args.clusters,
        args.failure_timeout(),
        Instant::now(),
    )?;
    let mut state = state;
    state.set_users_max(args.users_max);
    let cluster_count = state.cluster_count();
    let state = Arc::new(Mutex::new(state));
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "tsn_coordinator listening on {local} (clusters: {cluster_count})"
        );
        let _ = out.flush();
    }
    tracing::info!(
        address = %local,
        clusters = cluster_count,
        failure_timeout_ms = args.failure_timeout_ms,
        state_dir = %args.state_dir.display(),
        "coordinator started"
    );

    let detector = tokio::spawn(liveness::run(
        state.clone(),
        args.liveness_tick(),
        shutdown.clone(),
    ));

    let mp3 = mp3::Mp3Coordinator::new(state.clone());
    let accounts = accounts::AccountsService::new(state.clone());
    let service = CoordinatorService::new(state);
    let incoming =
        tsn_cluster::net::incoming(listener, tsn_cluster::net::ConnLimit::for_listeners(1));
    let mut stop = shutdown.clone();
    let serve = async move {
        Server::builder()
            .concurrency_limit_per_connection(CONCURRENT_STREAMS_MAX as usize)
            .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
            .add_service(
                auth.guard(
                    CoordinatorServer::new(service.clone())
                        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
                ),
            )
            .add_service(
                CoordServiceServer::new(service).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
            )
            .add_service(
                SnsCoordinatorServiceServer::new(mp3.clone())
                    .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
            )
            .add_service(auth.guard(Mp3DirectoryServer::new(mp3)))
            .add_service(
                AccountsServer::new(accounts).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
            )
            .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
            .await
            .context("serving gRPC")
    };
    liveness::serve_while_deciding(serve, detector, &shutdown).await?;
    tracing::info!("coordinator stopped");
    Ok(())
}
