use proptest::prelude::*;

use super::*;
use crate::record::Entry;

const NOW: i64 = 1_800_000_000_000;

fn p(author: u32, text: &str, ts_ms: i64) -> Post {
    Post {
        id: format!("{author}-abc"),
        author,
        text: text.into(),
        ts_ms,
    }
}

/// Cluster 1 of 3 knows user 1 (its own), 2 (of cluster 2), 3 (of cluster 3).
fn fold() -> JournalFold {
    let mut f = JournalFold::default();
    for (seq, (user, cluster)) in [(1, 1), (2, 2), (3, 3)].into_iter().enumerate() {
        f.apply(&Entry {
            seq: seq as u64 + 1,
            epoch: 1,
            op: Op::User { user, cluster },
        });
    }
    f
}

fn at(users: Option<&JournalFold>) -> Receiver<'_> {
    Receiver {
        cluster: 1,
        cluster_count: Some(3),
        now_ms: NOW,
        users,
    }
}

fn deliver(to: Vec<u32>, post: Post) -> Op {
    Op::Deliver { to, post }
}

fn err(r: Result<(), String>, says: &str) {
    let e = r.expect_err(says);
    assert!(e.contains(says), "{e:?} should say {says:?}");
}

#[test]
fn a_good_delivery_is_admitted() {
    let f = fold();
    let op = deliver(vec![1], p(2, "hi", NOW - 1_000_000));
    assert_eq!(admit(&op, Origin::Cluster(2), &at(Some(&f))), Ok(()));
    // Without the state (a sync service), the home cluster decides.
    assert_eq!(admit(&op, Origin::Cluster(2), &at(None)), Ok(()));
}

#[test]
fn post_text_is_1_to_1024_bytes_not_blank() {
    assert!(post_text("x").is_ok());
    assert!(post_text(&"é".repeat(POST_TEXT_MAX_BYTES / 2)).is_ok());
    err(post_text(""), "empty");
    err(post_text(" \n\t "), "empty");
    err(
        post_text(&"x".repeat(POST_TEXT_MAX_BYTES + 1)),
        "1025 bytes",
    );
    // The same rule for a delivered post, whoever sends it.
    let big = deliver(vec![1], p(2, &"x".repeat(1 << 20), NOW));
    err(shape(&big), "1048576 bytes");
    err(admit(&big, Origin::Cluster(2), &at(None)), "1048576 bytes");
}

#[test]
fn ids_are_in_range() {
    err(user_id(0), "not in 1..=");
    err(user_id(USER_ID_MAX + 1), "not in 1..=");
    err(shape(&Op::Unfollow { user: 0, target: 2 }), "user id 0");
    err(shape(&deliver(vec![0], p(2, "t", NOW))), "user id 0");
    err(
        shape(&Op::User {
            user: 99999,
            cluster: 777,
        }),
        "cluster 777",
    );
    err(
        shape(&Op::User {
            user: 5,
            cluster: 0,
        }),
        "cluster 0",
    );
}

#[test]
fn post_ids_carry_their_author() {
    assert!(post_id(7, "7-abc_D-9").is_ok());
    err(post_id(7, "8-abc"), "must start with");
    err(post_id(7, "7-"), "after");
    err(post_id(7, "7-a b"), "after");
    err(post_id(7, &format!("7-{}", "a".repeat(65))), "after");
    let mut q = p(2, "t", NOW);
    q.id = "3-x".into();
    err(shape(&Op::Post(q)), "must start with");
}

#[test]
fn a_delivery_names_distinct_recipients_within_the_limit() {
    err(shape(&deliver(vec![], p(2, "t", NOW))), "1 to");
    let many: Vec<u32> = (10..10 + DELIVER_RECIPIENTS_MAX as u32 + 1).collect();
    err(shape(&deliver(many, p(2, "t", NOW))), "1 to");
    err(shape(&deliver(vec![4, 4], p(2, "t", NOW))), "twice");
    err(shape(&deliver(vec![2], p(2, "t", NOW))), "its author");
}

#[test]
fn recipients_are_users_of_the_receiving_cluster() {
    let f = fold();
    // 3 is a user of cluster 3; 4 is unknown here.
    for to in [vec![3], vec![1, 4]] {
        err(
            admit(
                &deliver(to, p(2, "t", NOW)),
                Origin::Cluster(2),
                &at(Some(&f)),
            ),
            "recipient",
        );
    }
}

#[test]
fn a_delivered_post_is_by_a_user_of_the_sender() {
    let f = fold();
    let from2 = |author| {
        admit(
            &deliver(vec![1], p(author, "t", NOW)),
            Origin::Cluster(2),
            &at(Some(&f)),
        )
    };
    assert!(from2(2).is_ok());
    // Known on cluster 3, or on the receiver itself.
    err(from2(3), "author 3");
    err(from2(1), "author");
    // Unknown here: its home cluster decides (99999 is home on cluster 3 of 3).
    err(from2(99_999), "author 99999");
    assert!(from2(5).is_ok());
    // The sender is another, real cluster.
    let op = deliver(vec![1], p(2, "t", NOW));
    err(
        admit(&op, Origin::Cluster(1), &at(Some(&f))),
        "its own users or posts",
    );
    err(
        admit(&op, Origin::Cluster(777), &at(Some(&f))),
        "not a cluster",
    );
    err(admit(&op, Origin::Client, &at(Some(&f))), "not clients");
}

#[test]
fn posts_may_be_old_but_not_from_the_future() {
    let a = at(None);
    let when = |ts| admit(&deliver(vec![1], p(2, "t", ts)), Origin::Cluster(2), &a);
    assert!(when(0).is_ok());
    assert!(when(NOW + POST_CLOCK_AHEAD_MAX_MS).is_ok());
    err(
        when(NOW + POST_CLOCK_AHEAD_MAX_MS + 1),
        "after this cluster's clock",
    );
    err(when(4_102_444_800_000), "after this cluster's clock");
    err(shape(&deliver(vec![1], p(2, "t", -1))), "ts_ms -1");
    err(shape(&deliver(vec![1], p(2, "t", i64::MAX))), "ts_ms");
    let follow = Op::AddFollower {
        user: 1,
        follower: 2,
        since_ms: NOW + 3_600_000,
        version: 5,
    };
    err(admit(&follow, Origin::Cluster(2), &a), "since_ms");
}

#[test]
fn follower_versions_are_journal_seqs() {
    let edge = |version| Op::RemoveFollower {
        user: 1,
        follower: 2,
        version,
    };
    assert!(shape(&edge(SEQ_MAX)).is_ok());
    err(shape(&edge(SEQ_MAX + 1)), "version");
    err(shape(&edge(u64::MAX)), "version");
    err(
        shape(&Op::Shown {
            user: 1,
            seq: u64::MAX,
        }),
        "seq",
    );
    err(
        shape(&Op::RemoveFollower {
            user: 2,
            follower: 2,
            version: 1,
        }),
        "itself",
    );
}

#[test]
fn follower_changes_are_of_a_receiver_user_by_a_sender_user() {
    let f = fold();
    let add = |user, follower| Op::AddFollower {
        user,
        follower,
        since_ms: NOW,
        version: 3,
    };
    assert!(admit(&add(1, 2), Origin::Cluster(2), &at(Some(&f))).is_ok());
    err(
        admit(&add(3, 2), Origin::Cluster(2), &at(Some(&f))),
        "user 3",
    );
    err(
        admit(&add(1, 3), Origin::Cluster(2), &at(Some(&f))),
        "follower 3",
    );
}

#[test]
fn users_only_on_real_clusters_and_only_the_senders() {
    let user = |user, cluster| Op::User { user, cluster };
    assert!(admit(&user(2, 2), Origin::Cluster(2), &at(None)).is_ok());
    // A cluster beyond the count, or another than the sender.
    err(
        admit(&user(6, 6), Origin::Cluster(2), &at(None)),
        "cluster 6",
    );
    err(
        admit(&user(3, 3), Origin::Cluster(2), &at(None)),
        "cluster 3",
    );
    // The sender's own claim of a user whose home is elsewhere.
    err(
        admit(&user(99_999, 2), Origin::Cluster(2), &at(None)),
        "user 99999",
    );
    // A client registers on its own cluster only.
    assert!(admit(&user(1, 1), Origin::Client, &at(None)).is_ok());
    err(
        admit(&user(2, 2), Origin::Client, &at(None)),
        "registers only",
    );
}

#[test]
fn only_clients_follow_post_or_read() {
    let op = Op::Post(p(2, "t", NOW));
    err(admit(&op, Origin::Cluster(2), &at(None)), "only a client");
    assert!(admit(&Op::Post(p(1, "t", NOW)), Origin::Client, &at(None)).is_ok());
    err(
        admit(
            &Op::Post(p(1, "t", NOW + 3_600_000)),
            Origin::Client,
            &at(None),
        ),
        "after this cluster's clock",
    );
}

#[test]
fn an_admitted_line_fits_the_line_limit() {
    // The widest admissible delivery: every recipient, the longest text of
    // characters JSON escapes the most.
    let to: Vec<u32> = (0..DELIVER_RECIPIENTS_MAX as u32)
        .map(|i| USER_ID_MAX - i)
        .collect();
    let text = "\u{1}".repeat(POST_TEXT_MAX_BYTES);
    let op = deliver(to, p(2, &text, NOW));
    assert_eq!(shape(&op), Ok(()));
    assert_eq!(line_fits(&op), Ok(()));
}

fn any_op() -> impl Strategy<Value = Op> {
    let id = prop_oneof![Just(0u32), 1u32..10, Just(USER_ID_MAX), any::<u32>()];
    let time = prop_oneof![Just(NOW), any::<i64>(), 0i64..TIME_MAX_MS];
    let text = prop_oneof![Just(String::new()), ".{0,40}", Just("x".repeat(2000))];
    let post =
        (id.clone(), ".{0,12}", text, time.clone()).prop_map(|(author, id, text, ts_ms)| Post {
            id,
            author,
            text,
            ts_ms,
        });
    prop_oneof![
        (id.clone(), any::<u32>()).prop_map(|(user, cluster)| Op::User { user, cluster }),
        (id.clone(), id.clone(), time.clone()).prop_map(|(user, target, since_ms)| Op::Follow {
            user,
            target,
            since_ms
        }),
        (prop::collection::vec(id.clone(), 0..8), post.clone())
            .prop_map(|(to, post)| Op::Deliver { to, post }),
        post.prop_map(Op::Post),
        (id.clone(), id.clone(), time, any::<u64>()).prop_map(
            |(user, follower, since_ms, version)| Op::AddFollower {
                user,
                follower,
                since_ms,
                version
            }
        ),
        (id.clone(), id, any::<u64>()).prop_map(|(user, follower, version)| Op::RemoveFollower {
            user,
            follower,
            version
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No op, however wrong, makes the validator panic; what it admits has
    /// the shape every replica accepts and a line within the limit.
    #[test]
    fn the_validator_never_panics(op in any_op(), from in 0u32..5, count in proptest::option::of(0u32..5)) {
        let f = fold();
        let at = Receiver { cluster: 1, cluster_count: count, now_ms: NOW, users: Some(&f) };
        if admit(&op, Origin::Cluster(from), &at).is_ok() {
            prop_assert!(shape(&op).is_ok());
            prop_assert!(line_fits(&op).is_ok());
        }
        let _ = admit(&op, Origin::Client, &at);
    }

    /// Random bytes as a journal line: parsed or refused, never a panic.
    #[test]
    fn random_lines_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Some(e) = Entry::from_line(&bytes) {
            let _ = shape(&e.op);
        }
    }
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

fn account(user: u32, handle: &str, hash: &str) -> Op {
    Op::Account {
        user,
        handle: handle.into(),
        password_hash: hash.into(),
    }
}

fn session(user: u32, token: &str, expires_ms: i64) -> Op {
    Op::Session {
        user,
        token_sha256: token.into(),
        expires_ms,
    }
}

#[test]
fn an_account_has_a_lower_case_handle_and_an_argon2id_hash() {
    assert_eq!(shape(&account(1, "alice", HASH)), Ok(()));
    err(shape(&account(0, "alice", HASH)), "user id 0");
    err(shape(&account(1, "Alice", HASH)), "lower case");
    err(shape(&account(1, "al ice", HASH)), "a handle holds only");
    err(shape(&account(1, "", HASH)), "empty");
    err(shape(&account(1, "123", HASH)), "digits");
    err(shape(&account(1, "alice", "plain")), "Argon2id");
    err(shape(&account(1, "alice", "$argon2i$v=19$x")), "Argon2id");
    err(
        shape(&account(1, "alice", "$argon2id$ with space")),
        "Argon2id",
    );
    let long = format!("$argon2id${}", "a".repeat(PASSWORD_HASH_MAX_BYTES));
    err(shape(&account(1, "alice", &long)), "Argon2id");
}

#[test]
fn a_session_names_a_token_hash_and_a_time() {
    let good = "0123456789abcdef".repeat(4);
    assert_eq!(shape(&session(1, &good, NOW)), Ok(()));
    err(shape(&session(1, &good[1..], NOW)), "hex digits");
    err(shape(&session(1, &good.to_uppercase(), NOW)), "hex digits");
    err(shape(&session(1, &format!("{good}0"), NOW)), "hex digits");
    err(shape(&session(1, &good, -1)), "expires_ms");
    err(shape(&session(1, &good, TIME_MAX_MS + 1)), "expires_ms");
    let logout = |token: &str| Op::Logout {
        user: 1,
        token_sha256: token.into(),
    };
    assert_eq!(shape(&logout(&good)), Ok(()));
    err(shape(&logout("zz")), "hex digits");
}

#[test]
fn only_the_users_own_primary_writes_accounts_and_sessions() {
    let good = "ab".repeat(32);
    let mut f = fold();
    // User 1 is of cluster 1 but has no account yet: no session for it.
    err(
        admit(&session(1, &good, NOW), Origin::Client, &at(Some(&f))),
        "has no account",
    );
    // User 2 is another cluster's.
    err(
        admit(&account(2, "bob", HASH), Origin::Client, &at(Some(&f))),
        "not a user of cluster 1",
    );
    assert_eq!(
        admit(&account(1, "alice", HASH), Origin::Client, &at(Some(&f))),
        Ok(())
    );
    f.apply(&Entry {
        seq: 4,
        epoch: 1,
        op: account(1, "alice", HASH),
    });
    assert_eq!(
        admit(&session(1, &good, NOW), Origin::Client, &at(Some(&f))),
        Ok(())
    );
    // No other cluster, not even its own sync service, sends them.
    for from in [1, 2] {
        for op in [
            account(1, "alice", HASH),
            session(1, &good, NOW),
            Op::Logout {
                user: 1,
                token_sha256: good.clone(),
            },
        ] {
            err(
                admit(&op, Origin::Cluster(from), &at(Some(&f))),
                "only the primary",
            );
            err(
                admit(&op, Origin::Cluster(from), &at(None)),
                "only the primary",
            );
        }
    }
}
