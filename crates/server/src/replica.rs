//! `tsn.Replica`: what servers and sync services ask of a server.
//!
//! * `Append` and `EpochHistory`: the secondary's side of mirroring.
//! * `Apply`, `ReadChanges`, `Followers`, `PostsSince`, `UserExists`: the
//!   primary's side of synchronization between clusters.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use tsn_datastore::jsonl::is_storable_line;
use tsn_datastore::limits::TIMELINE_READ_MAX_POSTS;
use tsn_datastore::record::OpKind;
use tsn_datastore::store::read_posts_since;
use tsn_datastore::validate;
use tsn_datastore::{Entry, Op};
use tsn_proto::records::entry_of;
use tsn_proto::tsn::replica_server::Replica;
use tsn_proto::tsn::*;

use crate::node::{lock, not_primary, Node, Role};
use crate::write_queue::WriteOutcome;

/// Most ops in one Apply.
pub const APPLY_MAX_OPS: usize = 1000;
/// Most entries in one ReadChanges reply.
pub const READ_CHANGES_MAX_ENTRIES: usize = 2048;
/// Most bytes of entries in one ReadChanges reply.
pub const READ_CHANGES_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Longest a ReadChanges call waits for a new entry.
pub const READ_CHANGES_WAIT_MAX_MS: u64 = 60_000;
/// How many more entries a ReadChanges that leaves deliveries out may look
/// at than it may return.
const SKIP_SCAN_FACTOR: usize = 8;
/// Most users in one Followers call.
pub const FOLLOWERS_MAX_USERS: usize = 10_000;

pub struct ReplicaService {
    pub(crate) node: Arc<Node>,
}

impl ReplicaService {
    fn primary(&self) -> Result<(), Status> {
        let view = self.node.role();
        if view.role == Role::Primary {
            Ok(())
        } else {
            Err(not_primary(&view, self.node.cluster_id))
        }
    }
}

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendReply>, Status> {
        let req = request.into_inner();
        let node = self.node.clone();
        let refuse = |node: &Node| AppendReply {
            ok: false,
            last_seq: node.last_seq(),
            epoch: node.role().epoch,
            coordinator_heard: false,
        };
        let view = node.role();
        // Fencing: entries from an older epoch, or from anyone while this
        // server is primary, or before this server reconciled with the
        // sender's history, are refused.
        if view.role != Role::Secondary
            || req.epoch != view.epoch
            || req.primary_id != view.primary_id
            || *lock(&node.reconciled) != Some((req.epoch, req.primary_id))
        {
            return Ok(Response::new(refuse(&node)));
        }
        let (prev_seq, epoch) = (req.prev_seq, req.epoch);
        let (entries, lines) = received_entries(prev_seq, epoch, req.entries).map_err(|i| {
            Status::invalid_argument(format!("entry {i} is malformed or out of order"))
        })?;
        let result = tokio::task::spawn_blocking(move || {
            let mut store = lock(&node.store);
            if store.last_seq() != prev_seq {
                return Ok(AppendReply {
                    ok: false,
                    last_seq: store.last_seq(),
                    epoch,
                    coordinator_heard: false,
                });
            }
            if let Err(e) = store.append_lines(&entries, &lines) {
                if !e.is_disk_full() {
                    tracing::error!(error = %e, "the journal cannot be written; stopping");
                    std::process::exit(1);
                }
                // A full disk: refuse (the primary drops this server from
                // the in-sync set and catches it up once space returns).
                tracing::warn!(error = %e, "the disk is full; refusing the primary's entries");
                if let Err(e) = node.reload_store(&mut store) {
                    tracing::warn!(error = %e, "the datastore cannot be reloaded yet");
                }
                return Err(Status::resource_exhausted(format!(
                    "disk full on server {}: {e}",
                    node.server_id
                )));
            }
            node.set_position(store.last_seq(), store.last_epoch());
            Ok(AppendReply {
                ok: true,
                last_seq: store.last_seq(),
                epoch,
                coordinator_heard: node.hears_coordinator(),
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        result.map(Response::new)
    }

    async fn epoch_history(
        &self,
        _request: Request<EpochHistoryRequest>,
    ) -> Result<Response<EpochHistoryReply>, Status> {
        self.primary()?;
        let store = lock(&self.node.store);
        Ok(Response::new(EpochHistoryReply {
            epochs: store
                .epochs()
                .iter()
                .map(|&(epoch, first_seq)| EpochStart { epoch, first_seq })
                .collect(),
            last_seq: store.last_seq(),
        }))
    }

    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<ApplyReply>, Status> {
        self.primary()?;
        let (from_cluster, ops) = decode_apply(request.into_inner())?;
        // The one validation of every op, with this cluster's clock and
        // users: what it finds true here (a user and its cluster) stays
        // true until the write.
        let now_ms = self.node.cluster_now_ms()?;
        {
            let store = lock(&self.node.store);
            let at = validate::Receiver {
                cluster: self.node.cluster_id,
                cluster_count: self.node.cluster_count(),
                now_ms,
                users: Some(store.state()),
            };
            admit_all(from_cluster, &ops, &at)?;
        }
        if ops.is_empty() {
            return Ok(Response::new(ApplyReply::default()));
        }
        let outcomes = self.node.write(ops).await?;
        let applied = outcomes
            .iter()
            .filter(|o| matches!(o, WriteOutcome::Applied(_)))
            .count() as u32;
        Ok(Response::new(ApplyReply {
            applied,
            // No underflow: `applied` counts some of `outcomes`.
            duplicates: outcomes.len() as u32 - applied,
        }))
    }

    async fn read_changes(
        &self,
        request: Request<ReadChangesRequest>,
    ) -> Result<Response<ReadChangesReply>, Status> {
        self.primary()?;
        let req = request.into_inner();
        let max = (req.max_entries as usize).clamp(1, READ_CHANGES_MAX_ENTRIES);
        let wait = Duration::from_millis((req.wait_ms as u64).min(READ_CHANGES_WAIT_MAX_MS));
        let mut commit = self.node.subscribe_commit();
        let _ = tokio::time::timeout(wait, commit.wait_for(|c| *c > req.after_seq)).await;
        let committed = *commit.borrow();
        let node = self.node.clone();
        let skip = req.skip_deliveries;
        let (entries, scanned_to_seq) = tokio::task::spawn_blocking(move || {
            let mut entries = Vec::new();
            let mut scanned_to = req.after_seq;
            if committed <= req.after_seq {
                return (entries, scanned_to);
            }
            // Deliveries are most of a busy journal; when they are left out,
            // look further for the entries that are wanted.
            let scan = if skip { max * SKIP_SCAN_FACTOR } else { max };
            for line in node.journal_lines(req.after_seq, scan, READ_CHANGES_MAX_BYTES) {
                if line.seq > committed {
                    break;
                }
                scanned_to = line.seq;
                if skip && line.kind == OpKind::Deliver {
                    continue;
                }
                entries.push(JournalEntry::from(&line));
                if entries.len() >= max {
                    break;
                }
            }
            (entries, scanned_to)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        self.primary()?;
        Ok(Response::new(ReadChangesReply {
            entries,
            commit_seq: committed,
            epoch: self.node.role().epoch,
            scanned_to_seq,
        }))
    }

    async fn followers(
        &self,
        request: Request<FollowersRequest>,
    ) -> Result<Response<FollowersReply>, Status> {
        self.primary()?;
        let req = request.into_inner();
        if req.users.len() > FOLLOWERS_MAX_USERS {
            return Err(Status::invalid_argument("too many users in one call"));
        }
        let store = lock(&self.node.store);
        let lists = req
            .users
            .iter()
            .map(|&u| FollowerList {
                user: u,
                followers: store
                    .state()
                    .followers(u)
                    .into_iter()
                    .map(|(user, since_ms)| Follower { user, since_ms })
                    .collect(),
            })
            .collect();
        Ok(Response::new(FollowersReply { lists }))
    }

    async fn posts_since(
        &self,
        request: Request<PostsSinceRequest>,
    ) -> Result<Response<PostsSinceReply>, Status> {
        self.primary()?;
        let req = request.into_inner();
        let limit = (req.limit as usize).clamp(1, TIMELINE_READ_MAX_POSTS);
        let layout = self.node.layout.clone();
        let posts = tokio::task::spawn_blocking(move || {
            read_posts_since(&layout, req.author, req.since_ms, limit)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let posts = posts.into_iter().map(PostRecord::from).collect();
        Ok(Response::new(PostsSinceReply { posts }))
    }

    async fn user_exists(
        &self,
        request: Request<UserExistsRequest>,
    ) -> Result<Response<UserExistsReply>, Status> {
        self.primary()?;
        let user = request.into_inner().user;
        let exists =
            lock(&self.node.store).state().user_cluster(user) == Some(self.node.cluster_id);
        Ok(Response::new(UserExistsReply { exists }))
    }
}

/// A journal line's bytes, shared with the journal's in-memory tail.
/// The sender's cluster and the ops of a `Replica.Apply` request: at most
/// [`APPLY_MAX_OPS`], each one a valid operation; else the whole request
/// is refused.
pub fn decode_apply(req: ApplyRequest) -> Result<(u32, Vec<Op>), Status> {
    if req.ops.len() > APPLY_MAX_OPS {
        return Err(Status::invalid_argument(format!(
            "{} ops in one call; the limit is {APPLY_MAX_OPS}",
            req.ops.len()
        )));
    }
    let mut ops = Vec::with_capacity(req.ops.len());
    for (i, op) in req.ops.into_iter().enumerate() {
        let op = Op::try_from(op).map_err(|e| {
            Status::invalid_argument(format!("op {i} is not a valid operation: {e}"))
        })?;
        ops.push(op);
    }
    Ok((req.from_cluster, ops))
}

/// Whether this cluster, as `at` describes it, admits every one of `ops`
/// from cluster `from_cluster` ([`validate::admit`]); else the first
/// refusal, naming the op.
pub fn admit_all(from_cluster: u32, ops: &[Op], at: &validate::Receiver) -> Result<(), Status> {
    let origin = validate::Origin::Cluster(from_cluster);
    for (i, op) in ops.iter().enumerate() {
        validate::admit(op, origin, at)
            .map_err(|m| Status::invalid_argument(format!("op {i}: {m}")))?;
    }
    Ok(())
}

type JournalLine = Arc<[u8]>;

/// The entries of an Append, each with its line as it came: every line
/// is parsed (for the state and the derived files) and then stored as it
/// came, so both journals hold the same bytes and no entry is serialized
/// again here. An entry's envelope must continue the sequence after
/// `prev_seq` with epochs that do not go back and are not past the
/// sender's `epoch`; its line must be one line ([`is_storable_line`]) and
/// hold what the envelope says ([`entry_of`]) and an op of the shape every
/// replica accepts ([`validate::shape`], which the primary checked before
/// it committed); else the index of the first bad entry.
fn received_entries(
    prev_seq: u64,
    epoch: u64,
    received: Vec<JournalEntry>,
) -> Result<(Vec<Entry>, Vec<JournalLine>), usize> {
    let mut entries: Vec<Entry> = Vec::with_capacity(received.len());
    let mut lines: Vec<JournalLine> = Vec::with_capacity(received.len());
    for (i, msg) in received.into_iter().enumerate() {
        // `prev_seq` is the sender's: no sum of it may overflow.
        let in_order = prev_seq.checked_add(1 + i as u64) == Some(msg.seq)
            && msg.epoch <= epoch
            && entries.last().is_none_or(|p| p.epoch <= msg.epoch);
        let entry = (in_order && is_storable_line(&msg.line))
            .then(|| entry_of(&msg).ok())
            .flatten()
            .filter(|e| validate::shape(&e.op).is_ok());
        match entry {
            Some(e) => {
                entries.push(e);
                lines.push(Arc::from(msg.line));
            }
            None => return Err(i),
        }
    }
    Ok((entries, lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_datastore::Post;

    fn line(seq: u64, epoch: u64) -> Vec<u8> {
        Entry {
            seq,
            epoch,
            op: Op::Post(Post {
                id: format!("1-{seq}"),
                author: 1,
                text: "t".into(),
                ts_ms: 1,
            }),
        }
        .to_line()
        .into_bytes()
    }

    /// `line` in the envelope its own fields make, or (for a line that
    /// does not parse) the envelope of a post at (seq, epoch).
    fn wrap(seq: u64, epoch: u64, line: Vec<u8>) -> JournalEntry {
        let (seq, epoch, kind) = match Entry::from_line(&line) {
            Some(e) => (e.seq, e.epoch, e.op.kind()),
            None => (seq, epoch, OpKind::Post),
        };
        JournalEntry {
            seq,
            epoch,
            kind: tsn_proto::tsn::OpKind::from(kind).into(),
            line,
        }
    }

    fn wrapped(lines: Vec<Vec<u8>>) -> Vec<JournalEntry> {
        lines.into_iter().map(|l| wrap(6, 1, l)).collect()
    }

    #[test]
    fn received_lines_are_kept_as_they_came() {
        let spaced = br#"{"seq":12, "epoch":3,"op":{"type":"user","user":1,"cluster":1}}"#.to_vec();
        let received = vec![line(10, 2), line(11, 3), spaced.clone()];
        let (entries, lines) = received_entries(9, 3, wrapped(received.clone())).unwrap();
        assert_eq!(
            entries.iter().map(|e| (e.seq, e.epoch)).collect::<Vec<_>>(),
            vec![(10, 2), (11, 3), (12, 3)]
        );
        for (kept, came) in lines.iter().zip(&received) {
            assert_eq!(&kept[..], &came[..]);
        }
        assert!(received_entries(9, 3, Vec::new()).unwrap().0.is_empty());
    }

    #[test]
    fn a_bad_line_refuses_the_append() {
        let ok = || wrapped(vec![line(5, 1), line(6, 1)]);
        let mut cases: Vec<(Vec<JournalEntry>, usize)> = vec![
            // Does not parse.
            (vec![line(5, 1), b"{\"seq\":6".to_vec()], 1),
            // Valid JSON, but over two lines: it would break the journal.
            (
                vec![
                    line(5, 1),
                    String::from_utf8(line(6, 1))
                        .unwrap()
                        .replacen(',', ",\n", 1)
                        .into_bytes(),
                ],
                1,
            ),
            // Does not continue the sequence.
            (vec![line(6, 1)], 0),
            (vec![line(5, 1), line(7, 1)], 1),
            // An epoch past the sender's, or going back.
            (vec![line(5, 3)], 0),
            (vec![line(5, 2), line(6, 1)], 1),
            (vec![Vec::new()], 0),
        ]
        .into_iter()
        .map(|(lines, bad)| (wrapped(lines), bad))
        .collect();
        // An envelope that disagrees with its line.
        let mut other_seq = ok();
        other_seq[1].line = line(7, 1);
        cases.push((other_seq, 1));
        let mut other_kind = ok();
        other_kind[0].kind = tsn_proto::tsn::OpKind::Deliver.into();
        cases.push((other_kind, 0));
        for (received, bad) in cases {
            assert_eq!(received_entries(4, 2, received).err(), Some(bad));
        }
        assert!(received_entries(4, 2, ok()).is_ok());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random envelopes and bytes from a peer: refused or taken, never
        /// a panic; what is taken has the shape every replica accepts.
        #[test]
        fn random_appends_never_panic(
            prev in proptest::prelude::any::<u64>(),
            epoch in proptest::prelude::any::<u64>(),
            lines in proptest::collection::vec(
                (proptest::prelude::any::<u64>(), proptest::prelude::any::<u64>(),
                 proptest::prelude::any::<i32>(),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
                0..4),
        ) {
            let received = lines
                .into_iter()
                .map(|(seq, epoch, kind, line)| JournalEntry { seq, epoch, kind, line })
                .collect();
            if let Ok((entries, _)) = received_entries(prev, epoch, received) {
                for e in entries {
                    proptest::prop_assert!(validate::shape(&e.op).is_ok());
                }
            }
        }

        /// Random well-formed but wrong `Replica.Apply` requests from a
        /// peer, against a cluster that knows users 1 to 5: refused or
        /// admitted, never a panic; what is admitted has the shape every
        /// replica accepts and a line within the limit.
        #[test]
        fn random_applies_never_panic(
            request in tsn_proto::arbitrary::apply_request(),
            cluster in 1u32..4,
            count in proptest::option::of(1u32..4),
            now_ms in tsn_proto::arbitrary::time_ms(),
        ) {
            let mut users = tsn_datastore::fold::JournalFold::default();
            for user in 1..=5u32 {
                users.apply(&Entry {
                    seq: u64::from(user),
                    epoch: 1,
                    op: Op::User { user, cluster: (user - 1) % 3 + 1 },
                });
            }
            if let Ok((from, ops)) = decode_apply(request) {
                let at = validate::Receiver { cluster, cluster_count: count, now_ms, users: Some(&users) };
                if admit_all(from, &ops, &at).is_ok() {
                    for op in &ops {
                        proptest::prop_assert!(validate::shape(op).is_ok());
                        proptest::prop_assert!(validate::line_fits(op).is_ok());
                    }
                }
            }
        }
    }
}
