//! `tsn_sync_service`: the sync service of one tsn cluster, as a library.
//!
//! [`run`] is the whole process once its port is bound: the binary parses
//! its flags and calls it; tests mount it in-process on a temporary
//! datastore.
//!
//! It reads its cluster's committed changes from the cluster's current
//! primary and carries users, follows and posts to every cluster that needs
//! them, its own included (followers lists, backfills, deliveries), so one
//! path serves every case. Each committed batch is read, parsed and looked
//! up once, however many clusters it goes to; each destination has its own
//! feed and position. Availability over consistency: a cluster that cannot
//! be reached stalls only the feed to that cluster, and everything
//! converges once it is back.
//!
//! * [`config`]: the command line.
//! * `source`: the reader task and the batches it shares: each committed
//!   batch read, parsed and looked up once, for every destination.
//! * `batch_cache`: the bounded, single-flight cache of read batches
//!   behind it.
//! * `derive`: which ops a destination needs for a batch of entries (pure).
//! * `feed`: one task per destination: take the batches read since its
//!   position, derive, send, persist.
//! * `position`: the persisted per-destination positions.
//! * `peers`: the own primary, other sync services, home clusters.
//! * `service`: the `tsn.Sync` gRPC service.

mod batch_cache;
pub mod config;
mod derive;
mod feed;
mod limits;
mod metrics;
mod peers;
mod position;
mod service;
mod source;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tsn_cluster::auth::ClusterAuth;
use tsn_cluster::clock::SharedClock;
use tsn_cluster::coord::CoordClient;
use tsn_cluster::heartbeat::{self, Heard, Identity};
use tsn_cluster::limits::{CONCURRENT_STREAMS_MAX, GRPC_MESSAGE_MAX_BYTES};
use tsn_cluster::shutdown::Shutdown;
use tsn_proto::tsn::sync_server::SyncServer;
use tsn_proto::tsn::{ProcessKind, Role};

pub use crate::config::Config;
use crate::limits::{CLUSTERS_MAX, POSITIONS_FLUSH_INTERVAL_MS};
use crate::peers::Peers;
use crate::position::{positions_path, Positions};
use crate::service::SyncService;
use crate::source::Source;

/// Binds the configured address.
pub async fn listen(config: &Config) -> anyhow::Result<TcpListener> {
    let bind = SocketAddr::new(config.bind, config.port);
    TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))
}

/// Says on stdout that it listens, then serves `tsn.Sync` on `listener`
/// and runs the feeds (positions under `config.datastore`) until
/// `shutdown` fires; writes the last positions before it returns.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let own = config.cluster_id;
    let local = listener.local_addr()?;
    let admin_listener = config.admin.listen().await?;
    let auth = ClusterAuth::open(&config.secret)?;
    let tls = tsn_cluster::tls::open_for_process(&config.tls)?;
    let coord = CoordClient::with_auth(&config.coordinator, &auth)?;

    // Whoever started the process may have closed stdout; that is no
    // reason to stop (nor to panic, as println! would).
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "tsn_sync_service cluster {own} listening on {local}"
    );
    let _ = stdout.flush();

    let me = Identity {
        cluster_id: own,
        server_id: 0,
        kind: ProcessKind::SyncService,
        address: config.advertise_address(),
        requested_role: Role::Unspecified,
        mp3_address: String::new(),
    };
    // A sync service leads nothing: the bound only shapes what its beats say.
    let clock = SharedClock::new(tsn_cluster::clock::MAX_CLOCK_OFFSET_MS);
    let heard = heartbeat::spawn(
        &config.coordinator,
        &auth,
        me,
        config.heartbeat_interval_ms,
        Box::new(|| (0, 0, 0)),
        clock.clone(),
        shutdown.clone(),
    )?;
    let positions = Arc::new(Positions::load(positions_path(&config.datastore, own)));
    let peers = Arc::new(Peers::new(
        own,
        coord,
        auth.clone(),
        heard.clone(),
        config.poll_interval_ms,
    ));
    tracing::info!(
        cluster = own,
        address = %local,
        advertise = %config.advertise_address(),
        coordinator = %config.coordinator,
        poll_interval_ms = config.poll_interval_ms,
        "sync service started"
    );

    let source = Arc::new(Source::new(peers.clone(), config.poll_interval_ms));
    if let Some(listener) = admin_listener {
        let mut registry = prometheus_client::registry::Registry::with_prefix("tsn");
        let observed =
            metrics::Observed::new(own, source.clone(), positions.clone(), &mut registry);
        tsn_cluster::admin::serve(listener, registry, Arc::new(observed), shutdown.clone());
    }
    let feeds = tokio::spawn(start_feeds(
        config.poll_interval_ms,
        source,
        peers.clone(),
        positions.clone(),
        heard,
        shutdown.clone(),
    ));
    let flusher = tokio::spawn(flush_positions(positions.clone(), shutdown.clone()));

    let mut stop = shutdown.clone();
    let incoming =
        tsn_cluster::net::incoming(listener, tsn_cluster::net::ConnLimit::for_listeners(1), tls);
    let served = Server::builder()
        .concurrency_limit_per_connection(CONCURRENT_STREAMS_MAX as usize)
        .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
        .add_service(
            auth.guard(
                SyncServer::new(SyncService::new(peers, clock))
                    .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
                    .max_encoding_message_size(GRPC_MESSAGE_MAX_BYTES),
            ),
        )
        .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
        .await;
    // The server also ends on its own only on an error; stop the feeds too.
    if let Err(e) = &served {
        tracing::error!(error = %e, "the gRPC server stopped");
    }
    if let Err(e) = feeds.await {
        tracing::error!(error = %e, "the feeds stopped abnormally");
    }
    if let Err(e) = flusher.await {
        tracing::error!(error = %e, "the positions writer stopped abnormally");
    }
    // After the feeds stopped: the last positions they reached.
    match tokio::task::spawn_blocking(move || positions.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the last positions could not be written"),
        Err(e) => tracing::error!(error = %e, "the last positions could not be written"),
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Starts one feed per destination cluster once the coordinator has told
/// the number of clusters (and more if that number grows), then waits for
/// all of them to stop at shutdown.
async fn start_feeds(
    poll_interval_ms: u64,
    source: Arc<Source>,
    peers: Arc<Peers>,
    positions: Arc<Positions>,
    mut heard: watch::Receiver<Heard>,
    mut shutdown: Shutdown,
) {
    let own = peers.own_cluster();
    let mut started: u32 = 0;
    let mut tasks = Vec::new();
    let mut refused_count = 0;
    loop {
        let told = heard.borrow().reply.as_ref().map_or(0, |r| r.cluster_count);
        if told > CLUSTERS_MAX && told != refused_count {
            tracing::error!(
                clusters = told,
                clusters_max = CLUSTERS_MAX,
                "refusing a cluster count above the limit"
            );
            refused_count = told;
        }
        if let Some(count) = peers.cluster_count() {
            if count > started {
                if own > count {
                    tracing::error!(
                        cluster = own,
                        clusters = count,
                        "this cluster is not one of the coordinator's clusters"
                    );
                }
                tracing::info!(clusters = count, "number of clusters known");
                for dest in started + 1..=count {
                    tasks.push(feed::spawn(
                        dest,
                        poll_interval_ms,
                        source.clone(),
                        peers.clone(),
                        positions.clone(),
                        shutdown.clone(),
                    ));
                }
                if started == 0 {
                    // After the feeds registered their positions. From the
                    // furthest destination: the others are behind it and
                    // read on their own until they reach what it read (at
                    // once, in the usual case of equal positions).
                    let head = (1..=count).map(|d| positions.get(d)).max().unwrap_or(0);
                    tasks.push(source.spawn_reader(head, shutdown.clone()));
                }
                started = count;
            }
        }
        tokio::select! {
            changed = heard.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = shutdown.wait() => break,
        }
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a feed stopped abnormally");
        }
    }
}

/// Writes the positions file every [`POSITIONS_FLUSH_INTERVAL_MS`] while
/// positions move, and once more at shutdown.
async fn flush_positions(positions: Arc<Positions>, mut shutdown: Shutdown) {
    let mut failures = tsn_cluster::retry::FailureLog::default();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(POSITIONS_FLUSH_INTERVAL_MS)) => false,
            _ = shutdown.wait() => true,
        };
        let p = positions.clone();
        match tokio::task::spawn_blocking(move || p.flush()).await {
            Ok(Ok(())) => {
                if failures.succeeded() {
                    tracing::info!("positions written again");
                }
            }
            Ok(Err(e)) => {
                if failures.failed() {
                    tracing::warn!(failures = failures.failures(), error = %e, "cannot write positions");
                }
            }
            Err(e) => tracing::error!(error = %e, "the positions writer stopped"),
        }
        if stopping {
            return;
        }
    }
}
