//! The operator's port of every tsn process: `/metrics` in the Prometheus
//! text format and `/admin/status` as JSON.
//!
//! Why a separate port: it is read by monitoring on the operator's network,
//! never by clients, so it can be bound elsewhere (`--admin-bind`) than the
//! service ports, has no gRPC, and a flood on a client port does not blind
//! the operator. It only reads: nothing sent to it changes the process, and
//! it shows no secret (the deployment secret, session tokens and the
//! certificates' keys never enter a metric or the status).
//!
//! Each process builds one [`prometheus_client::registry::Registry`] with
//! its own metrics (every metric object is a cheap shared handle that the
//! code updating it keeps) and a closure that says its status; this module
//! only serves them.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;

/// Most concurrent requests the admin port serves; past it a request waits.
/// Scrapers ask a few times a minute: this only bounds a flood.
pub const ADMIN_CONCURRENT_REQUESTS_MAX: usize = 16;
/// Longest an admin request may take before it is answered 503.
pub const ADMIN_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// What a process prints on stdout, followed by the address, once its
/// admin port listens.
pub const ADMIN_READY_LINE: &str = "admin port listening on";

/// The content type of the Prometheus text format (OpenMetrics flavour, as
/// `prometheus-client` writes it).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The admin port's flags, shared by every binary.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AdminArgs {
    /// Port of the operator's HTTP endpoint (`/metrics`, `/admin/status`);
    /// none without the flag, 0 picks a free one.
    #[arg(long, value_name = "PORT")]
    pub admin_port: Option<u16>,
    /// Address the admin port listens on.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub admin_bind: String,
}

impl AdminArgs {
    /// Binds the admin port when one is asked for.
    pub async fn listen(&self) -> anyhow::Result<Option<TcpListener>> {
        let Some(port) = self.admin_port else {
            return Ok(None);
        };
        let addr = format!("{}:{}", self.admin_bind, port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--admin-port): {e}"))?;
        Ok(Some(listener))
    }
}

/// What a process shows its operator, asked at each request (so it is
/// always current and holds no lock between requests).
pub trait Observed: Send + Sync + 'static {
    /// Brings the metrics that mirror state (gauges of seqs, sets, lags)
    /// up to date, right before `/metrics` is encoded.
    fn refresh(&self) {}
    /// The JSON of `/admin/status`.
    fn status(&self) -> serde_json::Value;
}

struct Admin {
    registry: Registry,
    observed: Arc<dyn Observed>,
}

/// Serves `/metrics` and `/admin/status` on `listener` until `shutdown`
/// fires. Logs its address; a failure is logged, never fatal to the
/// process (the service goes on without its admin port).
pub fn serve(
    listener: TcpListener,
    registry: Registry,
    observed: Arc<dyn Observed>,
    mut shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let admin = Arc::new(Admin { registry, observed });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/status", get(status_json))
        .with_state(admin)
        .layer(axum::middleware::from_fn(bounded));
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    if let Some(addr) = addr {
        // On stdout too, like the service port: whoever picked port 0
        // learns the one it got.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{ADMIN_READY_LINE} {addr}");
        let _ = out.flush();
    }
    tracing::info!(?addr, "admin port listening (/metrics, /admin/status)");
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the admin port stopped");
        }
    })
}

/// Every request waits for one of [`ADMIN_CONCURRENT_REQUESTS_MAX`] slots
/// and is answered 503 past [`ADMIN_REQUEST_TIMEOUT_MS`].
async fn bounded(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    static SLOTS: tokio::sync::Semaphore =
        tokio::sync::Semaphore::const_new(ADMIN_CONCURRENT_REQUESTS_MAX);
    let limit = Duration::from_millis(ADMIN_REQUEST_TIMEOUT_MS);
    let answered = tokio::time::timeout(limit, async {
        let _slot = SLOTS.acquire().await;
        next.run(req).await
    })
    .await;
    answered.unwrap_or_else(|_| (StatusCode::SERVICE_UNAVAILABLE, "timed out\n").into_response())
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    admin.observed.refresh();
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &admin.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn status_json(State(admin): State<Arc<Admin>>) -> Response {
    let value = admin.observed.status();
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{value:#}\n"),
    )
        .into_response()
}

/// Copies a process-wide count (one that only grows, kept where the event
/// happens, e.g. [`crate::net::refused_connections`]) into a Prometheus
/// counter at each scrape, adding what was counted since the last one.
#[derive(Debug, Default)]
pub struct CountMirror {
    seen: std::sync::atomic::AtomicU64,
}

impl CountMirror {
    /// Adds to `counter` what `total` grew by since the last call.
    pub fn update(&self, counter: &prometheus_client::metrics::counter::Counter, total: u64) {
        let before = self.seen.swap(total, std::sync::atomic::Ordering::Relaxed);
        counter.inc_by(total.saturating_sub(before));
    }
}

/// The `refused{reason}` counter of every process: refusals its own code
/// notes where they happen ([`Refusals::note`]), and the process-wide
/// counts of the connection limit ([`crate::net::refused_connections`])
/// and of the internal services' authentication
/// ([`crate::auth::refused_calls`]), mirrored at each scrape.
#[derive(Debug, Default)]
pub struct Refusals {
    by_reason: prometheus_client::metrics::family::Family<
        ReasonLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    connections: CountMirror,
    internal_calls: CountMirror,
}

impl Refusals {
    /// Adds the counter to `registry` as `refused`, described by `help`.
    pub fn register(&self, registry: &mut Registry, help: &str) {
        registry.register("refused", help, self.by_reason.clone());
    }

    /// Counts one refusal for `reason`.
    pub fn note(&self, reason: &str) {
        self.by_reason
            .get_or_create(&ReasonLabel::new(reason))
            .inc();
    }

    /// Brings the mirrored process-wide counts up to date.
    pub fn refresh(&self) {
        let reason = |r| self.by_reason.get_or_create(&ReasonLabel::new(r));
        self.connections.update(
            &reason("connection_limit"),
            crate::net::refused_connections(),
        );
        self.internal_calls
            .update(&reason("unauthenticated"), crate::auth::refused_calls());
    }
}

/// Latency buckets in seconds, 100 µs to ~13 s by doubling: from one
/// `fdatasync` on a fast disk to a failover's worth of waiting.
pub fn latency_buckets_seconds() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_1, 2.0, 18)
}

/// A metric label naming why something was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

impl ReasonLabel {
    pub fn new(reason: &str) -> ReasonLabel {
        ReasonLabel {
            reason: reason.to_string(),
        }
    }
}

/// A metric label naming a peer process (a secondary, a destination
/// cluster).
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn a_mirror_adds_only_the_growth_since_the_last_scrape() {
        let m = CountMirror::default();
        let c: Counter = Counter::default();
        m.update(&c, 5);
        m.update(&c, 5);
        m.update(&c, 7);
        assert_eq!(c.get(), 7);
    }
}
