//! One process of a test: spawned, watched, signalled, restarted, and never
//! left behind.
//!
//! A [`Proc`] owns its child. Dropping it kills the child (SIGKILL) and
//! reaps it, so a test that panics halfway leaves no process running. On
//! Linux the child also gets SIGKILL when the thread that spawned it exits
//! (`PR_SET_PDEATHSIG`), which covers a test binary that is itself killed.
//! Output goes to two log files in the test's directory, appended to across
//! restarts, with a marker line in the stderr log at each start.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::limits::{
    LOG_TAIL_READ_MAX_BYTES, POLL_INTERVAL_MS, PROC_READY_DEADLINE_MS, READY_CONNECT_TIMEOUT_MS,
    START_ATTEMPTS_MAX, STOP_DEADLINE_MS,
};
use crate::logs::{file_len, read_from, tail_of};
use crate::port::{free_port, is_address_in_use};

/// How a start is recognised as complete.
#[derive(Clone, Debug)]
pub enum Ready {
    /// The process accepts TCP connections on its port.
    Listening,
    /// The process printed this text on stdout (since this start), and
    /// accepts connections on its port.
    StdoutContains(String),
}

/// Everything needed to start, and start again, one process.
#[derive(Clone, Debug)]
pub struct ProcSpec {
    /// Short unique name within the test, used for the log files.
    pub name: String,
    pub bin: PathBuf,
    pub args: Vec<String>,
    /// The port the process listens on (it is in `args` too).
    pub port: u16,
    /// The address it listens on (127.0.0.1, or its host's in a test
    /// network).
    pub host: String,
    pub ready: Ready,
}

/// Why a start failed.
#[derive(Debug)]
enum StartFailure {
    /// The port was taken: try another one.
    AddressInUse,
    /// Anything else; the text says what, with the process's output.
    Other(String),
}

pub struct Proc {
    spec: ProcSpec,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
    child: Option<Child>,
    paused: bool,
    starts: u32,
    /// Length of the stdout log when the current run started.
    stdout_offset: u64,
    stderr_offset: u64,
}

impl Proc {
    /// Starts a process on a port picked here, passing the port to
    /// `make_args`; tries again on another port when the process says the
    /// port is in use. Returns once the process is ready.
    pub async fn start_on_free_port(
        name: &str,
        bin: &Path,
        logs_dir: &Path,
        ready: Ready,
        make_args: impl Fn(u16) -> Vec<String>,
    ) -> anyhow::Result<Proc> {
        Proc::start_on(name, bin, logs_dir, ready, None, make_args).await
    }

    /// Starts a process on `port` if given (failing if it is taken), else
    /// on a free port as [`Proc::start_on_free_port`] does.
    pub async fn start_on(
        name: &str,
        bin: &Path,
        logs_dir: &Path,
        ready: Ready,
        port: Option<u16>,
        make_args: impl Fn(u16) -> Vec<String>,
    ) -> anyhow::Result<Proc> {
        Proc::start_at(name, bin, logs_dir, ready, "127.0.0.1", port, make_args).await
    }

    /// [`Proc::start_on`] for a process that listens on `host`.
    pub async fn start_at(
        name: &str,
        bin: &Path,
        logs_dir: &Path,
        ready: Ready,
        host: &str,
        port: Option<u16>,
        make_args: impl Fn(u16) -> Vec<String>,
    ) -> anyhow::Result<Proc> {
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS_MAX {
            if let (Some(fixed), true) = (port, attempt > 1) {
                bail!("{name}: port {fixed} is already in use");
            }
            let port = port.unwrap_or_else(free_port);
            let spec = ProcSpec {
                name: name.to_string(),
                bin: bin.to_path_buf(),
                args: make_args(port),
                port,
                host: host.to_string(),
                ready: ready.clone(),
            };
            let mut proc = Proc::new(spec, logs_dir)?;
            match proc.start_once().await {
                Ok(()) => return Ok(proc),
                Err(StartFailure::AddressInUse) => {
                    last = format!("attempt {attempt}: port {port} was in use");
                    // Dropping `proc` reaps the failed child.
                }
                Err(StartFailure::Other(why)) => bail!("{why}"),
            }
        }
        bail!("{name}: no start succeeded in {START_ATTEMPTS_MAX} attempts; {last}")
    }

    /// A process that is not running yet; [`Proc::restart`] starts it.
    pub fn new(spec: ProcSpec, logs_dir: &Path) -> anyhow::Result<Proc> {
        assert!(!spec.name.is_empty(), "a process needs a name");
        std::fs::create_dir_all(logs_dir)
            .with_context(|| format!("creating {}", logs_dir.display()))?;
        Ok(Proc {
            stdout_log: logs_dir.join(format!("{}.stdout.log", spec.name)),
            stderr_log: logs_dir.join(format!("{}.stderr.log", spec.name)),
            spec,
            child: None,
            paused: false,
            starts: 0,
            stdout_offset: 0,
            stderr_offset: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &ProcSpec {
        &self.spec
    }

    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.spec.host, self.spec.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether the child is still running (a paused child is running).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    /// The exit code if the child has exited (`None` when killed by a
    /// signal or still running).
    pub fn exit_code(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    pub fn stdout_log(&self) -> &Path {
        &self.stdout_log
    }

    pub fn stderr_log(&self) -> &Path {
        &self.stderr_log
    }

    /// What the current run printed on stdout so far.
    pub fn stdout_since_start(&self) -> String {
        read_from(
            &self.stdout_log,
            self.stdout_offset,
            LOG_TAIL_READ_MAX_BYTES,
        )
    }

    /// What the current run printed on stderr so far.
    pub fn stderr_since_start(&self) -> String {
        read_from(
            &self.stderr_log,
            self.stderr_offset,
            LOG_TAIL_READ_MAX_BYTES,
        )
    }

    /// The tails of both log files, for a failure report.
    pub fn log_tails(&self) -> String {
        format!(
            "=== {} ({} start(s))\n{}\n{}",
            self.spec.name,
            self.starts,
            tail_of(&self.stdout_log),
            tail_of(&self.stderr_log)
        )
    }

    /// SIGKILL, then reap. Does nothing if the child is not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Kill fails only when the child has already exited; either
            // way, wait reaps it so no zombie is left.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGTERM, then wait up to [`STOP_DEADLINE_MS`] for a graceful exit;
    /// SIGKILL after that. Returns the exit code of a graceful exit.
    pub async fn stop(&mut self) -> Option<i32> {
        let pid = self.pid_i32()?;
        self.signal(pid, libc::SIGTERM);
        if self.paused {
            // A stopped process handles SIGTERM only once it runs again.
            self.signal(pid, libc::SIGCONT);
            self.paused = false;
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(STOP_DEADLINE_MS) {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return status.code();
                }
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
        eprintln!(
            "{} did not stop within {STOP_DEADLINE_MS} ms of SIGTERM; killing it",
            self.spec.name
        );
        self.kill9();
        None
    }

    /// SIGSTOP: the process stays, frozen, as if its machine hung.
    pub fn pause(&mut self) {
        if let Some(pid) = self.pid_i32() {
            self.signal(pid, libc::SIGSTOP);
            self.paused = true;
        }
    }

    /// SIGCONT: a paused process runs again.
    pub fn resume(&mut self) {
        if let Some(pid) = self.pid_i32() {
            self.signal(pid, libc::SIGCONT);
            self.paused = false;
        }
    }

    /// Starts the process again with the same arguments (the same port, so
    /// others find it where it was), killing it first if it still runs.
    /// Returns once it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS_MAX {
            match self.start_once().await {
                Ok(()) => return Ok(()),
                Err(StartFailure::AddressInUse) => {
                    last = format!("attempt {attempt}: port {} in use", self.spec.port);
                    self.kill9();
                    tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
                }
                Err(StartFailure::Other(why)) => bail!("{why}"),
            }
        }
        bail!("{}: restart failed; {last}", self.spec.name)
    }

    fn pid_i32(&mut self) -> Option<i32> {
        if !self.is_running() {
            return None;
        }
        self.pid().and_then(|p| i32::try_from(p).ok())
    }

    fn signal(&self, pid: i32, sig: i32) {
        assert!(pid > 0, "never signal a process group");
        // SAFETY: kill(2) has no memory effects; `pid` is our own child,
        // which has not been reaped (is_running checked), so the pid cannot
        // have been reused by another process.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            eprintln!(
                "signal {sig} to {} (pid {pid}) failed: {}",
                self.spec.name,
                std::io::Error::last_os_error()
            );
        }
    }

    /// Spawns the child and waits until it is ready, has exited, or the
    /// ready deadline passed.
    async fn start_once(&mut self) -> Result<(), StartFailure> {
        self.spawn()
            .map_err(|e| StartFailure::Other(format!("{e:#}")))?;
        let start = Instant::now();
        let deadline = Duration::from_millis(PROC_READY_DEADLINE_MS);
        loop {
            if let Some(code) = self.exited() {
                let stderr = self.stderr_since_start();
                if is_address_in_use(&stderr) || is_address_in_use(&self.stdout_since_start()) {
                    return Err(StartFailure::AddressInUse);
                }
                return Err(StartFailure::Other(format!(
                    "{} exited during start-up ({code})\n{}",
                    self.spec.name,
                    self.log_tails()
                )));
            }
            if self.is_ready().await && self.is_running() {
                return Ok(());
            }
            if start.elapsed() >= deadline {
                let tails = self.log_tails();
                self.kill9();
                return Err(StartFailure::Other(format!(
                    "{} not ready within {PROC_READY_DEADLINE_MS} ms ({:?})\n{tails}",
                    self.spec.name, self.spec.ready
                )));
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }

    /// `Some(description)` once the child has exited.
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait: {e}")),
        }
    }

    async fn is_ready(&self) -> bool {
        if let Ready::StdoutContains(text) = &self.spec.ready {
            if !self.stdout_since_start().contains(text.as_str()) {
                return false;
            }
        }
        let connect = tokio::net::TcpStream::connect((self.spec.host.as_str(), self.spec.port));
        matches!(
            tokio::time::timeout(Duration::from_millis(READY_CONNECT_TIMEOUT_MS), connect).await,
            Ok(Ok(_))
        )
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "spawn over a running child");
        self.starts += 1;
        let mut stderr = open_log(&self.stderr_log)?;
        writeln!(
            stderr,
            "==== start #{} of {}: {} {}",
            self.starts,
            self.spec.name,
            self.spec.bin.display(),
            self.spec.args.join(" ")
        )
        .with_context(|| format!("writing {}", self.stderr_log.display()))?;
        let stdout = open_log(&self.stdout_log)?;
        self.stdout_offset = file_len(&self.stdout_log);
        self.stderr_offset = file_len(&self.stderr_log);
        let mut cmd = Command::new(&self.spec.bin);
        // Plain text in the log files: no colour escapes.
        cmd.args(&self.spec.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| anyhow!("spawning {}: {e}", self.spec.bin.display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn open_log(path: &Path) -> anyhow::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Asks the kernel to SIGKILL the child when the spawning thread exits, so
/// that no tsn process outlives a test binary that was killed outright.
/// (The signal follows the *thread*: the harness spawns from the test's own
/// thread or a runtime worker, which both live as long as the test.)
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec; it
        // calls only prctl(2), which is async-signal-safe, and allocates
        // nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, dir: &Path, script: &str, port: u16, ready: Ready) -> Proc {
        let spec = ProcSpec {
            name: name.to_string(),
            bin: PathBuf::from("/bin/sh"),
            args: vec!["-c".to_string(), script.to_string()],
            port,
            host: "127.0.0.1".to_string(),
            ready,
        };
        Proc::new(spec, dir).expect("proc")
    }

    #[tokio::test]
    async fn exit_during_start_is_reported_with_output() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut p = sh(
            "fails",
            dir.path(),
            "echo boom >&2; exit 3",
            free_port(),
            Ready::Listening,
        );
        let err = p.restart().await.expect_err("must fail");
        let text = format!("{err:#}");
        assert!(text.contains("exited during start-up"), "{text}");
        assert!(text.contains("boom"), "{text}");
        assert_eq!(p.starts(), 1);
    }

    #[tokio::test]
    async fn address_in_use_is_retried_then_given_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut p = sh(
            "busy",
            dir.path(),
            "echo 'Error: Address already in use (os error 98)' >&2; exit 1",
            free_port(),
            Ready::Listening,
        );
        let err = p.restart().await.expect_err("must fail");
        assert!(format!("{err:#}").contains("in use"), "{err:#}");
        assert_eq!(p.starts(), START_ATTEMPTS_MAX);
    }

    #[tokio::test]
    async fn kill_pause_resume_and_drop() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A listener that never becomes ready is enough to test signals:
        // spawn directly instead of waiting for readiness.
        let mut p = sh(
            "sleeper",
            dir.path(),
            "exec sleep 60",
            free_port(),
            Ready::Listening,
        );
        p.spawn().expect("spawn");
        assert!(p.is_running());
        p.pause();
        assert!(p.is_paused() && p.is_running());
        p.resume();
        assert!(!p.is_paused());
        let code = p.stop().await;
        assert_eq!(code, None, "sleep dies of SIGTERM, no exit code");
        assert!(!p.is_running());

        p.spawn().expect("spawn again");
        let pid = p.pid().expect("pid") as i32;
        drop(p);
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "dropping a Proc kills and reaps its child");
    }

    #[tokio::test]
    async fn ready_line_is_looked_for_in_this_run_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut p = sh(
            "printer",
            dir.path(),
            "echo 'ready now'; exit 0",
            port,
            Ready::StdoutContains("ready now".to_string()),
        );
        // It prints the line but never listens, then exits: a failure.
        let err = p.restart().await.expect_err("never listens");
        assert!(format!("{err:#}").contains("exited during start-up"));
        assert!(std::fs::read_to_string(p.stdout_log())
            .expect("log")
            .contains("ready now"));
        assert!(std::fs::read_to_string(p.stderr_log())
            .expect("log")
            .contains("==== start #1 of printer"));
    }
}
