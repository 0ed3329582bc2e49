//! The nemesis of a test network: cuts and heals the links between hosts,
//! one way or both. A one-way cut from A to B drops every packet A sends
//! to B (in A's namespace, `iptables -A OUTPUT -d B -j DROP`): B still
//! reaches A, but no TCP exchange completes, as when a router loses one
//! direction. Pausing (SIGSTOP) and killing processes are the
//! deployment's: [`crate::Deployment::member`] gives each one's
//! [`crate::proc::Proc`].

use tsn_cluster::sync::lock;

use super::{run, Network};

impl Network {
    /// Drops every packet `from` sends to `to` until healed.
    pub fn cut_one_way(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let (f, t) = (self.host(from).clone(), self.host(to).clone());
        if !lock(&self.cuts).insert((from.to_string(), to.to_string())) {
            return Ok(());
        }
        let rule = ["-A", "OUTPUT", "-d", t.ip.as_str(), "-j", "DROP"];
        iptables(&f.ns, &rule)
    }

    /// Lets `from` reach `to` again.
    pub fn heal_one_way(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let (f, t) = (self.host(from).clone(), self.host(to).clone());
        if !lock(&self.cuts).remove(&(from.to_string(), to.to_string())) {
            return Ok(());
        }
        let rule = ["-D", "OUTPUT", "-d", t.ip.as_str(), "-j", "DROP"];
        iptables(&f.ns, &rule)
    }

    /// Cuts both ways between every host of `a` and every host of `b`.
    pub fn cut(&self, a: &[&str], b: &[&str]) -> anyhow::Result<()> {
        for x in a {
            for y in b {
                self.cut_one_way(x, y)?;
                self.cut_one_way(y, x)?;
            }
        }
        Ok(())
    }

    /// Heals both ways between every host of `a` and every host of `b`.
    pub fn heal(&self, a: &[&str], b: &[&str]) -> anyhow::Result<()> {
        for x in a {
            for y in b {
                self.heal_one_way(x, y)?;
                self.heal_one_way(y, x)?;
            }
        }
        Ok(())
    }

    /// Heals every cut.
    pub fn heal_all(&self) -> anyhow::Result<()> {
        let cuts: Vec<(String, String)> = lock(&self.cuts).iter().cloned().collect();
        for (from, to) in cuts {
            self.heal_one_way(&from, &to)?;
        }
        Ok(())
    }

    /// The links cut now, (from, to).
    pub fn cuts(&self) -> Vec<(String, String)> {
        lock(&self.cuts).iter().cloned().collect()
    }
}

fn iptables(ns: &str, rule: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["ip", "netns", "exec", ns, "iptables", "-w", "5"];
    argv.extend_from_slice(rule);
    run(&argv).map(drop)
}
