//! The report of a run: `result.json` (every figure, the settings and the
//! machine), the targets each marked met or missed, and the summary table
//! printed at the end.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use tsn_harness::Deployment;

use crate::audit::AuditFigures;
use crate::baseline::{RedisReport, VsRedis};
use crate::cli::{FailoverArgs, RunArgs};
use crate::cpu::CpuFigures;
use crate::delivery::DeliveryFigures;
use crate::figures::PhaseFigures;
use crate::machine::Machine;
use crate::stats::{Summary, Window};

/// tsn's posts/s ÷ the Redis baseline's posts/s, same closed loop.
pub const TARGET_VS_REDIS_POSTS_RATIO_MIN: f64 = 1.0;
/// tsn's same-cluster delivery p99 ÷ Redis's pub/sub delivery p99.
pub const TARGET_VS_REDIS_DELIVERY_P99_RATIO_MAX: f64 = 1.0;
/// Ack p99 at half the maximum throughput ÷ the p99 of the disk probe's
/// fdatasync in the same run.
pub const TARGET_HALF_LOAD_P99_OVER_FSYNC_P99_MAX: f64 = 2.0;
/// CPU per post at half load ÷ CPU per post at the maximum.
pub const TARGET_HALF_LOAD_CPU_RATIO_MAX: f64 = 1.2;
/// Cross-cluster delivery p99: at most q plus this.
pub const TARGET_DELIVERY_OVER_Q_MAX_MS: f64 = 100.0;
/// What cross-cluster delivery p99 aims at, since the sync services
/// long-poll the primary's commit feed instead of waiting q.
pub const AIM_DELIVERY_P99_MAX_MS: f64 = 100.0;
/// Failover outages: median and maximum.
pub const TARGET_FAILOVER_MEDIAN_MAX_MS: f64 = 1_000.0;
pub const TARGET_FAILOVER_MAX_MS: f64 = 2_000.0;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
}

impl Target {
    fn new(
        name: &str,
        target: String,
        measured: Option<f64>,
        unit: &str,
        met: impl Fn(f64) -> bool,
    ) -> Target {
        Target {
            name: name.to_string(),
            target,
            measured: measured.map_or_else(|| "not measured".into(), |v| format!("{v:.3}{unit}")),
            met: measured.map(met),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DeploymentInfo {
    /// Started by this run (true) or given with -c.
    pub local: bool,
    pub coordinator: String,
    pub clusters: u32,
    /// The local deployment's settings (unknown for -c).
    pub failure_timeout_ms: Option<u64>,
    pub q_ms: Option<u64>,
    pub secondaries_per_cluster: Option<u32>,
}

impl DeploymentInfo {
    /// The deployment behind `coordinator`: `local` if this run started
    /// it (its settings are known then), none if it was given with -c.
    pub fn new(local: Option<&Deployment>, coordinator: String, clusters: u32) -> DeploymentInfo {
        DeploymentInfo {
            local: local.is_some(),
            coordinator,
            clusters,
            failure_timeout_ms: local.map(|d| d.config().failure_timeout_ms),
            q_ms: local.map(|d| d.config().q_ms),
            secondaries_per_cluster: local.map(|d| d.config().secondaries_per_cluster),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SetupFigures {
    pub users: u32,
    pub follow_edges: u64,
    pub seconds: f64,
    pub watched_followers: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeliveryWindows {
    pub same_cluster: Vec<Window>,
    pub cross_cluster: Vec<Window>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    #[serde(flatten)]
    pub figures: PhaseFigures,
    pub delivery: Option<DeliveryFigures>,
    pub delivery_windows: Option<DeliveryWindows>,
    /// CPU time per acknowledged post (echo: per call), by process kind.
    pub cpu: CpuFigures,
}

#[derive(Clone, Debug, Serialize)]
pub struct KillFigures {
    pub at_s: f64,
    pub cluster: u32,
    pub killed_server: String,
    /// Kill to the first acknowledgement by another server.
    pub outage_ms: Option<f64>,
    pub first_ack_server: Option<String>,
    /// The killed server was started again and caught up after the phase.
    pub restarted_in_sync: bool,
}

/// What every result file starts with: which tool and run, with which
/// settings, on which machine and deployment. Flattened into each result,
/// so the files keep these as top-level fields.
#[derive(Clone, Debug, Serialize)]
pub struct RunHeader<S> {
    pub tool: &'static str,
    pub version: &'static str,
    pub started_at: String,
    pub run_id: String,
    pub settings: S,
    pub machine: Machine,
    pub deployment: DeploymentInfo,
}

impl<S> RunHeader<S> {
    pub fn new(
        started_at: String,
        run_id: String,
        settings: S,
        machine: Machine,
        deployment: DeploymentInfo,
    ) -> RunHeader<S> {
        RunHeader {
            tool: "tsn_bench",
            version: env!("CARGO_PKG_VERSION"),
            started_at,
            run_id,
            settings,
            machine,
            deployment,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    #[serde(flatten)]
    pub header: RunHeader<RunArgs>,
    pub setup: SetupFigures,
    pub main: PhaseReport,
    pub half_load: Option<PhaseReport>,
    pub echo: Option<PhaseReport>,
    /// Posts/s of the closed-loop main phase ÷ echo calls/s, same clients.
    pub posts_per_echo_call: Option<f64>,
    /// The Redis baseline of the same run.
    pub redis: Option<RedisReport>,
    /// Why there is no Redis baseline in this run.
    pub redis_skipped: Option<String>,
    /// tsn ÷ Redis, for the closed-loop main phase.
    pub vs_redis: Option<VsRedis>,
    /// The disk alone: latency of an append and fdatasync, in ms (local
    /// deployments only), the floor of any durable acknowledgement.
    pub disk: Option<Summary>,
    pub kill: Option<KillFigures>,
    pub audit: AuditFigures,
    /// Timeline streams opened again after they failed (a kill).
    pub stream_reopens: u64,
    /// Stream arrivals not recorded because the store was full.
    pub stream_arrivals_dropped: u64,
    pub targets: Vec<Target>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FailoverResult {
    #[serde(flatten)]
    pub header: RunHeader<FailoverArgs>,
    pub outages_ms: Vec<f64>,
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub load: PhaseFigures,
    pub audit: AuditFigures,
    pub targets: Vec<Target>,
}

/// The targets a main run can judge.
pub fn run_targets(r: &RunResult, q_ms: Option<u64>) -> Vec<Target> {
    let mut t = Vec::new();
    let vs = r.vs_redis.clone().unwrap_or_default();
    let mut posts = Target::new(
        "tsn posts/s vs Redis posts/s",
        format!(">= {TARGET_VS_REDIS_POSTS_RATIO_MIN}x"),
        vs.posts_per_s,
        "x",
        |v| v >= TARGET_VS_REDIS_POSTS_RATIO_MIN,
    );
    if let (Some(redis), Some(_)) = (&r.redis, posts.met) {
        posts.measured += &format!(
            " ({:.0} vs {:.0}/s)",
            r.main.figures.throughput_per_s, redis.phase.figures.throughput_per_s
        );
    }
    t.push(posts);
    let same_p99 = |p: &PhaseReport| {
        p.delivery
            .as_ref()
            .filter(|d| d.same_cluster.arrived > 0)
            .map(|d| d.same_cluster.latency.p99_ms)
    };
    let redis_p99 = r.redis.as_ref().and_then(|x| same_p99(&x.phase));
    let delivery = Target::new(
        "tsn same-cluster delivery p99 vs Redis pub/sub",
        redis_p99.map_or("<= Redis's p99".into(), |p| {
            format!("<= {TARGET_VS_REDIS_DELIVERY_P99_RATIO_MAX}x Redis's {p:.3} ms")
        }),
        redis_p99.and(same_p99(&r.main)),
        " ms",
        move |v| redis_p99.is_some_and(|p| v <= TARGET_VS_REDIS_DELIVERY_P99_RATIO_MAX * p),
    );
    t.push(delivery);
    let fsync_p99 = r.disk.as_ref().map(|d| d.p99_ms);
    let half_p99 = r.half_load.as_ref().map(|h| h.figures.ack_latency.p99_ms);
    let mut half_load = Target::new(
        "ack p99 at half load vs fdatasync p99",
        format!("<= {TARGET_HALF_LOAD_P99_OVER_FSYNC_P99_MAX}x"),
        half_p99
            .zip(fsync_p99)
            .and_then(|(h, d)| (d > 0.0).then(|| h / d)),
        "x",
        |v| v <= TARGET_HALF_LOAD_P99_OVER_FSYNC_P99_MAX,
    );
    if let (Some(h), Some(d)) = (half_p99, fsync_p99) {
        half_load.measured += &format!(" ({h:.3} vs {d:.3} ms)");
    }
    t.push(half_load);
    let cpu = |p: &PhaseReport| Some(p.cpu.total_cpu_us_per_op).filter(|v| *v > 0.0);
    let full_cpu = cpu(&r.main);
    let half_cpu = r.half_load.as_ref().and_then(cpu);
    let mut cpu_target = Target::new(
        "CPU per post at half load vs max load",
        format!("<= {TARGET_HALF_LOAD_CPU_RATIO_MAX}x"),
        half_cpu.zip(full_cpu).map(|(h, f)| h / f),
        "x",
        |v| v <= TARGET_HALF_LOAD_CPU_RATIO_MAX,
    );
    if let (Some(h), Some(f)) = (half_cpu, full_cpu) {
        cpu_target.measured += &format!(" ({h:.0} vs {f:.0} µs)");
    }
    t.push(cpu_target);
    let phases: Vec<(&str, Option<&PhaseReport>)> = vec![
        ("max load", Some(&r.main)),
        ("half load", r.half_load.as_ref()),
    ];
    for (label, phase) in phases {
        let p99 = phase
            .and_then(|p| p.delivery.as_ref())
            .filter(|d| d.cross_cluster.arrived > 0)
            .map(|d| d.cross_cluster.latency.p99_ms);
        if let Some(q) = q_ms {
            let bound = q as f64 + TARGET_DELIVERY_OVER_Q_MAX_MS;
            t.push(Target::new(
                &format!("cross-cluster delivery p99 ({label})"),
                format!("<= q + {TARGET_DELIVERY_OVER_Q_MAX_MS} = {bound} ms"),
                p99,
                " ms",
                move |v| v <= bound,
            ));
        }
        t.push(Target::new(
            &format!("cross-cluster delivery p99, aim ({label})"),
            format!("<= {AIM_DELIVERY_P99_MAX_MS} ms"),
            p99,
            " ms",
            |v| v <= AIM_DELIVERY_P99_MAX_MS,
        ));
    }
    t.extend(audit_targets(&r.audit));
    t
}

pub fn audit_targets(a: &AuditFigures) -> Vec<Target> {
    let audited = a.checked > 0;
    let count = |v: u64| audited.then_some(v as f64);
    vec![
        Target::new("lost posts", "0".into(), count(a.lost), "", |v| v == 0.0),
        Target::new(
            "duplicated posts",
            "0".into(),
            count(a.duplicated),
            "",
            |v| v == 0.0,
        ),
    ]
}

pub fn failover_targets(r: &FailoverResult) -> Vec<Target> {
    let mut t = vec![
        Target::new(
            "failover outage, median",
            format!("<= {TARGET_FAILOVER_MEDIAN_MAX_MS} ms"),
            r.median_ms,
            " ms",
            |v| v <= TARGET_FAILOVER_MEDIAN_MAX_MS,
        ),
        Target::new(
            "failover outage, max",
            format!("<= {TARGET_FAILOVER_MAX_MS} ms"),
            r.max_ms,
            " ms",
            |v| v <= TARGET_FAILOVER_MAX_MS,
        ),
    ];
    t.extend(audit_targets(&r.audit));
    t
}

pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn latency_row(out: &mut String, label: &str, s: &Summary) {
    let _ = writeln!(
        out,
        "  {label:<34} {:>9} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9.3}",
        s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms
    );
}

fn phase_rows(out: &mut String, p: &PhaseReport) {
    let f = &p.figures;
    let _ = writeln!(
        out,
        "{}: {:.0}/s over {:.1} s ({} acknowledged, {} retried, {} failed)",
        f.name,
        f.throughput_per_s,
        f.measured_s,
        f.acknowledged,
        f.retried,
        f.failed.values().sum::<u64>()
    );
    latency_row(out, "ack latency (ms)", &f.ack_latency);
    if let Some(d) = &f.dispatch_lateness {
        latency_row(out, "  of which dispatch lateness", d);
    }
    if !p.cpu.cpu_us_per_op.is_empty() {
        let parts: Vec<String> = p
            .cpu
            .cpu_us_per_op
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect();
        let _ = writeln!(
            out,
            "  CPU µs per op: {} = {:.0} total (bound {} /s)",
            parts.join(", "),
            p.cpu.total_cpu_us_per_op,
            p.cpu
                .ops_per_s_bound
                .map_or("-".into(), |b| format!("{b:.0}"))
        );
    }
    if let Some(d) = &p.delivery {
        for (label, c) in [
            ("delivery same-cluster (ms)", &d.same_cluster),
            ("delivery cross-cluster (ms)", &d.cross_cluster),
        ] {
            latency_row(out, label, &c.latency);
            if c.missing > 0 {
                let _ = writeln!(
                    out,
                    "  {:<34} {} of {} expected",
                    "  missing", c.missing, c.expected
                );
            }
        }
    }
}

/// The summary table of a main run.
pub fn run_table(r: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ntsn_bench {} on {} x {} ({}), {} clusters, run {}",
        r.header.version,
        r.header.machine.nproc,
        r.header.machine.cpu_model,
        r.header.machine.kernel,
        r.header.deployment.clusters,
        r.header.run_id
    );
    let _ = writeln!(
        out,
        "  {:<34} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    phase_rows(&mut out, &r.main);
    for p in [&r.half_load, &r.echo].into_iter().flatten() {
        phase_rows(&mut out, p);
    }
    if let Some(ratio) = r.posts_per_echo_call {
        let _ = writeln!(out, "posts/s ÷ echo calls/s: {ratio:.3}");
    }
    if let Some(redis) = &r.redis {
        let _ = writeln!(
            out,
            "Redis {} baseline: {}",
            redis.version, redis.durability
        );
        phase_rows(&mut out, &redis.phase);
    }
    if let Some(why) = &r.redis_skipped {
        let _ = writeln!(out, "no Redis baseline: {why}");
    }
    if let Some(v) = &r.vs_redis {
        let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
        let _ = writeln!(
            out,
            "tsn ÷ Redis: posts/s {}, ack p50 {} p99 {}, delivery p50 {} p99 {}",
            f(v.posts_per_s),
            f(v.ack_p50),
            f(v.ack_p99),
            f(v.delivery_p50),
            f(v.delivery_p99)
        );
    }
    if let Some(d) = &r.disk {
        let _ = writeln!(out, "disk alone (the floor of a durable acknowledgement):");
        latency_row(&mut out, "append + fdatasync (ms)", d);
    }
    if let Some(k) = &r.kill {
        let _ = writeln!(
            out,
            "kill -9 of {} (cluster {}) at {:.1} s: outage {}",
            k.killed_server,
            k.cluster,
            k.at_s,
            k.outage_ms
                .map_or("not over".into(), |v| format!("{v:.0} ms"))
        );
    }
    audit_rows(&mut out, &r.audit);
    targets_rows(&mut out, &r.targets);
    out
}

fn audit_rows(out: &mut String, a: &AuditFigures) {
    let _ = writeln!(
        out,
        "audit: {} acknowledged posts checked, {} lost, {} duplicated, {} stored unacknowledged, {} authors not fully audited, {} unreadable",
        a.checked, a.lost, a.duplicated, a.stored_unacknowledged, a.authors_not_fully_audited, a.authors_unreadable
    );
}

fn targets_rows(out: &mut String, targets: &[Target]) {
    let _ = writeln!(out, "targets:");
    for t in targets {
        let mark = match t.met {
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "  -   ",
        };
        let _ = writeln!(
            out,
            "  [{mark}] {:<46} {:<24} measured {}",
            t.name, t.target, t.measured
        );
    }
}

/// The summary table of a failover run.
pub fn failover_table(r: &FailoverResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ntsn_bench failover on {} x {} ({}), {} failovers of cluster 1, run {}",
        r.header.machine.nproc,
        r.header.machine.cpu_model,
        r.header.machine.kernel,
        r.outages_ms.len(),
        r.header.run_id
    );
    let list: Vec<String> = r.outages_ms.iter().map(|v| format!("{v:.0}")).collect();
    let _ = writeln!(out, "outages (ms): {}", list.join(", "));
    let _ = writeln!(
        out,
        "median {} ms, max {} ms",
        r.median_ms.map_or("-".into(), |v| format!("{v:.0}")),
        r.max_ms.map_or("-".into(), |v| format!("{v:.0}"))
    );
    audit_rows(&mut out, &r.audit);
    targets_rows(&mut out, &r.targets);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_a_measure_is_neither_met_nor_missed() {
        let t = Target::new("x", "<= 1".into(), None, " ms", |v| v <= 1.0);
        assert_eq!(t.met, None);
        assert_eq!(t.measured, "not measured");
        let t = Target::new("x", "<= 1".into(), Some(1.5), " ms", |v| v <= 1.0);
        assert_eq!(t.met, Some(false));
        assert_eq!(t.measured, "1.500 ms");
    }

    #[test]
    fn audit_targets_need_an_audit() {
        let none = audit_targets(&AuditFigures::default());
        assert!(none.iter().all(|t| t.met.is_none()));
        let clean = audit_targets(&AuditFigures {
            checked: 10,
            ..Default::default()
        });
        assert!(clean.iter().all(|t| t.met == Some(true)));
        let lossy = audit_targets(&AuditFigures {
            checked: 10,
            lost: 1,
            ..Default::default()
        });
        assert_eq!(lossy[0].met, Some(false));
    }
}
