//! The cluster secret is rotated under a running deployment: writes keep
//! being acknowledged throughout, and once the grace period is over the
//! old secret is refused.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use tonic::metadata::MetadataValue;
use tonic::{Code, Request};
use tsn_cluster::auth::{read_secret_file, replace_secret_file, Secret, SECRET_METADATA_KEY};
use tsn_harness::fault_check::{Expectation, Reader};
use tsn_harness::load::Load;
use tsn_harness::{wait_for, Config, Deployment};
use tsn_proto::tsn::coordinator_client::CoordinatorClient;
use tsn_proto::tsn::ClustersRequest;

use common::{ms, wait_all_in_sync, CONVERGE_DEADLINE_MS, FAILURE_TIMEOUT_MS, Q_MS};

/// The grace period of this deployment (the shortest allowed).
const GRACE_MS: u64 = tsn_cluster::auth::SECRET_GRACE_MIN_MS;
const USERS: [u32; 2] = [1, 2];

/// `Coordinator.Clusters` with `secret`, as any process would call it.
async fn clusters_with(coord: &str, secret: &Secret) -> Result<(), tonic::Status> {
    let ch = tsn_cluster::coord::channel(coord, 5_000)
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let mut r = Request::new(ClustersRequest {});
    let value = MetadataValue::try_from(secret.to_hex())
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    r.metadata_mut().insert(SECRET_METADATA_KEY, value);
    CoordinatorClient::new(ch).clusters(r).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_keeps_writes_flowing_and_retires_the_old_one() {
    let mut config = Config::new(2, 1, Q_MS);
    config.failure_timeout_ms = FAILURE_TIMEOUT_MS;
    config.secret_grace_ms = Some(GRACE_MS);
    let d = Deployment::start_with(config).await;
    d.login_all(&USERS).await;
    wait_all_in_sync(&d).await;
    let old = read_secret_file(d.secret_file()).unwrap_or_else(|e| panic!("{e:#}"));
    let coord = d.coord_addr();
    assert!(clusters_with(&coord, &old).await.is_ok());

    let load = Load::start(&coord, &USERS);
    load.wait_each_acked_more(5, ms(CONVERGE_DEADLINE_MS)).await;
    let new = Secret::generate().unwrap_or_else(|e| panic!("{e}"));
    replace_secret_file(d.secret_file(), &new).unwrap_or_else(|e| panic!("{e:#}"));
    // Writes go on while every process re-reads the file...
    load.wait_each_acked_more(5, ms(CONVERGE_DEADLINE_MS)).await;
    // Every process (the coordinator here) takes the new secret.
    wait_for(
        ms(CONVERGE_DEADLINE_MS),
        "the new secret to be accepted",
        || async { clusters_with(&coord, &new).await.map_err(|s| s.to_string()) },
    )
    .await;
    // ...and after the grace period the old secret is refused.
    wait_for(
        ms(CONVERGE_DEADLINE_MS),
        "the old secret to be refused",
        || async {
            match clusters_with(&coord, &old).await {
                Err(s) if s.code() == Code::Unauthenticated => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    load.wait_each_acked_more(5, ms(CONVERGE_DEADLINE_MS)).await;
    let report = load.stop().await;
    assert!(
        report.failures().is_empty(),
        "writers gave up: {:?}",
        report.failures()
    );
    // Processes still talk to each other: a secondary is in sync, and
    // every acknowledged post is where it belongs.
    wait_all_in_sync(&d).await;
    let expect = Expectation {
        users: USERS.to_vec(),
        follows: Vec::new(),
        posts: report.posts(),
        follow_time: None,
    };
    let reader = Reader::new(d.api().coord().clone(), &d.datastore_root());
    reader
        .assert_clean(&expect, ms(CONVERGE_DEADLINE_MS), String::new)
        .await;
}
