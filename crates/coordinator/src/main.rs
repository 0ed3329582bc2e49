//! tsn_coordinator: the control plane of tsn.
//!
//! Startup: parse the flags, bind the port, load (or clear) the stored
//! state, say on stdout that it listens, then serve `tsn.Coordinator` and the
//! classic `csce438.CoordService` on that one port next to the failure
//! detector loop, until Ctrl-C or SIGTERM.
//!
//! * [`config`]: flags and limits.
//! * [`state`]: every decision (roles, epochs, promotion, assignment).
//! * [`persist`]: the state files.
//! * [`service`]: the gRPC handlers.
//! * [`liveness`]: the failure detector loop.

mod config;
mod liveness;
mod mp3;
mod persist;
mod service;
mod state;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use tonic::transport::Server;
use tsn_cluster::limits::{CONCURRENT_STREAMS_MAX, GRPC_MESSAGE_MAX_BYTES};
use tsn_cluster::shutdown::Shutdown;
use tsn_proto::csce438::coord_service_server::CoordServiceServer;
use tsn_proto::mp3::sns_coordinator_service_server::SnsCoordinatorServiceServer;
use tsn_proto::tsn::coordinator_server::CoordinatorServer;
use tsn_proto::tsn::mp3_directory_server::Mp3DirectoryServer;

use crate::config::Args;
use crate::service::CoordinatorService;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tsn_cluster::init_logging();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, no backtrace: the operator reads it.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // The port first: a coordinator that cannot serve must not touch the
    // stored state (think of `-c` next to a coordinator already running).
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (port {})", args.port))?;
    let local = listener.local_addr().unwrap_or(addr);

    let files = persist::Files::open(&args.state_dir, args.clear)?;
    let state = state::State::open(files, args.clusters, args.failure_timeout(), Instant::now())?;
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

    let shutdown = Shutdown::on_signals();
    let detector = tokio::spawn(liveness::run(
        state.clone(),
        args.liveness_tick(),
        shutdown.clone(),
    ));

    let mp3 = mp3::Mp3Coordinator::new(state.clone());
    let service = CoordinatorService::new(state);
    let incoming = tsn_cluster::net::incoming(listener);
    let mut stop = shutdown.clone();
    Server::builder()
        .concurrency_limit_per_connection(CONCURRENT_STREAMS_MAX as usize)
        .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
        .add_service(
            CoordinatorServer::new(service.clone())
                .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            CoordServiceServer::new(service).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            SnsCoordinatorServiceServer::new(mp3.clone())
                .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
        )
        .add_service(Mp3DirectoryServer::new(mp3))
        .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
        .await
        .context("serving gRPC")?;
    let _ = detector.await;
    tracing::info!("coordinator stopped");
    Ok(())
}
