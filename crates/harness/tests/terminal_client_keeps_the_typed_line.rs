//! The interactive `tsn_client` at a real terminal: the binary runs inside
//! a pseudo-terminal, and what it draws is fed through a terminal emulator
//! (`vt100`), so the test reads the screen a person would see.
//!
//! In timeline mode a post that arrives while a line is half typed must
//! appear on its own line above the input line, which is drawn again
//! intact; finishing the line must post exactly what was typed.
//!
//! Build the binaries first: `cargo build --bins`.

use std::io::{ErrorKind, Write};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use expectrl::process::unix::PtyStream;
use expectrl::process::unix::UnixProcess;
use expectrl::Session;
use tsn_harness::bins::{bin_path, CLIENT};
use tsn_harness::limits::POLL_INTERVAL_MS;
use tsn_harness::Deployment;

/// The sync services' poll interval.
const Q_MS: u64 = 500;
/// How long the screen may take to show what the test waits for.
const SCREEN_DEADLINE_MS: u64 = 30_000;
/// How long the client may take to exit at the end of its input.
const EXIT_DEADLINE_MS: u64 = 5_000;
/// The size of the pseudo-terminal.
const ROWS: u16 = 30;
const COLS: u16 = 120;
/// Bytes read from the terminal at a time.
const READ_CHUNK_BYTES: usize = 4096;

/// The client's log level while under test: its log goes to a file (not
/// the screen), shown with the screen when the test fails.
const CLIENT_LOG_FILTER: &str = "debug,h2=info,hyper=info,hyper_util=info,tower=info,tonic=info";
/// The tail of the client's output shown when the test fails.
const TRANSCRIPT_SHOWN_MAX_BYTES: usize = 4096;

/// The client in a pseudo-terminal and the screen it drew.
struct Terminal {
    session: Session<UnixProcess, PtyStream>,
    screen: vt100::Parser,
    /// Every byte the client wrote to the terminal, for the failure report.
    transcript: Vec<u8>,
    /// The client's stderr (its log), kept off the screen.
    log: tempfile::NamedTempFile,
    /// What the test did and saw when, to set beside the client's log.
    events: Vec<String>,
}

impl Terminal {
    fn spawn(args: &[String]) -> Terminal {
        let log = match tempfile::NamedTempFile::new() {
            Ok(log) => log,
            Err(e) => panic!("creating the client's log file: {e}"),
        };
        // The shell turns echo on, as a terminal a person opens has it
        // (the pseudo-terminal starts without), sends the client's stderr
        // to the log file (the pseudo-terminal is set up as all three of
        // its streams first), then becomes the client.
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg("log=$1; shift; stty echo && exec \"$@\" 2>>\"$log\"")
            .arg("sh")
            .arg(log.path())
            .arg(bin_path(CLIENT))
            .args(args)
            .env("RUST_LOG", CLIENT_LOG_FILTER)
            .env("TERM", "xterm-256color");
        let mut session = match Session::spawn(command) {
            Ok(s) => s,
            Err(e) => panic!("starting tsn_client {args:?} in a pseudo-terminal: {e}"),
        };
        if let Err(e) = session.get_process_mut().set_window_size(COLS, ROWS) {
            panic!("sizing the pseudo-terminal: {e}");
        }
        let size = |n: u16| NonZeroU16::new(n).expect("a terminal has a size");
        Terminal {
            session,
            screen: vt100::Parser::new(size(ROWS), size(COLS), 0),
            transcript: Vec::new(),
            log,
            events: Vec::new(),
        }
    }

    /// Types `keys` (no newline is added).
    fn type_keys(&mut self, keys: &str) {
        self.send(keys.as_bytes());
    }

    fn send(&mut self, bytes: &[u8]) {
        self.event(&format!("sending {:?}", bytes.escape_ascii().to_string()));
        if let Err(e) = self
            .session
            .write_all(bytes)
            .and_then(|()| self.session.flush())
        {
            panic!("sending {bytes:?}: {e}\n{}", self.report());
        }
    }

    /// Feeds everything the client wrote so far to the screen.
    fn drain(&mut self) {
        let mut buf = [0u8; READ_CHUNK_BYTES];
        loop {
            let n = match self.session.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // The client exited: its pseudo-terminal is closed.
                Err(_) => return,
            };
            self.screen.process(&buf[..n]);
            self.transcript.extend_from_slice(&buf[..n]);
        }
    }

    /// Whether the line editor holds the terminal: from its start to the
    /// end of the session the terminal does not echo (it did when the
    /// client started) and has no line editing of its own, so keys typed
    /// now reach the editor, even between two lines.
    fn held(&self) -> bool {
        matches!(self.session.get_process().get_echo(), Ok(false))
    }

    /// Notes `what` with the time and whether the terminal echoes.
    fn event(&mut self, what: &str) {
        let echo = self.session.get_process().get_echo();
        let now = chrono::Utc::now().format("%H:%M:%S%.6f");
        self.events.push(format!("  {now} {what} (echo: {echo:?})"));
    }

    /// The visible rows, without trailing blanks.
    fn rows(&self) -> Vec<String> {
        self.screen
            .screen()
            .rows(0, COLS)
            .map(|row| row.trim_end().to_string())
            .collect()
    }

    fn shown(&self) -> String {
        self.rows().join("\n")
    }

    /// What a failure shows: the screen, the tail of what the client
    /// wrote (escaped, so the terminal modes it set are visible), the
    /// terminal's mode, its threads' states and its log.
    fn report(&mut self) -> String {
        self.drain();
        let tail_from = self
            .transcript
            .len()
            .saturating_sub(TRANSCRIPT_SHOWN_MAX_BYTES);
        let tail = self.transcript[tail_from..].escape_ascii().to_string();
        let pid = self.session.get_process().pid();
        let mut threads = String::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let path = task.path();
                let read = |name: &str| {
                    std::fs::read_to_string(path.join(name))
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                };
                threads.push_str(&format!(
                    "  {} {:?}: {}\n",
                    read("comm"),
                    read("wchan"),
                    read("stat")
                ));
            }
        }
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        format!(
            "the screen:\n{}\nthe client's output (last {} bytes):\n{tail}\n\
             terminal echo: {:?}; client alive: {:?}; its threads:\n{threads}\
             what the test did:\n{}\nthe client's log:\n{log}",
            self.shown(),
            self.transcript.len() - tail_from,
            self.session.get_process().get_echo(),
            self.session.get_process().is_alive(),
            self.events.join("\n"),
        )
    }

    /// Waits until the screen's rows and whether the line editor holds the
    /// terminal satisfy `check`; panics with `what`, the screen and the
    /// client's log after the deadline.
    async fn wait_screen(&mut self, what: &str, check: impl Fn(&[String], bool) -> bool) {
        let deadline = Instant::now() + Duration::from_millis(SCREEN_DEADLINE_MS);
        loop {
            self.drain();
            if check(&self.rows(), self.held()) {
                self.event(&format!("saw {what}"));
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {SCREEN_DEADLINE_MS} ms for {what}; {}",
                    self.report()
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }

    /// Waits until the client exited; its exit code is not part of this
    /// test.
    async fn wait_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(EXIT_DEADLINE_MS);
        while self.session.get_process().is_alive().unwrap_or(false) {
            self.drain();
            if Instant::now() > deadline {
                panic!(
                    "the client did not exit within {EXIT_DEADLINE_MS} ms at the end of its input; {}",
                    self.report()
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.session.get_process_mut().exit(true);
    }
}

/// The last row with something on it.
fn last_row(rows: &[String]) -> Option<(usize, &str)> {
    rows.iter()
        .enumerate()
        .rev()
        .find(|(_, r)| !r.is_empty())
        .map(|(i, r)| (i, r.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_arriving_while_typing_goes_above_the_typed_line() {
    let d = Deployment::start(2, 0, Q_MS).await;
    let api = d.api();
    // 1 and 3 are both on cluster 1; 1 follows 3.
    d.login_all(&[1, 3]).await;
    d.follow_and_wait(1, 3).await;

    let args: Vec<String> = [
        "-c",
        &d.coord_addr(),
        "--state-dir",
        &d.client_state_dir().display().to_string(),
        "-i",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut t = Terminal::spawn(&args);
    t.wait_screen("the login and the Cmd> prompt", |rows, held| {
        held && rows.iter().any(|r| r == "logged in as 1 on cluster 1")
            && last_row(rows).is_some_and(|(_, r)| r == "Cmd>")
    })
    .await;
    t.type_keys("TIMELINE\r");
    // The editor reads the next line (it printed the line below when the
    // last one was read) before anything is typed into it.
    t.wait_screen("timeline mode, reading a line", |rows, held| {
        held && rows.iter().any(|r| r == "Now you are in the timeline")
    })
    .await;

    // Half a line, with a typo corrected by Backspace (an editing key).
    t.type_keys("half tyX\x7fped");
    t.wait_screen("the half-typed line", |rows, _| {
        last_row(rows).is_some_and(|(_, r)| r == "half typed")
    })
    .await;

    if let Err(status) = api.post(3, "3-live", "arrived while typing").await {
        panic!("user 3's post: {status}");
    }
    t.wait_screen(
        "the post on its own line, above the intact half-typed line",
        |rows, _| {
            let Some((last, typed)) = last_row(rows) else {
                return false;
            };
            last > 0
                && typed == "half typed"
                && rows[last - 1].starts_with("3 (")
                && rows[last - 1].ends_with(">> arrived while typing")
        },
    )
    .await;

    t.type_keys(" and finished\r");
    d.wait_timeline(
        1,
        &[
            "half typed and finished".to_string(),
            "arrived while typing".to_string(),
        ],
    )
    .await;

    // Ctrl-D on the empty line ends the input, and with it the session.
    // The client may still be waiting for the post's acknowledgement
    // before it reads the next line: the key must wait for that line,
    // not be taken by the terminal's own line editing.
    t.wait_screen("the line editor to hold the terminal", |_, held| held)
        .await;
    t.type_keys("\x04");
    t.wait_exit().await;
    let rows = t.rows();
    assert!(
        !rows.iter().any(|r| r.contains("tyX")),
        "the corrected typo must not be on the screen:\n{}",
        rows.join("\n")
    );
}
