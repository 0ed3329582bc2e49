//! Thousands of idle TCP connections to a primary do not take it down:
//! past its (here low) connection limit they are closed at once, clients
//! already connected still post and read, and its heartbeats stay true
//! (no failover, the same epoch).
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tsn_harness::deployment::{Config, Deployment};

use common::post;

/// The primary's limit per listener, set low for the test.
const MAX_CONNECTIONS: usize = 100;
/// Idle connections opened to the primary.
const IDLE_CONNECTIONS: usize = 2_000;
/// Long, so that a connection closed quickly was refused, not timed out.
const FIRST_BYTE_TIMEOUT_MS: u64 = 60_000;
/// How soon a connection past the limit must be closed.
const REFUSED_WITHIN_MS: u64 = 5_000;
const USER: u32 = 1;

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_past_the_limit_are_refused() {
    let mut config = Config::new(1, 1, common::Q_MS);
    config.server_args = vec![
        "--max-client-connections".into(),
        MAX_CONNECTIONS.to_string(),
        "--first-byte-timeout-ms".into(),
        FIRST_BYTE_TIMEOUT_MS.to_string(),
    ];
    let d = Deployment::start_with(config).await;
    let api = d.api();
    common::wait_in_sync(&d, 1, 2).await;
    api.login(USER).await.unwrap();
    post(&api, USER, "1-before", "before").await;
    let epoch_before = common::epochs(&api).await[&1];
    let (primary, addr) = d.primary_of(1).await;

    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        match TcpStream::connect(&addr).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connecting idle socket {}: {e}", idle.len()),
        }
    }
    // The last one is past the limit: closed at once.
    let mut last = idle.pop().unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_millis(REFUSED_WITHIN_MS),
        last.read(&mut buf),
    )
    .await
    .expect("a connection past the limit is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // Clients already connected post and read; nothing failed over.
    for i in 0..10 {
        post(&api, USER, &format!("1-during-{i}"), "during").await;
    }
    d.wait_timeline_has(USER, "during").await;
    tokio::time::sleep(Duration::from_millis(2 * common::FAILURE_TIMEOUT_MS)).await;
    assert_eq!(d.primary_of(1).await.0, primary, "no failover");
    assert_eq!(common::epochs(&api).await[&1], epoch_before, "same epoch");
    let log = std::fs::read_to_string(d.logs_dir().join(format!("c1-server{primary}.stderr.log")))
        .unwrap();
    assert!(log.contains("connection limit reached"), "{log}");
    drop(idle);
}

/// The primary's limit in the reserve test.
const RESERVE_TEST_MAX_CONNECTIONS: usize = 20;
/// How long a connection taken into the reserve may stay open without an
/// internal call, with slack for a loaded machine.
const RESERVE_CLOSED_WITHIN_MS: u64 = tsn_cluster::net::RESERVE_PROOF_TIMEOUT_MS + 10_000;

/// Opens `n` connections to `addr` that each send one byte (so the
/// first-byte timeout keeps them) and then say nothing more: they hold
/// slots of the limit.
async fn hold_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"));
        s.write_all(b"P").await.unwrap();
        held.push(s);
    }
    held
}

/// With every client slot of a primary held by an outsider, the
/// deployment's own processes still get in: the sync service, killed and
/// restarted, reconnects through the internal reserve and carries a post
/// to the other cluster. A client past the limit gets a clear
/// `RESOURCE_EXHAUSTED`, and an outsider's connection in the reserve is
/// closed once it has made no internal call in time.
#[tokio::test(flavor = "multi_thread")]
async fn the_internal_reserve_lets_the_deployment_in_when_clients_took_every_slot() {
    let mut config = Config::new(2, 0, common::Q_MS);
    config.server_args = vec![
        "--max-client-connections".into(),
        RESERVE_TEST_MAX_CONNECTIONS.to_string(),
        "--first-byte-timeout-ms".into(),
        FIRST_BYTE_TIMEOUT_MS.to_string(),
    ];
    let mut d = Deployment::start_with(config).await;
    let api = d.api();
    // 1 on cluster 1, 2 on cluster 2; 2 follows 1.
    d.login_all(&[1, 2]).await;
    d.follow_and_wait(2, 1).await;
    post(&api, 1, "1-before", "before-flood").await;
    d.wait_timeline_has(2, "before-flood").await;
    let (_, addr) = d.primary_of(1).await;

    // The sync service of cluster 1 goes; an outsider takes every slot.
    d.kill9(tsn_harness::Member::Sync { cluster: 1 });
    let held = hold_connections(&addr, RESERVE_TEST_MAX_CONNECTIONS).await;

    // A new client is refused clearly (its connection is in the reserve).
    let mut client = tsn_harness::direct::posts_client(&addr);
    let refused = client
        .post(tsn_harness::direct::post_request(1, "1-refused", "refused"))
        .await
        .expect_err("a client past the limit");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(
        refused.message().contains("connection limit reached"),
        "{refused}"
    );

    // An outsider's connection in the reserve is closed.
    let mut outsider = hold_connections(&addr, 1).await.pop().unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(RESERVE_CLOSED_WITHIN_MS), async {
        loop {
            match outsider.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "an outsider kept its reserved connection");

    // The sync service comes back through the reserve and carries on.
    d.restart(tsn_harness::Member::Sync { cluster: 1 }).await;
    post(&api, 1, "1-after", "after-flood").await;
    d.wait_timeline_has(2, "after-flood").await;
    drop(held);
}
