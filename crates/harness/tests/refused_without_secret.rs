//! Every internal RPC refuses a caller without the cluster secret. Each
//! attack below is sent from a raw tonic client, once without the secret
//! and once with a wrong one, against a deployment under load: each call
//! is `UNAUTHENTICATED`, and afterwards every acknowledged post is present
//! once, the replicas' journals agree, the coordinator's view holds the
//! same processes, no user was assigned, and no file holds the attacker's
//! text. Then every method of every internal service, read from
//! `tsn.proto`, is refused too.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::collections::BTreeSet;
use std::future::Future;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tsn_cluster::auth::{Secret, INTERNAL_SERVICES, SECRET_METADATA_KEY};
use tsn_cluster::coord::channel;
use tsn_harness::attack::{addresses, files_holding, processes, under_load};
use tsn_harness::Deployment;
use tsn_proto::tsn::coordinator_client::CoordinatorClient;
use tsn_proto::tsn::replica_client::ReplicaClient;
use tsn_proto::tsn::sync_client::SyncClient;
use tsn_proto::tsn::*;

use common::{ms, start, views, wait_all_in_sync, CONVERGE_DEADLINE_MS};

/// The writers, one per user: users 1 and 3 on cluster 1, 2 and 4 on 2.
const USERS: [u32; 4] = [1, 2, 3, 4];
/// Posts each writer gets acknowledged before and after the attack.
const ACKED_AROUND_ATTACK: u64 = 5;
/// Text no process may ever store: the attacker's.
const MARKER: &str = "tsn-attacker-was-here";
/// Time limit of one attacking call.
const CALL_TIMEOUT_MS: u64 = 5_000;

/// The two ways an outsider calls: without a secret, and with a made-up one.
fn outsiders() -> Vec<(&'static str, Option<String>)> {
    let wrong = match Secret::generate() {
        Ok(s) => s.to_hex(),
        Err(e) => panic!("no randomness: {e}"),
    };
    vec![("no secret", None), ("a wrong secret", Some(wrong))]
}

/// `msg` as an outsider sends it.
fn request<T>(msg: T, secret: &Option<String>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(s) = secret {
        match MetadataValue::try_from(s.as_str()) {
            Ok(v) => {
                r.metadata_mut().insert(SECRET_METADATA_KEY, v);
            }
            Err(e) => panic!("{e}"),
        }
    }
    r
}

fn raw(addr: &str) -> Channel {
    match channel(addr, CALL_TIMEOUT_MS) {
        Ok(c) => c,
        Err(e) => panic!("{addr}: {e:#}"),
    }
}

/// Asserts that `result` is the refusal of an outsider.
fn assert_refused<T: std::fmt::Debug>(what: &str, who: &str, result: Result<T, Status>) {
    match result {
        Err(s) if s.code() == Code::Unauthenticated => {
            assert!(
                s.message().contains("cluster secret"),
                "{what} with {who}: an unclear refusal: {s:?}"
            );
        }
        other => panic!("{what} with {who}: not refused: {other:?}"),
    }
}

/// Runs `attack` against a deployment of two clusters (a primary and a
/// secondary each) while every user posts, then checks that nothing
/// changed.
async fn under_attack<F, Fut>(attack: F)
where
    F: FnOnce(Deployment) -> Fut,
    Fut: Future<Output = Deployment>,
{
    let d = start(2, 1).await;
    d.login_all(&USERS).await;
    wait_all_in_sync(&d).await;
    let before = processes(&d).await;
    // Every assignment is a command of the coordinator group's log.
    let raft_log = d.root().join("coordinator").join("raft-log.jsonl");
    let assigns = || {
        let log = std::fs::read(&raft_log).unwrap_or_default();
        String::from_utf8_lossy(&log).matches("\"Assign\"").count()
    };
    let assigned_before = assigns();

    let (d, _) = under_load(
        d,
        &USERS,
        &[],
        ACKED_AROUND_ATTACK,
        ms(CONVERGE_DEADLINE_MS),
        attack,
    )
    .await;
    // The replicas are in sync again, and nobody joined them.
    wait_all_in_sync(&d).await;
    assert_eq!(
        processes(&d).await,
        before,
        "the coordinator's view changed"
    );
    for v in views(&d.api()).await {
        let real: BTreeSet<u32> = d.server_ids(v.cluster_id).into_iter().collect();
        assert!(
            v.in_sync.iter().all(|s| real.contains(s)),
            "in-sync set of cluster {}: {:?}",
            v.cluster_id,
            v.in_sync
        );
        assert!(real.contains(&v.primary_id), "{v:?}");
    }
    assert_eq!(assigns(), assigned_before, "users were assigned");
    let holding = files_holding(d.root(), MARKER);
    assert!(holding.is_empty(), "{holding:?} hold the attacker's text");
}

fn marker_post(author: u32) -> PostRecord {
    PostRecord {
        id: format!("{author}-{MARKER}"),
        author,
        text: MARKER.into(),
        ts_ms: 1,
    }
}

fn deliver_op(to: Vec<u32>, author: u32) -> Operation {
    Operation {
        op: Some(operation::Op::Deliver(DeliverOp {
            to,
            post: Some(marker_post(author)),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_primary_heartbeat_is_refused() {
    under_attack(|d| async move {
        let mut coord = CoordinatorClient::new(raw(&d.coord_addr()));
        for (who, secret) in outsiders() {
            for _ in 0..10 {
                let beat = HeartbeatRequest {
                    cluster_id: 1,
                    server_id: 77,
                    kind: ProcessKind::Server as i32,
                    address: "127.0.0.1:1".into(),
                    requested_role: Role::Primary as i32,
                    epoch: 1_000,
                    last_seq: 1_000_000_000,
                    last_epoch: 1_000,
                    mp3_address: String::new(),
                    clock_unbounded: false,
                };
                assert_refused(
                    "Heartbeat",
                    who,
                    coord.heartbeat(request(beat, &secret)).await,
                );
            }
        }
        d
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_append_is_refused() {
    under_attack(|d| async move {
        let (primary, secondary, _) = addresses(&d, 1).await;
        let line = format!(
            r#"{{"seq":1000000,"epoch":1000,"op":{{"post":{{"id":"1-{MARKER}","author":1,"text":"{MARKER}","ts_ms":1}}}}}}"#
        );
        for addr in [secondary, primary] {
            let mut replica = ReplicaClient::new(raw(&addr));
            for (who, secret) in outsiders() {
                let append = AppendRequest {
                    epoch: 1_000,
                    primary_id: 77,
                    prev_seq: 0,
                    commit_seq: 1_000_000,
                    entries: vec![JournalEntry {
                        seq: 1,
                        epoch: 1_000,
                        kind: OpKind::Post as i32,
                        line: line.clone().into_bytes(),
                    }],
                };
                assert_refused("Append", who, replica.append(request(append, &secret)).await);
            }
        }
        d
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_server_that_does_not_exist_to_the_in_sync_set_is_refused() {
    under_attack(|d| async move {
        let views = views(&d.api()).await;
        let mut coord = CoordinatorClient::new(raw(&d.coord_addr()));
        for (who, secret) in outsiders() {
            for v in &views {
                let change = InSyncChange {
                    cluster_id: v.cluster_id,
                    primary_id: v.primary_id,
                    epoch: v.epoch,
                    server_id: 40,
                    in_sync: true,
                };
                assert_refused(
                    "ChangeInSync",
                    who,
                    coord.change_in_sync(request(change, &secret)).await,
                );
            }
        }
        d
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigning_ten_thousand_users_is_refused() {
    under_attack(|d| async move {
        let mut coord = CoordinatorClient::new(raw(&d.coord_addr()));
        for (who, secret) in outsiders() {
            let users: Vec<u32> = (100_000..110_000).collect();
            let assign = AssignRequest { users };
            assert_refused("Assign", who, coord.assign(request(assign, &secret)).await);
        }
        d
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_journal_is_refused() {
    under_attack(|d| async move {
        for cluster in 1..=2 {
            let (primary, secondary, _) = addresses(&d, cluster).await;
            for addr in [primary, secondary] {
                let mut replica = ReplicaClient::new(raw(&addr));
                for (who, secret) in outsiders() {
                    let read = ReadChangesRequest {
                        after_seq: 0,
                        max_entries: 10_000,
                        wait_ms: 0,
                        skip_deliveries: false,
                    };
                    assert_refused(
                        "ReadChanges",
                        who,
                        replica.read_changes(request(read, &secret)).await,
                    );
                }
            }
        }
        d
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_delivery_is_refused() {
    under_attack(|d| async move {
        let (primary, _, sync) = addresses(&d, 1).await;
        for (who, secret) in outsiders() {
            let apply = ApplyRequest {
                from_cluster: 2,
                ops: vec![deliver_op(vec![1, 3], 2)],
            };
            let mut sync_client = SyncClient::new(raw(&sync));
            assert_refused(
                "Sync.Apply",
                who,
                sync_client.apply(request(apply.clone(), &secret)).await,
            );
            let mut replica = ReplicaClient::new(raw(&primary));
            assert_refused(
                "Replica.Apply",
                who,
                replica.apply(request(apply, &secret)).await,
            );
        }
        d
    })
    .await;
}

/// The services and their methods, as `tsn.proto` declares them.
fn declared_services() -> Vec<(String, Vec<String>)> {
    let proto = include_str!("../../proto/proto/tsn.proto");
    let mut services: Vec<(String, Vec<String>)> = Vec::new();
    let mut open: Option<(String, Vec<String>)> = None;
    for line in proto.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("service ") {
            let name = rest.trim_end_matches('{').trim();
            open = Some((format!("tsn.{name}"), Vec::new()));
        } else if let Some(rest) = line.strip_prefix("rpc ") {
            if let (Some((_, methods)), Some(name)) =
                (open.as_mut(), rest.split_whitespace().next())
            {
                methods.push(name.trim_end_matches('(').to_string());
            }
        } else if line.starts_with('}') {
            services.extend(open.take());
        }
    }
    services
}

/// The open services of `tsn.proto`: the client protocol carries no
/// credentials.
const OPEN_SERVICES: [&str; 3] = ["tsn.Posts", "tsn.Accounts", "tsn.Sessions"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_of_every_internal_service_is_refused() {
    let declared = declared_services();
    let names: BTreeSet<&str> = declared.iter().map(|(s, _)| s.as_str()).collect();
    let classified: BTreeSet<&str> = INTERNAL_SERVICES
        .iter()
        .chain(OPEN_SERVICES.iter())
        .copied()
        .collect();
    assert_eq!(
        names, classified,
        "every service of tsn.proto is either internal (tsn_cluster::auth::INTERNAL_SERVICES) \
         or open"
    );
    let d = start(1, 1).await;
    d.login_all(&[1]).await;
    let (primary, secondary, sync) = addresses(&d, 1).await;
    let coord = d.coord_addr();
    let mut calls = 0;
    for (service, methods) in &declared {
        if !INTERNAL_SERVICES.contains(&service.as_str()) {
            continue;
        }
        let targets: Vec<&str> = match service.as_str() {
            "tsn.Coordinator" | "tsn.Mp3Directory" | "tsn.Raft" => vec![&coord],
            "tsn.Replica" => vec![&primary, &secondary],
            "tsn.Sync" => vec![&sync],
            other => panic!("no process is known to serve {other}: add it here"),
        };
        assert!(!methods.is_empty(), "{service} has no methods?");
        for method in methods {
            for addr in &targets {
                for (who, secret) in outsiders() {
                    let mut grpc = tonic::client::Grpc::new(raw(addr));
                    if let Err(e) = grpc.ready().await {
                        panic!("{addr}: {e}");
                    }
                    let path = match format!("/{service}/{method}").parse() {
                        Ok(p) => p,
                        Err(e) => panic!("{e}"),
                    };
                    let codec =
                        tonic_prost::ProstCodec::<ClustersRequest, ClustersReply>::default();
                    let result = grpc
                        .unary(request(ClustersRequest {}, &secret), path, codec)
                        .await;
                    assert_refused(&format!("{service}/{method} on {addr}"), who, result);
                    calls += 1;
                }
            }
        }
    }
    assert!(calls >= 2 * (4 + 2 * 7 + 1 + 1 + 3), "{calls} calls");
    // The open services still answer an outsider.
    let api = d.api();
    match api.read(1, 10).await {
        Ok(_) => {}
        Err(e) => panic!("Posts.Read for an outsider: {e}"),
    }
    let open = tsn_cluster::coord::CoordClient::new(&coord).unwrap_or_else(|e| panic!("{e}"));
    match open.get_server(1).await {
        Ok(info) => assert_eq!(format!("{}:{}", info.hostname, info.port), primary),
        Err(e) => panic!("GetServer for an outsider: {e}"),
    }
}
