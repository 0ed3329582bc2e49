//! kill -9 of the coordinator: each primary keeps taking writes while it
//! is down (its in-sync secondaries renew its lease); once it is back on
//! its state, nothing changed for servers and clients.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use tonic::transport::Channel;
use tsn_harness::direct::{post_request, posts_client};
use tsn_harness::results::post_texts;
use tsn_harness::Member;
use tsn_proto::tsn::posts_client::PostsClient;

use common::{epochs, ms, start, wait_all_in_sync};

/// How long the coordinator stays down while primaries take writes.
const COORDINATOR_DOWN_FOR_MS: u64 = 2_000;

/// kill -9 of the coordinator: each primary keeps taking writes while
/// it is down (its in-sync secondaries renew its lease); once it is back on
/// its state, epochs and primaries are as before, every process is alive
/// again, and `tsn_client` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_keeps_clients_working() {
    let mut d = start(3, 1).await;
    let api = d.api();
    let clusters = d.config().clusters;
    // User `c` is served by cluster `c`.
    let users: Vec<u32> = (1..=clusters).collect();
    d.login_all(&users).await;
    wait_all_in_sync(&d).await;
    let epochs_before = epochs(&api).await;
    let mut primaries = BTreeMap::new();
    let mut servers_before = BTreeMap::new();
    for &user in &users {
        primaries.insert(user, d.primary_of(user).await);
        match api.coord().get_server(user).await {
            Ok(info) => servers_before.insert(user, info),
            Err(status) => panic!("GetServer({user}): {status}"),
        };
    }

    d.kill9(Member::Coordinator);
    let clients: BTreeMap<u32, PostsClient<Channel>> = primaries
        .iter()
        .map(|(&user, (_, addr))| (user, posts_client(addr)))
        .collect();
    // This loop lets time pass by design: the leases must outlive the
    // coordinator's silence (the coordinator's own confirmation lapses
    // after 80% of the failure timeout; the secondaries renew it since).
    let down_since = Instant::now();
    let mut posted: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut round = 0u32;
    while down_since.elapsed() < ms(COORDINATOR_DOWN_FOR_MS) {
        round += 1;
        for (&user, client) in &clients {
            let text = format!("while down {round}");
            let req = post_request(user, &format!("{user}-down-{round}"), &text);
            let at_ms = down_since.elapsed().as_millis();
            match client.clone().post(req).await {
                Ok(_) => posted.entry(user).or_default().push(text),
                Err(status) => panic!(
                    "post {round} of user {user}, {at_ms} ms after the coordinator died: {status}"
                ),
            }
        }
    }
    eprintln!("posts acknowledged while the coordinator was down: {round} per cluster");
    assert!(
        round >= 2,
        "too few posts while the coordinator was down to tell anything"
    );

    d.restart(Member::Coordinator).await;
    assert_eq!(
        epochs(&api).await,
        epochs_before,
        "the restarted coordinator reports other epochs"
    );
    d.wait_healthy().await;
    assert_eq!(epochs(&api).await, epochs_before, "epochs changed");
    for &user in &users {
        let (id, addr) = d.primary_of(user).await;
        assert_eq!(
            (id, addr),
            primaries[&user].clone(),
            "cluster {user} changed primary"
        );
        match api.coord().get_server(user).await {
            Ok(info) => assert_eq!(info, servers_before[&user], "GetServer({user})"),
            Err(status) => panic!("GetServer({user}) after the restart: {status}"),
        }
    }
    for (user, texts) in &posted {
        let stored = post_texts(&d.timeline(*user).await);
        for t in texts {
            assert_eq!(
                stored.iter().filter(|s| *s == t).count(),
                1,
                "user {user}'s timeline must hold {t:?} once: {stored:?}"
            );
        }
    }

    let (code, stdout, stderr) = d
        .client(&["-i", "1", "post", "after the coordinator restart"])
        .await;
    assert_eq!(
        code, 0,
        "tsn_client post failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    d.wait_timeline_has(1, "after the coordinator restart")
        .await;
}
