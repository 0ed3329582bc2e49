//! Random well-formed but wrong messages to every handler of the
//! coordinator's internal service (`Heartbeat`, `Assign`, `ChangeInSync`),
//! mixed with the failure detector's ticks, at random times: never a
//! panic, and what the coordinator believes stays sane.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tsn_proto::tsn::{HeartbeatRequest, InSyncChange};

use super::*;
use crate::config::EPOCH_MAX;
use crate::persist::Loaded;

const CLUSTERS: u32 = 3;
const TIMEOUT: Duration = Duration::from_millis(500);

/// Applies the commands as every member of a group does, with no file:
/// the decisions, not the files, are under test, and the replicated
/// state's own rules (epochs never go back) must never refuse one.
#[derive(Default)]
struct Memory(crate::replicated::Replicated);

impl Persistence for Memory {
    fn commit(&mut self, cmd: &Command) -> persist::Result<()> {
        if let Err(reason) = self.0.apply(cmd) {
            panic!("the control plane proposed a command the group refuses: {reason}");
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Call {
    Heartbeat(HeartbeatRequest),
    Assign(Option<IpAddr>, Vec<u32>),
    ChangeInSync(InSyncChange),
    GetServer(i32),
    Tick,
}

/// Mostly values near the real ones (so that calls reach deep into the
/// handlers), sometimes anything.
fn small_or_any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..6, 1 => any::<u32>()]
}

fn small_or_any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..6,
        1 => Just(EPOCH_MAX),
        1 => Just(EPOCH_MAX + 1),
        1 => any::<u64>()
    ]
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (1u16..4).prop_map(|p| format!("127.0.0.1:{p}")),
        1 => Just(String::new()),
        1 => prop::collection::vec(any::<char>(), 0..300).prop_map(String::from_iter),
    ]
}

fn heartbeat() -> impl Strategy<Value = HeartbeatRequest> {
    (
        (small_or_any_u32(), small_or_any_u32(), -1i32..4, address()),
        (
            -1i32..4,
            small_or_any_u64(),
            small_or_any_u64(),
            small_or_any_u64(),
        ),
        address(),
    )
        .prop_map(
            |((cluster_id, server_id, kind, address), (role, epoch, last_seq, last_epoch), mp3)| {
                HeartbeatRequest {
                    cluster_id,
                    server_id,
                    kind,
                    address,
                    requested_role: role,
                    epoch,
                    last_seq,
                    last_epoch,
                    mp3_address: mp3,
                    clock_unbounded: false,
                }
            },
        )
}

fn call() -> impl Strategy<Value = Call> {
    let peer = prop::option::of((0u8..3).prop_map(|b| IpAddr::from([10, 0, 0, b])));
    let users = prop_oneof![
        4 => prop::collection::vec(small_or_any_u32(), 0..8),
        1 => (any::<u32>(), 0usize..12_000)
            .prop_map(|(from, n)| (0..n as u32).map(|i| from.wrapping_add(i)).collect()),
    ];
    let change = (
        small_or_any_u32(),
        small_or_any_u32(),
        small_or_any_u64(),
        small_or_any_u32(),
        any::<bool>(),
    )
        .prop_map(
            |(cluster_id, primary_id, epoch, server_id, in_sync)| InSyncChange {
                cluster_id,
                primary_id,
                epoch,
                server_id,
                in_sync,
            },
        );
    prop_oneof![
        6 => heartbeat().prop_map(Call::Heartbeat),
        2 => (peer, users).prop_map(|(p, u)| Call::Assign(p, u)),
        3 => change.prop_map(Call::ChangeInSync),
        1 => any::<i32>().prop_map(Call::GetServer),
        2 => Just(Call::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_calls_never_panic(calls in prop::collection::vec((0u64..400, call()), 1..40)) {
        let t0 = Instant::now();
        let loaded = Loaded { clusters: None, assignments: Vec::new(), accounts: Vec::new() };
        let mut st = ControlPlane::open(loaded, Box::new(Memory::default()), CLUSTERS, TIMEOUT, t0)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        st.set_users_max(50_000);
        let mut now = t0;
        for (step_ms, call) in calls {
            now += Duration::from_millis(step_ms);
            match call {
                Call::Heartbeat(req) => {
                    let _ = st.heartbeat(&req, now);
                }
                Call::Assign(peer, users) => {
                    if let Ok(clusters) = st.assign_for(peer, &users, now) {
                        prop_assert_eq!(clusters.len(), users.len());
                        prop_assert!(clusters.iter().all(|c| (1..=CLUSTERS).contains(c)));
                    }
                }
                Call::ChangeInSync(change) => {
                    let _ = st.change_in_sync(&change, now);
                }
                Call::GetServer(id) => {
                    let _ = st.get_server(id, now);
                }
                Call::Tick => st.tick(now),
            }
            for v in st.clusters(now) {
                prop_assert!(v.epoch <= EPOCH_MAX, "{:?}", v);
                prop_assert!(!v.in_sync.contains(&v.primary_id) || v.primary_id == 0, "{:?}", v);
            }
        }
    }
}
