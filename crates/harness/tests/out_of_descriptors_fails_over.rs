//! A primary that runs out of file descriptors cannot serve (it cannot open
//! its journal), so it must stop saying it can: its heartbeats stop, the
//! coordinator promotes the in-sync secondary, writers carry on there, and
//! once descriptors are back the old primary rejoins as a secondary.
//! Record by record, every acknowledged post is present once, and the two
//! journals agree.
//!
//! The fault is real: the primary's soft `RLIMIT_NOFILE` is lowered (with
//! `prlimit(2)`, from outside, as an operator's `prlimit --pid` would) to
//! the number of descriptors it holds, so its next `open` fails with
//! `EMFILE`.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use tsn_harness::fault_check::{journals_agree, Expectation, Reader};
use tsn_harness::load::Load;
use tsn_harness::views::Failover;
use tsn_harness::wait_for;

use common::{await_failover, ms, ready_for_failover, start, wait_in_sync, CONVERGE_DEADLINE_MS};

const USERS: [u32; 2] = [1, 3];
/// Posts each writer has acknowledged before the fault, and again after.
const ACKED_BEFORE: u64 = 5;
const ACKED_AFTER: u64 = 5;

/// The soft and hard `RLIMIT_NOFILE` of process `pid`.
fn nofile_of(pid: u32) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads the process's limit into `old`.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit({pid}): {}", std::io::Error::last_os_error());
    old
}

/// Sets the soft `RLIMIT_NOFILE` of process `pid` (the hard one stays).
fn set_soft_nofile(pid: u32, soft: u64) {
    let hard = nofile_of(pid).rlim_max;
    let new = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: `new` is a valid limit; the old one is not asked for.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit({pid}): {}", std::io::Error::last_os_error());
}

/// How many descriptors process `pid` holds now.
fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/fd: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_out_of_descriptors_stops_heartbeating_and_is_replaced() {
    let mut d = start(2, 1).await;
    d.login_all(&USERS).await;
    let (old, _, epoch_before) = ready_for_failover(&d, 1).await;
    let pid = d.server(1, old).pid().expect("the primary runs");
    let soft_before = nofile_of(pid).rlim_cur;

    let load = Load::start(&d.coord_addr(), &USERS);
    load.wait_each_acked_more(ACKED_BEFORE, ms(CONVERGE_DEADLINE_MS))
        .await;
    // Every descriptor it may have is taken: the next open fails.
    set_soft_nofile(pid, open_descriptors(pid));
    let new = match await_failover(&d.api(), 1, old, epoch_before).await {
        Failover::Promoted(new) => new,
        Failover::NoCandidate => panic!(
            "the secondary was in sync but was not promoted:\n{}",
            d.server(1, old).log_tails()
        ),
    };
    assert!(
        d.server(1, old)
            .stderr_since_start()
            .contains("cannot open files"),
        "the primary did not say why it stopped heartbeating:\n{}",
        d.server(1, old).log_tails()
    );
    load.wait_each_acked_more(ACKED_AFTER, ms(CONVERGE_DEADLINE_MS))
        .await;

    // Descriptors come back: the old primary heartbeats again and rejoins
    // as a secondary of the new one.
    set_soft_nofile(pid, soft_before);
    wait_in_sync(&d, 1, old).await;
    let (primary_now, _) = d.primary_of(1).await;
    assert_eq!(primary_now, new, "cluster 1 changed primary again");
    assert!(d.server(1, old).is_running(), "the old primary exited");

    let report = load.stop().await;
    assert!(
        report.failures().is_empty(),
        "writers gave up: {:?}",
        report.failures()
    );
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
    let named = d.replica_layouts(1);
    wait_for(
        ms(CONVERGE_DEADLINE_MS),
        "the journals of cluster 1 to agree",
        || {
            let named = named.clone();
            async move { journals_agree(&named).map(drop) }
        },
    )
    .await;
}
