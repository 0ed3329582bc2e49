//! `tsn_chaos` (`make chaos`): a long randomised fault run. A local
//! deployment runs with a writer per user on every cluster, every user
//! following users of the other clusters, while the nemesis
//! ([`tsn_harness::chaos`]) kills (`kill -9`) and freezes (`SIGSTOP`)
//! processes every few seconds, heals each fault and waits for the
//! deployment to be whole again. At the end every timeline is checked
//! record by record against what the writers were told, and every
//! cluster's replicas against each other.
//!
//! The seed is printed first: `--seed` replays the same faults (their
//! timing against the load differs from run to run).
//!
//! Exit status: 0 when nothing acknowledged was lost or duplicated and the
//! replicas agree; 1 otherwise, with the report and the logs kept.

use std::time::{Duration, Instant};

use clap::Parser;
use tsn_harness::chaos::{Fault, FaultKind, Nemesis};
use tsn_harness::fault_check::{journals_agree, Expectation, FollowRecord, Reader};
use tsn_harness::load::Load;
use tsn_harness::views::is_alive_server;
use tsn_harness::{wait_for, Api, Config, Deployment, Member};

/// How long the deployment has to be whole again after a fault is healed.
const WHOLE_DEADLINE_MS: u64 = 30_000;
/// How long every writer has after a fault to get one more post through:
/// proof that clients carried on.
const CARRY_ON_DEADLINE_MS: u64 = 30_000;
/// How long the timelines have to converge once the writers stopped.
const CONVERGE_DEADLINE_MS: u64 = 60_000;
/// The sync services' poll interval during the run.
const Q_MS: u64 = 200;
/// Longest run accepted.
const DURATION_MAX_S: u64 = 24 * 3600;

/// A randomised fault run against a local deployment.
#[derive(Parser, Debug)]
#[command(name = "tsn_chaos", version)]
struct Args {
    /// The nemesis' seed (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// How long faults are injected, in seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=DURATION_MAX_S))]
    duration_s: u64,
    /// Clusters.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=9))]
    clusters: u32,
    /// Secondaries per cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=4))]
    secondaries: u32,
    /// Pause between a healed fault and the next, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    between_ms: u64,
    /// Keep the deployment's logs and data here (default: a temp dir,
    /// removed after a passing run).
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("tsn_chaos: seed {seed} (replay: tsn_chaos --seed {seed})");
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("tsn_chaos: FAILED; replay the faults with --seed {seed}");
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tsn_chaos: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run(args, seed));
}

async fn run(args: Args, seed: u64) {
    let mut config = Config::new(args.clusters, args.secondaries, Q_MS);
    config.failure_timeout_ms = tsn_cluster::limits::FAILURE_TIMEOUT_MS;
    config.root = args.keep.clone();
    let mut d = Deployment::start_with(config).await;
    println!("deployment up: logs and data in {}", d.root().display());
    // Two users per cluster; each follows a user of the next cluster.
    let users: Vec<u32> = (1..=2 * args.clusters).collect();
    d.login_all(&users).await;
    let api = d.api();
    let mut follows = Vec::new();
    for &follower in &users {
        let followee = (follower % (2 * args.clusters)) + 1;
        let sent_at = Instant::now();
        match api.follow(follower, &followee.to_string()).await {
            Ok(reply) if reply == "SUCCESS" => follows.push(FollowRecord {
                follower,
                followee,
                sent_at,
                acked_at: Instant::now(),
            }),
            other => panic!("user {follower} FOLLOW {followee}: {other:?}"),
        }
    }
    let load = Load::start(&d.coord_addr(), &users);
    let mut nemesis = Nemesis::new(seed, args.clusters, args.secondaries);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration_s);
    let mut applied = 0u32;
    while Instant::now() < until {
        let fault = nemesis.next_fault();
        applied += 1;
        println!(
            "[{:>7.1} s] fault {applied}: {fault}",
            started.elapsed().as_secs_f64()
        );
        inject(&mut d, fault).await;
        for cluster in 1..=args.clusters {
            wait_whole(&api, &mut d, cluster).await;
        }
        load.wait_each_acked_more(1, Duration::from_millis(CARRY_ON_DEADLINE_MS))
            .await;
        let acked: u64 = load.acked().iter().map(|(_, n)| n).sum();
        println!(
            "[{:>7.1} s]   healed; whole again; {acked} posts acknowledged so far",
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(args.between_ms)).await;
    }
    let report = load.stop().await;
    println!("{}", report.summary());
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "writers gave up:\n{}",
        failures.join("\n")
    );
    let expect = Expectation {
        users: users.clone(),
        follows,
        posts: report.posts(),
        follow_time: None,
    };
    let reader = Reader::new(api.coord().clone(), &d.datastore_root());
    match reader
        .wait_converged(&expect, Duration::from_millis(CONVERGE_DEADLINE_MS))
        .await
    {
        Ok(r) if r.is_clean() => print!("checked: {r}"),
        Ok(r) => {
            for &user in &users {
                if let Ok(lines) = reader.timeline(user).await {
                    let shown: Vec<String> = lines
                        .iter()
                        .map(|l| format!("{}@{}", l.post_id, l.seq))
                        .collect();
                    eprintln!("user {user}'s timeline, oldest first: {}", shown.join(" "));
                }
            }
            panic!("the timelines are wrong:\n{r}")
        }
        Err(r) => panic!("the timelines did not converge:\n{r}"),
    }
    for cluster in 1..=args.clusters {
        let named = d.replica_layouts(cluster);
        match journals_agree(&named) {
            Ok(n) => println!("cluster {cluster}: the replicas agree on {n} entries"),
            Err(e) => panic!("the replicas of cluster {cluster} disagree: {e}"),
        }
    }
    println!(
        "tsn_chaos: PASSED: {applied} faults in {:.0} s, {} posts acknowledged, none lost or \
         duplicated (seed {seed})",
        started.elapsed().as_secs_f64(),
        report.acked_count()
    );
}

/// Applies `fault`, lets it last, and heals it.
async fn inject(d: &mut Deployment, fault: Fault) {
    let lasts = Duration::from_millis(fault.lasts_ms);
    match fault.kind {
        FaultKind::KillPrimary { cluster } => {
            let victim = d.kill9_primary(cluster).await;
            tokio::time::sleep(lasts).await;
            d.restart(Member::Server {
                cluster,
                server_id: victim,
            })
            .await;
        }
        FaultKind::KillSecondary { cluster, pick } => {
            let (primary, _) = d.primary_of(cluster).await;
            let secondaries: Vec<u32> = d
                .server_ids(cluster)
                .into_iter()
                .filter(|&s| s != primary)
                .collect();
            let Some(&victim) = secondaries.get(pick as usize % secondaries.len().max(1)) else {
                return;
            };
            let member = Member::Server {
                cluster,
                server_id: victim,
            };
            d.kill9(member);
            tokio::time::sleep(lasts).await;
            d.restart(member).await;
        }
        FaultKind::KillSync { cluster } => {
            d.kill9(Member::Sync { cluster });
            tokio::time::sleep(lasts).await;
            d.restart(Member::Sync { cluster }).await;
        }
        FaultKind::KillCoordinator => {
            d.kill9(Member::Coordinator);
            tokio::time::sleep(lasts).await;
            d.restart(Member::Coordinator).await;
        }
        FaultKind::PausePrimary { cluster } => {
            let (primary, _) = d.primary_of(cluster).await;
            d.server(cluster, primary).pause();
            tokio::time::sleep(lasts).await;
            d.server(cluster, primary).resume();
        }
        FaultKind::PauseSync { cluster } => {
            d.sync(cluster).pause();
            tokio::time::sleep(lasts).await;
            d.sync(cluster).resume();
        }
    }
}

/// Waits until every server of `cluster` is alive and either its primary
/// or in its in-sync set, and its sync service is alive.
async fn wait_whole(api: &Api, d: &mut Deployment, cluster: u32) {
    let servers = d.server_ids(cluster);
    let what = format!("cluster {cluster} to be whole again (servers {servers:?} in sync)");
    wait_for(Duration::from_millis(WHOLE_DEADLINE_MS), &what, || {
        let (api, servers) = (api.clone(), servers.clone());
        async move {
            let views = api.clusters().await.map_err(|s| s.to_string())?;
            let view = views
                .into_iter()
                .find(|v| v.cluster_id == cluster)
                .ok_or("no view")?;
            let whole = view.primary_id != 0
                && servers.iter().all(|&s| {
                    is_alive_server(&view, s) && (s == view.primary_id || view.in_sync.contains(&s))
                })
                && view
                    .processes
                    .iter()
                    .any(|p| p.kind == tsn_proto::tsn::ProcessKind::SyncService as i32 && p.alive);
            if whole {
                Ok(())
            } else {
                Err(format!("{view:?}"))
            }
        }
    })
    .await
}
