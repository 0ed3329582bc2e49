//! Short runs of the real `tsn_bench` against a local deployment of the
//! debug binaries: each must finish, and its `result.json` must hold a
//! throughput, same-cluster and cross-cluster delivery figures, the disk
//! probe's, and a clean audit; the run with the Redis baseline, its
//! figures, the ratios and every target. (The figures of a debug build on
//! a busy machine mean nothing; that they are there and sane is what is
//! checked.)

use std::process::Command;
use std::time::{Duration, Instant};

/// The whole run may take this long before the test fails.
const RUN_DEADLINE_S: u64 = 240;

/// Runs `tsn_bench` with a tiny load and `extra` flags, writing into
/// `out`; panics unless it succeeds within [`RUN_DEADLINE_S`]. Returns
/// the parsed `result.json`.
fn tiny_run(out: &std::path::Path, extra: &[&str]) -> serde_json::Value {
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
        ])
        .args(extra)
        .arg("--out")
        .arg(out)
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
    let text = std::fs::read_to_string(out.join("result.json")).expect("result.json");
    serde_json::from_str(&text).expect("result.json is JSON")
}

#[test]
fn a_tiny_run_writes_a_complete_result() {
    let out = tempfile::tempdir().expect("temp dir");
    let r = tiny_run(out.path(), &["--no-half-load", "--no-redis"]);
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
    assert_eq!(r["redis_skipped"], "--no-redis");
    assert!(r["redis"].is_null() && r["vs_redis"].is_null());
}

/// Whether `redis-server` is on PATH.
fn redis_installed() -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("redis-server").is_file())
    })
}

#[test]
fn a_tiny_run_measures_the_redis_baseline_and_judges_every_target() {
    if !redis_installed() {
        // In CI, .ci/run installs it: a missing server there is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed, and CI must install it (.ci/run)"
        );
        eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let r = tiny_run(out.path(), &["--no-echo"]);
    assert!(r["redis_skipped"].is_null(), "{}", r["redis_skipped"]);
    let redis = &r["redis"];
    assert!(redis["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(
        redis["durability"]
            .as_str()
            .is_some_and(|d| d.contains("appendfsync always")),
        "{redis}"
    );
    let phase = &redis["phase"];
    assert!(phase["throughput_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(phase["acknowledged"].as_u64().unwrap_or(0) > 0);
    assert!(
        phase["failed"].as_object().is_some_and(|f| f.is_empty()),
        "{phase}"
    );
    let ack = &phase["ack_latency"];
    assert!(ack["p50_ms"].as_f64().unwrap_or(-1.0) >= 0.0);
    assert!(ack["p99_ms"].as_f64().unwrap_or(-1.0) >= ack["p50_ms"].as_f64().unwrap());
    // Every watched follower's subscription got what it should have.
    let same = &phase["delivery"]["same_cluster"];
    assert!(same["expected"].as_u64().unwrap_or(0) > 0, "{same}");
    assert_eq!(same["missing"], 0, "{same}");
    assert_eq!(phase["delivery"]["cross_cluster"]["expected"], 0);
    assert!(
        phase["cpu"]["cpu_us_per_op"]["redis primary"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
    );
    for ratio in ["posts_per_s", "ack_p50", "ack_p99"] {
        let v = r["vs_redis"][ratio].as_f64();
        assert!(
            v.is_some_and(|v| v.is_finite() && v > 0.0),
            "{ratio}: {}",
            r["vs_redis"]
        );
    }
    // The four new targets are judged (met or missed), from this run.
    let targets = r["targets"].as_array().expect("targets");
    for name in [
        "tsn posts/s vs Redis posts/s",
        "tsn same-cluster delivery p99 vs Redis pub/sub",
        "ack p99 at half load vs fdatasync p99",
        "CPU per post at half load vs max load",
    ] {
        let t = targets
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no target {name:?}: {targets:?}"));
        assert!(t["met"].is_boolean(), "{t}");
    }
    assert!(!targets
        .iter()
        .any(|t| t["name"].as_str().is_some_and(|n| n.contains("echo"))));
    assert_eq!(r["audit"]["lost"], 0, "{}", r["audit"]);
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
