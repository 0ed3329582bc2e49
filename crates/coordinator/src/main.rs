//! tsn_coordinator: the control plane of tsn. The coordinator itself is
//! the library ([`tsn_coordinator::run`]); this parses the flags and
//! reports a failure in one line.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tsn_cluster::shutdown::Shutdown;
use tsn_coordinator::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // openraft reports every vote and leader change at info: kept to warnings.
    tsn_cluster::init_logging_with_default("info,openraft=warn");
    let served = async {
        let listener = tsn_coordinator::listen(&args).await?;
        tsn_coordinator::run(args, listener, Shutdown::on_signals()).await
    };
    match served.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, no backtrace: the operator reads it.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(1)
        }
    }
}
