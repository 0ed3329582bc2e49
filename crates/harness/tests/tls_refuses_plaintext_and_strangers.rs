//! With TLS on, every listener speaks only TLS and internal services need
//! both a certificate of the deployment's CA and the secret. Against a
//! deployment under load:
//!
//! * a plaintext client of each listener (the coordinator, a primary's
//!   main and MP3 listeners, a sync service) gets a failed connection,
//!   even with the right secret, and nothing of it reaches a service;
//! * a client that trusts another CA refuses the servers' certificates;
//! * an internal call from a TLS client without a client certificate is
//!   `UNAUTHENTICATED` even with the right secret, and one presenting a
//!   certificate of another CA is refused at the handshake;
//! * the `tsn_client` binary with `--tls-ca` works.
//!
//! Afterwards every acknowledged post is present once, the journals are
//! identical, and no file holds the attacker's text.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use tonic::{Code, Status};
use tsn_cluster::coord::channel_with;
use tsn_cluster::tls::generate::Authority;
use tsn_cluster::tls::{server_certificate, Tls, TlsFiles};
use tsn_harness::attack::{addresses, files_holding, under_load};
use tsn_harness::deployment::authority;
use tsn_harness::{run_client, Config, Deployment};
use tsn_proto::csce438::coord_service_client::CoordServiceClient;
use tsn_proto::csce438::Id;
use tsn_proto::mp3::sns_service_client::SnsServiceClient as Mp3Client;
use tsn_proto::tsn::coordinator_client::CoordinatorClient;
use tsn_proto::tsn::mp3_directory_client::Mp3DirectoryClient;
use tsn_proto::tsn::posts_client::PostsClient;
use tsn_proto::tsn::replica_client::ReplicaClient;
use tsn_proto::tsn::sync_client::SyncClient;
use tsn_proto::tsn::*;

use common::{ms, wait_all_in_sync, CONVERGE_DEADLINE_MS, FAILURE_TIMEOUT_MS, Q_MS};

/// Writers: users 1 and 3 on cluster 1, 2 and 4 on cluster 2.
const USERS: [u32; 4] = [1, 2, 3, 4];
/// Posts each writer gets acknowledged before and after the attacks.
const ACKED_AROUND_ATTACK: u64 = 5;
/// Text no process may ever store: the attacker's.
const MARKER: &str = "tsn-plaintext-attacker";
/// Time limit of one attacking call.
const CALL_TIMEOUT_MS: u64 = 5_000;

async fn start_tls() -> Deployment {
    let mut config = Config::new(2, 1, Q_MS);
    config.failure_timeout_ms = FAILURE_TIMEOUT_MS;
    config.tls = true;
    Deployment::start_with(config).await
}

fn open(files: &TlsFiles) -> Tls {
    match Tls::load(files) {
        Ok(t) => t,
        Err(e) => panic!("{files:?}: {e:#}"),
    }
}

fn ch(addr: &str, tls: Option<&Tls>) -> tonic::transport::Channel {
    match channel_with(addr, CALL_TIMEOUT_MS, tls) {
        Ok(c) => c,
        Err(e) => panic!("{addr}: {e:#}"),
    }
}

/// A call that never reached a service: the connection failed (a status
/// a server sends has no transport error under it; a plaintext client
/// gets the listener's TLS alert, which its HTTP/2 reads as a bad frame).
fn assert_no_connection<T: std::fmt::Debug>(what: &str, result: Result<T, Status>) {
    match result {
        Err(s) if std::error::Error::source(&s).is_some() => {}
        other => panic!("{what}: expected a failed connection, got {other:?}"),
    }
}

fn marker_op(author: u32) -> Operation {
    Operation {
        op: Some(operation::Op::Post(PostRecord {
            id: format!("{author}-{MARKER}"),
            author,
            text: MARKER.into(),
            ts_ms: 1,
        })),
    }
}

async fn mp3_address(d: &Deployment, primary: &str) -> String {
    let ch = ch(&d.coord_addr(), tsn_cluster::tls::process_tls().as_ref());
    let listeners = match Mp3DirectoryClient::new(d.auth().wrap(ch))
        .listeners(Mp3ListenersRequest {})
        .await
    {
        Ok(r) => r.into_inner().listeners,
        Err(s) => panic!("Mp3Directory.Listeners: {s}"),
    };
    let views = tsn_harness::attack::cluster_views(d).await;
    let (cluster, server_id) = views
        .iter()
        .flat_map(|v| v.processes.iter().map(move |p| (v.cluster_id, p)))
        .find(|(_, p)| p.address == primary)
        .map(|(c, p)| (c, p.server_id))
        .unwrap_or_else(|| panic!("{primary} not in {views:?}"));
    listeners
        .iter()
        .find(|l| l.cluster_id == cluster && l.server_id == server_id)
        .map(|l| l.address.clone())
        .unwrap_or_else(|| panic!("no MP3 listener of {primary}: {listeners:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plaintext_strangers_and_certless_internal_callers_are_refused() {
    let d = start_tls().await;
    d.login_all(&USERS).await;
    wait_all_in_sync(&d).await;
    let strangers = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));

    let (d, _) = under_load(
        d,
        &USERS,
        &[],
        ACKED_AROUND_ATTACK,
        ms(CONVERGE_DEADLINE_MS),
        |d| async move {
            let coord = d.coord_addr();
            let (primary, _, sync) = addresses(&d, 1).await;
            let mp3 = mp3_address(&d, &primary).await;

            // Plaintext against every listener, with the secret where the
            // service wants one: the connection fails, nothing is served.
            assert_no_connection(
                "plaintext GetServer",
                CoordServiceClient::new(ch(&coord, None))
                    .get_server(Id { id: 1 })
                    .await,
            );
            assert_no_connection(
                "plaintext Coordinator.Clusters with the secret",
                CoordinatorClient::new(d.auth().wrap(ch(&coord, None)))
                    .clusters(ClustersRequest {})
                    .await,
            );
            assert_no_connection(
                "plaintext Posts.Post",
                PostsClient::new(ch(&primary, None))
                    .post(tsn_harness::direct::post_request(1, MARKER, MARKER))
                    .await,
            );
            assert_no_connection(
                "plaintext Replica.Apply with the secret",
                ReplicaClient::new(d.auth().wrap(ch(&primary, None)))
                    .apply(ApplyRequest {
                        from_cluster: 2,
                        ops: vec![marker_op(2)],
                    })
                    .await,
            );
            assert_no_connection(
                "plaintext MP3 Login",
                Mp3Client::new(ch(&mp3, None))
                    .login(tsn_proto::mp3::Request {
                        username: "1".into(),
                        arguments: vec![],
                    })
                    .await,
            );
            assert_no_connection(
                "plaintext Sync.Apply with the secret",
                SyncClient::new(d.auth().wrap(ch(&sync, None)))
                    .apply(ApplyRequest {
                        from_cluster: 2,
                        ops: vec![marker_op(2)],
                    })
                    .await,
            );

            // A client that trusts another CA refuses every server.
            let other = Authority::new("another CA").unwrap_or_else(|e| panic!("{e:#}"));
            let other_ca = open(
                &other
                    .trust_only(&strangers.path().join("other"))
                    .unwrap_or_else(|e| panic!("{e:#}")),
            );
            for addr in [&coord, &primary, &mp3, &sync] {
                let seen = server_certificate(&other_ca, addr).await;
                assert!(seen.is_err(), "{addr}: a stranger CA accepted: {seen:?}");
            }
            assert_no_connection(
                "GetServer trusting another CA",
                CoordServiceClient::new(ch(&coord, Some(&other_ca)))
                    .get_server(Id { id: 1 })
                    .await,
            );

            // TLS without a client certificate: the open services answer,
            // the internal ones refuse even with the right secret.
            let certless = open(
                &authority()
                    .trust_only(&strangers.path().join("certless"))
                    .unwrap_or_else(|e| panic!("{e:#}")),
            );
            match CoordServiceClient::new(ch(&coord, Some(&certless)))
                .get_server(Id { id: 1 })
                .await
            {
                Ok(_) => {}
                Err(s) => panic!("GetServer over TLS without a client certificate: {s:?}"),
            }
            let refused = |what: &str, r: Result<_, Status>| match r {
                Err(s) if s.code() == Code::Unauthenticated => assert!(
                    s.message().contains("client certificate"),
                    "{what}: unclear refusal {s:?}"
                ),
                other => panic!("{what}: not refused: {other:?}"),
            };
            refused(
                "Coordinator.Clusters without a client certificate",
                CoordinatorClient::new(d.auth().wrap(ch(&coord, Some(&certless))))
                    .clusters(ClustersRequest {})
                    .await
                    .map(|_| ()),
            );
            refused(
                "Replica.Apply without a client certificate",
                ReplicaClient::new(d.auth().wrap(ch(&primary, Some(&certless))))
                    .apply(ApplyRequest {
                        from_cluster: 2,
                        ops: vec![marker_op(2)],
                    })
                    .await
                    .map(|_| ()),
            );
            refused(
                "Sync.Apply without a client certificate",
                SyncClient::new(d.auth().wrap(ch(&sync, Some(&certless))))
                    .apply(ApplyRequest {
                        from_cluster: 2,
                        ops: vec![marker_op(2)],
                    })
                    .await
                    .map(|_| ()),
            );

            // A certificate of another CA is refused at the handshake.
            let intruder_dir = strangers.path().join("intruder");
            let intruder = other
                .issue(&intruder_dir, "intruder")
                .unwrap_or_else(|e| panic!("{e:#}"));
            let intruder = open(&TlsFiles {
                ca: certless.files().ca.clone(),
                identity: intruder.identity,
            });
            assert_no_connection(
                "Replica.Apply with a certificate of another CA",
                ReplicaClient::new(d.auth().wrap(ch(&primary, Some(&intruder))))
                    .apply(ApplyRequest {
                        from_cluster: 2,
                        ops: vec![marker_op(2)],
                    })
                    .await,
            );

            // The client binary, given --tls-ca by the harness, works.
            let (code, out, err) = run_client(&[
                "-c",
                &coord,
                "-i",
                "1",
                "--state-dir",
                &d.client_state_dir().display().to_string(),
                "list",
            ])
            .await;
            assert_eq!(code, 0, "tsn_client over TLS: {out}\n{err}");
            d
        },
    )
    .await;
    let holding = files_holding(d.root(), MARKER);
    assert!(holding.is_empty(), "{holding:?} hold the attacker's text");
}
