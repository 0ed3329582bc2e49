//! Every process's admin port (`--admin-port`): `/metrics` in the
//! Prometheus text format and `/admin/status` as JSON, read the way a
//! scraper and an operator would, over plain HTTP/1.1. The figures follow
//! what happens (writes, a failover, refused calls), nothing but `GET` is
//! answered, and no secret is ever shown.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tsn_cluster::auth::read_secret_file;
use tsn_harness::views::Failover;
use tsn_harness::{wait_for, Config, Deployment, Member};
use tsn_proto::tsn::coordinator_client::CoordinatorClient;
use tsn_proto::tsn::ClustersRequest;

use common::{await_failover, ms, post, ready_for_failover, CONVERGE_DEADLINE_MS, Q_MS};

/// Longest one admin request may take in this test.
const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Most bytes of an admin reply this test reads.
const REPLY_MAX_BYTES: u64 = 1 << 20;

/// The status code and body of `method path` at `addr`.
async fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.take(REPLY_MAX_BYTES).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {addr}{path} timed out"))
        .unwrap_or_else(|e| panic!("{method} {addr}{path}: {e}"));
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (code, body.to_string())
}

async fn get_ok(addr: &str, path: &str) -> String {
    let (code, body) = http(addr, "GET", path).await;
    assert_eq!(code, 200, "GET {path} at {addr}: {body}");
    body
}

async fn status_json(addr: &str) -> serde_json::Value {
    let body = get_ok(addr, "/admin/status").await;
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/admin/status is not JSON ({e}): {body}"))
}

/// The value of the sample `name` (with its labels as written, e.g.
/// `tsn_epoch` or `tsn_cluster_epoch{cluster="1"}`) in a scrape.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_shows_metrics_and_status_and_only_reads() {
    let mut config = Config::new(2, 1, Q_MS);
    config.failure_timeout_ms = common::FAILURE_TIMEOUT_MS;
    config.admin_ports = true;
    let mut d = Deployment::start_with(config).await;
    let api = d.api();
    d.login_all(&[1, 2]).await;
    let (primary, _, epoch_before) = ready_for_failover(&d, 1).await;
    for i in 0..5 {
        post(&api, 1, &format!("1-admin-{i}"), "admin").await;
    }

    let server = Member::Server {
        cluster: 1,
        server_id: primary,
    };
    let coord = Member::Coordinator;
    let sync = Member::Sync { cluster: 1 };
    let server_admin = d.admin_addr(server).expect("the primary's admin port");
    let coord_admin = d.admin_addr(coord).expect("the coordinator's admin port");
    let sync_admin = d.admin_addr(sync).expect("the sync service's admin port");

    // The primary: its writes, fsyncs and in-sync secondary.
    let m = get_ok(&server_admin, "/metrics").await;
    assert!(
        sample(&m, "tsn_write_seconds_count").is_some_and(|n| n >= 5.0),
        "{m}"
    );
    assert!(
        sample(&m, "tsn_fsync_seconds_count").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "tsn_primary"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "tsn_in_sync_secondaries"), Some(1.0), "{m}");
    assert!(m.contains("tsn_group_commit_entries_bucket"), "{m}");
    assert!(m.trim_end().ends_with("# EOF"), "not a whole scrape: {m}");
    let s = status_json(&server_admin).await;
    assert_eq!(s["role"], "primary", "{s}");
    assert_eq!(s["cluster_id"], 1, "{s}");
    assert!(s["commit_seq"].as_u64().is_some_and(|c| c > 0), "{s}");
    assert!(
        s["in_sync"].as_object().is_some_and(|m| m.len() == 1),
        "{s}"
    );

    // The sync service: its lag towards cluster 2 is measured.
    wait_for(
        ms(CONVERGE_DEADLINE_MS),
        "the sync service to show its lag towards cluster 2",
        || {
            let addr = sync_admin.clone();
            async move {
                let m = get_ok(&addr, "/metrics").await;
                match sample(&m, "tsn_sync_lag_entries{dest=\"2\"}") {
                    Some(_) => Ok(()),
                    None => Err(m),
                }
            }
        },
    )
    .await;
    let s = status_json(&sync_admin).await;
    assert_eq!(s["process"], "sync_service", "{s}");

    // An internal call without the secret is refused and counted.
    let channel = tsn_cluster::coord::channel(&d.coord_addr(), 5_000).unwrap();
    let refused = CoordinatorClient::new(channel)
        .clusters(ClustersRequest {})
        .await
        .expect_err("an internal call without the secret");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let m = get_ok(&coord_admin, "/metrics").await;
    assert!(
        sample(&m, "tsn_refused_total{reason=\"unauthenticated\"}").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "tsn_cluster_epoch{cluster=\"1\"}"),
        Some(epoch_before as f64),
        "{m}"
    );

    // A failover shows in the coordinator's figures.
    d.kill9(server);
    match await_failover(&api, 1, primary, epoch_before).await {
        Failover::Promoted(_) => {}
        Failover::NoCandidate => panic!("the in-sync secondary was not promoted"),
    }
    let m = get_ok(&coord_admin, "/metrics").await;
    assert_eq!(
        sample(&m, "tsn_failovers_total{cluster=\"1\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "tsn_failovers_total{cluster=\"2\"}"),
        Some(0.0),
        "{m}"
    );
    let s = status_json(&coord_admin).await;
    let c1 = &s["clusters"][0];
    assert_eq!(c1["cluster_id"], 1, "{s}");
    assert!(
        c1["epoch"].as_u64().is_some_and(|e| e > epoch_before),
        "{s}"
    );

    // Only reads: anything else is refused and changes nothing.
    for (method, path, code) in [
        ("POST", "/metrics", 405),
        ("DELETE", "/admin/status", 405),
        ("GET", "/admin/shutdown", 404),
    ] {
        let (got, body) = http(&coord_admin, method, path).await;
        assert_eq!(got, code, "{method} {path}: {body}");
    }
    assert!(d.coordinator().is_running());

    // No secret in anything shown.
    let secret = read_secret_file(d.secret_file()).unwrap().to_hex();
    for addr in [&coord_admin, &sync_admin] {
        for path in ["/metrics", "/admin/status"] {
            let body = get_ok(addr, path).await;
            assert!(!body.contains(&secret), "{path} at {addr} shows the secret");
        }
    }
}
