//! Attacks on a running deployment, as the tests that play a hostile
//! caller share them: where the processes of a cluster listen, what the
//! coordinator knows, which files hold a marker text, and running an
//! attack while every user posts, then holding the deployment to what the
//! writers were told (every acknowledged post present once, the replicas'
//! journals identical).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tsn_proto::tsn::{ClusterView, ProcessKind, ProcessView};

use crate::fault_check::{journals_agree, Expectation, FollowRecord, Reader};
use crate::load::{Load, LoadReport};
use crate::wait::wait_for;
use crate::Deployment;

/// The coordinator's view of every cluster; panics if it does not answer.
pub async fn cluster_views(d: &Deployment) -> Vec<ClusterView> {
    match d.api().clusters().await {
        Ok(v) => v,
        Err(status) => panic!("Clusters(): {status}"),
    }
}

/// Addresses of the processes of `cluster`: its primary, a secondary, its
/// sync service.
pub async fn addresses(d: &Deployment, cluster: u32) -> (String, String, String) {
    let all = cluster_views(d).await;
    let Some(view) = all.iter().find(|v| v.cluster_id == cluster) else {
        panic!("no cluster {cluster}: {all:?}");
    };
    let of = |pick: &dyn Fn(&ProcessView) -> bool| {
        view.processes
            .iter()
            .find(|p| pick(p))
            .map(|p| p.address.clone())
            .unwrap_or_else(|| panic!("cluster {cluster}: {view:?}"))
    };
    let server = ProcessKind::Server as i32;
    let primary = of(&|p| p.kind == server && p.server_id == view.primary_id);
    let secondary = of(&|p| p.kind == server && p.server_id != view.primary_id);
    let sync = of(&|p| p.kind == ProcessKind::SyncService as i32);
    (primary, secondary, sync)
}

/// Every (cluster, server id, kind, address) the coordinator knows.
pub async fn processes(d: &Deployment) -> BTreeSet<(u32, u32, i32, String)> {
    cluster_views(d)
        .await
        .iter()
        .flat_map(|v| {
            v.processes
                .iter()
                .map(|p| (v.cluster_id, p.server_id, p.kind, p.address.clone()))
        })
        .collect()
}

/// The files under `root` that hold `marker`.
pub fn files_holding(root: &Path, marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    walk(root, marker, &mut found);
    found
}

fn walk(dir: &Path, marker: &str, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            walk(&path, marker, found);
        } else if let Ok(bytes) = std::fs::read(&path) {
            if String::from_utf8_lossy(&bytes).contains(marker) {
                found.push(path.display().to_string());
            }
        }
    }
}

/// Runs `attack` while every one of `users` posts: each writer gets
/// `acked_around` posts acknowledged before the attack starts and again
/// after it ends. Then no writer gave up, and [`assert_intact`] holds
/// (with the `follows` made before). Returns the deployment and what the
/// writers were told.
pub async fn under_load<F, Fut>(
    d: Deployment,
    users: &[u32],
    follows: &[FollowRecord],
    acked_around: u64,
    deadline: Duration,
    attack: F,
) -> (Deployment, LoadReport)
where
    F: FnOnce(Deployment) -> Fut,
    Fut: Future<Output = Deployment>,
{
    let load = Load::start(&d.coord_addr(), users);
    load.wait_each_acked_more(acked_around, deadline).await;
    let d = attack(d).await;
    load.wait_each_acked_more(acked_around, deadline).await;
    let report = load.stop().await;
    assert!(
        report.failures().is_empty(),
        "writers gave up: {:?}",
        report.failures()
    );
    assert_intact(&d, users, follows, &report, deadline).await;
    (d, report)
}

/// Every post acknowledged to a writer of `users` is in its author's
/// timeline once (and in the timelines of those who follow the author by
/// `follows`), and the journals of the servers of each cluster become
/// identical within `deadline`.
pub async fn assert_intact(
    d: &Deployment,
    users: &[u32],
    follows: &[FollowRecord],
    report: &LoadReport,
    deadline: Duration,
) {
    let expect = Expectation {
        users: users.to_vec(),
        follows: follows.to_vec(),
        posts: report.posts(),
        follow_time: None,
    };
    let reader = Reader::new(d.api().coord().clone(), &d.datastore_root());
    reader.assert_clean(&expect, deadline, String::new).await;
    for cluster in 1..=d.config().clusters {
        let named = d.replica_layouts(cluster);
        wait_for(
            deadline,
            &format!("the replicas of cluster {cluster} to agree"),
            || {
                let named = named.clone();
                async move { journals_agree(&named).map(|_| ()) }
            },
        )
        .await;
    }
}
