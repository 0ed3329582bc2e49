//! The binary refuses bad arguments before it touches the network or the
//! state directory: non-zero exit, one `error:` line on stderr.

use std::net::TcpListener;
use std::process::{Command, Output};

/// A coordinator address nobody listens on: a port the system picked free,
/// released again.
fn dead_coordinator() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    addr.to_string()
}

fn run(state_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tsn_client"))
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()
        .expect("running tsn_client")
}

fn assert_refused(args: &[&str], reason_part: &str) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let coord = dead_coordinator();
    let mut all = vec!["-c", coord.as_str()];
    all.extend_from_slice(args);
    let out = run(&state, &all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {stderr:?}");
    assert!(lines[0].contains(reason_part), "{args:?}: {stderr:?}");
    assert!(out.stdout.is_empty(), "{args:?}");
    assert!(!state.exists(), "{args:?} touched the state directory");
}

#[test]
fn bad_client_ids_are_refused() {
    assert_refused(&["-i", "abc", "list"], "bad client id");
    assert_refused(&["-i", "0", "list"], "bad client id");
    assert_refused(&["-i", "-5", "list"], "bad client id");
    assert_refused(&["-i", "2147483648"], "bad client id");
}

#[test]
fn bad_targets_and_posts_are_refused() {
    // A word ("two") is an account's handle now: a target that is neither.
    assert_refused(&["-i", "1", "follow", "t.wo"], "bad user id");
    assert_refused(&["-i", "1", "unfollow", "-2"], "bad user id");
    assert_refused(&["-i", "1", "post", " "], "post is empty");
    let long = "x".repeat(1025);
    assert_refused(
        &["-i", "1", "post", long.as_str()],
        "post is longer than 1024 bytes",
    );
}

#[test]
fn bad_usage_is_one_line_too() {
    assert_refused(&["-i", "1", "timeline", "--limit", "0"], "--limit");
    assert_refused(&["-i", "1", "timeline", "--limit", "1001"], "--limit");
    assert_refused(&["-i", "1", "dance"], "dance");
    assert_refused(&["-i", "1", "follow"], "ID");
}

/// The classic command line, `-c <coordIP>:<coordPort> -p <clientPort> -i
/// <clientID>`, is accepted as written: it gets as far as the coordinator
/// (which nobody serves here), not a usage error.
#[test]
fn the_classic_command_line_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let coord = dead_coordinator();
    for args in [
        [
            "-c",
            coord.as_str(),
            "-p",
            "3010",
            "-i",
            "1",
            "--retry-for-ms",
            "0",
            "list",
        ],
        [
            "-c",
            coord.as_str(),
            "--port",
            "3010",
            "-i",
            "1",
            "--retry-for-ms",
            "0",
            "list",
        ],
    ] {
        let out = run(&state, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("unexpected argument"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("coordinator"), "{args:?}: {stderr}");
    }
    // A port that is not one is still a usage error.
    assert_refused(&["-p", "http", "-i", "1", "list"], "PORT");
}

#[test]
fn help_says_what_the_port_is_for() {
    let out = Command::new(env!("CARGO_BIN_EXE_tsn_client"))
        .arg("--help")
        .output()
        .expect("running tsn_client --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("-p, --port <PORT>"), "{help}");
    assert!(help.contains("ignored"), "{help}");
}
