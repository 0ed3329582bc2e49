//! A short run of the real `tsn_bench` against a local deployment of the
//! debug binaries: it must finish, and its `result.json` must hold a
//! throughput, same-cluster and cross-cluster delivery figures, the disk
//! probe's, and a clean audit. (The figures of a debug build on a busy machine mean
//! nothing; that they are there is what is checked.)

use std::process::Command;
use std::time::{Duration, Instant};

/// The whole run may take this long before the test fails.
const RUN_DEADLINE_S: u64 = 240;

#[test]
fn a_tiny_run_writes_a_complete_result() {
    let out = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsn_bench"))
        .args([
            "--users",
            "30",
            "--follows",
            "3",
            "--clients",
            "4",
            "--duration-s",
            "2",
            "--warmup-s",
            "1",
            "--sample-followers",
            "10",
            "--no-half-load",
        ])
        .arg("--out")
        .arg(out.path())
        .spawn()
        .expect("starting tsn_bench");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for tsn_bench") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(RUN_DEADLINE_S) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tsn_bench did not finish within {RUN_DEADLINE_S} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "tsn_bench failed: {status}");

    let text = std::fs::read_to_string(out.path().join("result.json")).expect("result.json");
    let r: serde_json::Value = serde_json::from_str(&text).expect("result.json is JSON");
    let throughput = r["main"]["throughput_per_s"].as_f64().expect("throughput");
    assert!(throughput > 0.0, "throughput {throughput}");
    for class in ["same_cluster", "cross_cluster"] {
        let c = &r["main"]["delivery"][class];
        assert!(c["expected"].is_u64(), "{class}: {c}");
        assert!(c["arrived"].is_u64(), "{class}: {c}");
        assert!(c["latency"]["p99_ms"].is_f64(), "{class}: {c}");
    }
    assert!(r["echo"]["throughput_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(
        r["disk"]["count"].as_u64().unwrap_or(0) > 0,
        "{}",
        r["disk"]
    );
    assert!(
        r["disk"]["p99_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{}",
        r["disk"]
    );
    assert!(r["posts_per_echo_call"].as_f64().is_some());
    assert_eq!(r["audit"]["lost"], 0, "{}", r["audit"]);
    assert_eq!(r["audit"]["duplicated"], 0, "{}", r["audit"]);
    assert!(r["audit"]["checked"].as_u64().unwrap_or(0) > 0);
    assert!(r["machine"]["nproc"].as_u64().unwrap_or(0) >= 1);
    let svg = std::fs::read_to_string(out.path().join("latency.svg")).expect("latency.svg");
    assert!(svg.starts_with("<svg"));
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for args in [
        &["--users", "0"][..],
        &["--clients", "4", "--rate", "10"],
        &["--kill-primary-at", "30", "--duration-s", "20"],
        &["--cross-share", "2"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tsn_bench"))
            .args(args)
            .arg("--out")
            .arg(std::env::temp_dir().join("tsn-bench-never-written"))
            .output()
            .expect("running tsn_bench");
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
