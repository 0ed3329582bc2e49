//! Running `tsn_client` the way a user does: one command with arguments,
//! or an interactive session fed through a pipe.
//!
//! The client's environment is cleaned of `RUST_LOG`, so that its output is
//! what a user sees by default whatever the test runner's environment says.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use crate::bins::{bin_path, CLIENT};
use crate::limits::{CLIENT_OUTPUT_MAX_BYTES, CLIENT_RUN_DEADLINE_MS, POLL_INTERVAL_MS};
use crate::proc::die_with_parent;

/// Runs `tsn_client args…` with no input and returns (exit code, stdout,
/// stderr); the code is -1 when a signal ended the client. Panics if the
/// client runs longer than [`CLIENT_RUN_DEADLINE_MS`] (and kills it).
pub async fn run_client(args: &[&str]) -> (i32, String, String) {
    run(args, None).await
}

/// Like [`run_client`], with `input` on the client's stdin (then closed).
pub async fn run_client_with_stdin(args: &[&str], input: &str) -> (i32, String, String) {
    run(args, Some(input)).await
}

/// With TLS on in this process (a deployment started with it), the
/// client is given `--tls-ca` first: it verifies the servers as a user's
/// client does, and presents no certificate.
fn command(args: &[&str]) -> Command {
    let mut std_cmd = std::process::Command::new(bin_path(CLIENT));
    if let Some(tls) = tsn_cluster::tls::process_tls() {
        std_cmd.arg("--tls-ca").arg(&tls.files().ca);
    }
    std_cmd.args(args).env_remove("RUST_LOG");
    die_with_parent(&mut std_cmd);
    let mut cmd = Command::from(std_cmd);
    cmd.kill_on_drop(true);
    cmd
}

async fn run(args: &[&str], input: Option<&str>) -> (i32, String, String) {
    let mut cmd = command(args);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("spawning tsn_client {args:?}: {e}"),
    };
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A client that exits before reading all of its input closes the
        // pipe; that is its right, and its exit status tells the story.
        let _ = stdin.write_all(text.as_bytes()).await;
        drop(stdin);
    }
    let deadline = Duration::from_millis(CLIENT_RUN_DEADLINE_MS);
    // On timeout the future, and with it the child, is dropped: killed.
    let output = match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("waiting for tsn_client {args:?}: {e}"),
        Err(_) => panic!("tsn_client {args:?} did not exit within {CLIENT_RUN_DEADLINE_MS} ms"),
    };
    assert!(
        output.stdout.len() <= CLIENT_OUTPUT_MAX_BYTES,
        "tsn_client {args:?} printed {} bytes",
        output.stdout.len()
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running interactive `tsn_client`: lines go in through a pipe, output is
/// collected in the background and can be waited on.
pub struct InteractiveClient {
    args: Vec<String>,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl InteractiveClient {
    pub fn spawn(args: &[&str]) -> InteractiveClient {
        let mut cmd = command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("spawning tsn_client {args:?}: {e}"),
        };
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(collect(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect(err, stderr.clone()));
        }
        InteractiveClient {
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// Types one line (a newline is added).
    pub async fn send_line(&mut self, line: &str) {
        assert!(!line.contains('\n'), "one line at a time");
        let Some(stdin) = self.stdin.as_mut() else {
            panic!("stdin of tsn_client {:?} is already closed", self.args);
        };
        let typed = format!("{line}\n");
        if let Err(e) = stdin.write_all(typed.as_bytes()).await {
            panic!(
                "tsn_client {:?} no longer reads its input ({e})\nstdout:\n{}\nstderr:\n{}",
                self.args,
                self.stdout(),
                self.stderr()
            );
        }
        let _ = stdin.flush().await;
    }

    /// Closes stdin: the end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn stdout(&self) -> String {
        read(&self.stdout)
    }

    pub fn stderr(&self) -> String {
        read(&self.stderr)
    }

    /// Waits until stdout satisfies `check`; panics with `what` and the
    /// output after `deadline`.
    pub async fn wait_stdout(&self, deadline: Duration, what: &str, check: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            if check(&self.stdout()) {
                return;
            }
            if start.elapsed() >= deadline {
                panic!(
                    "tsn_client {:?}: timed out after {} ms waiting for {what}\nstdout:\n{}\nstderr:\n{}",
                    self.args,
                    deadline.as_millis(),
                    self.stdout(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }

    /// The exit code once the client exits (-1: ended by a signal), or
    /// `None` if it still runs after `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(Ok(status)) => Some(status.code().unwrap_or(-1)),
            Ok(Err(e)) => panic!("waiting for tsn_client {:?}: {e}", self.args),
            Err(_) => None,
        }
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

async fn collect(mut from: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut text = into.lock().unwrap_or_else(|p| p.into_inner());
        if text.len() + n > CLIENT_OUTPUT_MAX_BYTES {
            text.push_str("\n[output cut: too long]\n");
            return;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

fn read(text: &Mutex<String>) -> String {
    text.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
