//! `tsn_bench failover`: kill -9 the primary of cluster 1 `count` times in
//! a row under a light load, and measure each write outage.
//!
//! The load is an open loop at a fixed rate over the authors of cluster 1,
//! so a post is due every 1/rate seconds: the outage (kill to the first
//! acknowledgement by another server) is measured to about that. After each
//! kill the killed server is started again, and the next kill waits until
//! it is back in the in-sync set, so every failover starts from a whole
//! cluster (a primary and an in-sync secondary), as in production.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tsn_cluster::coord::CoordClient;
use tsn_cluster::home_cluster;
use tsn_cluster::shutdown::Shutdown;
use tsn_datastore::record::now_ms;
use tsn_harness::Api;

use crate::audit::audit;
use crate::cli::{FailoverArgs, Load, ScheduleKind};
use crate::deploy::{kill_primary, restart, start_local, wait_whole, SECONDARIES_PER_CLUSTER};
use crate::figures::{phase_figures, Span};
use crate::ids::new_run_id;
use crate::limits::{ACKS_MAX_RECORDS, IN_SYNC_DEADLINE_MS, OUTAGE_DEADLINE_MS, POLL_INTERVAL_MS};
use crate::load::{open_loop, LoadCtx};
use crate::machine::Machine;
use crate::poster::{Poster, Via};
use crate::record::{Clock, Records};
use crate::report::{
    failover_table, failover_targets, write_json, DeploymentInfo, FailoverResult, RunHeader,
};
use crate::route::Router;
use crate::stats::median;

/// The cluster whose primary is killed.
const CLUSTER: u32 = 1;
/// Longest the background load may run: enough for the most failovers.
const LOAD_MAX_S: u64 = 3_600;

pub async fn failover(args: FailoverArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    let authors: Vec<u32> = (1..=args.users)
        .filter(|&u| home_cluster(u, args.clusters) == CLUSTER)
        .collect();
    anyhow::ensure!(
        !authors.is_empty(),
        "--users {} leaves cluster {CLUSTER} without a user",
        args.users
    );
    let started_at = chrono::Utc::now().to_rfc3339();
    let started_ms = now_ms();
    let machine = Machine::read();
    let clock = Clock::start();
    let run_id = new_run_id();

    eprintln!(
        "tsn_bench: starting a local deployment of {} clusters",
        args.clusters
    );
    let mut d = start_local(args.clusters, args.q_ms).await?;
    let coord_addr = d.coord_addr();
    let coord = CoordClient::new(&coord_addr)?;
    let api = Api::new(&coord_addr, d.auth());
    crate::setup::login_all(&api, args.users).await?;
    let servers = 1 + SECONDARIES_PER_CLUSTER as usize;
    let in_sync_deadline = Duration::from_millis(IN_SYNC_DEADLINE_MS);
    wait_whole(&api, CLUSTER, servers, in_sync_deadline).await?;

    let router = Arc::new(Router::new(coord.clone(), args.clusters, args.connections));
    let records = Arc::new(Records::new(ACKS_MAX_RECORDS));
    let (stop_load, load_stopped) = Shutdown::new();
    let ctx = LoadCtx {
        poster: Arc::new(Poster {
            via: Via::Tsn(router.clone()),
            records: records.clone(),
            clock,
            run: run_id.clone(),
        }),
        authors: Arc::new(authors),
        next_n: Arc::new(AtomicU64::new(1)),
        seed: args.seed,
        shutdown: load_stopped,
    };
    let load_start = Instant::now();
    let rate = args.rate;
    let load = tokio::spawn(async move {
        open_loop(
            &ctx,
            rate,
            ScheduleKind::Fixed,
            load_start,
            Duration::from_secs(LOAD_MAX_S),
        )
        .await
    });

    let mut outages = Vec::new();
    let result = kill_loop(
        &mut d,
        &api,
        &router,
        &records,
        clock,
        &args,
        &shutdown,
        &mut outages,
    )
    .await;
    let load_end_us = clock.now_us();
    stop_load.fire();
    let posts_due = load.await.ok();
    result?;

    eprintln!(
        "tsn_bench: auditing {} acknowledged posts",
        records.acks().len()
    );
    let acks = records.acks();
    let audit = audit(&coord, d.auth(), &run_id, &acks, started_ms - 60_000).await;
    let load_figures = phase_figures(
        "failover load",
        Load::Open {
            rate_per_s: args.rate,
            schedule: ScheduleKind::Fixed,
        },
        &acks,
        &records.failures(),
        records.dropped(),
        Span {
            from_us: clock.us(load_start),
            to_us: load_end_us,
        },
        posts_due,
    );
    let mut result = FailoverResult {
        header: RunHeader::new(
            started_at,
            run_id,
            args.clone(),
            machine,
            DeploymentInfo::new(Some(&d), coord_addr, args.clusters),
        ),
        median_ms: median(&outages),
        max_ms: outages.iter().copied().reduce(f64::max),
        outages_ms: outages,
        load: load_figures,
        audit,
        targets: Vec::new(),
    };
    result.targets = failover_targets(&result);
    let path = args.out.join("failover.json");
    write_json(&path, &result)?;
    println!("{}", failover_table(&result));
    println!("wrote {}", path.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn kill_loop(
    d: &mut tsn_harness::Deployment,
    api: &Api,
    router: &Router,
    records: &Records,
    clock: Clock,
    args: &FailoverArgs,
    shutdown: &Shutdown,
    outages: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let servers = 1 + SECONDARIES_PER_CLUSTER as usize;
    let in_sync_deadline = Duration::from_millis(IN_SYNC_DEADLINE_MS);
    // The load runs before the first kill: the first outage is measured
    // against a warm cluster.
    wait_for_ack(
        records,
        clock.now_us(),
        Duration::from_millis(OUTAGE_DEADLINE_MS),
    )
    .await?;
    for i in 1..=args.count {
        anyhow::ensure!(!shutdown.is_fired(), "interrupted");
        wait_whole(api, CLUSTER, servers, in_sync_deadline).await?;
        let (id, addr, at) = kill_primary(d, api, CLUSTER).await?;
        let at_us = clock.us(at);
        let killed = router.server_index(&addr);
        let deadline = Instant::now() + Duration::from_millis(OUTAGE_DEADLINE_MS);
        let first = loop {
            if let Some(a) = records.first_ack_after(CLUSTER, at_us, killed) {
                break a;
            }
            anyhow::ensure!(!shutdown.is_fired(), "interrupted");
            anyhow::ensure!(
                Instant::now() < deadline,
                "failover {i}: no post was acknowledged by another server within {OUTAGE_DEADLINE_MS} ms of the kill of {addr}"
            );
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        };
        let outage = first.acked_us.saturating_sub(at_us) as f64 / 1000.0;
        outages.push(outage);
        eprintln!(
            "tsn_bench: failover {i}/{}: killed {addr}, outage {outage:.0} ms (new primary {})",
            args.count,
            router.server_addr(first.server).unwrap_or_default()
        );
        restart(d, CLUSTER, id).await?;
    }
    wait_whole(api, CLUSTER, servers, in_sync_deadline).await
}

/// Waits for any acknowledgement after `after_us`.
async fn wait_for_ack(records: &Records, after_us: u64, deadline: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if records.acks().iter().any(|a| a.acked_us > after_us) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
    anyhow::bail!(
        "no post was acknowledged within {} ms of the start of the load",
        deadline.as_millis()
    )
}
