//! CPU time per post, by kind of process.
//!
//! On a machine shared with other work, latency and throughput move with
//! the neighbours' load; the CPU time each process spends per post hardly
//! does. Reading every process's user + system time (`/proc/<pid>/stat`)
//! at the start and the end of the measured span and dividing by the posts
//! acknowledged in it tells where the cost of a post is, and bounds the
//! throughput: `cores × 1 s ÷ CPU per post` posts/s at best.

use std::collections::BTreeMap;

use serde::Serialize;

/// One process to account for: a label of its kind and its pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub kind: String,
    pub pid: u32,
}

/// CPU ticks of each tracked process at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    ticks: BTreeMap<u32, u64>,
}

/// user + system time of `pid`, in clock ticks (`None`: it is gone).
fn ticks_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ticks(&stat)
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last
/// `)`: state is field 3, utime 14, stime 15.
pub fn parse_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_per_s() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

pub fn snapshot(tracked: &[Tracked]) -> Snapshot {
    Snapshot {
        ticks: tracked
            .iter()
            .filter_map(|t| Some((t.pid, ticks_of(t.pid)?)))
            .collect(),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CpuFigures {
    /// CPU time used in the measured span, by kind of process, in ms.
    pub cpu_ms: BTreeMap<String, f64>,
    /// The same per acknowledged post (or echo call), in µs.
    pub cpu_us_per_op: BTreeMap<String, f64>,
    pub total_cpu_us_per_op: f64,
    /// Operations per second the machine's cores could do at that cost.
    pub ops_per_s_bound: Option<f64>,
}

/// The CPU used between `before` and `after` by each kind, per `ops`.
pub fn figures(
    tracked: &[Tracked],
    before: &Snapshot,
    after: &Snapshot,
    ops: u64,
    cores: usize,
) -> CpuFigures {
    figures_with(tracked, before, after, ops, cores, ticks_per_s())
}

fn figures_with(
    tracked: &[Tracked],
    before: &Snapshot,
    after: &Snapshot,
    ops: u64,
    cores: usize,
    tick_per_s: u64,
) -> CpuFigures {
    let mut f = CpuFigures::default();
    for t in tracked {
        let (Some(b), Some(a)) = (before.ticks.get(&t.pid), after.ticks.get(&t.pid)) else {
            continue;
        };
        let ms = a.saturating_sub(*b) as f64 * 1000.0 / tick_per_s as f64;
        *f.cpu_ms.entry(t.kind.clone()).or_insert(0.0) += ms;
    }
    if ops > 0 {
        for (kind, ms) in &f.cpu_ms {
            f.cpu_us_per_op
                .insert(kind.clone(), ms * 1000.0 / ops as f64);
        }
        f.total_cpu_us_per_op = f.cpu_us_per_op.values().sum();
        if f.total_cpu_us_per_op > 0.0 {
            f.ops_per_s_bound = Some(cores as f64 * 1e6 / f.total_cpu_us_per_op);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_parsed_after_the_name() {
        let line = "7393 (tsn_server (x) y) S 1 2 3 4 5 6 7 8 9 10 120 30 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_ticks(line), Some(150));
        assert_eq!(parse_ticks("garbage"), None);
        assert_eq!(parse_ticks("1 (a) S 1"), None);
    }

    #[test]
    fn this_process_has_ticks() {
        assert!(ticks_of(std::process::id()).is_some());
        assert!(ticks_per_s() > 0);
    }

    #[test]
    fn cost_is_split_by_kind_and_divided_by_ops() {
        let tracked = vec![
            Tracked {
                kind: "primary".into(),
                pid: 1,
            },
            Tracked {
                kind: "primary".into(),
                pid: 2,
            },
            Tracked {
                kind: "bench".into(),
                pid: 3,
            },
            Tracked {
                kind: "gone".into(),
                pid: 4,
            },
        ];
        let before = Snapshot {
            ticks: BTreeMap::from([(1, 100), (2, 0), (3, 10), (4, 5)]),
        };
        let after = Snapshot {
            ticks: BTreeMap::from([(1, 200), (2, 100), (3, 60)]),
        };
        let f = figures_with(&tracked, &before, &after, 1000, 2, 100);
        assert_eq!(f.cpu_ms.get("primary"), Some(&2000.0));
        assert_eq!(f.cpu_ms.get("bench"), Some(&500.0));
        assert_eq!(f.cpu_ms.get("gone"), None);
        assert_eq!(f.cpu_us_per_op.get("primary"), Some(&2000.0));
        assert_eq!(f.total_cpu_us_per_op, 2500.0);
        assert_eq!(f.ops_per_s_bound, Some(800.0));
    }
}
