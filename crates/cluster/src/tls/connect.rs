//! The client side: one connector that every channel with TLS dials
//! through, so that each new connection uses the configuration current at
//! that moment (a rotated certificate or CA needs no restart).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;

use super::Tls;

/// Dials `host:port` of a URI over TCP (`TCP_NODELAY`) and does the TLS
/// handshake with the current client configuration, verifying that the
/// server's certificate names `host`.
#[derive(Clone, Debug)]
pub struct Connector {
    tls: Tls,
}

impl Connector {
    pub fn new(tls: Tls) -> Connector {
        Connector { tls }
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "no host in the address")
                })?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            Ok(TokioIo::new(connect(&tls, &host, port).await?))
        })
    }
}

async fn connect(tls: &Tls, host: &str, port: u16) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?}: {e}")))?;
    let tcp = TcpStream::connect((host, port)).await?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(tls.client_config())
        .connect(name, tcp)
        .await
}

/// The certificate the server at `addr` (`host:port`) presents to a new
/// connection made with `tls`, after verifying it: what a client sees.
pub async fn server_certificate(tls: &Tls, addr: &str) -> io::Result<CertificateDer<'static>> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {addr:?}"))
        })?;
    let stream = connect(
        tls,
        host.trim_start_matches('[').trim_end_matches(']'),
        port,
    )
    .await?;
    let (_, conn) = stream.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
        .ok_or_else(|| io::Error::other("the server presented no certificate"))
}
