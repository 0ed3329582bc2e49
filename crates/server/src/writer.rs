//! The group-commit writer: the one thread that appends to this server's
//! journal while it is primary.
//!
//! It takes every write request waiting in its queue (up to a batch limit),
//! decides each op against the state as left by the ops before it, stages
//! the applied ones, and writes the whole batch with a single fsync. Many
//! concurrent clients therefore share one fsync, which is where the
//! throughput of durable writes comes from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Status;

use tokio::sync::mpsc;
use tsn_datastore::fold::JournalFold;
use tsn_datastore::Op;

use crate::node::{lock, Node};
use crate::write_queue::{WriteOutcome, WriteRequest, Written};

/// Most requests taken into one batch.
const BATCH_MAX_REQUESTS: usize = 512;
/// Most ops taken into one batch.
const BATCH_MAX_OPS: usize = 8192;
/// After the disk was found full, writes are refused without trying the
/// disk for this long, so a storm of retries does not re-read the journal
/// for each one.
const DISK_FULL_RETRY_MS: u64 = 200;

/// What the writer remembers of a full disk between batches.
#[derive(Default)]
struct DiskFull {
    /// When the last append failed for lack of space.
    since: Option<Instant>,
    /// The store could not be reloaded from the disk after that failure:
    /// its in-memory state may be ahead of the journal, so it is reloaded
    /// before anything is decided against it.
    needs_reload: bool,
}

/// The rules that depend on the current state. Pure.
pub fn decide(state: &JournalFold, op: &Op) -> WriteOutcome {
    match op {
        Op::Follow { user, target, .. } if user == target || state.follows(*user, *target) => {
            WriteOutcome::Rejected("FAILURE_ALREADY_EXISTS")
        }
        Op::Unfollow { user, target } if !state.follows(*user, *target) => {
            WriteOutcome::Rejected("FAILURE_NOT_A_FOLLOWER")
        }
        op if state.is_duplicate(op) => WriteOutcome::Duplicate,
        _ => WriteOutcome::Applied(0),
    }
}

/// Starts the writer thread.
pub fn spawn(node: Arc<Node>, mut rx: mpsc::Receiver<WriteRequest>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            let mut disk_full = DiskFull::default();
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                let mut ops = batch[0].ops.len();
                while batch.len() < BATCH_MAX_REQUESTS && ops < BATCH_MAX_OPS {
                    match rx.try_recv() {
                        Ok(r) => {
                            ops += r.ops.len();
                            batch.push(r);
                        }
                        Err(_) => break,
                    }
                }
                write_batch(&node, batch, &mut disk_full);
            }
        })
        .expect("spawning the writer thread")
}

fn refuse(batch: Vec<WriteRequest>, status: &Status) {
    for r in batch {
        let _ = r.reply.send(Err(status.clone()));
    }
}

/// Final for clients ([`tsn_cluster::refusal`]): the disk does not free
/// itself, so the user hears it at once instead of after silent retries.
fn disk_full_status(node: &Node) -> Status {
    tsn_cluster::refusal::final_refusal(
        Status::resource_exhausted(format!(
            "disk full on server {} of cluster {}: writes are refused until space returns; reads still work",
            node.server_id, node.cluster_id
        )),
        "disk-full",
    )
}

/// Reloads the store from the disk after a failed append: the torn line
/// it may have left is cut, and the in-memory state is the journal's again
/// (without the entries that were never stored, whose clients were told
/// so).
fn reload(node: &Node, disk_full: &mut DiskFull) {
    let mut store = lock(&node.store);
    match node.reload_store(&mut store) {
        Ok(()) => disk_full.needs_reload = false,
        Err(e) => {
            tracing::warn!(error = %e, "the datastore cannot be reloaded yet");
            disk_full.needs_reload = true;
        }
    }
}

fn write_batch(node: &Node, batch: Vec<WriteRequest>, disk_full: &mut DiskFull) {
    let epoch = match node.may_write() {
        Ok(e) => e,
        Err(status) => return refuse(batch, &status),
    };
    if let Some(since) = disk_full.since {
        if since.elapsed() < Duration::from_millis(DISK_FULL_RETRY_MS) {
            return refuse(batch, &disk_full_status(node));
        }
        if disk_full.needs_reload {
            reload(node, disk_full);
            if disk_full.needs_reload {
                disk_full.since = Some(Instant::now());
                return refuse(batch, &disk_full_status(node));
            }
        }
    }
    let mut results = Vec::with_capacity(batch.len());
    // Decide and write under the store lock; fsync without it, so that
    // readers of the state are not held up by the disk, while the mirror
    // already sends the batch to the secondaries; then write the derived
    // files of the now durable entries.
    let pending = {
        let mut store = lock(&node.store);
        // Fencing, and what keeps `stage`'s assertion true: a server whose
        // epoch is older than its own journal's last entry is not the
        // primary of the current epoch, whatever its role says.
        if epoch < store.last_epoch() {
            let status = Status::unavailable(format!(
                "not the primary of the current epoch: epoch {epoch} is older than this \
                 journal's epoch {}; ask the coordinator",
                store.last_epoch()
            ));
            drop(store);
            return refuse(batch, &status);
        }
        let end_before = store.last_seq();
        for req in &batch {
            let mut outcomes = Vec::with_capacity(req.ops.len());
            let mut wait_for_seq = 0;
            for op in &req.ops {
                let outcome = match decide(store.state(), op) {
                    WriteOutcome::Applied(_) => {
                        // Only what is not yet present is stored (for a
                        // delivery: the recipients that lack the post).
                        // `decide` found something to apply, so something
                        // remains; were the two ever to disagree, the op
                        // is already present: a duplicate, not a panic.
                        match store.state().remaining(op) {
                            Some(op) => {
                                let seq = store.stage(op, epoch);
                                wait_for_seq = seq;
                                WriteOutcome::Applied(seq)
                            }
                            None => {
                                tracing::error!(?op, "an applicable op has nothing left to apply");
                                wait_for_seq = wait_for_seq.max(end_before);
                                WriteOutcome::Duplicate
                            }
                        }
                    }
                    WriteOutcome::Duplicate => {
                        wait_for_seq = wait_for_seq.max(end_before);
                        WriteOutcome::Duplicate
                    }
                    o => o,
                };
                outcomes.push(outcome);
            }
            results.push(Written {
                outcomes,
                epoch,
                wait_for_seq,
            });
        }
        let pending = store.write_staged();
        if pending.is_ok() {
            node.note_written(store.last_seq());
        }
        pending
    };
    let written = pending.and_then(|p| {
        let fsync_started = Instant::now();
        p.sync()?;
        node.metrics
            .note_fsync(fsync_started.elapsed(), p.entries.len());
        let mut store = lock(&node.store);
        store.finish(&p)?;
        // The open streams' feeds get the durable lines before the commit
        // point can pass them: a stream takes what its feed holds up to
        // the commit point. The batch's entries follow one another from
        // the journal's end before.
        let end_after = store.last_seq();
        let end_before = p
            .entries
            .first()
            .map_or(end_after, |e| e.seq.saturating_sub(1));
        node.feeds.push(
            end_before,
            end_after,
            p.entries
                .iter()
                .zip(&p.timelines)
                .filter_map(|(e, owners)| match &e.op {
                    Op::Post(post) | Op::Deliver { post, .. } => {
                        Some((e.seq, post, owners.as_slice()))
                    }
                    _ => None,
                }),
        );
        node.set_position(end_after, store.last_epoch());
        Ok((p.entries, p.timelines))
    });
    let (committed, timelines) = match written {
        Ok(done) => {
            if disk_full.since.take().is_some() {
                tracing::info!("the disk has space again; writes are accepted");
            }
            done
        }
        Err(e) if e.is_disk_full() => {
            // Refuse this batch (no client was told it is stored), cut what
            // the failed append left, and keep serving reads; the next
            // batch tries the disk again.
            if disk_full.since.is_none() {
                tracing::error!(error = %e, "the disk is full; refusing writes until space returns");
            }
            disk_full.since = Some(Instant::now());
            reload(node, disk_full);
            return refuse(batch, &disk_full_status(node));
        }
        Err(e) => {
            // The disk refused a write: the in-memory state is ahead of
            // it. Stop; recovery at the next start is exact, and no client
            // was told this batch is stored.
            tracing::error!(error = %e, "the journal cannot be written; stopping");
            std::process::exit(1);
        }
    };
    // Wake the open streams of every timeline a committed entry wrote to.
    // A line the commit point already passed (a secondary acked it since
    // `set_position`) wakes its streams at once: see `CommitTracker`.
    node.note_timeline_lines(
        committed
            .iter()
            .zip(&timelines)
            .flat_map(|(e, owners)| owners.iter().map(move |owner| (e.seq, *owner))),
    );
    for (req, res) in batch.into_iter().zip(results) {
        let _ = req.reply.send(Ok(res));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_datastore::{Entry, Post};

    #[test]
    fn classic_follow_rules() {
        let mut s = JournalFold::default();
        assert_eq!(
            decide(
                &s,
                &Op::Follow {
                    user: 1,
                    target: 1,
                    since_ms: 0
                }
            ),
            WriteOutcome::Rejected("FAILURE_ALREADY_EXISTS")
        );
        assert_eq!(
            decide(&s, &Op::Unfollow { user: 1, target: 2 }),
            WriteOutcome::Rejected("FAILURE_NOT_A_FOLLOWER")
        );
        let f = Op::Follow {
            user: 1,
            target: 2,
            since_ms: 0,
        };
        assert_eq!(decide(&s, &f), WriteOutcome::Applied(0));
        s.apply(&Entry {
            seq: 1,
            epoch: 1,
            op: f.clone(),
        });
        assert_eq!(
            decide(&s, &f),
            WriteOutcome::Rejected("FAILURE_ALREADY_EXISTS")
        );
        assert_eq!(
            decide(&s, &Op::Unfollow { user: 1, target: 2 }),
            WriteOutcome::Applied(0)
        );
    }

    #[test]
    fn a_post_sent_twice_is_a_duplicate() {
        let mut s = JournalFold::default();
        let p = Op::Post(Post {
            id: "1-x".into(),
            author: 1,
            text: "t".into(),
            ts_ms: 1,
        });
        assert_eq!(decide(&s, &p), WriteOutcome::Applied(0));
        s.apply(&Entry {
            seq: 1,
            epoch: 1,
            op: p.clone(),
        });
        assert_eq!(decide(&s, &p), WriteOutcome::Duplicate);
    }
}
