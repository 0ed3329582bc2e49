//! Every decision with the clock passed in.

use std::time::{Duration, Instant};

use tsn_proto::tsn::{HeartbeatReply, HeartbeatRequest, InSyncChange, Peer, ProcessKind, Role};

use super::*;
use crate::config::{ASSIGN_USERS_PER_CALL_MAX, SERVERS_PER_CLUSTER_MAX};
use crate::persist::Files;

const TIMEOUT: Duration = Duration::from_millis(500);

struct Fixture {
    dir: tempfile::TempDir,
    t0: Instant,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            t0: Instant::now(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn open(&self, clusters: u32, start_ms: u64) -> ControlPlane {
        self.open_with(clusters, start_ms, false)
    }

    fn open_with(&self, clusters: u32, start_ms: u64, clear: bool) -> ControlPlane {
        let files = Files::open(self.dir.path(), clear).unwrap();
        let loaded = files.load().unwrap();
        ControlPlane::open(
            loaded,
            Box::new(files),
            clusters,
            TIMEOUT,
            self.at(start_ms),
        )
        .unwrap()
    }
}

fn server(c: u32, s: u32, role: Role) -> HeartbeatRequest {
    HeartbeatRequest {
        cluster_id: c,
        server_id: s,
        kind: ProcessKind::Server as i32,
        address: format!("127.0.0.1:{}", 10_000 + s),
        requested_role: role as i32,
        epoch: 0,
        last_seq: 0,
        last_epoch: 0,
        mp3_address: format!("127.0.0.1:{}", 20_000 + s),
        clock_unbounded: false,
    }
}

fn with_progress(mut req: HeartbeatRequest, last_epoch: u64, last_seq: u64) -> HeartbeatRequest {
    req.last_epoch = last_epoch;
    req.last_seq = last_seq;
    req
}

fn in_sync(st: &mut ControlPlane, c: u32, s: u32) {
    let rec = st.record(c).clone();
    // As the server's last heartbeat arrived.
    let now = st.processes[&(c, ProcessKind::Server, s)].last_heartbeat;
    let reply = st
        .change_in_sync(
            &InSyncChange {
                cluster_id: c,
                primary_id: rec.primary_id,
                epoch: rec.epoch,
                server_id: s,
                in_sync: true,
            },
            now,
        )
        .unwrap();
    assert!(reply.ok);
}

/// Server 1 primary of cluster 1 and server 2 in its in-sync set, both
/// registered at `ms`.
fn primary_and_in_sync_secondary(f: &Fixture, st: &mut ControlPlane, ms: u64) {
    st.heartbeat(&server(1, 1, Role::Primary), f.at(ms))
        .unwrap();
    st.heartbeat(&server(1, 2, Role::Secondary), f.at(ms))
        .unwrap();
    in_sync(st, 1, 2);
}

fn role(reply: &HeartbeatReply) -> Role {
    Role::try_from(reply.role).unwrap()
}

#[test]
fn fresh_cluster_elects_first_primary_requester() {
    let f = Fixture::new();
    let mut st = f.open(3, 0);
    let r = st.heartbeat(&server(1, 1, Role::Primary), f.at(1)).unwrap();
    assert_eq!(role(&r), Role::Primary);
    assert_eq!((r.epoch, r.primary_id), (1, 1));
    assert_eq!(r.primary_address, "127.0.0.1:10001");
    assert_eq!(r.cluster_count, 3);
    assert_eq!(r.failure_timeout_ms, 500);
    // A second PRIMARY requester is a secondary.
    let r = st.heartbeat(&server(1, 2, Role::Primary), f.at(2)).unwrap();
    assert_eq!(role(&r), Role::Secondary);
    assert_eq!((r.epoch, r.primary_id), (1, 1));
    // The primary sees it among the secondaries.
    let r = st.heartbeat(&server(1, 1, Role::Primary), f.at(3)).unwrap();
    assert_eq!(
        r.secondaries,
        vec![Peer {
            server_id: 2,
            address: "127.0.0.1:10002".into()
        }]
    );
}

#[test]
fn secondary_requester_never_becomes_primary_of_fresh_cluster() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    for t in 0..10 {
        let r = st
            .heartbeat(&server(1, 2, Role::Secondary), f.at(t * 100))
            .unwrap();
        assert_eq!(role(&r), Role::Secondary);
        assert_eq!((r.epoch, r.primary_id), (0, 0));
        assert_eq!(r.primary_address, "");
        st.tick(f.at(t * 100 + 1));
    }
    assert_eq!(st.record(1).epoch, 0);
}

#[test]
fn sync_service_gets_primary_address() {
    let f = Fixture::new();
    let mut st = f.open(2, 0);
    st.heartbeat(&server(2, 7, Role::Primary), f.at(1)).unwrap();
    let mut req = server(2, 0, Role::Unspecified);
    req.kind = ProcessKind::SyncService as i32;
    req.address = "127.0.0.1:9000".into();
    let r = st.heartbeat(&req, f.at(2)).unwrap();
    assert_eq!(role(&r), Role::Unspecified);
    assert_eq!(r.primary_address, "127.0.0.1:10007");
    assert_eq!(r.cluster_count, 2);
    let view = st.clusters(f.at(3));
    assert_eq!(view.len(), 2);
    assert_eq!(view[1].processes.len(), 2);
    assert_eq!(view[1].processes[0].role, Role::Primary as i32);
    assert_eq!(view[1].processes[1].kind, ProcessKind::SyncService as i32);
}

/// Server 1 primary, 2 and 3 in sync, 4 alive but not in sync with the
/// longest journal; 1 goes silent.
fn three_secondaries(f: &Fixture, st: &mut ControlPlane) {
    st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
    for s in 2..=4 {
        st.heartbeat(&server(1, s, Role::Secondary), f.at(0))
            .unwrap();
    }
    in_sync(st, 1, 2);
    in_sync(st, 1, 3);
    for t in (100..=1000).step_by(100) {
        st.heartbeat(&with_progress(server(1, 2, Role::Secondary), 1, 5), f.at(t))
            .unwrap();
        st.heartbeat(&with_progress(server(1, 3, Role::Secondary), 1, 9), f.at(t))
            .unwrap();
        st.heartbeat(
            &with_progress(server(1, 4, Role::Secondary), 1, 100),
            f.at(t),
        )
        .unwrap();
    }
}

#[test]
fn a_stalled_coordinator_declares_nobody_dead_for_a_timeout() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    primary_and_in_sync_secondary(&f, &mut st, 0);
    for t in (0..=1000).step_by(50) {
        st.heartbeat(&server(1, 1, Role::Primary), f.at(t)).unwrap();
        st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
            .unwrap();
        st.tick(f.at(t));
    }
    // The coordinator does not run from 1000 to 1400; the primary's
    // heartbeats stop at 1000 (it died), the secondary's go on.
    for t in (1400..=1850).step_by(50) {
        st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
            .unwrap();
        st.tick(f.at(t));
        assert_eq!(
            st.record(1).primary_id,
            1,
            "no promotion at {t} ms: still in the grace after the stall"
        );
    }
    for t in (1900..=2000).step_by(50) {
        st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
            .unwrap();
        st.tick(f.at(t));
    }
    assert_eq!(
        st.record(1).primary_id,
        2,
        "promoted once the coordinator listened a full timeout"
    );
}

#[test]
fn promotion_picks_alive_in_sync_secondary_with_most_entries() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    three_secondaries(&f, &mut st);
    st.tick(f.at(1000));
    let rec = st.record(1).clone();
    assert_eq!((rec.epoch, rec.primary_id), (2, 3));
    assert!(rec.in_sync.is_empty());
    let r = st
        .heartbeat(&server(1, 3, Role::Secondary), f.at(1001))
        .unwrap();
    assert_eq!(role(&r), Role::Primary);
    assert_eq!(r.epoch, 2);
    // The old primary comes back as a secondary.
    let r = st
        .heartbeat(&server(1, 1, Role::Primary), f.at(1002))
        .unwrap();
    assert_eq!(role(&r), Role::Secondary);
    assert_eq!(r.primary_address, "127.0.0.1:10003");
}

#[test]
fn promotion_ties_go_to_lowest_id_and_skip_dead() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
    for s in [5, 3, 4] {
        st.heartbeat(&server(1, s, Role::Secondary), f.at(0))
            .unwrap();
        in_sync(&mut st, 1, s);
    }
    for t in (100..=1000).step_by(100) {
        st.heartbeat(&with_progress(server(1, 5, Role::Secondary), 1, 7), f.at(t))
            .unwrap();
        st.heartbeat(&with_progress(server(1, 4, Role::Secondary), 1, 7), f.at(t))
            .unwrap();
    }
    // 3 has the most but is dead since 0.
    st.heartbeat(
        &with_progress(server(1, 3, Role::Secondary), 1, 50),
        f.at(1),
    )
    .unwrap();
    st.tick(f.at(1000));
    assert_eq!(st.record(1).primary_id, 4);
}

fn unbounded(mut req: HeartbeatRequest) -> HeartbeatRequest {
    req.clock_unbounded = true;
    req
}

#[test]
fn a_server_whose_clock_is_unbounded_is_not_elected_first_primary() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    let r = st
        .heartbeat(&unbounded(server(1, 1, Role::Primary)), f.at(1))
        .unwrap();
    assert_eq!(role(&r), Role::Secondary);
    assert_eq!(st.record(1).primary_id, 0, "nobody elected");
    let r = st.heartbeat(&server(1, 1, Role::Primary), f.at(2)).unwrap();
    assert_eq!(role(&r), Role::Primary, "elected once its clock is bounded");
}

#[test]
fn promotion_skips_a_secondary_whose_clock_is_unbounded() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
    for s in [2, 3] {
        st.heartbeat(&server(1, s, Role::Secondary), f.at(0))
            .unwrap();
        in_sync(&mut st, 1, s);
    }
    for t in (100..=1000).step_by(100) {
        // 2 has the most of the journal, but cannot tell the time.
        st.heartbeat(
            &unbounded(with_progress(server(1, 2, Role::Secondary), 1, 50)),
            f.at(t),
        )
        .unwrap();
        st.heartbeat(&with_progress(server(1, 3, Role::Secondary), 1, 7), f.at(t))
            .unwrap();
    }
    st.tick(f.at(1000));
    assert_eq!(st.record(1).primary_id, 3);
}

#[test]
fn no_promotion_while_every_candidate_clock_is_unbounded() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
    st.heartbeat(&server(1, 2, Role::Secondary), f.at(0))
        .unwrap();
    in_sync(&mut st, 1, 2);
    for t in (100..=1000).step_by(100) {
        st.heartbeat(&unbounded(server(1, 2, Role::Secondary)), f.at(t))
            .unwrap();
    }
    st.tick(f.at(1000));
    assert_eq!(st.record(1).primary_id, 1, "waits for a bounded clock");
    st.heartbeat(&server(1, 2, Role::Secondary), f.at(1100))
        .unwrap();
    st.tick(f.at(1100));
    assert_eq!(st.record(1).primary_id, 2);
}

#[test]
fn no_promotion_without_in_sync_candidate() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
    for t in (100..=2000).step_by(100) {
        st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
            .unwrap();
        st.tick(f.at(t));
    }
    assert_eq!((st.record(1).epoch, st.record(1).primary_id), (1, 1));
    let e = st.get_server(1, f.at(2000)).unwrap_err();
    assert!(matches!(e, Error::Unavailable(ref m) if m == "cluster 1 has no live primary"));
    // The primary returns and keeps its place.
    st.heartbeat(&server(1, 1, Role::Primary), f.at(2001))
        .unwrap();
    assert_eq!(st.get_server(1, f.at(2002)).unwrap().server_id, 1);
}

#[test]
fn no_promotion_during_grace_period() {
    let f = Fixture::new();
    {
        let mut st = f.open(1, 0);
        primary_and_in_sync_secondary(&f, &mut st, 0);
    }
    // Restarted at 10 s: only server 2 heartbeats.
    let mut st = f.open(1, 10_000);
    for t in (10_000..=10_500).step_by(50) {
        st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
            .unwrap();
        st.tick(f.at(t));
        assert_eq!(st.record(1).primary_id, 1, "promoted at {t}");
    }
    // The primary never came back: after the grace period, 2 takes over.
    st.heartbeat(&server(1, 2, Role::Secondary), f.at(10_550))
        .unwrap();
    st.tick(f.at(10_600));
    assert_eq!((st.record(1).epoch, st.record(1).primary_id), (2, 2));
}

#[test]
fn restarted_coordinator_keeps_primary_that_heartbeats() {
    let f = Fixture::new();
    {
        let mut st = f.open(1, 0);
        primary_and_in_sync_secondary(&f, &mut st, 0);
    }
    let mut st = f.open(1, 10_000);
    for t in (10_000..=12_000).step_by(100) {
        st.heartbeat(&server(1, 1, Role::Primary), f.at(t)).unwrap();
        st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
            .unwrap();
        st.tick(f.at(t));
    }
    assert_eq!((st.record(1).epoch, st.record(1).primary_id), (1, 1));
    assert_eq!(st.record(1).in_sync, BTreeSet::from([2]));
}

#[test]
fn epoch_grows_across_promotions_and_reloads() {
    let f = Fixture::new();
    let mut last_epoch = 0;
    let mut t = 0;
    for round in 0..4u32 {
        let mut st = f.open(1, t);
        assert_eq!(st.record(1).epoch, last_epoch, "reload kept the epoch");
        // Whoever is primary now; a fresh server joins and catches up.
        let primary = st.record(1).primary_id.max(1);
        let next = 10 + round;
        st.heartbeat(&server(1, primary, Role::Primary), f.at(t))
            .unwrap();
        st.heartbeat(&server(1, next, Role::Secondary), f.at(t))
            .unwrap();
        in_sync(&mut st, 1, next);
        let start = st.record(1).epoch;
        assert!(start >= last_epoch.max(1));
        // The primary dies; `next` keeps beating until promoted.
        for step in 1..=20 {
            st.heartbeat(&server(1, next, Role::Secondary), f.at(t + step * 100))
                .unwrap();
            st.tick(f.at(t + step * 100));
        }
        assert_eq!(st.record(1).primary_id, next);
        assert_eq!(st.record(1).epoch, start + 1);
        last_epoch = start + 1;
        t += 10_000;
    }
    let st = f.open(1, t);
    assert_eq!((st.record(1).epoch, st.record(1).primary_id), (5, 13));
}

#[test]
fn stale_change_in_sync_is_refused() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
    st.heartbeat(&server(1, 2, Role::Secondary), f.at(0))
        .unwrap();
    let change = |primary_id, epoch, server_id, in_sync| InSyncChange {
        cluster_id: 1,
        primary_id,
        epoch,
        server_id,
        in_sync,
    };
    for stale in [
        change(1, 0, 2, true),
        change(2, 1, 2, true),
        change(0, 0, 2, true),
    ] {
        let r = st.change_in_sync(&stale, f.at(0)).unwrap();
        assert!(!r.ok);
        assert!(st.record(1).in_sync.is_empty());
    }
    let r = st.change_in_sync(&change(1, 1, 2, true), f.at(0)).unwrap();
    assert!(r.ok);
    assert_eq!(r.in_sync, vec![2]);
    assert!(matches!(
        st.change_in_sync(&change(1, 1, 1, true), f.at(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        st.change_in_sync(
            &InSyncChange {
                cluster_id: 9,
                ..change(1, 1, 2, true)
            },
            f.at(0)
        ),
        Err(Error::InvalidArgument(_))
    ));
    let r = st.change_in_sync(&change(1, 1, 2, false), f.at(0)).unwrap();
    assert!(r.ok && r.in_sync.is_empty());
    // It was stored.
    drop(st);
    assert!(f.open(1, 0).record(1).in_sync.is_empty());
}

#[test]
fn epoch_raised_from_heartbeats_after_cleared_state() {
    let f = Fixture::new();
    {
        let mut st = f.open(1, 0);
        st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
    }
    let mut st = f.open_with(1, 0, true);
    assert_eq!(st.record(1).epoch, 0);
    // A secondary that saw epoch 6 raises it without being elected.
    let r = st
        .heartbeat(
            &with_progress(server(1, 2, Role::Secondary), 6, 40),
            f.at(1),
        )
        .unwrap();
    assert_eq!((r.epoch, r.primary_id, role(&r)), (6, 0, Role::Secondary));
    // The old primary asks again: elected with a newer epoch than any seen.
    let mut req = with_progress(server(1, 1, Role::Primary), 5, 41);
    req.epoch = 7;
    let r = st.heartbeat(&req, f.at(2)).unwrap();
    assert_eq!((r.epoch, r.primary_id, role(&r)), (8, 1, Role::Primary));
    drop(st);
    assert_eq!(f.open(1, 0).record(1).epoch, 8);
}

#[test]
fn assignments_remembered_across_reload() {
    let f = Fixture::new();
    {
        let mut st = f.open(3, 0);
        assert_eq!(st.assign(&[1, 2, 3, 4, 4]).unwrap(), vec![1, 2, 3, 1, 1]);
    }
    // Fewer clusters now: known users keep theirs, new ones use the new N.
    let mut st = f.open(2, 0);
    assert_eq!(st.assign(&[3, 4, 5, 6]).unwrap(), vec![3, 1, 1, 2]);
    assert!(matches!(st.assign(&[0]), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        st.assign(&[5, 1 << 31]),
        Err(Error::InvalidArgument(_))
    ));
    let many = vec![1; ASSIGN_USERS_PER_CALL_MAX + 1];
    assert!(matches!(st.assign(&many), Err(Error::InvalidArgument(_))));
    drop(st);
    let mut st = f.open(3, 0);
    assert_eq!(
        st.assign(&[1, 2, 3, 4, 5, 6]).unwrap(),
        vec![1, 2, 3, 1, 1, 2]
    );
    assert!(matches!(
        st.get_server(0, f.at(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        st.get_server(-3, f.at(0)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn get_server_names_live_primary() {
    let f = Fixture::new();
    let mut st = f.open(3, 0);
    let mut req = server(2, 4, Role::Primary);
    req.address = "[::1]:5002".into();
    st.heartbeat(&req, f.at(0)).unwrap();
    let info = st.get_server(5, f.at(1)).unwrap();
    assert_eq!(info.server_id, 4);
    assert_eq!(
        (info.hostname.as_str(), info.port.as_str()),
        ("[::1]", "5002")
    );
    assert_eq!(
        (info.r#type.as_str(), info.cluster_id, info.is_master),
        ("server", 2, true)
    );
    assert!(matches!(
        st.get_server(1, f.at(1)),
        Err(Error::Unavailable(_))
    ));
}

#[test]
fn duplicate_server_id_at_another_address_refused() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
    let mut twin = server(1, 1, Role::Primary);
    twin.address = "127.0.0.1:20001".into();
    let e = st.heartbeat(&twin, f.at(100)).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)));
    assert_eq!(
        e.to_string(),
        "server id 1 of cluster 1 is already registered at 127.0.0.1:10001"
    );
    // Nothing changed: the registration keeps its address.
    assert_eq!(st.get_server(1, f.at(101)).unwrap().port, "10001");
    // Once the first is dead, the id may move (after the grace period).
    let r = st.heartbeat(&twin, f.at(1000)).unwrap();
    assert_eq!(r.primary_address, "127.0.0.1:20001");
}

#[test]
fn bad_heartbeats_are_refused() {
    let f = Fixture::new();
    let mut st = f.open(2, 0);
    let p = || server(1, 1, Role::Primary);
    let bad = vec![
        HeartbeatRequest {
            cluster_id: 0,
            ..p()
        },
        HeartbeatRequest {
            cluster_id: 3,
            ..p()
        },
        HeartbeatRequest { kind: 0, ..p() },
        HeartbeatRequest { kind: 9, ..p() },
        server(1, 0, Role::Primary),
        HeartbeatRequest {
            address: String::new(),
            ..p()
        },
        HeartbeatRequest {
            address: "nohost".into(),
            ..p()
        },
        HeartbeatRequest {
            address: "h:99999".into(),
            ..p()
        },
        HeartbeatRequest {
            epoch: u64::MAX,
            ..p()
        },
        HeartbeatRequest {
            kind: ProcessKind::SyncService as i32,
            ..server(1, 3, Role::Unspecified)
        },
    ];
    for req in bad {
        let e = st.heartbeat(&req, f.at(0)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{req:?}: {e}");
    }
    assert!(st
        .clusters(f.at(0))
        .iter()
        .all(|c| c.processes.is_empty() && c.epoch == 0));
}

#[test]
fn servers_per_cluster_are_limited() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    for s in 1..=SERVERS_PER_CLUSTER_MAX as u32 {
        st.heartbeat(&server(1, s, Role::Secondary), f.at(0))
            .unwrap();
    }
    let extra = server(1, 1000, Role::Secondary);
    assert!(matches!(
        st.heartbeat(&extra, f.at(1)),
        Err(Error::ResourceExhausted(_))
    ));
    // Once the others are dead, they make room.
    st.heartbeat(&server(1, 1, Role::Secondary), f.at(2000))
        .unwrap();
    st.heartbeat(&extra, f.at(2000)).unwrap();
    assert_eq!(st.clusters(f.at(2000))[0].processes.len(), 2);
}

/// A disk that refuses every write.
struct Refusing;

impl Persistence for Refusing {
    fn commit(&mut self, _: &Command) -> persist::Result<()> {
        Err(refused())
    }
}

fn refused() -> persist::Error {
    persist::Error::Io {
        path: "refusing".into(),
        source: std::io::Error::other("no space left"),
    }
}

#[test]
fn a_write_refused_by_the_disk_changes_nothing() {
    let t0 = Instant::now();
    let loaded = Loaded {
        clusters: Some(StoredClusters {
            cluster_count: 1,
            clusters: vec![ClusterRecord::fresh(1)],
        }),
        assignments: Vec::new(),
        accounts: Vec::new(),
    };
    let mut st = ControlPlane::open(loaded, Box::new(Refusing), 1, TIMEOUT, t0).unwrap();
    let e = st.heartbeat(&server(1, 1, Role::Primary), t0).unwrap_err();
    assert!(matches!(e, Error::Storage(_)), "{e}");
    assert_eq!((st.record(1).epoch, st.record(1).primary_id), (0, 0));
    assert!(matches!(st.assign(&[5]), Err(Error::Storage(_))));
    assert!(st.assignments.is_empty());
}

/// A heartbeat claiming epoch 2^53 used to be adopted; the next promotion
/// then asked to store epoch 2^53 + 1, which the state file refuses, and
/// the failure detector panicked (no failover for any cluster after).
/// Now the claim is refused, and even a cluster whose epoch cannot grow
/// (a state file at the limit) leaves the detector deciding for the others.
#[test]
fn an_epoch_claim_cannot_stop_failovers() {
    let f = Fixture::new();
    let mut st = f.open(2, 0);
    primary_and_in_sync_secondary(&f, &mut st, 0);
    let mut lie = server(1, 2, Role::Secondary);
    lie.epoch = crate::config::EPOCH_MAX;
    let e = st.heartbeat(&lie, f.at(100)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("beyond")),
        "{e}"
    );
    lie.epoch = 0;
    lie.last_epoch = 3;
    assert!(st.heartbeat(&lie, f.at(100)).is_err());
    assert_eq!(st.record(1).epoch, 1);
    // The primary dies: server 2 is promoted.
    for ms in (600..=1400).step_by(100) {
        st.heartbeat(&server(1, 2, Role::Secondary), f.at(ms))
            .unwrap();
        st.tick(f.at(ms));
    }
    assert_eq!((st.record(1).primary_id, st.record(1).epoch), (2, 2));
}

#[test]
fn an_epoch_at_the_limit_stops_only_its_own_promotions() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut top = ClusterRecord::fresh(1);
    top.epoch = crate::config::EPOCH_MAX;
    top.primary_id = 1;
    top.in_sync.insert(2);
    let mut other = ClusterRecord::fresh(2);
    other.epoch = 4;
    other.primary_id = 1;
    other.in_sync.insert(2);
    let loaded = Loaded {
        clusters: Some(StoredClusters {
            cluster_count: 2,
            clusters: vec![top, other],
        }),
        assignments: Vec::new(),
        accounts: Vec::new(),
    };
    let files = Files::open(dir.path(), false).unwrap();
    let mut st = ControlPlane::open(loaded, Box::new(files), 2, TIMEOUT, at(0)).unwrap();
    for ms in (0..=1500).step_by(100) {
        for c in [1, 2] {
            let mut req = server(c, 2, Role::Secondary);
            req.epoch = st.record(c).epoch;
            st.heartbeat(&req, at(ms)).unwrap();
        }
        st.tick(at(ms));
    }
    assert_eq!(
        st.record(1).primary_id,
        1,
        "epoch cannot grow: no promotion"
    );
    assert_eq!((st.record(2).primary_id, st.record(2).epoch), (2, 5));
    // And an invalid state is refused by the files, not a panic.
    let mut bad = st.record(1).clone();
    bad.epoch += 1;
    assert!(st.store_cluster(bad).is_err());
}

#[test]
fn heartbeat_claims_are_sane() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    let mut req = server(1, 1, Role::Primary);
    req.last_seq = u64::MAX;
    assert!(st.heartbeat(&req, f.at(0)).is_err());
    let mut req = server(1, 1, Role::Primary);
    req.requested_role = 77;
    assert!(st.heartbeat(&req, f.at(0)).is_err());
    // A fresh cluster learns its epoch from its servers, below the room
    // kept for promotions.
    let mut req = server(1, 1, Role::Secondary);
    req.epoch = crate::config::EPOCH_CLAIM_MAX + 1;
    assert!(st.heartbeat(&req, f.at(0)).is_err());
    req.epoch = 9;
    assert_eq!(st.heartbeat(&req, f.at(0)).unwrap().epoch, 9);
}

#[test]
fn only_a_live_registered_secondary_joins_the_in_sync_set() {
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    primary_and_in_sync_secondary(&f, &mut st, 0);
    let change = |server_id, in_sync| InSyncChange {
        cluster_id: 1,
        primary_id: 1,
        epoch: 1,
        server_id,
        in_sync,
    };
    // Server 40 does not exist.
    let e = st.change_in_sync(&change(40, true), f.at(10)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("server 40")),
        "{e}"
    );
    assert_eq!(
        st.record(1).in_sync.iter().copied().collect::<Vec<_>>(),
        vec![2]
    );
    // Server 3 registered, then died: not added; removing is always allowed.
    st.heartbeat(&server(1, 3, Role::Secondary), f.at(10))
        .unwrap();
    assert!(st.change_in_sync(&change(3, true), f.at(5000)).is_err());
    assert!(st.change_in_sync(&change(2, false), f.at(5000)).unwrap().ok);
}

#[test]
fn assign_is_bounded_per_caller_and_in_total() {
    use super::rate::ASSIGN_NEW_USERS_BURST;
    let f = Fixture::new();
    let mut st = f.open(3, 0);
    let peer: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    let burst = ASSIGN_NEW_USERS_BURST as u32;
    for chunk in (1..=burst)
        .collect::<Vec<_>>()
        .chunks(ASSIGN_USERS_PER_CALL_MAX)
    {
        st.assign_for(Some(peer), chunk, f.at(0)).unwrap();
    }
    let e = st
        .assign_for(Some(peer), &[burst + 1], f.at(0))
        .unwrap_err();
    assert!(
        matches!(e, Error::ResourceExhausted(ref m) if m.contains("per second")),
        "{e}"
    );
    // Users already assigned cost nothing; another caller is served.
    st.assign_for(Some(peer), &[1, 2, 3], f.at(0)).unwrap();
    let other: std::net::IpAddr = "10.1.2.4".parse().unwrap();
    st.assign_for(Some(other), &[burst + 1], f.at(0)).unwrap();
    // The table's ceiling is a setting.
    st.set_users_max(burst as usize + 2);
    st.assign_for(Some(other), &[burst + 2], f.at(0)).unwrap();
    let e = st
        .assign_for(Some(other), &[burst + 3], f.at(0))
        .unwrap_err();
    assert!(
        matches!(e, Error::ResourceExhausted(ref m) if m.contains("--users-max")),
        "{e}"
    );
}

#[test]
fn get_server_adds_new_users_only_within_the_callers_bucket() {
    use super::rate::ASSIGN_NEW_USERS_BURST;
    let f = Fixture::new();
    let mut st = f.open(1, 0);
    st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
    let peer: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    // A user asked for before the caller runs dry.
    let known = st.get_server_for(Some(peer), 1, f.at(1)).unwrap();
    assert_eq!(known.server_id, 1);
    // The caller spends what is left of its bucket on new users...
    let left = ASSIGN_NEW_USERS_BURST as u32 - 1;
    for chunk in (2..=left + 1)
        .collect::<Vec<_>>()
        .chunks(ASSIGN_USERS_PER_CALL_MAX)
    {
        st.assign_for(Some(peer), chunk, f.at(1)).unwrap();
    }
    // ...then one more new user, one id per GetServer call, is refused.
    let e = st
        .get_server_for(Some(peer), left as i32 + 2, f.at(1))
        .unwrap_err();
    assert!(
        matches!(e, Error::ResourceExhausted(ref m) if m.contains("per second")),
        "{e}"
    );
    // Existing users always answer; another caller is served; the MP3
    // lookup draws on the same bucket.
    assert_eq!(
        st.get_server_for(Some(peer), 1, f.at(1)).unwrap().server_id,
        1
    );
    assert!(matches!(
        st.mp3_primary(Some(peer), left + 2, f.at(1)),
        Err(Error::ResourceExhausted(_))
    ));
    let other: std::net::IpAddr = "10.1.2.4".parse().unwrap();
    st.get_server_for(Some(other), left as i32 + 2, f.at(1))
        .unwrap();
    // The bucket refills at its rate.
    st.heartbeat(&server(1, 1, Role::Primary), f.at(1_000))
        .unwrap();
    st.get_server_for(Some(peer), left as i32 + 3, f.at(1_000))
        .unwrap();
}

fn handle(h: &str) -> tsn_datastore::handle::Handle {
    tsn_datastore::handle::Handle::parse(h).unwrap()
}

const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$qLml5cbgoJ9TnLjjLOx1wYGMnQkB7hBEIW3P5a6LyUs";

#[test]
fn a_handle_is_signed_up_once_case_insensitively_and_gets_a_fresh_id() {
    let f = Fixture::new();
    let mut st = f.open(3, 0);
    // Ids a classic client already used are never handed to an account.
    st.assign(&[1, 2, 5]).unwrap();
    let peer = Some("10.0.0.1".parse().unwrap());
    st.admit_signup(peer, &handle("alice"), f.at(0)).unwrap();
    let alice = st.sign_up(&handle("Alice"), HASH.into(), 7).unwrap();
    assert_eq!(
        (alice.handle.as_str(), alice.user, alice.cluster),
        ("alice", 6, 3)
    );
    let e = st
        .admit_signup(peer, &handle("ALICE"), f.at(0))
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    // The second look, after hashing, refuses too: a race has one winner.
    let e = st.sign_up(&handle("alice"), HASH.into(), 8).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    let bob = st.sign_up(&handle("bob"), HASH.into(), 9).unwrap();
    assert_eq!((bob.user, bob.cluster), (7, 1));
    assert_eq!(st.resolve(&handle("ALICE")).unwrap().user, 6);
    assert_eq!(st.account_of(6).unwrap().handle, "alice");
    assert!(st.account_of(5).is_none());
    assert!(matches!(
        st.resolve(&handle("carol")),
        Err(Error::NotFound(_))
    ));
    // The account's id is assigned, and a restart keeps it all.
    assert_eq!(st.assign(&[6]).unwrap(), vec![3]);
    drop(st);
    let mut st = f.open(3, 0);
    assert_eq!(st.resolve(&handle("alice")).unwrap(), &alice);
    assert_eq!(st.account_of(7).unwrap().handle, "bob");
    assert!(st.sign_up(&handle("bob"), HASH.into(), 10).is_err());
    assert_eq!(
        st.sign_up(&handle("carol"), HASH.into(), 11).unwrap().user,
        8
    );
}

#[test]
fn accounts_are_listed_by_pattern_in_handle_order() {
    let f = Fixture::new();
    let mut st = f.open(2, 0);
    for h in ["bob", "alice", "albert", "al", "carol"] {
        st.sign_up(&handle(h), HASH.into(), 1).unwrap();
    }
    let list = |st: &ControlPlane, p: &str, max| {
        let pattern = tsn_datastore::handle::Pattern::parse(p).unwrap();
        let (found, more) = st.list_accounts(&pattern, max);
        let handles: Vec<String> = found.iter().map(|a| a.handle.clone()).collect();
        (handles, more)
    };
    assert_eq!(
        list(&st, "al*", 10),
        (vec!["al".into(), "albert".into(), "alice".into()], false)
    );
    assert_eq!(
        list(&st, "*o*", 10),
        (vec!["bob".into(), "carol".into()], false)
    );
    assert_eq!(
        list(&st, "?l*", 2),
        (vec!["al".into(), "albert".into()], true)
    );
    assert_eq!(list(&st, "dave", 10), (Vec::<String>::new(), false));
    assert_eq!(list(&st, "BOB", 10), (vec!["bob".into()], false));
}

#[test]
fn sign_ups_are_limited_per_caller_and_by_users_max() {
    let f = Fixture::new();
    let mut st = f.open(2, 0);
    let a = Some("10.0.0.1".parse().unwrap());
    let b = Some("10.0.0.2".parse().unwrap());
    for _ in 0..super::rate::SIGNUPS_BURST as usize {
        st.admit_signup(a, &handle("x"), f.at(0)).unwrap();
    }
    let e = st.admit_signup(a, &handle("x"), f.at(0)).unwrap_err();
    assert!(matches!(e, Error::ResourceExhausted(_)), "{e}");
    st.admit_signup(b, &handle("x"), f.at(0)).unwrap();
    st.set_users_max(1);
    st.sign_up(&handle("x"), HASH.into(), 1).unwrap();
    let e = st.sign_up(&handle("y"), HASH.into(), 1).unwrap_err();
    assert!(matches!(e, Error::ResourceExhausted(_)), "{e}");
    assert!(matches!(st.resolve(&handle("y")), Err(Error::NotFound(_))));
}

#[test]
fn a_sign_up_refused_by_the_disk_changes_nothing() {
    let t0 = Instant::now();
    let loaded = Loaded {
        clusters: None,
        assignments: Vec::new(),
        accounts: Vec::new(),
    };
    let mut st = ControlPlane::open(loaded, Box::new(Refusing), 1, TIMEOUT, t0);
    // Opening fresh stores the clusters: refused too.
    assert!(st.is_err());
    let loaded = Loaded {
        clusters: Some(StoredClusters {
            cluster_count: 1,
            clusters: vec![ClusterRecord::fresh(1)],
        }),
        assignments: Vec::new(),
        accounts: Vec::new(),
    };
    st = ControlPlane::open(loaded, Box::new(Refusing), 1, TIMEOUT, t0);
    let mut st = st.unwrap();
    let e = st.sign_up(&handle("alice"), HASH.into(), 1).unwrap_err();
    assert!(matches!(e, Error::Storage(_)), "{e}");
    assert!(st.accounts.is_empty() && st.assignments.is_empty());
}
