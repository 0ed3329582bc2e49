//! The records of tsn, one JSON object per line in the files. Between
//! processes they travel as protobuf messages (`tsn_proto::records`
//! converts), but for journal lines, which a secondary stores as they came.
//!
//! Every change is an [`Op`]. The primary wraps it in an [`Entry`] with the
//! next journal sequence number and its epoch; secondaries store the very
//! same entries. Each op names the one record it creates (a user, a follow
//! edge version, a post in one timeline), which is what makes applying it a
//! second time a no-op: see [`crate::fold::JournalFold::is_duplicate`].

use serde::{Deserialize, Deserializer, Serialize};

/// One change to a cluster's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// A user exists; `cluster` serves it.
    User { user: u32, cluster: u32 },
    /// `user` (served here) follows `target` from `since_ms` on.
    Follow {
        user: u32,
        target: u32,
        since_ms: i64,
    },
    /// `user` (served here) no longer follows `target`.
    Unfollow { user: u32, target: u32 },
    /// `author` (served here) posted; goes into the author's own timeline.
    Post(Post),
    /// A post of someone each of `to` follows; goes into each of their
    /// timelines. One entry per post and cluster, not per follower, so that
    /// a post with many followers costs one journal line here, not one per
    /// follower. At most
    /// [`DELIVER_RECIPIENTS_MAX`](crate::limits::DELIVER_RECIPIENTS_MAX)
    /// recipients, sorted, without repeats. (Older journals hold one
    /// recipient as a number.)
    Deliver {
        #[serde(deserialize_with = "one_or_many")]
        to: Vec<u32>,
        post: Post,
    },
    /// `follower` follows `user` (served here). `version` is the journal
    /// sequence number of the follow in the follower's cluster, so of two
    /// changes of the same edge the later one wins, in any arrival order.
    AddFollower {
        user: u32,
        follower: u32,
        since_ms: i64,
        version: u64,
    },
    /// `follower` no longer follows `user` (served here).
    RemoveFollower {
        user: u32,
        follower: u32,
        version: u64,
    },
    /// `user` (served here) has been shown, by an MP3 variant `Timeline`
    /// call, every line of its timeline up to journal seq `seq`: the "not
    /// shown yet" cursor. A journal entry like any other change, so that it
    /// survives failovers and restarts; it only grows.
    Shown { user: u32, seq: u64 },
    /// `user` (served here) is the account `handle`, whose password hashes
    /// to `password_hash` (Argon2id, PHC string): copied by the user's
    /// primary from the coordinator's handle registry when the account
    /// first logs in, so that the cluster checks passwords and tokens by
    /// itself. From then on the user's calls need a session token.
    Account {
        user: u32,
        handle: String,
        password_hash: String,
    },
    /// A session of `user` (served here): the SHA-256 of its token, in hex
    /// (the token itself is never stored), valid until `expires_ms`.
    Session {
        user: u32,
        token_sha256: String,
        expires_ms: i64,
    },
    /// The session of `user` whose token hashes to `token_sha256` ends.
    Logout { user: u32, token_sha256: String },
}

/// Reads `to` as a list, or as the single number of older journals.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(u) => vec![u],
        OneOrMany::Many(v) => v,
    })
}

/// A post as it appears in any timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    /// Unique across tsn: `<author>-<client chosen or server chosen token>`.
    pub id: String,
    pub author: u32,
    pub text: String,
    /// Milliseconds since the Unix epoch, set by the author's primary.
    pub ts_ms: i64,
}

/// One line of `journal.data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub epoch: u64,
    pub op: Op,
}

/// One line of `timeline.data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineLine {
    pub seq: u64,
    /// Human-readable time of the post (RFC 3339, UTC).
    pub time: String,
    #[serde(flatten)]
    pub post: Post,
}

/// One line of `following.data` or `followers.data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeLine {
    pub seq: u64,
    /// `follow` / `unfollow` in following.data, `add` / `remove` in followers.data.
    pub op: String,
    pub user: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// One line of `global_clients.data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientLine {
    pub seq: u64,
    pub user: u32,
    pub cluster: u32,
}

/// The `seq` of any line, for recovery; other fields are not looked at.
#[derive(Deserialize)]
pub struct SeqOnly {
    pub seq: u64,
}

impl Entry {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("entries always serialize")
    }

    pub fn from_line(line: &[u8]) -> Option<Entry> {
        serde_json::from_slice(line).ok()
    }
}

/// Which [`Op`] an entry holds, known without its fields: the journal
/// keeps it with each line, so that whoever reads lines (mirroring, the
/// change feed) tells a delivery from a post without parsing the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    User,
    Follow,
    Unfollow,
    Post,
    Deliver,
    AddFollower,
    RemoveFollower,
    Shown,
    Account,
    Session,
    Logout,
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::User { .. } => OpKind::User,
            Op::Follow { .. } => OpKind::Follow,
            Op::Unfollow { .. } => OpKind::Unfollow,
            Op::Post(_) => OpKind::Post,
            Op::Deliver { .. } => OpKind::Deliver,
            Op::AddFollower { .. } => OpKind::AddFollower,
            Op::RemoveFollower { .. } => OpKind::RemoveFollower,
            Op::Shown { .. } => OpKind::Shown,
            Op::Account { .. } => OpKind::Account,
            Op::Session { .. } => OpKind::Session,
            Op::Logout { .. } => OpKind::Logout,
        }
    }
}

/// RFC 3339 text of a millisecond timestamp, for people reading the files.
pub fn time_text(ts_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds since the Unix epoch, now, by this machine's wall clock.
/// Decides nothing in a server or sync service: their timestamps are
/// cluster time (`tsn_cluster::clock`), whose reference is this clock read
/// on the coordinator.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_through_one_line() {
        let e = Entry {
            seq: 7,
            epoch: 2,
            op: Op::Deliver {
                to: vec![3, 5],
                post: Post {
                    id: "1-abc".into(),
                    author: 1,
                    text: "hi \"there\"\nnew line".into(),
                    ts_ms: 1_700_000_000_000,
                },
            },
        };
        let line = e.to_line();
        assert!(!line.contains('\n'), "a record is exactly one line");
        assert_eq!(Entry::from_line(line.as_bytes()), Some(e));
    }

    #[test]
    fn an_older_single_recipient_delivery_still_reads() {
        let line = r#"{"seq":3,"epoch":1,"op":{"type":"deliver","to":7,"post":{"id":"1-a","author":1,"text":"t","ts_ms":5}}}"#;
        let e = Entry::from_line(line.as_bytes()).expect("parses");
        assert!(matches!(e.op, Op::Deliver { ref to, .. } if to == &vec![7]));
    }

    #[test]
    fn an_entry_line_carries_its_kind() {
        let post = Post {
            id: "1-a".into(),
            author: 1,
            text: "t".into(),
            ts_ms: 1,
        };
        let to = vec![2];
        assert_eq!(
            Op::Deliver {
                to,
                post: post.clone()
            }
            .kind(),
            OpKind::Deliver
        );
        assert_eq!(Op::Post(post).kind(), OpKind::Post);
        assert_eq!(
            Op::User {
                user: 1,
                cluster: 1
            }
            .kind(),
            OpKind::User
        );
    }

    #[test]
    fn timeline_line_is_flat() {
        let l = TimelineLine {
            seq: 1,
            time: time_text(0),
            post: Post {
                id: "1-a".into(),
                author: 1,
                text: "x".into(),
                ts_ms: 0,
            },
        };
        let s = serde_json::to_string(&l).unwrap();
        assert_eq!(
            s,
            r#"{"seq":1,"time":"1970-01-01T00:00:00.000Z","id":"1-a","author":1,"text":"x","ts_ms":0}"#
        );
        let back: TimelineLine = serde_json::from_str(&s).unwrap();
        assert_eq!(back, l);
    }
}
