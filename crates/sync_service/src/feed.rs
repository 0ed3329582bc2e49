//! One task per destination cluster: take the own cluster's committed
//! changes, derive what the destination needs, send it, remember how far.
//!
//! Each destination has its own cursor into the own journal, so a
//! destination that cannot be reached (or is slow) stalls only itself; the
//! others go on, and it catches up from its position once it is back.
//! Nothing is ever skipped: every step is retried (with backoff) until it
//! succeeds or the process shuts down, and a position moves only after the
//! destination acknowledged every op of the batch.
//!
//! The batches come from the shared [`Source`]: its reader reads, parses
//! and looks up each committed batch once, ahead of the feeds; a feed takes
//! every batch read since its position (or waits on the reader's long poll
//! when there is none), and reads on its own only when it lags behind what
//! the cache holds. What depends on the destination is done here: the
//! followers that decide a backfill and the backfill's posts
//! (`PostsSince`), deriving, sending, and the position.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::task::{JoinHandle, JoinSet};
use tonic::Status;
use tsn_cluster::shutdown::Shutdown;
use tsn_datastore::{Entry, Op, Post};
use tsn_proto::tsn::{ApplyReply, ApplyRequest, Operation, PostsSinceRequest};

use crate::batch_cache::How;
use crate::derive::{backfill_followers_needed, backfills_needed, derive, Backfills};
use crate::limits::{
    APPLY_BATCH_MAX_BYTES, APPLY_BATCH_MAX_OPS, APPLY_CALL_TIMEOUT_MS, BACKFILL_MAX_POSTS,
    LOOKUP_CALL_TIMEOUT_MS, READ_BATCH_MAX_ENTRIES, RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MIN_MS,
};
use crate::peers::{call_within, Peers};
use crate::position::Positions;
use crate::source::{ChangeBatch, Source};
use tsn_cluster::retry::{Backoff, FailureLog};

/// The feed of one destination cluster.
pub struct Feed {
    dest: u32,
    poll_interval_ms: u64,
    source: Arc<Source>,
    peers: Arc<Peers>,
    positions: Arc<Positions>,
    shutdown: Shutdown,
    read_failures: FailureLog,
    lookup_failures: FailureLog,
    dest_failures: FailureLog,
    /// Polls that found the position past the primary's commit point.
    ahead_polls: FailureLog,
}

/// Starts the feed of cluster `dest`; it ends when `shutdown` fires.
pub fn spawn(
    dest: u32,
    poll_interval_ms: u64,
    source: Arc<Source>,
    peers: Arc<Peers>,
    positions: Arc<Positions>,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    assert!(dest >= 1);
    // Before the task runs: the reader may start reading at once.
    source.register(dest, positions.get(dest));
    let feed = Feed {
        dest,
        poll_interval_ms,
        source,
        peers,
        positions,
        shutdown,
        read_failures: FailureLog::default(),
        lookup_failures: FailureLog::default(),
        dest_failures: FailureLog::default(),
        ahead_polls: FailureLog::default(),
    };
    tokio::spawn(feed.run())
}

/// Splits `ops` into the operations of Apply calls, in order: at most
/// [`APPLY_BATCH_MAX_OPS`] ops and (but for a single larger op) at most
/// [`APPLY_BATCH_MAX_BYTES`] encoded bytes each.
pub fn chunk_ops(ops: Vec<Op>) -> Vec<Vec<Operation>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<Operation> = Vec::new();
    let mut chunk_bytes = 0usize;
    for op in ops {
        let op = Operation::from(op);
        let bytes = op.encoded_len();
        let full = chunk.len() == APPLY_BATCH_MAX_OPS
            || (!chunk.is_empty() && chunk_bytes + bytes > APPLY_BATCH_MAX_BYTES);
        if full {
            chunks.push(std::mem::take(&mut chunk));
            chunk_bytes = 0;
        }
        chunk_bytes += bytes;
        chunk.push(op);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// A batch a feed takes, and the position it takes it from (a stored batch
/// may have been read from an earlier one).
struct Part {
    batch: Arc<ChangeBatch>,
    after_seq: u64,
}

impl Part {
    fn entries(&self) -> &[Entry] {
        self.batch.entries_after(self.after_seq)
    }
}

impl Feed {
    async fn run(mut self) {
        let mut after_seq = self.positions.get(self.dest);
        tracing::info!(dest = self.dest, after_seq, "feeding cluster");
        while let Some((batch, how)) = self.read(after_seq).await {
            // The timings of the debug log below: where a delivery's time
            // goes between the commit and the destination's acknowledgement.
            let taken_at = Instant::now();
            let waited = batch.received_at.elapsed();
            let (parts, last_seq) = self.take_more(Part { batch, after_seq });
            let entry_count: usize = parts.iter().map(|p| p.entries().len()).sum();
            if entry_count == 0 {
                // Only deliveries (which are never passed on), or nothing.
                if last_seq > after_seq {
                    self.persist(last_seq);
                    after_seq = last_seq;
                }
                continue;
            }
            assert!(last_seq > after_seq, "checked by parse_entries");
            let Some(ops) = self.ops_for_dest(&parts).await else {
                return;
            };
            let op_count = ops.len();
            let derived_at = Instant::now();
            if !self.send(ops).await {
                return;
            }
            self.persist(last_seq);
            tracing::debug!(
                dest = self.dest,
                entries = entry_count,
                batches = parts.len(),
                ops = op_count,
                after_seq,
                last_seq,
                read = ?how,
                waited_us = waited.as_micros() as u64,
                derive_us = (derived_at - taken_at).as_micros() as u64,
                send_us = derived_at.elapsed().as_micros() as u64,
                "batch acknowledged"
            );
            after_seq = last_seq;
        }
    }

    /// `first` and the batches already read that follow it, up to
    /// [`READ_BATCH_MAX_ENTRIES`] entries in all, and the position they
    /// reach: everything read by the time this feed got to it, in one
    /// Apply rather than one per batch read.
    fn take_more(&self, first: Part) -> (Vec<Part>, u64) {
        const MAX: usize = READ_BATCH_MAX_ENTRIES as usize;
        let mut end = first.batch.end_seq.max(first.after_seq);
        let mut entry_count = first.entries().len();
        let mut parts = vec![first];
        while entry_count < MAX {
            let Some(batch) = self.source.stored(self.dest, end) else {
                break;
            };
            let next = Part {
                batch,
                after_seq: end,
            };
            let more = next.entries().len();
            if entry_count + more > MAX {
                break;
            }
            entry_count += more;
            end = next.batch.end_seq;
            parts.push(next);
        }
        (parts, end)
    }

    /// Waits `delay`; false if the process is shutting down instead.
    async fn pause(&self, delay: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => !shutdown.is_fired(),
            _ = shutdown.wait() => false,
        }
    }

    /// The batch after `after_seq` (possibly with no entry for this feed,
    /// after an idle poll or when only deliveries were committed), and how
    /// it was had; `None` on shutdown.
    async fn read(&mut self, after_seq: u64) -> Option<(Arc<ChangeBatch>, How)> {
        let mut backoff = Backoff::new(RETRY_BACKOFF_MIN_MS, RETRY_BACKOFF_MAX_MS);
        loop {
            let mut shutdown = self.shutdown.clone();
            let result = tokio::select! {
                result = self.source.read(self.dest, after_seq) => result,
                _ = shutdown.wait() => return None,
            };
            match result {
                Ok(got) => {
                    let batch = got.batch;
                    if self.read_failures.succeeded() {
                        tracing::info!(dest = self.dest, "primary reachable again");
                    }
                    self.note_position(after_seq, &batch);
                    if batch.entries.is_empty() && batch.end_seq <= after_seq {
                        // A primary that answers an idle poll at once must
                        // not turn this loop into a busy one. Counted from
                        // when the poll was sent, which may be before this
                        // feed joined it: a poll that waited its full time
                        // is followed at once by the next.
                        let rest = Duration::from_millis(self.poll_interval_ms)
                            .saturating_sub(batch.read_at.elapsed());
                        if !rest.is_zero() && !self.pause(rest).await {
                            return None;
                        }
                    }
                    return Some((batch, got.how));
                }
                Err(error) => {
                    if self.read_failures.failed() {
                        tracing::warn!(
                            dest = self.dest,
                            failures = self.read_failures.failures(),
                            %error,
                            "cannot read changes from the primary; retrying"
                        );
                    }
                    if !self.pause(backoff.next_delay()).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Says so when the position is past the primary's commit point.
    fn note_position(&mut self, after_seq: u64, batch: &ChangeBatch) {
        if batch.entries.is_empty() && batch.commit_seq < after_seq {
            // Committed entries are never lost, so this is a primary that
            // has not committed in its epoch yet, or a datastore replaced
            // under the service; either way, say so and keep waiting.
            if self.ahead_polls.failed() {
                tracing::warn!(
                    dest = self.dest,
                    after_seq,
                    commit_seq = batch.commit_seq,
                    "the position is past the primary's commit point; waiting"
                );
            }
        } else {
            self.ahead_polls.succeeded();
        }
    }

    /// The ops of `parts` for this destination, in journal order; `None`
    /// on shutdown.
    async fn ops_for_dest(&mut self, parts: &[Part]) -> Option<Vec<Op>> {
        let mut backoff = Backoff::new(RETRY_BACKOFF_MIN_MS, RETRY_BACKOFF_MAX_MS);
        loop {
            let mut shutdown = self.shutdown.clone();
            let result = tokio::select! {
                result = self.ops_for_dest_once(parts) => result,
                _ = shutdown.wait() => return None,
            };
            match result {
                Ok(ops) => {
                    if self.lookup_failures.succeeded() {
                        tracing::info!(dest = self.dest, "lookups work again");
                    }
                    return Some(ops);
                }
                Err(error) => {
                    if self.lookup_failures.failed() {
                        tracing::warn!(
                            dest = self.dest,
                            failures = self.lookup_failures.failures(),
                            error = format!("{error:#}"),
                            "cannot look up followers, clusters or posts; retrying"
                        );
                    }
                    if !self.pause(backoff.next_delay()).await {
                        return None;
                    }
                }
            }
        }
    }

    /// The shared lookups of every part, at the same time (usually made by
    /// the reader already, or under way); then, for each part, this
    /// destination's backfill lookups and its ops.
    async fn ops_for_dest_once(&self, parts: &[Part]) -> anyhow::Result<Vec<Op>> {
        let mut lookups = JoinSet::new();
        for part in parts {
            if part.entries().is_empty() || part.batch.looked_up() {
                continue;
            }
            let (source, batch) = (self.source.clone(), part.batch.clone());
            lookups.spawn(async move { source.lookups(&batch).await.map(|_| ()) });
        }
        // Dropping the set (shutdown) aborts the lookups; another feed that
        // needs them then makes them itself.
        while let Some(done) = lookups.join_next().await {
            done??;
        }
        let mut ops = Vec::new();
        for part in parts {
            let entries = part.entries();
            if entries.is_empty() {
                continue;
            }
            // Made above: at once.
            let lookups = self.source.lookups(&part.batch).await?;
            let mut backfills = Backfills::default();
            let own = self.peers.own_cluster();
            let users = backfill_followers_needed(own, self.dest, entries, lookups)?;
            if !users.is_empty() {
                // Looked up now, just before the posts (see `crate::derive`).
                backfills.followers = self.source.followers(&users).await?;
                for (author, since_ms) in
                    backfills_needed(own, self.dest, entries, lookups, &backfills)?
                {
                    let posts = self.posts_since(author, since_ms).await?;
                    backfills.posts.insert((author, since_ms), posts);
                }
            }
            ops.extend(derive(own, self.dest, entries, lookups, &backfills)?);
        }
        Ok(ops)
    }

    /// `author`'s own posts at or after `since_ms`, for a backfill.
    async fn posts_since(&self, author: u32, since_ms: i64) -> anyhow::Result<Vec<Post>> {
        let (addr, mut client) = self.peers.primary()?;
        let request = PostsSinceRequest {
            author,
            since_ms,
            limit: BACKFILL_MAX_POSTS,
        };
        let reply = call_within(
            LOOKUP_CALL_TIMEOUT_MS,
            &format!("the primary at {addr}"),
            async move { Ok(client.posts_since(request).await?.into_inner()) },
        )
        .await?;
        // A post that does not convert fails the whole batch, which the feed
        // reports and retries: skipping it would lose it without a word.
        reply
            .posts
            .into_iter()
            .map(|post| {
                Post::try_from(post).map_err(|e| {
                    anyhow::anyhow!(
                        "a post of user {author} from the primary at {addr} is not valid in a backfill: {e}"
                    )
                })
            })
            .collect()
    }

    /// Sends `ops` in order until the destination acknowledged all of them;
    /// false on shutdown.
    async fn send(&mut self, ops: Vec<Op>) -> bool {
        for chunk in chunk_ops(ops) {
            let request = ApplyRequest {
                from_cluster: self.peers.own_cluster(),
                ops: chunk,
            };
            let mut backoff = Backoff::new(RETRY_BACKOFF_MIN_MS, RETRY_BACKOFF_MAX_MS);
            loop {
                let mut shutdown = self.shutdown.clone();
                let result = tokio::select! {
                    result = self.apply_once(request.clone()) => result,
                    _ = shutdown.wait() => return false,
                };
                match result {
                    Ok(reply) => {
                        if self.dest_failures.succeeded() {
                            tracing::info!(dest = self.dest, "cluster reachable again");
                        }
                        tracing::debug!(
                            dest = self.dest,
                            ops = request.ops.len(),
                            applied = reply.applied,
                            duplicates = reply.duplicates,
                            "ops acknowledged"
                        );
                        break;
                    }
                    Err(status) => {
                        if self.dest != self.peers.own_cluster() {
                            // It may have moved: ask the coordinator again.
                            self.peers.forget_sync_service(self.dest);
                        }
                        if self.dest_failures.failed() {
                            tracing::warn!(
                                dest = self.dest,
                                failures = self.dest_failures.failures(),
                                code = ?status.code(),
                                error = %status.message(),
                                "cannot send changes to cluster; retrying"
                            );
                        }
                        if !self.pause(backoff.next_delay()).await {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// One Apply call: to the own primary for the own cluster, to the
    /// destination's sync service for any other.
    async fn apply_once(&self, request: ApplyRequest) -> Result<ApplyReply, Status> {
        if self.dest == self.peers.own_cluster() {
            let (addr, mut client) = self.peers.primary()?;
            call_within(
                APPLY_CALL_TIMEOUT_MS,
                &format!("the primary at {addr}"),
                async move { Ok(client.apply(request).await?.into_inner()) },
            )
            .await
        } else {
            let (addr, mut client) = self.peers.sync_service(self.dest).await?;
            call_within(
                APPLY_CALL_TIMEOUT_MS,
                &format!("the sync service of cluster {} at {addr}", self.dest),
                async move { Ok(client.apply(request).await?.into_inner()) },
            )
            .await
        }
    }

    /// Records that the destination has everything up to `last_seq`; the
    /// file follows within a flush interval (see [`Positions::flush`]).
    fn persist(&mut self, last_seq: u64) {
        self.positions.advance(self.dest, last_seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(n: usize, text_bytes: usize) -> Op {
        Op::Deliver {
            to: vec![1],
            post: Post {
                id: format!("2-{n}"),
                author: 2,
                text: "x".repeat(text_bytes),
                ts_ms: 0,
            },
        }
    }

    #[test]
    fn ops_are_sent_in_bounded_chunks_in_order() {
        assert!(chunk_ops(Vec::new()).is_empty());
        let ops: Vec<Op> = (0..2500).map(|n| deliver(n, 1)).collect();
        let chunks = chunk_ops(ops.clone());
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        let back: Vec<Op> = chunks
            .into_iter()
            .flatten()
            .map(|o| Op::try_from(o).unwrap())
            .collect();
        assert_eq!(back, ops);
    }

    #[test]
    fn chunks_are_bounded_in_bytes() {
        let big = APPLY_BATCH_MAX_BYTES / 3;
        let ops: Vec<Op> = (0..5).map(|n| deliver(n, big)).collect();
        let chunks = chunk_ops(ops);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        for chunk in &chunks {
            let bytes: usize = chunk.iter().map(Message::encoded_len).sum();
            assert!(bytes <= APPLY_BATCH_MAX_BYTES);
        }
        // One op larger than the limit still goes, alone.
        let huge = vec![deliver(0, APPLY_BATCH_MAX_BYTES + 1), deliver(1, 1)];
        assert_eq!(chunk_ops(huge).len(), 2);
    }
}
