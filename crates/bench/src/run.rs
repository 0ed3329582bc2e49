//! The main run, phase by phase:
//!
//! 0. **disk**: before a local deployment starts, the latency of an
//!    append and fdatasync alone in the temp dir it will use (`disk.rs`);
//! 1. the deployment (local, or `-c`), the users and the follow graph,
//!    waited for until it reached every cluster;
//! 2. the sampled followers' Timeline streams, opened;
//! 3. **posts**: the main load (closed loop of C posters, or open loop at
//!    R/s), warm-up then the measured span, with the kill of cluster 1's
//!    primary if asked; then the deliveries are waited for;
//! 4. **half load**: an open loop at half the throughput the closed loop
//!    reached, for the latency at a load the server is not saturated by;
//! 5. **echo**: the same closed loop against a bare echo server, for the
//!    limit of the RPC stack;
//! 6. **redis**: the same closed loop, follow graph and watched followers
//!    against the Redis baseline (`baseline/`), which tsn is compared with;
//! 7. the audit (lost and duplicated posts), the report and the plot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tsn_cluster::auth::{ClusterAuth, SecretArgs, SECRET_GRACE_MS};
use tsn_cluster::coord::CoordClient;
use tsn_cluster::shutdown::Shutdown;
use tsn_datastore::record::now_ms;
use tsn_harness::{Api, Deployment, Member};

use crate::audit::audit;
use crate::baseline::pair::find_redis_server;
use crate::baseline::{Baseline, BaselineCtx, RedisReport, VsRedis};
use crate::cli::{Load, RunArgs};
use crate::cpu::{figures as cpu_figures, snapshot, Snapshot, Tracked};
use crate::delivery::{analyze, Delivery, DeliveryFigures, Watchers};
use crate::deploy::{kill_primary, restart, start_local, wait_whole, SECONDARIES_PER_CLUSTER};
use crate::disk;
use crate::echo;
use crate::figures::{outage_ms, phase_figures, PhaseFigures, Span};
use crate::graph::{follow_graph, followers_of, sample_followers};
use crate::ids::new_run_id;
use crate::limits::{
    ACKS_MAX_RECORDS, DELIVERY_DRAIN_EXTRA_MS, DISK_PROBE_APPENDS, DISK_PROBE_INTERVAL_MS,
    GRAPH_CONVERGE_DEADLINE_MS, IN_SYNC_DEADLINE_MS, RATE_MIN_PER_S, STREAMS_OPEN_DEADLINE_MS,
    WINDOW_MS,
};
use crate::load::{closed_loop, open_loop, LoadCtx};
use crate::machine::Machine;
use crate::plot::{write_svg, PlotInput};
use crate::poster::{Poster, Via};
use crate::progress::Progress;
use crate::record::{Ack, Clock, Records};
use crate::report::{
    run_table, run_targets, write_json, DeliveryWindows, DeploymentInfo, KillFigures, PhaseReport,
    RunHeader, RunResult, SetupFigures,
};
use crate::route::Router;
use crate::stats::{windows, Summary};

/// The cluster whose primary `--kill-primary-at` kills.
const KILLED_CLUSTER: u32 = 1;
/// How often the delivery drain re-checks what arrived.
const DELIVERY_CHECK_INTERVAL_MS: u64 = 100;

/// What happened in one load phase besides its records.
struct PhaseRun {
    span: Span,
    posts_due: Option<u64>,
    kill: Option<Kill>,
    /// CPU ticks of the tracked processes at the start and the end of the
    /// measured span.
    cpu: (Snapshot, Snapshot),
}

struct Kill {
    at_us: u64,
    server_id: u32,
    addr: String,
}

/// Everything one phase needs.
struct PhasePlan<'a> {
    label: &'a str,
    unit: &'static str,
    load: Load,
    warmup: Duration,
    duration: Duration,
    /// Kill cluster 1's primary this far into the measured span.
    kill_at: Option<(Duration, &'a mut Deployment, &'a Api)>,
    /// The processes whose CPU time is accounted for.
    tracked: &'a [Tracked],
}

impl<'a> PhasePlan<'a> {
    /// A phase with the run's warm-up and duration, and no kill.
    fn of(
        args: &RunArgs,
        label: &'a str,
        unit: &'static str,
        load: Load,
        tracked: &'a [Tracked],
    ) -> PhasePlan<'a> {
        PhasePlan {
            label,
            unit,
            load,
            warmup: Duration::from_secs(args.warmup_s),
            duration: Duration::from_secs(args.duration_s),
            kill_at: None,
            tracked,
        }
    }
}

async fn run_phase(ctx: &LoadCtx, plan: PhasePlan<'_>) -> anyhow::Result<PhaseRun> {
    let clock = ctx.poster.clock;
    eprintln!(
        "tsn_bench: {} phase: {} s warm-up, then {} s measured",
        plan.label,
        plan.warmup.as_secs(),
        plan.duration.as_secs()
    );
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let progress = Progress::start(
        plan.label,
        plan.unit,
        ctx.poster.records.clone(),
        start,
        plan.warmup + plan.duration,
    );
    let load = async {
        match plan.load {
            Load::Closed { clients } => {
                closed_loop(ctx, clients, end).await;
                None
            }
            Load::Open {
                rate_per_s,
                schedule,
            } => Some(
                open_loop(
                    ctx,
                    rate_per_s,
                    schedule,
                    start,
                    plan.warmup + plan.duration,
                )
                .await,
            ),
        }
    };
    let kill = async {
        let Some((after, d, api)) = plan.kill_at else {
            return Ok(None);
        };
        tokio::time::sleep_until((measure_from + after).into()).await;
        let (server_id, addr, at) = kill_primary(d, api, KILLED_CLUSTER).await?;
        let at_us = clock.us(at);
        anyhow::Ok(Some(Kill {
            at_us,
            server_id,
            addr,
        }))
    };
    let tracked = plan.tracked;
    let cpu = async {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = snapshot(tracked);
        tokio::time::sleep_until(end.into()).await;
        (before, snapshot(tracked))
    };
    let (posts_due, kill, cpu) = tokio::join!(load, kill, cpu);
    progress.finish();
    Ok(PhaseRun {
        span: Span {
            from_us: clock.us(measure_from),
            to_us: clock.us(end),
        },
        posts_due,
        kill: kill?,
        cpu,
    })
}

/// What the delivery figures of a phase need.
struct DeliveryCtx<'a> {
    watchers: &'a Watchers,
    followers_of: &'a BTreeMap<u32, BTreeSet<u32>>,
    watched: &'a BTreeSet<u32>,
    clusters: u32,
    drain: Duration,
}

/// Waits until every expected delivery of `acks` arrived (or the drain
/// time passed), then returns the figures.
async fn deliveries(d: &DeliveryCtx<'_>, acks: &[Ack]) -> (DeliveryFigures, Vec<Delivery>) {
    let start = Instant::now();
    loop {
        let (f, list) = analyze(
            acks,
            &d.watchers.arrivals(),
            d.followers_of,
            d.watched,
            d.clusters,
        );
        let missing = f.same_cluster.missing + f.cross_cluster.missing;
        if missing == 0 || start.elapsed() >= d.drain {
            return (f, list);
        }
        tokio::time::sleep(Duration::from_millis(DELIVERY_CHECK_INTERVAL_MS)).await;
    }
}

fn delivery_windows(list: &[Delivery], span: Span) -> DeliveryWindows {
    let pick = |cross: bool| -> Vec<(u64, u64)> {
        list.iter()
            .filter(|d| d.cross == cross)
            .map(|d| (d.acked_us, d.latency_us))
            .collect()
    };
    let w = WINDOW_MS * 1000;
    DeliveryWindows {
        same_cluster: windows(&pick(false), span.from_us, span.to_us, w),
        cross_cluster: windows(&pick(true), span.from_us, span.to_us, w),
    }
}

fn in_span(acks: &[Ack], span: Span) -> Vec<Ack> {
    acks.iter()
        .copied()
        .filter(|a| span.contains(a.acked_us))
        .collect()
}

/// What the main run posts against: the local deployment it started, if
/// any, and the coordinator.
struct Target {
    deployment: Option<Deployment>,
    coord_addr: String,
    coord: CoordClient,
    /// The cluster secret of the deployment, for its internal calls.
    auth: ClusterAuth,
    api: Api,
    clusters: u32,
}

/// What the setup built: the follow graph and the open streams of the
/// sampled followers.
struct Setup {
    followers: BTreeMap<u32, BTreeSet<u32>>,
    watched: BTreeSet<u32>,
    watchers: Watchers,
    figures: SetupFigures,
}

/// What every load phase of the run shares; [`Posting::ctx`] makes the
/// context of one phase.
struct Posting {
    run_id: String,
    clock: Clock,
    authors: Arc<Vec<u32>>,
    next_n: Arc<AtomicU64>,
    shutdown: Shutdown,
}

impl Posting {
    /// The records of a new phase, and its context posting through `via`.
    fn records_and_ctx(&self, via: Via, seed: u64) -> (Arc<Records>, LoadCtx) {
        let records = Arc::new(Records::new(ACKS_MAX_RECORDS));
        let ctx = LoadCtx {
            poster: Arc::new(Poster {
                via,
                records: records.clone(),
                clock: self.clock,
                run: self.run_id.clone(),
            }),
            authors: self.authors.clone(),
            next_n: self.next_n.clone(),
            seed,
            shutdown: self.shutdown.clone(),
        };
        (records, ctx)
    }
}

/// What the load phases against the deployment work with.
struct Phases<'a> {
    args: &'a RunArgs,
    target: Target,
    posting: Posting,
    router: Arc<Router>,
    cores: usize,
}

/// The outcome of the posts phase.
struct PostsOutcome {
    report: PhaseReport,
    span: Span,
    acks: Vec<Ack>,
    kill: Option<KillFigures>,
}

pub async fn run(args: RunArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    args.check().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    let started_at = chrono::Utc::now().to_rfc3339();
    let started_ms = now_ms();
    let machine = Machine::read();
    let clock = Clock::start();
    let run_id = new_run_id();

    let disk = probe_disk(&args).await?;
    let target = connect(&args).await?;
    let setup = set_up(&args, &target, &run_id, clock).await?;
    let dctx = DeliveryCtx {
        watchers: &setup.watchers,
        followers_of: &setup.followers,
        watched: &setup.watched,
        clusters: target.clusters,
        drain: Duration::from_millis(args.q_ms + DELIVERY_DRAIN_EXTRA_MS),
    };
    let posting = Posting {
        run_id: run_id.clone(),
        clock,
        authors: Arc::new((1..=args.users).collect()),
        next_n: Arc::new(AtomicU64::new(1)),
        shutdown: shutdown.clone(),
    };
    let router = Arc::new(Router::new(
        target.coord.clone(),
        target.clusters,
        args.connections,
    ));
    let cores = machine.nproc;
    let mut phases = Phases {
        args: &args,
        target,
        posting,
        router,
        cores,
    };
    let main = posts_phase(&mut phases, &dctx).await?;
    let mut all_acks = main.acks.clone();
    let half_report = match half_load_phase(&mut phases, &dctx, &main.report).await? {
        Some((report, acks)) => {
            all_acks.extend(acks);
            Some(report)
        }
        None => None,
    };
    let stream_reopens = setup.watchers.reopened();
    let stream_arrivals_dropped = setup.watchers.dropped();
    setup.watchers.stop().await;

    let Phases {
        target, posting, ..
    } = phases;
    let echo_report = echo_phase(&args, &target, &posting, cores).await?;
    let (redis, redis_skipped) = redis_phase(
        &args,
        &posting,
        &BaselineCtx {
            followers_of: &setup.followers,
            watched: &setup.watched,
            run_id: &posting.run_id,
            clock: posting.clock,
            clients: args.clients(),
        },
        cores,
    )
    .await?;
    let vs_redis = match (args.load(), &redis) {
        (Load::Closed { .. }, Some(r)) => Some(VsRedis::of(&main.report, &r.phase)),
        _ => None,
    };
    let posts_per_echo_call = match (args.load(), &echo_report) {
        (Load::Closed { .. }, Some(e)) if e.figures.throughput_per_s > 0.0 => {
            Some(main.report.figures.throughput_per_s / e.figures.throughput_per_s)
        }
        _ => None,
    };

    // ---------------------------------------------------------- audit
    eprintln!("tsn_bench: auditing {} acknowledged posts", all_acks.len());
    let audit = audit(
        &target.coord,
        &target.auth,
        &run_id,
        &all_acks,
        started_ms - 60_000,
    )
    .await;

    let mut result = RunResult {
        header: RunHeader::new(
            started_at,
            run_id,
            args.clone(),
            machine,
            DeploymentInfo::new(
                target.deployment.as_ref(),
                target.coord_addr.clone(),
                target.clusters,
            ),
        ),
        setup: setup.figures,
        main: main.report,
        half_load: half_report,
        echo: echo_report,
        posts_per_echo_call,
        redis,
        redis_skipped,
        vs_redis,
        disk,
        kill: main.kill,
        audit,
        stream_reopens,
        stream_arrivals_dropped,
        targets: Vec::new(),
    };
    let q_ms = result.header.deployment.q_ms;
    result.targets = run_targets(&result, q_ms);
    write_outputs(&args.out, &result, main.span)
}

/// Phase 0: before a local deployment starts, the latency of an append
/// and fdatasync alone in the temp dir it will use.
async fn probe_disk(args: &RunArgs) -> anyhow::Result<Option<Summary>> {
    if args.coordinator.is_some() || args.no_disk {
        return Ok(None);
    }
    eprintln!(
        "tsn_bench: disk probe: {DISK_PROBE_APPENDS} appends with fdatasync, one every \
         {DISK_PROBE_INTERVAL_MS} ms"
    );
    let dir = std::env::temp_dir();
    let interval = Duration::from_millis(DISK_PROBE_INTERVAL_MS);
    let probe =
        tokio::task::spawn_blocking(move || disk::probe_in(&dir, DISK_PROBE_APPENDS, interval));
    Ok(Some(probe.await??))
}

/// Phase 1, first half: starts the local deployment (or takes the one of
/// `-c`) and learns how many clusters it has.
async fn connect(args: &RunArgs) -> anyhow::Result<Target> {
    let (deployment, coord_addr) = match &args.coordinator {
        Some(addr) => {
            if let Some(tls) = args.tls.open_client()? {
                tsn_cluster::tls::set_process_tls(Some(tls));
            }
            (None, addr.clone())
        }
        None => {
            eprintln!(
                "tsn_bench: starting a local deployment of {} clusters",
                args.clusters
            );
            let d = start_local(args.clusters, args.q_ms).await?;
            let addr = d.coord_addr();
            (Some(d), addr)
        }
    };
    let auth = match &deployment {
        Some(d) => d.auth().clone(),
        None => ClusterAuth::open(&SecretArgs {
            cluster_secret_file: args.cluster_secret_file.clone(),
            secret_grace_ms: SECRET_GRACE_MS,
        })?,
    };
    // Checked before the harness's Api, which panics on a bad address.
    let coord = CoordClient::new(&coord_addr)?;
    let api = Api::new(&coord_addr, &auth);
    let clusters = match deployment {
        Some(_) => args.clusters,
        None => {
            let views = api
                .clusters()
                .await
                .map_err(|s| anyhow::anyhow!("asking {coord_addr} for its clusters: {s}"))?;
            anyhow::ensure!(
                !views.is_empty(),
                "the coordinator at {coord_addr} has no clusters"
            );
            views.len() as u32
        }
    };
    Ok(Target {
        deployment,
        coord_addr,
        coord,
        auth,
        api,
        clusters,
    })
}

/// Phases 1 and 2: the users and the follow graph, waited for until it
/// reached every cluster, then the sampled followers' streams, opened.
async fn set_up(
    args: &RunArgs,
    target: &Target,
    run_id: &str,
    clock: Clock,
) -> anyhow::Result<Setup> {
    let api = &target.api;
    let setup_start = Instant::now();
    let edges = follow_graph(
        args.users,
        target.clusters,
        args.follows,
        args.cross_share,
        args.seed,
    )
    .map_err(anyhow::Error::msg)?;
    eprintln!(
        "tsn_bench: creating {} users and {} follows",
        args.users,
        edges.len()
    );
    crate::setup::login_all(api, args.users).await?;
    crate::setup::follow_all(api, &edges).await?;
    let followers = followers_of(&edges);
    crate::setup::wait_followers(
        api,
        &followers,
        Duration::from_millis(GRAPH_CONVERGE_DEADLINE_MS),
    )
    .await?;
    let watched_list = sample_followers(&edges, args.sample_followers, args.seed);
    let watched: BTreeSet<u32> = watched_list.iter().copied().collect();
    let watchers = Watchers::start(&target.coord, &watched_list, run_id, clock);
    watchers
        .wait_open(Duration::from_millis(STREAMS_OPEN_DEADLINE_MS))
        .await
        .map_err(anyhow::Error::msg)?;
    let figures = SetupFigures {
        users: args.users,
        follow_edges: edges.len() as u64,
        seconds: setup_start.elapsed().as_secs_f64(),
        watched_followers: watched.len() as u64,
    };
    Ok(Setup {
        followers,
        watched,
        watchers,
        figures,
    })
}

/// Phase 3: the main load, with the kill of cluster 1's primary if asked
/// (the killed server is restarted and waited for afterwards); then the
/// deliveries are waited for.
async fn posts_phase(p: &mut Phases<'_>, dctx: &DeliveryCtx<'_>) -> anyhow::Result<PostsOutcome> {
    let args = p.args;
    let (records, ctx) = p
        .posting
        .records_and_ctx(Via::Tsn(p.router.clone()), args.seed);
    let load = args.load();
    let tracked = tracked_processes(&mut p.target.deployment, &p.target.api).await;
    let kill_at = match (args.kill_primary_at, p.target.deployment.as_mut()) {
        (Some(s), Some(d)) => Some((Duration::from_secs_f64(s), d, &p.target.api)),
        _ => None,
    };
    let run = run_phase(
        &ctx,
        PhasePlan {
            kill_at,
            ..PhasePlan::of(args, "posts", "posts", load, &tracked)
        },
    )
    .await?;
    anyhow::ensure!(!p.posting.shutdown.is_fired(), "interrupted");
    let (acks, report) = posts_report("posts", load, &records, &run, &tracked, p.cores, dctx).await;
    let mut kill = None;
    if let Some(k) = &run.kill {
        let killed = p.router.server_index(&k.addr);
        let first = records.first_ack_after(KILLED_CLUSTER, k.at_us, killed);
        let mut restarted_in_sync = false;
        if let Some(d) = p.target.deployment.as_mut() {
            restart(d, KILLED_CLUSTER, k.server_id).await?;
            wait_whole(
                &p.target.api,
                KILLED_CLUSTER,
                1 + SECONDARIES_PER_CLUSTER as usize,
                Duration::from_millis(IN_SYNC_DEADLINE_MS),
            )
            .await?;
            restarted_in_sync = true;
        }
        kill = Some(KillFigures {
            at_s: run.span.offset_s(k.at_us),
            cluster: KILLED_CLUSTER,
            killed_server: k.addr.clone(),
            outage_ms: outage_ms(k.at_us, first.as_ref()),
            first_ack_server: first.and_then(|a| p.router.server_addr(a.server)),
            restarted_in_sync,
        });
    }
    Ok(PostsOutcome {
        report,
        span: run.span,
        acks,
        kill,
    })
}

/// Phase 4: after a closed loop, an open loop at half the throughput it
/// reached, for the latency at a load the server is not saturated by.
/// Returns its report and its acknowledgements.
async fn half_load_phase(
    p: &mut Phases<'_>,
    dctx: &DeliveryCtx<'_>,
    main: &PhaseReport,
) -> anyhow::Result<Option<(PhaseReport, Vec<Ack>)>> {
    let args = p.args;
    if !matches!(args.load(), Load::Closed { .. }) || args.no_half_load {
        return Ok(None);
    }
    let rate = (main.figures.throughput_per_s / 2.0).max(RATE_MIN_PER_S);
    let half_load = Load::Open {
        rate_per_s: rate,
        schedule: args.schedule,
    };
    let (records, ctx) = p
        .posting
        .records_and_ctx(Via::Tsn(p.router.clone()), args.seed.wrapping_add(1));
    // Roles and pids may have changed since (a kill and a restart).
    let tracked = tracked_processes(&mut p.target.deployment, &p.target.api).await;
    let run = run_phase(
        &ctx,
        PhasePlan::of(args, "half load", "posts", half_load, &tracked),
    )
    .await?;
    anyhow::ensure!(!p.posting.shutdown.is_fired(), "interrupted");
    let (acks, report) = posts_report(
        "half load",
        half_load,
        &records,
        &run,
        &tracked,
        p.cores,
        dctx,
    )
    .await;
    Ok(Some((report, acks)))
}

/// Phase 5: the same closed loop against a bare echo server, for the limit
/// of the RPC stack.
async fn echo_phase(
    args: &RunArgs,
    target: &Target,
    posting: &Posting,
    cores: usize,
) -> anyhow::Result<Option<PhaseReport>> {
    if args.no_echo {
        return Ok(None);
    }
    let logs = match &target.deployment {
        Some(d) => d.logs_dir(),
        None => args.out.join("logs"),
    };
    let mut server = echo::spawn(&logs).await?;
    let echo_router = Arc::new(Router::fixed(&server.addr(), args.connections)?);
    let (records, ctx) = posting.records_and_ctx(Via::Tsn(echo_router), args.seed);
    let echo_load = Load::Closed {
        clients: args.clients(),
    };
    let mut tracked = vec![Tracked {
        kind: "tsn_bench (client)".into(),
        pid: std::process::id(),
    }];
    if let Some(pid) = server.pid() {
        tracked.push(Tracked {
            kind: "echo server".into(),
            pid,
        });
    }
    let run = run_phase(
        &ctx,
        PhasePlan::of(args, "echo", "calls", echo_load, &tracked),
    )
    .await;
    // Close the connections first, so that the server's graceful stop
    // has nothing to wait for.
    drop(ctx);
    server.stop().await;
    let run = run?;
    anyhow::ensure!(!posting.shutdown.is_fired(), "interrupted");
    let figures = figures_of("echo", echo_load, &records.acks(), &records, &run);
    Ok(Some(phase_report(figures, &run, &tracked, cores, None)))
}

/// Phase 6: the same closed loop, follow graph and watched followers
/// against the Redis baseline. Skipped, with the reason, when asked to or
/// when `redis-server` is not installed.
async fn redis_phase(
    args: &RunArgs,
    posting: &Posting,
    ctx: &BaselineCtx<'_>,
    cores: usize,
) -> anyhow::Result<(Option<RedisReport>, Option<String>)> {
    if args.no_redis {
        return Ok((None, Some("--no-redis".into())));
    }
    let bin = match find_redis_server() {
        Ok(bin) => bin,
        Err(why) => {
            eprintln!("tsn_bench: no Redis baseline in this run: {why}");
            return Ok((None, Some(why)));
        }
    };
    let baseline = Baseline::start(&bin, ctx).await?;
    let (records, load_ctx) = posting.records_and_ctx(baseline.via(), args.seed);
    let load = Load::Closed {
        clients: ctx.clients,
    };
    let tracked = baseline.tracked();
    let run = run_phase(
        &load_ctx,
        PhasePlan::of(args, "redis", "posts", load, &tracked),
    )
    .await;
    drop(load_ctx);
    let run = run?;
    anyhow::ensure!(!posting.shutdown.is_fired(), "interrupted");
    let acks = records.acks();
    let figures = figures_of("redis", load, &acks, &records, &run);
    eprintln!("tsn_bench: waiting for the deliveries of the redis phase");
    let delivery = baseline.deliveries(ctx, &acks, run.span).await;
    let mut report = phase_report(figures, &run, &tracked, cores, None);
    report.delivery = Some(delivery);
    Ok((Some(baseline.stop(report).await), None))
}

/// The acknowledgements and the report of the finished phase of posts
/// `label`, once its deliveries arrived (or the drain time passed).
async fn posts_report(
    label: &str,
    load: Load,
    records: &Records,
    run: &PhaseRun,
    tracked: &[Tracked],
    cores: usize,
    dctx: &DeliveryCtx<'_>,
) -> (Vec<Ack>, PhaseReport) {
    let acks = records.acks();
    let figures = figures_of(label, load, &acks, records, run);
    eprintln!(
        "tsn_bench: waiting for the deliveries of the {} phase",
        label.replace(' ', "-")
    );
    let delivery = deliveries(dctx, &in_span(&acks, run.span)).await;
    let report = phase_report(figures, run, tracked, cores, Some(delivery));
    (acks, report)
}

/// The figures of one measured phase, from what its records hold now.
fn figures_of(
    label: &str,
    load: Load,
    acks: &[Ack],
    records: &Records,
    run: &PhaseRun,
) -> PhaseFigures {
    phase_figures(
        label,
        load,
        acks,
        &records.failures(),
        records.dropped(),
        run.span,
        run.posts_due,
    )
}

/// The report of one measured phase: its figures, the CPU time of the
/// tracked processes per acknowledged call, and for a phase of posts its
/// deliveries.
fn phase_report(
    figures: PhaseFigures,
    run: &PhaseRun,
    tracked: &[Tracked],
    cores: usize,
    delivery: Option<(DeliveryFigures, Vec<Delivery>)>,
) -> PhaseReport {
    let cpu = cpu_figures(tracked, &run.cpu.0, &run.cpu.1, figures.acknowledged, cores);
    let (delivery, delivery_windows) = match delivery {
        Some((f, list)) => (Some(f), Some(delivery_windows(&list, run.span))),
        None => (None, None),
    };
    PhaseReport {
        delivery_windows,
        delivery,
        figures,
        cpu,
    }
}

/// Phase 6: `result.json`, the plot of the posts phase `span`, and the
/// table on stdout.
fn write_outputs(out: &Path, result: &RunResult, span: Span) -> anyhow::Result<()> {
    write_json(&out.join("result.json"), result)?;
    let empty = DeliveryWindows {
        same_cluster: Vec::new(),
        cross_cluster: Vec::new(),
    };
    let dw = result.main.delivery_windows.as_ref().unwrap_or(&empty);
    let plot = PlotInput {
        title: format!(
            "tsn: {} on {} cores, {} clusters (run {})",
            describe(&result.main.figures.load),
            result.header.machine.nproc,
            result.header.deployment.clusters,
            result.header.run_id
        ),
        duration_s: span.seconds(),
        ack: &result.main.figures.windows,
        delivery_same: &dw.same_cluster,
        delivery_cross: &dw.cross_cluster,
        kill_at_s: result.kill.as_ref().map(|k| k.at_s),
        outage_end_s: result
            .kill
            .as_ref()
            .and_then(|k| k.outage_ms.map(|o| k.at_s + o / 1000.0)),
    };
    write_svg(&out.join("latency.svg"), &plot)?;
    println!("{}", run_table(result));
    println!(
        "wrote {} and {}",
        out.join("result.json").display(),
        out.join("latency.svg").display()
    );
    Ok(())
}

/// The processes of the local deployment, each labelled by its kind
/// (a server by its role now), and this process.
async fn tracked_processes(deployment: &mut Option<Deployment>, api: &Api) -> Vec<Tracked> {
    let mut tracked = vec![Tracked {
        kind: "tsn_bench (client)".into(),
        pid: std::process::id(),
    }];
    let Some(d) = deployment.as_mut() else {
        return tracked;
    };
    let views = api.clusters().await.unwrap_or_default();
    for m in d.members() {
        let kind = match m {
            Member::Coordinator | Member::GroupMember { .. } => "coordinator",
            Member::Server { cluster, server_id } => {
                match views.iter().find(|v| v.cluster_id == cluster) {
                    Some(v) if v.primary_id == server_id => "primary",
                    _ => "secondary",
                }
            }
            Member::Sync { .. } => "sync service",
        };
        if let Some(pid) = d.member(m).pid() {
            tracked.push(Tracked {
                kind: kind.into(),
                pid,
            });
        }
    }
    tracked
}

fn describe(load: &Load) -> String {
    match load {
        Load::Closed { clients } => format!("closed loop of {clients} posters"),
        Load::Open { rate_per_s, .. } => format!("open loop at {rate_per_s:.0} posts/s"),
    }
}
