//! The echo server: the limit of the RPC stack on this machine.
//!
//! It serves `tsn.Posts` and answers every `Post` at once, storing
//! nothing, with the same tokio runtime and tonic server settings as
//! `tsn_server` (multi-threaded runtime, TCP_NODELAY, the same stream and
//! message limits). Because it speaks the very same method with the very
//! same messages, the benchmark drives it with the very same client code
//! as the real posts: posts/s ÷ echo calls/s is then the share of the RPC
//! stack's capacity that durable, replicated posts keep.
//!
//! It runs as a child process (`tsn_bench echo-server -p PORT`), like a
//! server, so that it has a runtime and threads of its own.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tsn_cluster::limits::{CONCURRENT_STREAMS_MAX, GRPC_MESSAGE_MAX_BYTES};
use tsn_cluster::shutdown::Shutdown;
use tsn_harness::{Proc, Ready};
use tsn_proto::tsn::posts_server::{Posts, PostsServer};
use tsn_proto::tsn::{PostReply, PostRequest, ReadReply, ReadRequest};

use crate::cli::EchoArgs;

/// What the echo server prints once it listens.
pub const READY_LINE: &str = "tsn_bench echo-server listening on";

#[derive(Default)]
struct Echo {
    calls: AtomicU64,
}

#[tonic::async_trait]
impl Posts for Echo {
    async fn post(&self, request: Request<PostRequest>) -> Result<Response<PostReply>, Status> {
        let req = request.into_inner();
        let seq = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Response::new(PostReply {
            seq,
            duplicate: req.post_id.is_empty(),
            ts_ms: 0,
        }))
    }

    async fn read(&self, _: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        Ok(Response::new(ReadReply { posts: Vec::new() }))
    }
}

/// `tsn_bench echo-server`: serves until SIGINT or SIGTERM.
pub fn serve(args: EchoArgs) -> anyhow::Result<()> {
    // The same runtime as tsn_server's main.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.bind, args.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let mut stop = Shutdown::on_signals();
        let posts =
            PostsServer::new(Echo::default()).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        println!("{READY_LINE} {addr}");
        let _ = std::io::stdout().flush();
        let incoming = tsn_cluster::net::incoming(
            listener,
            tsn_cluster::net::ConnLimit::for_listeners(1),
            None,
        );
        Server::builder()
            .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
            .add_service(posts)
            .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
            .await?;
        Ok(())
    })
}

/// Starts `tsn_bench echo-server` as a child on a free port, logging into
/// `logs_dir`; returns once it accepts connections.
pub async fn spawn(logs_dir: &Path) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find this program's path: {e}"))?;
    Proc::start_on_free_port(
        "echo-server",
        &exe,
        logs_dir,
        Ready::StdoutContains(READY_LINE.to_string()),
        |port| vec!["echo-server".into(), "-p".into(), port.to_string()],
    )
    .await
}
