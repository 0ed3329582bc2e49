//! `tsn_sync_service`: the sync service of one tsn cluster. The service
//! itself is the library ([`tsn_sync_service::run`]); this parses the
//! flags and reports a failure in one line.

/// mimalloc: the servers allocate and free many small buffers per request
/// (protobuf messages, JSON lines); profiles showed glibc malloc at about
/// an eighth of the CPU time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use tsn_cluster::shutdown::Shutdown;
use tsn_sync_service::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tsn_cluster::init_logging();
    let served = async {
        let listener = tsn_sync_service::listen(&config).await?;
        tsn_sync_service::run(config, listener, Shutdown::on_signals()).await
    };
    match served.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsn_sync_service: {e:#}");
            ExitCode::FAILURE
        }
    }
}
