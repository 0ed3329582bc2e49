//! The nemesis of `tsn_chaos` (`make chaos`): which fault comes next and for
//! how long, drawn from a seeded generator, so that a failed run can be
//! replayed with its seed. Pure: no process is touched here.
//!
//! The faults are those a machine room has: a process killed with `kill -9`
//! (primary, secondary, sync service, coordinator), a process frozen
//! (`SIGSTOP`, as a long GC pause or a swapping machine does). One fault is
//! in effect at a time; the runner heals it (restart, `SIGCONT`) and waits
//! for the deployment to be whole before the next, so that every fault hits
//! a deployment that can survive it.

/// Shortest time a fault stays in effect.
pub const FAULT_MIN_MS: u64 = 200;
/// Longest time a fault stays in effect: a few failure timeouts, so a frozen
/// primary is replaced as often as not.
pub const FAULT_MAX_MS: u64 = 3_000;

/// One fault and how long it lasts before it is healed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub lasts_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// kill -9 of the cluster's primary; restarted after the fault.
    KillPrimary { cluster: u32 },
    /// kill -9 of a secondary of the cluster (the `pick`-th, modulo how
    /// many there are); restarted after.
    KillSecondary { cluster: u32, pick: u32 },
    /// kill -9 of the cluster's sync service; restarted after.
    KillSync { cluster: u32 },
    /// kill -9 of the coordinator; restarted after.
    KillCoordinator,
    /// SIGSTOP of the cluster's primary; SIGCONT after.
    PausePrimary { cluster: u32 },
    /// SIGSTOP of the cluster's sync service; SIGCONT after.
    PauseSync { cluster: u32 },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            FaultKind::KillPrimary { cluster } => {
                format!("kill -9 the primary of cluster {cluster}")
            }
            FaultKind::KillSecondary { cluster, .. } => {
                format!("kill -9 a secondary of cluster {cluster}")
            }
            FaultKind::KillSync { cluster } => {
                format!("kill -9 the sync service of cluster {cluster}")
            }
            FaultKind::KillCoordinator => "kill -9 the coordinator".to_string(),
            FaultKind::PausePrimary { cluster } => {
                format!("SIGSTOP the primary of cluster {cluster}")
            }
            FaultKind::PauseSync { cluster } => {
                format!("SIGSTOP the sync service of cluster {cluster}")
            }
        };
        write!(f, "{what} for {} ms", self.lasts_ms)
    }
}

/// The seeded sequence of faults of one run.
#[derive(Clone, Debug)]
pub struct Nemesis {
    rng: SplitMix64,
    clusters: u32,
    secondaries: u32,
}

impl Nemesis {
    /// A nemesis for `clusters` clusters (1..) of `secondaries` secondaries
    /// each. Without a secondary no primary is killed or frozen: nothing
    /// could take over, and the cluster would only wait.
    pub fn new(seed: u64, clusters: u32, secondaries: u32) -> Nemesis {
        assert!(clusters >= 1, "a deployment has a cluster");
        Nemesis {
            rng: SplitMix64(seed),
            clusters,
            secondaries,
        }
    }

    /// The next fault.
    pub fn next_fault(&mut self) -> Fault {
        let cluster = 1 + self.below(u64::from(self.clusters)) as u32;
        let kinds: &[u8] = if self.secondaries > 0 {
            &[0, 1, 2, 3, 4, 5]
        } else {
            &[2, 3, 5]
        };
        let kind = match kinds[self.below(kinds.len() as u64) as usize] {
            0 => FaultKind::KillPrimary { cluster },
            1 => FaultKind::KillSecondary {
                cluster,
                pick: self.below(u64::from(self.secondaries.max(1))) as u32,
            },
            2 => FaultKind::KillSync { cluster },
            3 => FaultKind::KillCoordinator,
            4 => FaultKind::PausePrimary { cluster },
            _ => FaultKind::PauseSync { cluster },
        };
        let lasts_ms = FAULT_MIN_MS + self.below(FAULT_MAX_MS - FAULT_MIN_MS + 1);
        Fault { kind, lasts_ms }
    }

    /// A number in `0..n` (n ≥ 1).
    fn below(&mut self, n: u64) -> u64 {
        self.rng.next() % n.max(1)
    }
}

/// SplitMix64: a small, well-mixed generator; enough to draw faults, and
/// the same on every machine for a seed.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_faults() {
        let a: Vec<Fault> = {
            let mut n = Nemesis::new(42, 3, 1);
            (0..50).map(|_| n.next_fault()).collect()
        };
        let mut n = Nemesis::new(42, 3, 1);
        let b: Vec<Fault> = (0..50).map(|_| n.next_fault()).collect();
        assert_eq!(a, b);
        let mut other = Nemesis::new(43, 3, 1);
        let c: Vec<Fault> = (0..50).map(|_| other.next_fault()).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn faults_stay_within_the_deployment_and_the_time_bounds() {
        let mut n = Nemesis::new(7, 3, 2);
        let mut kinds = std::collections::HashSet::new();
        for _ in 0..1_000 {
            let f = n.next_fault();
            assert!((FAULT_MIN_MS..=FAULT_MAX_MS).contains(&f.lasts_ms), "{f:?}");
            let cluster = match f.kind {
                FaultKind::KillPrimary { cluster }
                | FaultKind::KillSync { cluster }
                | FaultKind::PausePrimary { cluster }
                | FaultKind::PauseSync { cluster } => cluster,
                FaultKind::KillSecondary { cluster, pick } => {
                    assert!(pick < 2, "{f:?}");
                    cluster
                }
                FaultKind::KillCoordinator => 1,
            };
            assert!((1..=3).contains(&cluster), "{f:?}");
            kinds.insert(std::mem::discriminant(&f.kind));
        }
        assert_eq!(kinds.len(), 6, "every kind of fault comes up");
    }

    #[test]
    fn without_secondaries_no_primary_is_touched() {
        let mut n = Nemesis::new(1, 2, 0);
        for _ in 0..500 {
            let f = n.next_fault();
            assert!(
                !matches!(
                    f.kind,
                    FaultKind::KillPrimary { .. }
                        | FaultKind::PausePrimary { .. }
                        | FaultKind::KillSecondary { .. }
                ),
                "{f:?}"
            );
        }
    }
}
