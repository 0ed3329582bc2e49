//! Random messages of the internal services, well-formed (they decode) but
//! wrong in every way a peer could get them wrong: ids out of range or
//! unknown, times from before 1970 or the far future, versions past any
//! journal, texts empty, blank or too long, fields missing. Values are
//! mostly near the real ones, so that a handler's checks are passed one by
//! one, and sometimes anything at all.

use proptest::prelude::*;

use crate::tsn::{operation, ApplyRequest, Operation};
use crate::tsn::{
    AccountOp, AddFollowerOp, DeliverOp, FollowOp, LogoutOp, PostRecord, RemoveFollowerOp,
    SessionOp, ShownOp, UnfollowOp, UserOp,
};

/// A user or cluster id: mostly 0..=5, sometimes anything.
pub fn id() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 0u32..6, 1 => Just(u32::MAX), 1 => any::<u32>()]
}

/// A time in ms: mostly now-ish, or before 1970, far ahead, or anything.
pub fn time_ms() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 1_700_000_000_000i64..1_800_000_000_000,
        1 => Just(4_102_444_800_000i64),
        1 => Just(-1i64),
        1 => any::<i64>(),
    ]
}

/// A seq or version: small, at the limit, past it, or anything.
pub fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..10,
        1 => Just(1u64 << 53),
        1 => Just((1u64 << 53) + 1),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z ]{0,12}".prop_map(String::from),
        1 => Just("   ".to_string()),
        1 => (1000usize..1100).prop_map(|n| "x".repeat(n)),
        1 => prop::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter),
    ]
}

/// A post, its id mostly `<author>-<token>`.
pub fn post() -> impl Strategy<Value = PostRecord> {
    (id(), any::<bool>(), text(), text(), time_ms()).prop_map(
        |(author, good_id, token, text, ts_ms)| PostRecord {
            id: if good_id {
                format!("{author}-{}", token.replace(' ', "_"))
            } else {
                token
            },
            author,
            text,
            ts_ms,
        },
    )
}

/// One operation, its one field sometimes missing.
pub fn operation() -> impl Strategy<Value = Operation> {
    let op = prop_oneof![
        (id(), id()).prop_map(|(user, cluster)| operation::Op::User(UserOp { user, cluster })),
        (id(), id(), time_ms()).prop_map(|(user, target, since_ms)| {
            operation::Op::Follow(FollowOp {
                user,
                target,
                since_ms,
            })
        }),
        (id(), id())
            .prop_map(|(user, target)| operation::Op::Unfollow(UnfollowOp { user, target })),
        post().prop_map(operation::Op::Post),
        (
            prop::collection::vec(id(), 0..6),
            prop::option::weighted(0.9, post())
        )
            .prop_map(|(to, post)| operation::Op::Deliver(DeliverOp { to, post })),
        (id(), id(), time_ms(), seq()).prop_map(|(user, follower, since_ms, version)| {
            operation::Op::AddFollower(AddFollowerOp {
                user,
                follower,
                since_ms,
                version,
            })
        }),
        (id(), id(), seq()).prop_map(|(user, follower, version)| {
            operation::Op::RemoveFollower(RemoveFollowerOp {
                user,
                follower,
                version,
            })
        }),
        (id(), seq()).prop_map(|(user, seq)| operation::Op::Shown(ShownOp { user, seq })),
        (id(), "[a-zA-Z0-9_]{0,32}", ".{0,40}").prop_map(|(user, handle, password_hash)| {
            operation::Op::Account(AccountOp {
                user,
                handle,
                password_hash,
            })
        }),
        (id(), "[0-9a-f]{0,70}", time_ms()).prop_map(|(user, token_sha256, expires_ms)| {
            operation::Op::Session(SessionOp {
                user,
                token_sha256,
                expires_ms,
            })
        }),
        (id(), "[0-9a-f]{0,70}").prop_map(|(user, token_sha256)| operation::Op::Logout(LogoutOp {
            user,
            token_sha256
        })),
    ];
    prop::option::weighted(0.95, op).prop_map(|op| Operation { op })
}

/// A `Replica.Apply` / `Sync.Apply` request of a few operations.
pub fn apply_request() -> impl Strategy<Value = ApplyRequest> {
    (id(), prop::collection::vec(operation(), 0..5))
        .prop_map(|(from_cluster, ops)| ApplyRequest { from_cluster, ops })
}
