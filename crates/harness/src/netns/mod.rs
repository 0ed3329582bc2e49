//! A test network of real Linux network namespaces: every host of a test
//! (the coordinator, each server, each sync service, the client) in a
//! namespace of its own, all joined by one bridge that lives in a
//! namespace of its own too, so that nothing is added to the machine's own
//! network (the addresses, in [`SUBNET`], exist only inside the test's
//! namespaces, and two tests' networks never see each other).
//!
//! The processes run in their host's namespace (`ip netns exec`); the
//! test's own client code runs on a thread that entered the client host's
//! namespace ([`Network::run_in`]), so its sockets are the client's. The
//! nemesis ([`nemesis`]) cuts and heals links between hosts, one way or
//! both; pauses and kills are the deployment's ([`crate::proc::Proc`]).
//!
//! Names carry the test process's pid and a counter, so concurrent tests
//! never share one; a [`Network`] deletes its namespaces when dropped,
//! and a new one first deletes what a test that died left behind (names
//! of this prefix whose pid is gone). Every `ip`/`iptables` command runs
//! with a time limit. Root is needed: [`unavailable`] says why a test
//! must skip.

pub mod nemesis;

use std::collections::BTreeSet;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tsn_cluster::sync::lock;

use crate::deployment::Member;

/// Every namespace a test network makes starts with this.
pub const NETNS_PREFIX: &str = "tsnnet";
/// The /24 the hosts' addresses are taken from (host `i` is `.i+1`).
pub const SUBNET: &str = "10.77.0";
/// Most hosts in one network (addresses .1 to .250).
pub const HOSTS_MAX: usize = 250;
/// Time limit of one `ip` or `iptables` command.
pub const IP_COMMAND_TIMEOUT_MS: u64 = 10_000;
/// How often a running command is looked at.
const COMMAND_POLL_MS: u64 = 5;
/// Where `ip netns` keeps the namespaces' handles.
const NETNS_DIR: &str = "/run/netns";
/// The name of the client host of [`Network::for_deployment`].
pub const CLIENT_HOST: &str = "client";

/// Why this machine cannot run namespace tests (not root, no `ip` or
/// `iptables`); `None` when it can.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root".to_string());
    }
    for tool in ["ip", "iptables"] {
        if run(&[tool, "-V"]).is_err() && run(&[tool, "--version"]).is_err() {
            return Some(format!("`{tool}` is not installed (iproute2, iptables)"));
        }
    }
    None
}

/// One host: its name in the test, its namespace, its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: String,
}

/// The network of one test; dropped, it deletes every namespace it made.
#[derive(Debug)]
pub struct Network {
    switch: String,
    hosts: Vec<Host>,
    /// Namespaces made so far (deleted on drop, even after a failed setup).
    made: Mutex<Vec<String>>,
    /// (from, to) links cut one way now.
    cuts: Mutex<BTreeSet<(String, String)>>,
}

/// The host name of a deployment's member: the name of its files.
pub fn member_host(member: Member) -> String {
    crate::deployment::member_name(member)
}

impl Network {
    /// A network of hosts named `names`, in that order of addresses.
    pub fn new(names: &[String]) -> anyhow::Result<Network> {
        if let Some(why) = unavailable() {
            bail!("{why}");
        }
        if names.is_empty() || names.len() > HOSTS_MAX {
            bail!("1..={HOSTS_MAX} hosts, not {}", names.len());
        }
        cleanup_leftovers();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "{NETNS_PREFIX}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let net = Network {
            switch: format!("{prefix}-sw"),
            hosts: names
                .iter()
                .enumerate()
                .map(|(i, name)| Host {
                    name: name.clone(),
                    ns: format!("{prefix}-{i}"),
                    ip: format!("{SUBNET}.{}", i + 1),
                })
                .collect(),
            made: Mutex::new(Vec::new()),
            cuts: Mutex::new(BTreeSet::new()),
        };
        net.build()?;
        Ok(net)
    }

    /// A host for every member of a deployment of `clusters` clusters with
    /// `secondaries` secondaries each (server ids from 1, as the
    /// deployment gives them), and [`CLIENT_HOST`].
    pub fn for_deployment(clusters: u32, secondaries: u32) -> anyhow::Result<Network> {
        let mut names = vec![member_host(Member::Coordinator), CLIENT_HOST.to_string()];
        for cluster in 1..=clusters {
            for server_id in 1..=secondaries + 1 {
                names.push(member_host(Member::Server { cluster, server_id }));
            }
            names.push(member_host(Member::Sync { cluster }));
        }
        Network::new(&names)
    }

    fn build(&self) -> anyhow::Result<()> {
        self.add_ns(&self.switch)?;
        let sw = self.switch.as_str();
        ip(&["-n", sw, "link", "set", "lo", "up"])?;
        ip(&["-n", sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", sw, "link", "set", "br0", "up"])?;
        for (i, h) in self.hosts.iter().enumerate() {
            self.add_ns(&h.ns)?;
            let port = format!("v{i}");
            ip(&[
                "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &h.ns,
            ])?;
            ip(&["-n", sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &h.ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &h.ns,
                "addr",
                "add",
                &format!("{}/24", h.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &h.ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    fn add_ns(&self, ns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", ns])?;
        lock(&self.made).push(ns.to_string());
        Ok(())
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host called `name`; panics if there is none (a test's mistake).
    pub fn host(&self, name: &str) -> &Host {
        match self.hosts.iter().find(|h| h.name == name) {
            Some(h) => h,
            None => panic!("no host {name:?} in this network"),
        }
    }

    /// The host of a deployment's member.
    pub fn host_of(&self, member: Member) -> &Host {
        self.host(&member_host(member))
    }

    /// The words that run a command in `host`'s namespace.
    pub fn exec_prefix(&self, host: &Host) -> Vec<String> {
        ["ip", "netns", "exec", host.ns.as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Runs `f` to completion on a thread inside `host`'s namespace, on a
    /// runtime of its own: every socket it opens (and every process it
    /// starts) belongs to that host. Blocks the caller meanwhile.
    pub fn run_in<F, Fut, T>(&self, host: &str, f: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        let ns = self.host(host).ns.clone();
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                if let Err(e) = enter(&ns) {
                    panic!("cannot enter namespace {ns}: {e:#}");
                }
                // Its worker threads are started from this thread, so they
                // are in the namespace too.
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => panic!("no runtime: {e}"),
                };
                runtime.block_on(f())
            });
            match thread.join() {
                Ok(t) => t,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in lock(&self.made).drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("cannot delete namespace {ns}: {e:#}");
            }
        }
    }
}

/// Moves the calling thread into namespace `ns`.
fn enter(ns: &str) -> anyhow::Result<()> {
    let path = format!("{NETNS_DIR}/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns(2) on a descriptor we hold open; it changes only the
    // calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Deletes the namespaces of this prefix left by test processes that are
/// gone (a test killed before its `Drop` ran).
pub fn cleanup_leftovers() {
    let Ok(listing) = ip(&["netns", "list"]) else {
        return;
    };
    for line in listing.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let gone = pid
            .parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
        if gone {
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("cannot delete leftover namespace {name}: {e:#}");
            }
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["ip"];
    all.extend_from_slice(args);
    run(&all)
}

/// Runs a command with [`IP_COMMAND_TIMEOUT_MS`]; its stdout, or an error
/// with its stderr.
pub(crate) fn run(argv: &[&str]) -> anyhow::Result<String> {
    let (bin, args) = argv.split_first().ok_or_else(|| anyhow!("no command"))?;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let start = Instant::now();
    let deadline = Duration::from_millis(IP_COMMAND_TIMEOUT_MS);
    loop {
        match child.try_wait()? {
            Some(_) => break,
            None if start.elapsed() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`{}` took more than {IP_COMMAND_TIMEOUT_MS} ms",
                    argv.join(" ")
                );
            }
            None => std::thread::sleep(Duration::from_millis(COMMAND_POLL_MS)),
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
