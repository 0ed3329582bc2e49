//! The listening side of every tsn gRPC server: every accepted connection
//! passes here, so this is where a process keeps its file descriptors for
//! its own work.
//!
//! Why a limit: each connection is a descriptor. Thousands of sockets that
//! never finish a handshake once took every descriptor of a primary, which
//! then failed to open its own journal (`Too many open files`) while its
//! heartbeats still said it was fine. So each listener accepts at most
//! [`ConnLimit::max_connections`] connections at a time (past it a
//! connection is closed at once, counted, and logged at a bounded rate), and
//! a connection that sends nothing within
//! [`ConnLimit::first_byte_timeout_ms`] is closed, so half-open sockets do
//! not hold slots for ever. The default limit is derived from the process's
//! `RLIMIT_NOFILE`, leaving a reserve for files and internal peers.
//!
//! TLS: with a [`Tls`], every connection does the TLS handshake here, on
//! its own task (holding its slot, bounded by [`TLS_HANDSHAKE_TIMEOUT_MS`]),
//! with the server configuration current when it arrives; only a finished
//! handshake reaches the gRPC server. A plaintext client's first bytes are
//! not a TLS hello, so its connection is closed and nothing of it reaches a
//! service.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::tls::Tls;

/// Descriptors always kept out of the connection limits, for the journal,
/// the datastore's files, the peers' channels and the heartbeats.
pub const FD_RESERVE_MIN: u64 = 256;
/// Share of `RLIMIT_NOFILE` (in percent) kept out of the connection limits
/// when that is more than [`FD_RESERVE_MIN`].
pub const FD_RESERVE_PERCENT: u64 = 25;
/// How long an accepted connection may stay silent before its first byte
/// (the start of the HTTP/2 handshake) before it is closed.
pub const FIRST_BYTE_TIMEOUT_MS: u64 = 5_000;
/// At most one log line per this period about refused connections (each
/// line gives the count since the last one).
pub const REFUSAL_LOG_PERIOD_MS: u64 = 1_000;
/// Wait after a failed `accept` (e.g. `EMFILE`) before the next, so a
/// process without descriptors does not spin.
pub const ACCEPT_ERROR_PAUSE_MS: u64 = 50;
/// How long a connection may take to finish its TLS handshake, from its
/// first byte.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Connections each listener takes past its limit for the deployment's
/// own processes (a sync service reconnecting to a primary whose clients
/// took every slot, a coordinator member, a restarted peer).
pub const INTERNAL_RESERVE_CONNECTIONS: usize = 32;
/// How long a connection taken into the reserve has to make its first
/// authenticated internal call; one that does not is closed, so that
/// outsiders cannot hold the reserve.
pub const RESERVE_PROOF_TIMEOUT_MS: u64 = 2_000;
/// Accepted connections waiting to be handed to the gRPC server.
const HANDOFF_QUEUE: usize = 256;

/// How many connections one listener holds, and for how long a silent one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimit {
    pub max_connections: usize,
    pub first_byte_timeout_ms: u64,
}

impl ConnLimit {
    /// The default for a process with `listeners` listeners: what
    /// `RLIMIT_NOFILE` allows after the reserve, shared between them.
    pub fn for_listeners(listeners: usize) -> ConnLimit {
        ConnLimit {
            max_connections: default_max_connections(nofile_limit(), listeners),
            first_byte_timeout_ms: FIRST_BYTE_TIMEOUT_MS,
        }
    }

    /// This limit with `max_connections` replaced when one is given.
    pub fn with_max(self, max_connections: Option<usize>) -> ConnLimit {
        ConnLimit {
            max_connections: max_connections.unwrap_or(self.max_connections).max(1),
            ..self
        }
    }
}

/// The soft `RLIMIT_NOFILE` of this process (1024 if it cannot be read).
pub fn nofile_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur
    } else {
        1024
    }
}

/// Connections per listener that `nofile` descriptors allow once the
/// reserve is kept. Pure.
pub fn default_max_connections(nofile: u64, listeners: usize) -> usize {
    let reserve = FD_RESERVE_MIN.max(nofile / 100 * FD_RESERVE_PERCENT);
    let free = nofile.saturating_sub(reserve);
    (free / listeners.max(1) as u64).max(1) as usize
}

/// Connections refused because a listener was full, over the process's life.
pub fn refused_connections() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

static REFUSED: AtomicU64 = AtomicU64::new(0);

/// An accepted connection; it holds its slot of the listener's limit until
/// it is dropped.
pub struct Conn {
    stream: Stream,
    info: ConnInfo,
    _slot: OwnedSemaphorePermit,
}

/// The state of a connection taken into the internal reserve: proven once
/// one of its calls passed an internal service's authentication
/// (`auth::Check`), closed by the watchdog when it was not in time.
#[derive(Debug, Default)]
pub struct Reserved {
    proven: AtomicBool,
    closed: AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl Reserved {
    /// Marks the connection as the deployment's own: it keeps its slot.
    pub fn prove(&self) {
        self.proven.store(true, Ordering::Relaxed);
    }

    fn close_unless_proven(&self) -> bool {
        if self.proven.load(Ordering::Relaxed) {
            return false;
        }
        self.closed.store(true, Ordering::Relaxed);
        self.waker.wake();
        true
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// The TCP connection under it.
    pub fn stream(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

/// What a service may know of the connection a request came on: tonic puts
/// it in every request's extensions.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    /// The connection is TLS.
    pub tls: bool,
    /// The client presented a certificate that chains to the CA (the
    /// handshake refuses one that does not).
    pub client_certificate: bool,
    /// Taken past the limit into the internal reserve: only internal calls
    /// are served on it ([`refuse_on_reserve`]).
    pub reserved: Option<Arc<Reserved>>,
}

impl ConnInfo {
    /// The info of the connection `request` came on, if it came through
    /// [`incoming`].
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&ConnInfo> {
        request.extensions().get::<ConnInfo>()
    }
}

/// The caller's address (tonic's `remote_addr` knows only its own
/// connection types).
pub fn remote_addr<T>(request: &tonic::Request<T>) -> Option<SocketAddr> {
    ConnInfo::of(request)
        .and_then(|i| i.tcp.remote_addr())
        .or_else(|| request.remote_addr())
}

/// The connections accepted on `listener`, each with `TCP_NODELAY` set,
/// at most `limit.max_connections` at a time.
///
/// Why `TCP_NODELAY`: tonic's `Server::builder().tcp_nodelay(true)` applies
/// only to a listener the builder opens itself, not to one handed to it
/// (which is how tsn binds its port before it says it is ready). Without the
/// option, a small reply written while an earlier one is not yet
/// acknowledged waits for the peer's delayed ACK (Nagle's algorithm): about
/// 40 ms on Linux. A cross-cluster delivery crosses four such replies in
/// series; with the option its median at 200 posts/s went from 70 ms to 5
/// ms.
///
/// With `tls`, only connections that finish a TLS handshake are handed on.
///
/// The accepting runs on its own task until the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    limit: ConnLimit,
    tls: Option<Tls>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(HANDOFF_QUEUE);
    tokio::spawn(accept_loop(listener, limit, tls, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    limit: ConnLimit,
    tls: Option<Tls>,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    let slots = Arc::new(Semaphore::new(limit.max_connections.max(1)));
    let reserve = Arc::new(Semaphore::new(INTERNAL_RESERVE_CONNECTIONS));
    let first_byte = Duration::from_millis(limit.first_byte_timeout_ms);
    let mut refusals = RefusalLog::default();
    let mut accept_errors = RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if accept_errors.refused(Instant::now()) {
                    tracing::warn!(error = %e, "accepting a connection failed");
                }
                tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                continue;
            }
        };
        let (slot, reserved) = match take_slot(&slots, &reserve) {
            Some(taken) => taken,
            None => {
                // Past the limit and the reserve: closed at once, so the
                // process keeps its descriptors.
                drop(stream);
                REFUSED.fetch_add(1, Ordering::Relaxed);
                if refusals.refused(Instant::now()) {
                    tracing::warn!(
                        max_connections = limit.max_connections,
                        internal_reserve = INTERNAL_RESERVE_CONNECTIONS,
                        refused = refusals.since_last_log,
                        "connection limit reached; refusing new connections"
                    );
                    refusals.since_last_log = 0;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        let server_config = tls.as_ref().and_then(Tls::server_config);
        tokio::spawn(async move {
            // A socket that never sends its first byte is closed (with its
            // slot freed) instead of waiting for ever.
            let mut first = [0u8; 1];
            let Ok(Ok(1..)) = tokio::time::timeout(first_byte, stream.peek(&mut first)).await
            else {
                return;
            };
            let tcp = stream.connect_info();
            let conn = match server_config {
                None => Conn {
                    stream: Stream::Plain(stream),
                    info: ConnInfo {
                        tcp,
                        tls: false,
                        client_certificate: false,
                        reserved,
                    },
                    _slot: slot,
                },
                Some(config) => {
                    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    let timeout = Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS);
                    let stream = match tokio::time::timeout(timeout, handshake).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            handshake_refused(tcp.remote_addr(), &e.to_string());
                            return;
                        }
                        Err(_) => {
                            handshake_refused(tcp.remote_addr(), "timed out");
                            return;
                        }
                    };
                    let client_certificate = stream.get_ref().1.peer_certificates().is_some();
                    Conn {
                        stream: Stream::Tls(Box::new(stream)),
                        info: ConnInfo {
                            tcp,
                            tls: true,
                            client_certificate,
                            reserved,
                        },
                        _slot: slot,
                    }
                }
            };
            let _ = tx.send(Ok(conn)).await;
        });
    }
}

/// A slot of the limit, or else one of the internal reserve (with the
/// watchdog that closes it unless an internal call proves it in
/// [`RESERVE_PROOF_TIMEOUT_MS`]); `None` when both are full.
fn take_slot(
    slots: &Arc<Semaphore>,
    reserve: &Arc<Semaphore>,
) -> Option<(OwnedSemaphorePermit, Option<Arc<Reserved>>)> {
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Some((slot, None));
    }
    let slot = reserve.clone().try_acquire_owned().ok()?;
    let reserved = Arc::new(Reserved::default());
    let watched = reserved.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(RESERVE_PROOF_TIMEOUT_MS)).await;
        if watched.close_unless_proven() {
            tracing::debug!("closed a reserved connection that made no internal call");
        }
    });
    Some((slot, Some(reserved)))
}

/// The interceptor of every client-facing service: a call that came on a
/// connection of the internal reserve is refused, clearly, instead of
/// taking room kept for the deployment's own processes.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefuseOnReserve;

impl tonic::service::Interceptor for RefuseOnReserve {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match ConnInfo::of(&request) {
            Some(info) if info.reserved.is_some() => Err(tonic::Status::resource_exhausted(
                "connection limit reached: this server holds as many client connections as it \
                 may; the rest is kept for the deployment's own processes; retry later",
            )),
            _ => Ok(request),
        }
    }
}

/// `service` behind [`RefuseOnReserve`].
pub fn refuse_on_reserve<S>(
    service: S,
) -> tonic::service::interceptor::InterceptedService<S, RefuseOnReserve> {
    tonic::service::interceptor::InterceptedService::new(service, RefuseOnReserve)
}

/// TLS handshakes refused (a plaintext client, an untrusted certificate,
/// a timeout) over the process's life.
pub fn refused_handshakes() -> u64 {
    REFUSED_HANDSHAKES.load(Ordering::Relaxed)
}

static REFUSED_HANDSHAKES: AtomicU64 = AtomicU64::new(0);

/// Counts a refused handshake and logs it at a bounded rate (with the
/// count since the last line), so a peer that keeps failing cannot flood
/// the log while an operator still sees why certificates are refused.
fn handshake_refused(peer: Option<SocketAddr>, why: &str) {
    static LOG: std::sync::Mutex<RefusalLog> = std::sync::Mutex::new(RefusalLog {
        last_logged: None,
        since_last_log: 0,
    });
    REFUSED_HANDSHAKES.fetch_add(1, Ordering::Relaxed);
    let mut log = crate::sync::lock(&LOG);
    if log.refused(Instant::now()) {
        tracing::warn!(peer = ?peer, error = %why, refused = log.since_last_log,
            "TLS handshake refused (a plaintext client, or a certificate not of this CA)");
        log.since_last_log = 0;
    }
}

/// Whether to log a refusal now: at most once per
/// [`REFUSAL_LOG_PERIOD_MS`]; counts the refusals in between. Pure.
#[derive(Default)]
struct RefusalLog {
    last_logged: Option<Instant>,
    since_last_log: u64,
}

impl RefusalLog {
    fn refused(&mut self, now: Instant) -> bool {
        self.since_last_log += 1;
        match self.last_logged {
            Some(t) if now.duration_since(t) < Duration::from_millis(REFUSAL_LOG_PERIOD_MS) => {
                false
            }
            _ => {
                self.last_logged = Some(now);
                true
            }
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

macro_rules! on_stream {
    ($self:expr, $s:ident => $e:expr) => {
        match &mut $self.get_mut().stream {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(r) = &self.info.reserved {
            r.waker.register(cx.waker());
            if r.is_closed() {
                // End of stream: the server closes the connection.
                return Poll::Ready(Ok(()));
            }
        }
        on_stream!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.info.reserved.as_ref().is_some_and(|r| r.is_closed()) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        on_stream!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, s => s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio_stream::StreamExt;

    const LIMIT: ConnLimit = ConnLimit {
        max_connections: 4,
        first_byte_timeout_ms: 300,
    };

    async fn next(incoming: &mut ReceiverStream<io::Result<Conn>>) -> Conn {
        tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .expect("a connection within 10 s")
            .expect("the listener is open")
            .unwrap()
    }

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = incoming(listener, LIMIT, None);
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"x").await.unwrap();
        assert!(next(&mut incoming).await.stream().nodelay().unwrap());
    }

    /// Past the limit a connection is closed at once; a slot freed is
    /// taken again; a silent connection is closed after the timeout.
    #[tokio::test]
    async fn connections_past_the_limit_are_closed() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = incoming(listener, LIMIT, None);
        let mut held = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..LIMIT.max_connections {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"x").await.unwrap();
            clients.push(c);
            held.push(next(&mut incoming).await);
        }
        assert!(held.iter().all(|c| c.info.reserved.is_none()));
        // Past the limit, the internal reserve takes a few more (one that
        // makes no internal call in time is closed: `connection_limit.rs`
        // checks it from the outside).
        let mut reserved = Vec::new();
        for _ in 0..INTERNAL_RESERVE_CONNECTIONS {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"x").await.unwrap();
            clients.push(c);
            let conn = next(&mut incoming).await;
            assert!(conn.info.reserved.is_some(), "taken into the reserve");
            reserved.push(conn);
        }
        // Past the reserve too: refused at once.
        let refused_before = refused_connections();
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut buf))
            .await
            .expect("closed within 10 s");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(refused_connections() > refused_before);

        // A freed slot is taken again.
        held.pop();
        let mut again = TcpStream::connect(addr).await.unwrap();
        again.write_all(b"x").await.unwrap();
        let _conn = next(&mut incoming).await;

        // A silent connection holds its slot only until the timeout.
        held.pop();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
            .await
            .expect("closed within 10 s");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    #[test]
    fn the_default_keeps_a_reserve() {
        assert_eq!(default_max_connections(1024, 1), 768);
        assert_eq!(default_max_connections(1024, 2), 384);
        assert_eq!(default_max_connections(20_000, 2), 7_500);
        assert_eq!(default_max_connections(100, 1), 1);
    }

    #[test]
    fn refusals_are_logged_at_a_bounded_rate() {
        let mut log = RefusalLog::default();
        let t = Instant::now();
        assert!(log.refused(t));
        assert!(!log.refused(t + Duration::from_millis(10)));
        assert!(log.refused(t + Duration::from_millis(REFUSAL_LOG_PERIOD_MS)));
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;
    use crate::tls::generate::Authority;
    use crate::tls::{server_certificate, TlsFiles};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    const LIMIT: ConnLimit = ConnLimit {
        max_connections: 8,
        first_byte_timeout_ms: 2_000,
    };

    /// A TLS listener hands on only finished handshakes, says whether the
    /// client presented a certificate, and closes a plaintext client.
    #[tokio::test]
    async fn only_tls_handshakes_are_handed_on() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("test CA").unwrap();
        let server = Tls::load(&ca.issue(dir.path(), "server").unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut incoming = incoming(listener, LIMIT, Some(server));

        // Plaintext: closed, nothing handed on.
        let mut plain = TcpStream::connect(&addr).await.unwrap();
        plain
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match plain.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue, // the TLS alert
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a plaintext client was not closed");

        // A client without a certificate, then one with.
        let trusting = Tls::load(&ca.trust_only(dir.path()).unwrap()).unwrap();
        server_certificate(&trusting, &addr).await.unwrap();
        let conn = tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(conn.info.tls && !conn.info.client_certificate);
        let client = Tls::load(&ca.issue(dir.path(), "client").unwrap()).unwrap();
        server_certificate(&client, &addr).await.unwrap();
        let conn = tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(conn.info.tls && conn.info.client_certificate);

        // A client of another CA is refused at the handshake.
        let other = Authority::new("other CA").unwrap();
        let stranger = other.issue(&dir.path().join("other"), "client").unwrap();
        let stranger = Tls::load(&TlsFiles {
            ca: dir.path().join(crate::tls::generate::CA_FILE_NAME),
            identity: stranger.identity,
        })
        .unwrap();
        // TLS 1.3: the client may finish before the server refuses its
        // certificate; either way no connection is handed on.
        let refused_before = refused_handshakes();
        let _ = server_certificate(&stranger, &addr).await;
        let next = tokio::time::timeout(Duration::from_millis(500), incoming.next()).await;
        assert!(next.is_err(), "a stranger's connection was handed on");
        assert!(refused_handshakes() > refused_before);
    }
}
