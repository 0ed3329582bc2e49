//! `tsn_server`: one server of a cluster. The primary and the secondaries
//! run this same program; the coordinator tells each which it is. The
//! server itself is the library ([`tsn_server::run`]); this parses the
//! flags and reports a failure in one line.

/// mimalloc: the servers allocate and free many small buffers per request
/// (protobuf messages, JSON lines); profiles showed glibc malloc at about
/// an eighth of the CPU time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use clap::Parser;
use tsn_cluster::shutdown::Shutdown;
use tsn_server::Config;

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
    let served = runtime.block_on(async {
        let listeners = tsn_server::listen(&cfg).await?;
        tsn_server::run(cfg, listeners, Shutdown::on_signals()).await
    });
    runtime.shutdown_timeout(Duration::from_millis(RUNTIME_STOP_MAX_MS));
    if let Err(e) = served {
        fail(format!("{e:#}"));
    }
}

fn fail(msg: String) -> ! {
    eprintln!("tsn_server: error: {msg}");
    std::process::exit(1);
}
