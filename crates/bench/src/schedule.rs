//! The open loop's schedule: when each post is due. Pure.
//!
//! Latency in an open loop is counted from the scheduled time, not from
//! when the post was actually sent: a server that stalls makes the posts
//! due during the stall wait, and that wait is what their users would see.
//! Counting from the send would hide it ("coordinated omission").

use rand::Rng;

use crate::cli::ScheduleKind;

pub struct Schedule {
    kind: ScheduleKind,
    rate_per_s: f64,
    /// Seconds from the start of the phase to the last due time.
    at_s: f64,
}

impl Schedule {
    pub fn new(kind: ScheduleKind, rate_per_s: f64) -> Schedule {
        assert!(rate_per_s.is_finite() && rate_per_s > 0.0);
        Schedule {
            kind,
            rate_per_s,
            at_s: 0.0,
        }
    }

    /// The next due time, in seconds from the start of the phase.
    pub fn next_s(&mut self, rng: &mut impl Rng) -> f64 {
        let gap = match self.kind {
            ScheduleKind::Fixed => 1.0 / self.rate_per_s,
            ScheduleKind::Poisson => {
                // 1 - u is in (0, 1], so the logarithm is finite.
                let u: f64 = rng.random();
                -(1.0 - u).ln() / self.rate_per_s
            }
        };
        self.at_s += gap;
        self.at_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn due_times(kind: ScheduleKind, rate: f64, until_s: f64) -> Vec<f64> {
        let mut s = Schedule::new(kind, rate);
        let mut rng = StdRng::seed_from_u64(1);
        let mut out = Vec::new();
        loop {
            let t = s.next_s(&mut rng);
            if t >= until_s {
                return out;
            }
            out.push(t);
        }
    }

    #[test]
    fn a_fixed_schedule_has_equal_gaps() {
        let t = due_times(ScheduleKind::Fixed, 100.0, 1.0);
        assert!((98..=100).contains(&t.len()), "{}", t.len());
        assert!(t.windows(2).all(|w| ((w[1] - w[0]) - 0.01).abs() < 1e-9));
    }

    #[test]
    fn a_poisson_schedule_keeps_its_rate() {
        let t = due_times(ScheduleKind::Poisson, 1000.0, 20.0);
        let rate = t.len() as f64 / 20.0;
        assert!((950.0..1050.0).contains(&rate), "{rate}");
        assert!(t.windows(2).all(|w| w[1] >= w[0]));
    }
}
