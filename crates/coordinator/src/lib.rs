//! tsn_coordinator: the control plane of tsn, as a library.
//!
//! [`run`] is the whole process once its port is bound: the binary parses
//! its flags and calls it; tests mount it in-process on a temporary state
//! directory.
//!
//! Startup: parse the flags, bind the port, read the cluster secret, start
//! this member of the coordinator group on its state directory (cleared
//! with `-c`), say on stdout that it listens, then serve `tsn.Coordinator`,
//! `tsn.Raft`, the
//! classic `csce438.CoordService`, `tsn.Accounts` and the MP3 variant's
//! `csce438.SNSCoordinatorService` on that one port next to the failure
//! detector loop, until the shutdown signal (Ctrl-C or SIGTERM for the
//! binary). `tsn.Coordinator` and `tsn.Mp3Directory` are internal: they
//! refuse a caller without the cluster secret (`tsn_cluster::auth`).
//!
//! * [`config`]: flags and limits.
//! * `control`: every decision (registry, roles and epochs, failure
//!   detection, in-sync sets, assignment), pure, persistence injected.
//! * `replicated`: the commands the decisions are, and the state they
//!   build on every member of the group (pure).
//! * `raft`: the coordinator group: log store, state machine, `tsn.Raft`,
//!   this member's openraft and the committer of decisions.
//! * `leadership`: the control plane held while, and only while, this
//!   member leads.
//! * `persist`, `migrate`: the state files of a coordinator from before the
//!   group, taken over once.
//! * `service`: the gRPC handlers.
//! * `liveness`: the failure detector loop.
//! * `metrics`: what the admin port (`--admin-port`) shows.
//! * `mp3`: the MP3 variant's `FetchAssignment` and the MP3 listener directory.
//! * `accounts`: `tsn.Accounts`, sign-ups and handle lookups (open).

mod accounts;
pub mod config;
mod control;
mod leadership;
mod liveness;
mod metrics;
mod migrate;
mod mp3;
mod persist;
mod raft;
mod replicated;
mod service;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tsn_cluster::limits::{CONCURRENT_STREAMS_MAX, GRPC_MESSAGE_MAX_BYTES};
use tsn_cluster::net::refuse_on_reserve;
use tsn_cluster::shutdown::Shutdown;
use tsn_proto::csce438::coord_service_server::CoordServiceServer;
use tsn_proto::mp3::sns_coordinator_service_server::SnsCoordinatorServiceServer;
use tsn_proto::tsn::accounts_server::AccountsServer;
use tsn_proto::tsn::coordinator_server::CoordinatorServer;
use tsn_proto::tsn::mp3_directory_server::Mp3DirectoryServer;
use tsn_proto::tsn::raft_server::RaftServer;

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

/// Starts this member of the coordinator group on `args.state_dir`
/// (cleared first with `-c`), says on stdout that it listens, then serves
/// on `listener` next to the failure detector until `shutdown` fires. A
/// group of one (no `--peers`) says so only once it leads, so that it
/// answers from the first call on, as a lone coordinator always did.
pub async fn run(args: Args, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let admin_listener = args.admin.listen().await?;
    let auth = tsn_cluster::auth::ClusterAuth::open(&args.secret)?;
    let tls = tsn_cluster::tls::open_for_process(&args.tls)?;
    let members = args.members(local)?;
    let alone = members.len() == 1 && !args.join;
    let members = (!args.join).then_some(members);

    if args.clear {
        persist::Files::open(&args.state_dir, true)?;
        raft::group::clear(&args.state_dir)?;
    }
    let group = raft::group::Group::start(args.id, members, &args.state_dir, auth.clone()).await?;
    let member = service::Member::new();
    let leadership = {
        let (args, dir) = (args.clone(), args.state_dir.clone());
        tokio::spawn(leadership::run(
            group.clone(),
            member.clone(),
            move |loaded, mut persistence| {
                let loaded = migrate::from_state_files(&dir, loaded, persistence.as_mut())?;
                let mut state = control::ControlPlane::open(
                    loaded,
                    persistence,
                    args.clusters,
                    args.failure_timeout(),
                    Instant::now(),
                )?;
                state.set_users_max(args.users_max);
                Ok(state)
            },
            shutdown.clone(),
        ))
    };
    if alone {
        let mut stop = shutdown.clone();
        loop {
            if member.control().await.is_some() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(leadership::LEADERSHIP_RETRY_MS)) => {}
                _ = stop.wait() => break,
            }
        }
    }
    let cluster_count = args.clusters;
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
        member = args.id,
        clusters = cluster_count,
        failure_timeout_ms = args.failure_timeout_ms,
        state_dir = %args.state_dir.display(),
        "coordinator started"
    );

    let detector = tokio::spawn(liveness::run(
        member.clone(),
        args.liveness_tick(),
        shutdown.clone(),
    ));

    if let Some(listener) = admin_listener {
        let mut registry = prometheus_client::registry::Registry::with_prefix("tsn");
        let observed = metrics::Observed::new(member.clone(), &mut registry);
        tsn_cluster::admin::serve(listener, registry, Arc::new(observed), shutdown.clone());
    }
    let mp3 = mp3::Mp3Coordinator::new(member.clone());
    let accounts = accounts::AccountsService::new(member.clone());
    let service = CoordinatorService::new(member);
    let raft_service = raft::network::RaftService::new(group.id, group.raft.clone());
    let incoming =
        tsn_cluster::net::incoming(listener, tsn_cluster::net::ConnLimit::for_listeners(1), tls);
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
                auth.guard(
                    RaftServer::new(raft_service)
                        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
                        .max_encoding_message_size(GRPC_MESSAGE_MAX_BYTES),
                ),
            )
            .add_service(refuse_on_reserve(
                CoordServiceServer::new(service).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
            ))
            .add_service(refuse_on_reserve(
                SnsCoordinatorServiceServer::new(mp3.clone())
                    .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
            ))
            .add_service(auth.guard(Mp3DirectoryServer::new(mp3)))
            .add_service(refuse_on_reserve(
                AccountsServer::new(accounts).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES),
            ))
            .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
            .await
            .context("serving gRPC")
    };
    let served = liveness::serve_while_deciding(serve, detector, &shutdown).await;
    leadership.abort();
    if let Err(e) = group.raft.shutdown().await {
        tracing::warn!(error = %e, "stopping Raft");
    }
    served?;
    tracing::info!("coordinator stopped");
    Ok(())
}
