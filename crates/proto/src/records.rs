//! The one place where the datastore's records (`tsn_datastore::record`)
//! and their protobuf messages meet, in both directions.
//!
//! Going out, a record always converts ([`From`]). Coming in, a message
//! converts only if it holds a whole record ([`TryFrom`], else
//! [`InvalidRecord`]): proto3 cannot tell a field that was left out from
//! one set to its default, so an operation without its variant, a delivery
//! without its post, or a post without an id or an author is refused, never
//! read as an empty record. Whoever receives one fails the call or batch
//! that carried it (and the sender retries and reports it): a record is
//! never skipped on its way between processes.
//!
//! Journal entries are the exception to typed records: they travel as the
//! journal's own line (so that a secondary's journal holds the primary's
//! very bytes) inside a [`pb::JournalEntry`] that says what the line holds
//! ([`entry_of`] checks that the two agree).

use std::fmt;

use tsn_datastore::journal::Line;
use tsn_datastore::record::{Entry, Op, OpKind, Post};

use crate::tsn as pb;
use crate::tsn::operation::Op as PbOp;

/// A message that does not hold a whole, valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRecord(String);

impl fmt::Display for InvalidRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidRecord {}

fn invalid(what: impl Into<String>) -> InvalidRecord {
    InvalidRecord(what.into())
}

impl From<OpKind> for pb::OpKind {
    fn from(kind: OpKind) -> pb::OpKind {
        match kind {
            OpKind::User => pb::OpKind::User,
            OpKind::Follow => pb::OpKind::Follow,
            OpKind::Unfollow => pb::OpKind::Unfollow,
            OpKind::Post => pb::OpKind::Post,
            OpKind::Deliver => pb::OpKind::Deliver,
            OpKind::AddFollower => pb::OpKind::AddFollower,
            OpKind::RemoveFollower => pb::OpKind::RemoveFollower,
            OpKind::Shown => pb::OpKind::Shown,
            OpKind::Account => pb::OpKind::Account,
            OpKind::Session => pb::OpKind::Session,
            OpKind::Logout => pb::OpKind::Logout,
        }
    }
}

impl TryFrom<pb::OpKind> for OpKind {
    type Error = InvalidRecord;

    fn try_from(kind: pb::OpKind) -> Result<OpKind, InvalidRecord> {
        Ok(match kind {
            pb::OpKind::Unspecified => return Err(invalid("the operation's kind is not set")),
            pb::OpKind::User => OpKind::User,
            pb::OpKind::Follow => OpKind::Follow,
            pb::OpKind::Unfollow => OpKind::Unfollow,
            pb::OpKind::Post => OpKind::Post,
            pb::OpKind::Deliver => OpKind::Deliver,
            pb::OpKind::AddFollower => OpKind::AddFollower,
            pb::OpKind::RemoveFollower => OpKind::RemoveFollower,
            pb::OpKind::Shown => OpKind::Shown,
            pb::OpKind::Account => OpKind::Account,
            pb::OpKind::Session => OpKind::Session,
            pb::OpKind::Logout => OpKind::Logout,
        })
    }
}

impl From<Post> for pb::PostRecord {
    fn from(p: Post) -> pb::PostRecord {
        pb::PostRecord {
            id: p.id,
            author: p.author,
            text: p.text,
            ts_ms: p.ts_ms,
        }
    }
}

impl TryFrom<pb::PostRecord> for Post {
    type Error = InvalidRecord;

    fn try_from(p: pb::PostRecord) -> Result<Post, InvalidRecord> {
        if p.id.is_empty() {
            return Err(invalid(format!("a post of user {} has no id", p.author)));
        }
        if p.author == 0 {
            return Err(invalid(format!("post {:?} has no author", p.id)));
        }
        Ok(Post {
            id: p.id,
            author: p.author,
            text: p.text,
            ts_ms: p.ts_ms,
        })
    }
}

impl From<Op> for pb::Operation {
    fn from(op: Op) -> pb::Operation {
        let op = match op {
            Op::User { user, cluster } => PbOp::User(pb::UserOp { user, cluster }),
            Op::Follow {
                user,
                target,
                since_ms,
            } => PbOp::Follow(pb::FollowOp {
                user,
                target,
                since_ms,
            }),
            Op::Unfollow { user, target } => PbOp::Unfollow(pb::UnfollowOp { user, target }),
            Op::Post(post) => PbOp::Post(post.into()),
            Op::Deliver { to, post } => PbOp::Deliver(pb::DeliverOp {
                to,
                post: Some(post.into()),
            }),
            Op::AddFollower {
                user,
                follower,
                since_ms,
                version,
            } => PbOp::AddFollower(pb::AddFollowerOp {
                user,
                follower,
                since_ms,
                version,
            }),
            Op::RemoveFollower {
                user,
                follower,
                version,
            } => PbOp::RemoveFollower(pb::RemoveFollowerOp {
                user,
                follower,
                version,
            }),
            Op::Shown { user, seq } => PbOp::Shown(pb::ShownOp { user, seq }),
            Op::Account {
                user,
                handle,
                password_hash,
            } => PbOp::Account(pb::AccountOp {
                user,
                handle,
                password_hash,
            }),
            Op::Session {
                user,
                token_sha256,
                expires_ms,
            } => PbOp::Session(pb::SessionOp {
                user,
                token_sha256,
                expires_ms,
            }),
            Op::Logout { user, token_sha256 } => PbOp::Logout(pb::LogoutOp { user, token_sha256 }),
        };
        pb::Operation { op: Some(op) }
    }
}

impl TryFrom<pb::Operation> for Op {
    type Error = InvalidRecord;

    fn try_from(op: pb::Operation) -> Result<Op, InvalidRecord> {
        let op = op
            .op
            .ok_or_else(|| invalid("the operation has no variant set"))?;
        Ok(match op {
            PbOp::User(pb::UserOp { user, cluster }) => Op::User { user, cluster },
            PbOp::Follow(pb::FollowOp {
                user,
                target,
                since_ms,
            }) => Op::Follow {
                user,
                target,
                since_ms,
            },
            PbOp::Unfollow(pb::UnfollowOp { user, target }) => Op::Unfollow { user, target },
            PbOp::Post(post) => Op::Post(post.try_into()?),
            PbOp::Deliver(pb::DeliverOp { to, post }) => Op::Deliver {
                to,
                post: post
                    .ok_or_else(|| invalid("a delivery has no post"))?
                    .try_into()?,
            },
            PbOp::AddFollower(pb::AddFollowerOp {
                user,
                follower,
                since_ms,
                version,
            }) => Op::AddFollower {
                user,
                follower,
                since_ms,
                version,
            },
            PbOp::RemoveFollower(pb::RemoveFollowerOp {
                user,
                follower,
                version,
            }) => Op::RemoveFollower {
                user,
                follower,
                version,
            },
            PbOp::Shown(pb::ShownOp { user, seq }) => Op::Shown { user, seq },
            PbOp::Account(pb::AccountOp {
                user,
                handle,
                password_hash,
            }) => Op::Account {
                user,
                handle,
                password_hash,
            },
            PbOp::Session(pb::SessionOp {
                user,
                token_sha256,
                expires_ms,
            }) => Op::Session {
                user,
                token_sha256,
                expires_ms,
            },
            PbOp::Logout(pb::LogoutOp { user, token_sha256 }) => Op::Logout { user, token_sha256 },
        })
    }
}

impl From<&Line> for pb::JournalEntry {
    fn from(line: &Line) -> pb::JournalEntry {
        pb::JournalEntry {
            seq: line.seq,
            epoch: line.epoch,
            kind: pb::OpKind::from(line.kind).into(),
            line: line.bytes.to_vec(),
        }
    }
}

/// The entry of a received journal line: the line parses, and its seq,
/// epoch and kind are those its envelope says (a receiver that ordered,
/// fenced or filtered by the envelope saw the truth).
pub fn entry_of(msg: &pb::JournalEntry) -> Result<Entry, InvalidRecord> {
    let kind = pb::OpKind::try_from(msg.kind)
        .map_err(|_| invalid(format!("entry {}: unknown kind {}", msg.seq, msg.kind)))
        .and_then(OpKind::try_from)?;
    let entry = Entry::from_line(&msg.line).ok_or_else(|| {
        let shown = &msg.line[..msg.line.len().min(120)];
        invalid(format!(
            "entry {}: the line does not parse: {}",
            msg.seq,
            String::from_utf8_lossy(shown)
        ))
    })?;
    if (entry.seq, entry.epoch, entry.op.kind()) != (msg.seq, msg.epoch, kind) {
        return Err(invalid(format!(
            "entry {}: the line (seq {}, epoch {}, {:?}) disagrees with its envelope (epoch {}, {kind:?})",
            msg.seq,
            entry.seq,
            entry.epoch,
            entry.op.kind(),
            msg.epoch
        )));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::*;

    fn post(id: &str) -> Post {
        Post {
            id: id.into(),
            author: 1,
            text: "hi \"there\"\nnew line ✓".into(),
            ts_ms: -5,
        }
    }

    fn every_op() -> Vec<Op> {
        vec![
            Op::User {
                user: 1,
                cluster: 3,
            },
            Op::Follow {
                user: 1,
                target: 2,
                since_ms: 1_700_000_000_000,
            },
            Op::Unfollow { user: 1, target: 2 },
            Op::Post(post("1-a")),
            Op::Deliver {
                to: vec![2, 5, 9],
                post: post("1-b"),
            },
            Op::AddFollower {
                user: 1,
                follower: 4,
                since_ms: 7,
                version: 12,
            },
            Op::RemoveFollower {
                user: 1,
                follower: 4,
                version: 13,
            },
            Op::Shown { user: 1, seq: 40 },
            Op::Account {
                user: 4,
                handle: "alice".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            },
            Op::Session {
                user: 4,
                token_sha256: "ab".repeat(32),
                expires_ms: 9,
            },
            Op::Logout {
                user: 4,
                token_sha256: "ab".repeat(32),
            },
        ]
    }

    #[test]
    fn every_op_round_trips_through_its_message_and_the_wire() {
        let ops = every_op();
        let kinds: std::collections::HashSet<OpKind> = ops.iter().map(Op::kind).collect();
        assert_eq!(kinds.len(), 11, "every variant is covered");
        for op in ops {
            let msg = pb::Operation::from(op.clone());
            let wire = pb::Operation::decode(&msg.encode_to_vec()[..]).unwrap();
            assert_eq!(Op::try_from(wire), Ok(op));
        }
    }

    #[test]
    fn a_post_round_trips() {
        let p = post("1-a");
        assert_eq!(Post::try_from(pb::PostRecord::from(p.clone())), Ok(p));
    }

    #[test]
    fn every_kind_round_trips() {
        for op in every_op() {
            let kind = op.kind();
            assert_eq!(OpKind::try_from(pb::OpKind::from(kind)), Ok(kind));
        }
        assert!(OpKind::try_from(pb::OpKind::Unspecified).is_err());
    }

    #[test]
    fn incomplete_messages_do_not_convert() {
        assert!(Op::try_from(pb::Operation { op: None }).is_err());
        let no_post = pb::Operation {
            op: Some(PbOp::Deliver(pb::DeliverOp {
                to: vec![2],
                post: None,
            })),
        };
        assert!(Op::try_from(no_post).is_err());
        let good = pb::PostRecord::from(post("1-a"));
        let no_id = pb::PostRecord {
            id: String::new(),
            ..good.clone()
        };
        let no_author = pb::PostRecord { author: 0, ..good };
        for bad in [no_id, no_author] {
            assert!(Post::try_from(bad.clone()).is_err());
            let op = pb::Operation {
                op: Some(PbOp::Post(bad)),
            };
            assert!(Op::try_from(op).is_err());
        }
    }

    #[test]
    fn a_journal_line_travels_as_it_is_with_its_envelope() {
        for (seq, op) in (1..).zip(every_op()) {
            let entry = Entry { seq, epoch: 2, op };
            let bytes: Arc<[u8]> = Arc::from(entry.to_line().into_bytes());
            let msg = pb::JournalEntry::from(&Line::of(&entry, bytes.clone()));
            assert_eq!(&msg.line[..], &bytes[..], "the very bytes");
            assert_eq!((msg.seq, msg.epoch), (seq, 2));
            assert_eq!(entry_of(&msg), Ok(entry));
        }
    }

    #[test]
    fn a_line_that_disagrees_with_its_envelope_is_refused() {
        let entry = Entry {
            seq: 4,
            epoch: 2,
            op: Op::Post(post("1-a")),
        };
        let good =
            pb::JournalEntry::from(&Line::of(&entry, Arc::from(entry.to_line().into_bytes())));
        let deliver = pb::OpKind::Deliver as i32;
        let bad = [
            pb::JournalEntry {
                seq: 5,
                ..good.clone()
            },
            pb::JournalEntry {
                epoch: 1,
                ..good.clone()
            },
            pb::JournalEntry {
                kind: deliver,
                ..good.clone()
            },
            pb::JournalEntry {
                kind: pb::OpKind::Unspecified as i32,
                ..good.clone()
            },
            pb::JournalEntry {
                kind: 99,
                ..good.clone()
            },
            pb::JournalEntry {
                line: b"{\"seq\":4".to_vec(),
                ..good.clone()
            },
        ];
        for msg in bad {
            assert!(entry_of(&msg).is_err(), "{msg:?}");
        }
        assert!(entry_of(&good).is_ok());
    }
}
