//! Sign-up: a handle belongs to one account across tsn, also while the
//! clusters are cut off from each other, because the coordinator decides
//! it; every way `tsn.Accounts` refuses a call changes nothing.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::path::Path;

use tsn_cluster::coord::CoordClient;
use tsn_cluster::password::PASSWORD_MAX_BYTES;
use tsn_harness::{run_client_with_stdin, Deployment, Member};

use common::start;

/// Most sign-ups a test makes in a row before the caller must have been
/// refused for its rate.
const SIGNUPS_TRIED_MAX: u32 = 1_000;

/// The entries of the coordinator's Raft log that sign accounts up: the
/// handle registry as the group replicates it (one entry per account).
fn registry_lines(d: &Deployment) -> Vec<String> {
    let path = d.root().join("coordinator").join("raft-log.jsonl");
    read_lines(&path)
        .into_iter()
        .filter(|line| line.contains("{\"Account\":{"))
        .collect()
}

fn read_lines(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

async fn signup(d: &Deployment, handle: &str, password: &str) -> (i32, String, String) {
    let state = d.client_state_dir();
    run_client_with_stdin(
        &[
            "-c",
            &d.coord_addr(),
            "--state-dir",
            &state.display().to_string(),
            "--json",
            "signup",
            handle,
            "--password-stdin",
        ],
        &format!("{password}\n"),
    )
    .await
}

/// Two clients sign up one handle at once, with every sync service killed
/// (the clusters cannot see each other): exactly one wins, and the handle
/// stays taken in any case and after a `kill -9` of the coordinator. The
/// winner's id is fresh and its cluster follows the classic rule; the
/// password is stored only as an Argon2id hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handle_one_account_while_clusters_are_cut_off() {
    let mut d = start(2, 0).await;
    d.login_all(&[1, 2]).await;
    d.kill9(Member::Sync { cluster: 1 });
    d.kill9(Member::Sync { cluster: 2 });
    let coord = d.coord_addr();

    let (a, b) = tokio::join!(
        signup(&d, "alice", "first secret"),
        signup(&d, "Alice", "second secret")
    );
    let outcomes = [&a, &b];
    let winners: Vec<_> = outcomes.iter().filter(|o| o.0 == 0).collect();
    assert_eq!(winners.len(), 1, "exactly one sign-up wins: {outcomes:?}");
    let losers: Vec<_> = outcomes.iter().filter(|o| o.0 != 0).collect();
    assert_eq!(losers[0].0, 1, "{outcomes:?}");
    assert!(
        losers[0].2.contains("the handle alice is taken"),
        "{outcomes:?}"
    );
    let first_line = winners[0].1.lines().next().unwrap_or("");
    let won: serde_json::Value = match serde_json::from_str(first_line) {
        Ok(v) => v,
        Err(e) => panic!("{e}: {:?}", winners[0]),
    };
    assert_eq!(won["handle"], "alice");
    // Users 1 and 2 exist: the account's id is the next one, on cluster
    // ((3 - 1) mod 2) + 1 = 1.
    assert_eq!(
        (won["id"].as_u64(), won["cluster"].as_u64()),
        (Some(3), Some(1))
    );

    let open = CoordClient::new(&coord).unwrap_or_else(|e| panic!("{e}"));
    let found = open
        .resolve("ALICE")
        .await
        .unwrap_or_else(|s| panic!("{s}"));
    assert_eq!(
        (found.user, found.cluster, found.handle.as_str()),
        (3, 1, "alice")
    );

    // One line in the registry, holding a hash and neither password.
    let lines = registry_lines(&d);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("$argon2id$"), "{}", lines[0]);
    assert!(!lines[0].contains("secret"), "{}", lines[0]);

    // The next account lands on the other cluster.
    let (code, out, err) = signup(&d, "bob", "pw").await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("\"id\":4") && out.contains("\"cluster\":2"),
        "{out}"
    );

    // The coordinator forgets nothing when it is killed.
    d.kill9(Member::Coordinator);
    d.restart(Member::Coordinator).await;
    let (code, _, err) = signup(&d, "ALICE", "third secret").await;
    assert_eq!(code, 1);
    assert!(err.contains("taken"), "{err}");
    let found = open.resolve("bob").await.unwrap_or_else(|s| panic!("{s}"));
    assert_eq!(found.user, 4);
    assert_eq!(registry_lines(&d).len(), 2);
    // A handle's account acts as its id, with the session its sign-up
    // saved.
    let state = d.client_state_dir().display().to_string();
    let (code, out, err) = run_client_with_stdin(
        &[
            "-c",
            &coord,
            "--state-dir",
            &state,
            "-u",
            "Bob",
            "--json",
            "list",
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("all_users"), "{out}");
    // Accounts are listed by a glob over handles, by anyone.
    let (code, out, err) =
        run_client_with_stdin(&["-c", &coord, "--json", "list", "?L*"], "").await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        r#"{"accounts":[{"cluster":1,"handle":"alice","id":3}],"truncated":false}"#
    );
    let (code, out, err) = run_client_with_stdin(&["-c", &coord, "list", "*b"], "").await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "bob (id 4, cluster 2)\n");
}

/// Every refusal of `tsn.Accounts`, as an outsider gets it: the code, a
/// clear message, and no line added to the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_account_call_changes_nothing() {
    let d = start(1, 0).await;
    let coord = d.coord_addr();
    let open = CoordClient::new(&coord).unwrap_or_else(|e| panic!("{e}"));
    if let Err(s) = open.sign_up("taken", "pw").await {
        panic!("{s}");
    }
    let before = registry_lines(&d);
    let too_long = "p".repeat(PASSWORD_MAX_BYTES + 1);
    let cases: [(&str, &str, tonic::Code, &str); 7] = [
        ("", "pw", tonic::Code::InvalidArgument, "empty"),
        ("a-b", "pw", tonic::Code::InvalidArgument, "'-'"),
        ("1234", "pw", tonic::Code::InvalidArgument, "digits"),
        (
            &"a".repeat(31),
            "pw",
            tonic::Code::InvalidArgument,
            "at most 30",
        ),
        ("newbie", "", tonic::Code::InvalidArgument, "password"),
        (
            "newbie",
            &too_long,
            tonic::Code::InvalidArgument,
            "password",
        ),
        ("TAKEN", "pw", tonic::Code::AlreadyExists, "taken"),
    ];
    for (handle, password, code, says) in cases {
        match open.sign_up(handle, password).await {
            Ok(reply) => panic!("SignUp({handle:?}) was accepted: {reply:?}"),
            Err(s) => {
                assert_eq!(s.code(), code, "SignUp({handle:?}): {s}");
                assert!(s.message().contains(says), "SignUp({handle:?}): {s}");
            }
        }
    }
    for (handle, code) in [
        ("", tonic::Code::InvalidArgument),
        ("no such", tonic::Code::InvalidArgument),
        ("nobody", tonic::Code::NotFound),
    ] {
        match open.resolve(handle).await {
            Ok(reply) => panic!("Resolve({handle:?}) answered {reply:?}"),
            Err(s) => assert_eq!(s.code(), code, "Resolve({handle:?}): {s}"),
        }
    }
    for (pattern, code) in [
        ("", tonic::Code::InvalidArgument),
        ("a-*", tonic::Code::InvalidArgument),
        (&"*".repeat(65), tonic::Code::InvalidArgument),
    ] {
        match open.list_accounts(pattern).await {
            Ok(reply) => panic!("List({pattern:?}) answered {reply:?}"),
            Err(s) => assert_eq!(s.code(), code, "List({pattern:?}): {s}"),
        }
    }
    match open.list_accounts("nob*").await {
        Ok(reply) => assert!(reply.accounts.is_empty() && !reply.truncated),
        Err(s) => panic!("List(nob*): {s}"),
    }
    // The client refuses a bad handle before sending anything, and says
    // so on one line.
    let (code, _, err) = signup(&d, "bad handle", "pw").await;
    assert_eq!(code, 1);
    assert!(err.starts_with("error: a handle holds only"), "{err}");
    let state = d.client_state_dir().display().to_string();
    let (code, _, err) = run_client_with_stdin(
        &["-c", &coord, "--state-dir", &state, "-u", "nobody", "list"],
        "",
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no account nobody"), "{err}");
    // A caller that signs up faster than its bucket refills is refused
    // (the coordinator's burst is far below this bound).
    let mut limited = None;
    for i in 0..SIGNUPS_TRIED_MAX {
        if let Err(s) = open.sign_up(&format!("burst{i}"), "pw").await {
            limited = Some(s);
            break;
        }
    }
    let Some(s) = limited else {
        panic!("more than the burst of sign-ups was accepted");
    };
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s}");
    assert!(s.message().contains("sign-ups per second"), "{s}");
    let after = registry_lines(&d);
    assert_eq!(after[..before.len()], before[..]);
    assert!(!after.iter().any(|l| l.contains("newbie")));
}
