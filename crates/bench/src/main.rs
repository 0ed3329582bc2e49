//! `tsn_bench`: the benchmark of tsn.
//!
//! * `tsn_bench [flags]`: the main run (see `run.rs`): post throughput and
//!   acknowledgement latency, delivery latency, optionally a primary's
//!   failover, the RPC stack's limit, and the audit of every post.
//! * `tsn_bench failover --count N`: N failovers in a row (`failover.rs`).
//! * `tsn_bench disk`: the latency of an append and fdatasync alone
//!   (`disk.rs`), the floor of a durable post's acknowledgement.
//! * `tsn_bench echo-server -p PORT`: the echo server the main run starts
//!   as a child (`echo.rs`).
//! * the Redis baseline of the main run (`baseline/`): a Redis primary and
//!   replica it starts itself, the same posts and followers.
//!
//! Modules, one concern each: `cli` and `limits` (flags and bounds),
//! `deploy` (the deployment under test), `setup` and `graph` (users and
//! follows), `route`, `poster`, `schedule` and `load` (sending posts),
//! `record` (what is recorded), `cpu` (CPU time per post), `delivery` (Timeline streams), `audit`
//! (lost and duplicated posts), `stats` and `figures` (percentiles and
//! windows), `report`, `plot` and `progress` (output), `machine`.

mod audit;
mod baseline;
mod cli;
mod cpu;
mod delivery;
mod deploy;
mod disk;
mod echo;
mod failover;
mod figures;
mod graph;
mod ids;
mod limits;
mod load;
mod machine;
mod plot;
mod poster;
mod progress;
mod record;
mod report;
mod route;
mod run;
mod schedule;
mod setup;
mod stats;

use clap::Parser;
use tsn_cluster::shutdown::Shutdown;

use crate::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    tsn_cluster::init_logging();
    let result = match cli.command {
        Some(Command::EchoServer(args)) => echo::serve(args),
        Some(Command::Disk(args)) => disk::disk(args),
        Some(Command::Failover(args)) => block_on(|shutdown| failover::failover(args, shutdown)),
        None => block_on(|shutdown| run::run(cli.run, shutdown)),
    };
    if let Err(e) = result {
        eprintln!("tsn_bench: error: {e:#}");
        std::process::exit(1);
    }
}

/// Runs `f` on a multi-threaded runtime with a shutdown signal wired to
/// SIGINT and SIGTERM.
fn block_on<F, Fut>(f: F) -> anyhow::Result<()>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let shutdown = Shutdown::on_signals();
        f(shutdown).await
    })
}
