//! The one validation of operations, for every way an operation enters a
//! cluster: a client's request, `Replica.Apply` and `Sync.Apply` from
//! another cluster, and a secondary receiving its primary's `Append`.
//! Pure: the clock and what the receiver knows are passed in.
//!
//! Two levels, so that a primary never commits a line its secondaries
//! would refuse:
//!
//! * [`shape`]: what an operation must look like wherever it is: ids in
//!   range, a post's text 1..=[`POST_TEXT_MAX_BYTES`] bytes and not blank,
//!   its id `<author>-<token>`, times within the calendar, versions and
//!   seqs at most [`SEQ_MAX`], recipients without repeats. It depends on
//!   nothing but the operation, so every replica, at any time, gives the
//!   same answer: the primary checks it before it commits (with
//!   [`line_fits`]), a secondary checks it on every line it receives.
//! * [`admit`]: shape, and the checks only the door of the cluster can make
//!   (the primary receiving a change, or the sync service passing one on):
//!   the sender's right to send it (a cluster sends only its own users,
//!   posts of its own authors, follows of its own followers; its own sync
//!   service sends it only follower changes), clusters that
//!   exist, recipients who are users of the receiving cluster, and times
//!   not in the future of the receiver's clock. These depend on the clock
//!   and on the state, so they are made once, where the op enters, never on
//!   a secondary (whose clock may lag its primary's).
//!
//! The state-dependent facts used here only become true, never false (a
//! user, once known, stays with its cluster), so a check made just before
//! the write still holds when the op is written.

use crate::fold::JournalFold;
use crate::handle::Handle;
use crate::limits::{
    DELIVER_RECIPIENTS_MAX, LINE_MAX_BYTES, PASSWORD_HASH_MAX_BYTES, POST_TEXT_MAX_BYTES,
    TOKEN_SHA256_HEX_CHARS, USER_ID_MAX,
};
use crate::record::{Entry, Op, Post};

/// Largest journal sequence number, and so largest follower-edge version
/// (a version is the seq of the follow in the follower's cluster) and
/// `Shown` cursor. 2^53: far beyond any real journal, exact in every JSON
/// reader, and it leaves room so that `seq + 1` never overflows.
pub const SEQ_MAX: u64 = 1 << 53;
/// Largest cluster id an operation may name (the coordinator manages at
/// most this many clusters); the receiver also holds it to its own count.
pub const CLUSTER_ID_MAX: u32 = 64;
/// How far in the future of the receiver's clock a post's `ts_ms` or a
/// follow's `since_ms` may be: clocks of machines differ a little. Posts
/// may be old (backfills), never from the future.
pub const POST_CLOCK_AHEAD_MAX_MS: i64 = 60_000;
/// Latest time any operation may carry: 9999-12-31T23:59:59.999Z, the last
/// instant the files' RFC 3339 times can show.
pub const TIME_MAX_MS: i64 = 253_402_300_799_999;
/// Longest client-chosen part of a post id.
pub const POST_TOKEN_MAX_BYTES: usize = 64;

/// Who handed the op to the receiving cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client of the receiving cluster, through the client-facing service.
    Client,
    /// The sync service of that cluster (`Sync.Apply`, `Replica.Apply`).
    Cluster(u32),
}

/// What the receiving cluster knows when an op arrives.
#[derive(Clone, Copy)]
pub struct Receiver<'a> {
    /// Its own cluster id.
    pub cluster: u32,
    /// How many clusters there are, as the coordinator's heartbeat reply
    /// said; `None` before the first reply (then only
    /// [`CLUSTER_ID_MAX`] bounds cluster ids).
    pub cluster_count: Option<u32>,
    /// Its clock, milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// The users it knows (its fold); `None` where no state is at hand (a
    /// sync service passing ops on: its primary checks them again with it).
    pub users: Option<&'a JournalFold>,
}

/// A user id in `1..=USER_ID_MAX`.
pub fn user_id(user: u32) -> Result<(), String> {
    if (1..=USER_ID_MAX).contains(&user) {
        Ok(())
    } else {
        Err(format!("user id {user} is not in 1..={USER_ID_MAX}"))
    }
}

/// A post's text: 1..=[`POST_TEXT_MAX_BYTES`] bytes (it is UTF-8 by type),
/// not all blank.
pub fn post_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("an empty post is not stored".into());
    }
    if text.len() > POST_TEXT_MAX_BYTES {
        return Err(format!(
            "the post is {} bytes long; the limit is {POST_TEXT_MAX_BYTES} bytes",
            text.len()
        ));
    }
    Ok(())
}

/// A post id: `<author>-<token>`, the token 1 to [`POST_TOKEN_MAX_BYTES`]
/// of `[A-Za-z0-9_-]`.
pub fn post_id(author: u32, id: &str) -> Result<(), String> {
    let prefix = format!("{author}-");
    let token = id
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("post id {id:?} must start with \"{prefix}\""))?;
    let valid = !token.is_empty()
        && token.len() <= POST_TOKEN_MAX_BYTES
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "post id {id:?}: after \"{prefix}\" come 1 to {POST_TOKEN_MAX_BYTES} letters, digits, '-' or '_'"
        ))
    }
}

fn time(what: &str, ms: i64) -> Result<(), String> {
    if (0..=TIME_MAX_MS).contains(&ms) {
        Ok(())
    } else {
        Err(format!("{what} {ms} is not in 0..={TIME_MAX_MS}"))
    }
}

fn seq(what: &str, value: u64) -> Result<(), String> {
    if value <= SEQ_MAX {
        Ok(())
    } else {
        Err(format!("{what} {value} is beyond {SEQ_MAX}"))
    }
}

fn post(p: &Post) -> Result<(), String> {
    user_id(p.author)?;
    post_id(p.author, &p.id)?;
    post_text(&p.text)?;
    time("ts_ms", p.ts_ms)
}

/// What `op` must look like wherever it is. Depends on nothing else, so
/// every replica answers the same.
pub fn shape(op: &Op) -> Result<(), String> {
    match op {
        Op::User { user, cluster } => {
            user_id(*user)?;
            if !(1..=CLUSTER_ID_MAX).contains(cluster) {
                return Err(format!("cluster {cluster} is not in 1..={CLUSTER_ID_MAX}"));
            }
            Ok(())
        }
        Op::Follow {
            user,
            target,
            since_ms,
        } => {
            user_id(*user)?;
            user_id(*target)?;
            time("since_ms", *since_ms)
        }
        Op::Unfollow { user, target } => {
            user_id(*user)?;
            user_id(*target)
        }
        Op::Post(p) => post(p),
        Op::Deliver { to, post: p } => {
            if to.is_empty() || to.len() > DELIVER_RECIPIENTS_MAX {
                return Err(format!(
                    "a delivery names 1 to {DELIVER_RECIPIENTS_MAX} recipients, not {}",
                    to.len()
                ));
            }
            for &t in to {
                user_id(t)?;
            }
            let mut sorted = to.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != to.len() {
                return Err("a delivery names a recipient twice".into());
            }
            if to.contains(&p.author) {
                return Err(format!(
                    "a post of {} is not delivered to its author",
                    p.author
                ));
            }
            post(p)
        }
        Op::AddFollower {
            user,
            follower,
            since_ms,
            version,
        } => {
            edge(*user, *follower, *version)?;
            time("since_ms", *since_ms)
        }
        Op::RemoveFollower {
            user,
            follower,
            version,
        } => edge(*user, *follower, *version),
        Op::Shown { user, seq: s } => {
            user_id(*user)?;
            seq("shown seq", *s)
        }
        Op::Account {
            user,
            handle,
            password_hash,
        } => {
            user_id(*user)?;
            match Handle::parse(handle) {
                Ok(h) if h.as_str() == handle => {}
                Ok(_) => return Err(format!("handle {handle:?} is not in lower case")),
                Err(e) => return Err(e.to_string()),
            }
            password_hash_shape(password_hash)
        }
        Op::Session {
            user,
            token_sha256,
            expires_ms,
        } => {
            user_id(*user)?;
            token_hash(token_sha256)?;
            time("expires_ms", *expires_ms)
        }
        Op::Logout { user, token_sha256 } => {
            user_id(*user)?;
            token_hash(token_sha256)
        }
    }
}

/// An Argon2id hash in PHC form, at most [`PASSWORD_HASH_MAX_BYTES`]
/// bytes of printable ASCII. (Whether it verifies is the server's
/// business: this is what every replica can check alone.)
pub fn password_hash_shape(hash: &str) -> Result<(), String> {
    let printable = hash.bytes().all(|b| b.is_ascii_graphic());
    if hash.starts_with("$argon2id$") && hash.len() <= PASSWORD_HASH_MAX_BYTES && printable {
        Ok(())
    } else {
        Err(format!(
            "a password hash is an Argon2id PHC string of at most {PASSWORD_HASH_MAX_BYTES} bytes"
        ))
    }
}

/// A session token's SHA-256: [`TOKEN_SHA256_HEX_CHARS`] lower-case hex
/// digits.
pub fn token_hash(hex: &str) -> Result<(), String> {
    let valid = hex.len() == TOKEN_SHA256_HEX_CHARS
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "a token hash is {TOKEN_SHA256_HEX_CHARS} lower-case hex digits"
        ))
    }
}

fn edge(user: u32, follower: u32, version: u64) -> Result<(), String> {
    user_id(user)?;
    user_id(follower)?;
    if user == follower {
        return Err(format!("user {user} does not follow itself"));
    }
    seq("version", version)
}

/// Whether `op`'s journal line fits [`LINE_MAX_BYTES`] whatever seq and
/// epoch it gets: checked by the primary before it commits, because a
/// secondary refuses a longer line.
pub fn line_fits(op: &Op) -> Result<(), String> {
    let widest = Entry {
        seq: u64::MAX,
        epoch: u64::MAX,
        op: op.clone(),
    };
    let len = widest.to_line().len();
    if len <= LINE_MAX_BYTES {
        Ok(())
    } else {
        Err(format!(
            "its journal line would be {len} bytes; the limit is {LINE_MAX_BYTES} bytes"
        ))
    }
}

/// Everything the receiving cluster checks of `op` from `origin`: its
/// [`shape`], its line, and the checks that need the clock and the state.
pub fn admit(op: &Op, origin: Origin, at: &Receiver) -> Result<(), String> {
    shape(op)?;
    line_fits(op)?;
    let count_max = at.cluster_count.unwrap_or(CLUSTER_ID_MAX);
    let not_future = |what: &str, ms: i64| {
        if ms <= at.now_ms.saturating_add(POST_CLOCK_AHEAD_MAX_MS) {
            Ok(())
        } else {
            Err(format!(
                "{what} {ms} is more than {POST_CLOCK_AHEAD_MAX_MS} ms after this cluster's clock ({})",
                at.now_ms
            ))
        }
    };
    let from = match origin {
        Origin::Client => {
            return match op {
                Op::User { cluster, .. } if *cluster != at.cluster => Err(format!(
                    "a client of cluster {} registers only on it, not on {cluster}",
                    at.cluster
                )),
                Op::Post(p) => not_future("ts_ms", p.ts_ms),
                Op::Follow { since_ms, .. } => not_future("since_ms", *since_ms),
                Op::Deliver { .. } | Op::AddFollower { .. } | Op::RemoveFollower { .. } => Err(
                    "deliveries and follower changes come from other clusters, not clients".into(),
                ),
                // A session belongs to an account this cluster knows.
                Op::Session { user, .. } | Op::Logout { user, .. }
                    if at.users.is_some_and(|f| f.account(*user).is_none()) =>
                {
                    Err(format!(
                        "user {user} has no account on cluster {}",
                        at.cluster
                    ))
                }
                Op::Account { user, .. } | Op::Session { user, .. } | Op::Logout { user, .. }
                    if at
                        .users
                        .is_some_and(|f| f.user_cluster(*user) != Some(at.cluster)) =>
                {
                    Err(format!(
                        "user {user} is not a user of cluster {}",
                        at.cluster
                    ))
                }
                _ => Ok(()),
            };
        }
        Origin::Cluster(from) => from,
    };
    if !(1..=count_max).contains(&from) {
        return Err(format!(
            "cluster {from} is not a cluster of 1..={count_max}"
        ));
    }
    // The cluster's own sync service sends it follower changes of its own
    // users (a follow inside the cluster); users and posts come only from
    // other clusters (its own are in its own journal already).
    let from_other = || {
        if from == at.cluster {
            Err(format!(
                "cluster {from} does not send this cluster its own users or posts"
            ))
        } else {
            Ok(())
        }
    };
    // Whether `user` is one of the sender's: known to be on `from`, or not
    // known here and `from` is its home cluster.
    let of_sender = |what: &str, user: u32| {
        let known = at.users.and_then(|u| u.user_cluster(user));
        let ok = match (known, at.cluster_count) {
            (Some(c), _) => c == from,
            (None, Some(n)) => tsn_home_cluster(user, n) == from,
            (None, None) => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{what} {user} is not a user of cluster {from}"))
        }
    };
    // Whether `user` is a user of the receiving cluster (when the state is
    // at hand: else the primary checks it).
    let of_receiver = |what: &str, user: u32| match at.users {
        Some(u) if u.user_cluster(user) != Some(at.cluster) => Err(format!(
            "{what} {user} is not a user of cluster {}",
            at.cluster
        )),
        _ => Ok(()),
    };
    match op {
        Op::User { user, cluster } => {
            from_other()?;
            if *cluster != from || *cluster > count_max {
                return Err(format!(
                    "cluster {from} tells only of its own users, not of user {user} of cluster {cluster}"
                ));
            }
            of_sender("user", *user)
        }
        Op::Deliver { to, post: p } => {
            from_other()?;
            for &t in to {
                of_receiver("recipient", t)?;
            }
            of_sender("author", p.author)?;
            not_future("ts_ms", p.ts_ms)
        }
        Op::AddFollower {
            user,
            follower,
            since_ms,
            ..
        } => {
            of_receiver("user", *user)?;
            of_sender("follower", *follower)?;
            not_future("since_ms", *since_ms)
        }
        Op::RemoveFollower { user, follower, .. } => {
            of_receiver("user", *user)?;
            of_sender("follower", *follower)
        }
        Op::Follow { .. } | Op::Unfollow { .. } | Op::Post(_) | Op::Shown { .. } => Err(format!(
            "only a client of cluster {} follows, posts or reads its timeline",
            at.cluster
        )),
        Op::Account { .. } | Op::Session { .. } | Op::Logout { .. } => Err(format!(
            "only the primary of cluster {} writes its users' accounts and sessions",
            at.cluster
        )),
    }
}

/// `((user - 1) mod clusters) + 1`, as `tsn_cluster::home_cluster`
/// (which this crate cannot depend on). Both are at least 1 here.
fn tsn_home_cluster(user: u32, clusters: u32) -> u32 {
    (user.max(1) - 1) % clusters.max(1) + 1
}

#[cfg(test)]
mod tests;
