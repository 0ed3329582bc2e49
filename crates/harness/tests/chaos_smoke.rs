//! A few seconds of `tsn_chaos` (the long randomised fault run of `make
//! chaos`), with a fixed seed: the nemesis, the healing and the final
//! record-by-record check work end to end.
//!
//! Build the binaries first: `cargo build --bins`.

use std::process::Command;
use std::time::Duration;

/// Seconds of faults in this smoke run.
const SMOKE_DURATION_S: u64 = 4;
/// Longest the smoke run may take, set-up and check included.
const SMOKE_DEADLINE_MS: u64 = 180_000;

#[test]
fn a_short_chaos_run_passes_its_check() {
    let bin = tsn_harness::bins::bin_path("tsn_chaos");
    let child = Command::new(&bin)
        .args([
            "--seed",
            "7",
            "--duration-s",
            &SMOKE_DURATION_S.to_string(),
            "--clusters",
            "2",
            "--between-ms",
            "200",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    // Read its output while it runs (a full pipe would stop it), on a
    // thread, so that the deadline can end a run that hangs.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_millis(SMOKE_DEADLINE_MS)) {
        Ok(out) => out.expect("tsn_chaos output"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("tsn_chaos did not finish within {SMOKE_DEADLINE_MS} ms");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tsn_chaos failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("seed 7"), "{stdout}");
    assert!(
        stdout.contains("fault 1:"),
        "no fault was injected:\n{stdout}"
    );
    assert!(stdout.contains("tsn_chaos: PASSED"), "{stdout}");
}
