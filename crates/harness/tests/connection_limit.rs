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
