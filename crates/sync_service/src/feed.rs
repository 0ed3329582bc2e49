//! One task per destination cluster: read the own cluster's committed
//! changes, derive what the destination needs, send it, remember how far.
//!
//! Each destination has its own cursor into the own journal, so a
//! destination that cannot be reached stalls only itself; the others go on,
//! and it catches up from its persisted position once it is back. Nothing
//! is ever skipped: every step is retried (with backoff) until it succeeds
//! or the process shuts down, and a position moves only after the
//! destination acknowledged every op of the batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tonic::Status;
use tsn_cluster::shutdown::Shutdown;
use tsn_datastore::limits::USER_ID_MAX;
use tsn_datastore::{Entry, Op, Post};
use tsn_proto::tsn::{
    ApplyReply, ApplyRequest, FollowersRequest, PostsSinceRequest, ReadChangesRequest,
};

use crate::derive::{backfills_needed, derive, followers_needed, homes_needed, Lookups};
use crate::limits::{
    APPLY_BATCH_MAX_BYTES, APPLY_BATCH_MAX_OPS, APPLY_CALL_TIMEOUT_MS, BACKFILL_MAX_POSTS,
    FOLLOWERS_BATCH_MAX_USERS, LOOKUP_CALL_TIMEOUT_MS, READ_BATCH_MAX_ENTRIES, READ_CALL_SLACK_MS,
    RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MIN_MS,
};
use crate::peers::{call_within, Peers};
use crate::position::Positions;
use tsn_cluster::retry::{Backoff, FailureLog};

/// The feed of one destination cluster.
pub struct Feed {
    dest: u32,
    poll_interval_ms: u64,
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
    peers: Arc<Peers>,
    positions: Arc<Positions>,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    assert!(dest >= 1);
    let feed = Feed {
        dest,
        poll_interval_ms,
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

/// Parses the entries of a `ReadChanges` reply and checks that they are
/// what was asked for: at most [`READ_BATCH_MAX_ENTRIES`], in strictly
/// increasing seq order, all after `after_seq`.
pub fn parse_entries(after_seq: u64, lines: &[Vec<u8>]) -> Result<Vec<Entry>, String> {
    if lines.len() > READ_BATCH_MAX_ENTRIES as usize {
        return Err(format!(
            "{} entries in one reply, more than the {READ_BATCH_MAX_ENTRIES} asked for",
            lines.len()
        ));
    }
    let mut entries = Vec::with_capacity(lines.len());
    let mut last_seq = after_seq;
    for line in lines {
        let entry = Entry::from_line(line).ok_or_else(|| {
            format!(
                "an entry after seq {last_seq} does not parse: {}",
                String::from_utf8_lossy(&line[..line.len().min(120)])
            )
        })?;
        if entry.seq <= last_seq {
            return Err(format!(
                "entry seq {} does not follow seq {last_seq}",
                entry.seq
            ));
        }
        last_seq = entry.seq;
        entries.push(entry);
    }
    Ok(entries)
}

/// Splits `ops` into the requests of Apply calls, in order: at most
/// [`APPLY_BATCH_MAX_OPS`] ops and (but for a single larger op) at most
/// [`APPLY_BATCH_MAX_BYTES`] bytes each.
pub fn chunk_ops(ops: &[Op]) -> Vec<Vec<Vec<u8>>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    let mut chunk_bytes = 0usize;
    for op in ops {
        let bytes = op.to_json();
        let full = chunk.len() == APPLY_BATCH_MAX_OPS
            || (!chunk.is_empty() && chunk_bytes + bytes.len() > APPLY_BATCH_MAX_BYTES);
        if full {
            chunks.push(std::mem::take(&mut chunk));
            chunk_bytes = 0;
        }
        chunk_bytes += bytes.len();
        chunk.push(bytes);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

impl Feed {
    async fn run(mut self) {
        let mut after_seq = self.positions.get(self.dest);
        tracing::info!(dest = self.dest, after_seq, "feeding cluster");
        while let Some((entries, scanned_to)) = self.read(after_seq).await {
            let Some(last) = entries.last() else {
                // Only deliveries (which are never passed on), or nothing.
                if scanned_to > after_seq {
                    self.persist(scanned_to).await;
                    after_seq = scanned_to;
                }
                continue;
            };
            let last_seq = last.seq.max(scanned_to);
            assert!(last_seq > after_seq, "checked by parse_entries");
            let Some(ops) = self.derive(&entries).await else {
                return;
            };
            let op_count = ops.len();
            if !self.send(ops).await {
                return;
            }
            self.persist(last_seq).await;
            tracing::debug!(
                dest = self.dest,
                entries = entries.len(),
                ops = op_count,
                after_seq,
                last_seq,
                "batch acknowledged"
            );
            after_seq = last_seq;
        }
    }

    /// Waits `delay`; false if the process is shutting down instead.
    async fn pause(&self, delay: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => !shutdown.is_fired(),
            _ = shutdown.wait() => false,
        }
    }

    /// The next committed entries after `after_seq` (possibly none, after
    /// an idle poll), and the seq up to which the primary looked (entries it
    /// left out, deliveries, need nothing); `None` on shutdown.
    async fn read(&mut self, after_seq: u64) -> Option<(Vec<Entry>, u64)> {
        let mut backoff = Backoff::new(RETRY_BACKOFF_MIN_MS, RETRY_BACKOFF_MAX_MS);
        loop {
            let mut shutdown = self.shutdown.clone();
            let started = Instant::now();
            let result = tokio::select! {
                result = self.read_once(after_seq) => result,
                _ = shutdown.wait() => return None,
            };
            match result {
                Ok((entries, scanned_to)) => {
                    if self.read_failures.succeeded() {
                        tracing::info!(dest = self.dest, "primary reachable again");
                    }
                    if entries.is_empty() && scanned_to <= after_seq {
                        // A primary that answers an idle poll at once must
                        // not turn this loop into a busy one.
                        let rest = Duration::from_millis(self.poll_interval_ms)
                            .saturating_sub(started.elapsed());
                        if !rest.is_zero() && !self.pause(rest).await {
                            return None;
                        }
                    }
                    return Some((entries, scanned_to));
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

    async fn read_once(&mut self, after_seq: u64) -> anyhow::Result<(Vec<Entry>, u64)> {
        let (addr, mut client) = self.peers.primary()?;
        let request = ReadChangesRequest {
            after_seq,
            max_entries: READ_BATCH_MAX_ENTRIES,
            wait_ms: u32::try_from(self.poll_interval_ms).unwrap_or(u32::MAX),
            skip_deliveries: true,
        };
        let reply = call_within(
            self.poll_interval_ms + READ_CALL_SLACK_MS,
            &format!("the primary at {addr}"),
            async move { Ok(client.read_changes(request).await?.into_inner()) },
        )
        .await?;
        let entries = parse_entries(after_seq, &reply.entries)
            .map_err(|e| anyhow::anyhow!("bad reply from the primary at {addr}: {e}"))?;
        if entries.is_empty() && reply.commit_seq < after_seq {
            // Committed entries are never lost, so this is a primary that
            // has not committed in its epoch yet, or a datastore replaced
            // under the service; either way, say so and keep waiting.
            if self.ahead_polls.failed() {
                tracing::warn!(
                    dest = self.dest,
                    after_seq,
                    commit_seq = reply.commit_seq,
                    primary = %addr,
                    "the position is past the primary's commit point; waiting"
                );
            }
        } else {
            self.ahead_polls.succeeded();
        }
        // What the primary looked at, but never past what it committed.
        let last = entries.last().map_or(after_seq, |e| e.seq);
        let scanned_to = reply.scanned_to_seq.min(reply.commit_seq).max(last);
        Ok((entries, scanned_to))
    }

    /// The ops of `entries` for this destination; `None` on shutdown.
    async fn derive(&mut self, entries: &[Entry]) -> Option<Vec<Op>> {
        let mut backoff = Backoff::new(RETRY_BACKOFF_MIN_MS, RETRY_BACKOFF_MAX_MS);
        loop {
            let mut shutdown = self.shutdown.clone();
            let result = tokio::select! {
                result = self.derive_once(entries) => result,
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
                            %error,
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

    async fn derive_once(&self, entries: &[Entry]) -> anyhow::Result<Vec<Op>> {
        let mut lookups = Lookups::default();
        let authors = followers_needed(entries);
        if !authors.is_empty() {
            lookups.followers = self.followers(&authors).await?;
        }
        let users = homes_needed(entries, &lookups);
        if !users.is_empty() {
            lookups.homes = self.peers.homes(&users).await?;
        }
        for (author, since_ms) in backfills_needed(self.dest, entries, &lookups)? {
            let posts = self.posts_since(author, since_ms).await?;
            lookups.posts.insert((author, since_ms), posts);
        }
        Ok(derive(
            self.peers.own_cluster(),
            self.dest,
            entries,
            &lookups,
        )?)
    }

    /// The current followers of each of `users` (users without followers
    /// get an empty list).
    async fn followers(
        &self,
        users: &BTreeSet<u32>,
    ) -> anyhow::Result<HashMap<u32, BTreeMap<u32, i64>>> {
        let mut found: HashMap<u32, BTreeMap<u32, i64>> =
            users.iter().map(|u| (*u, BTreeMap::new())).collect();
        let users: Vec<u32> = users.iter().copied().collect();
        for chunk in users.chunks(FOLLOWERS_BATCH_MAX_USERS) {
            let (addr, mut client) = self.peers.primary()?;
            let request = FollowersRequest {
                users: chunk.to_vec(),
            };
            let reply = call_within(
                LOOKUP_CALL_TIMEOUT_MS,
                &format!("the primary at {addr}"),
                async move { Ok(client.followers(request).await?.into_inner()) },
            )
            .await?;
            for list in reply.lists {
                // Only the users asked about, whatever the reply holds.
                let Some(followers) = found.get_mut(&list.user) else {
                    continue;
                };
                for follower in list.followers {
                    if (1..=USER_ID_MAX).contains(&follower.user) {
                        followers.insert(follower.user, follower.since_ms);
                    } else {
                        tracing::warn!(
                            user = list.user,
                            follower = follower.user,
                            primary = %addr,
                            "ignored a follower with an invalid id"
                        );
                    }
                }
            }
        }
        Ok(found)
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
        let mut posts = Vec::with_capacity(reply.posts.len());
        for bytes in &reply.posts {
            match serde_json::from_slice::<Post>(bytes) {
                Ok(post) => posts.push(post),
                Err(e) => tracing::warn!(
                    author,
                    primary = %addr,
                    error = %e,
                    "skipped a post that does not parse in a backfill"
                ),
            }
        }
        Ok(posts)
    }

    /// Sends `ops` in order until the destination acknowledged all of them;
    /// false on shutdown.
    async fn send(&mut self, ops: Vec<Op>) -> bool {
        for chunk in chunk_ops(&ops) {
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
    async fn persist(&mut self, last_seq: u64) {
        self.positions.advance(self.dest, last_seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> Vec<u8> {
        Entry {
            seq,
            epoch: 1,
            op: Op::User {
                user: seq as u32,
                cluster: 1,
            },
        }
        .to_line()
        .into_bytes()
    }

    #[test]
    fn entries_must_follow_the_position_in_order() {
        assert_eq!(parse_entries(4, &[]).unwrap(), vec![]);
        let got = parse_entries(4, &[line(5), line(7)]).unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 7]);
        assert!(parse_entries(5, &[line(5)]).is_err());
        assert!(parse_entries(4, &[line(6), line(6)]).is_err());
        assert!(parse_entries(4, &[line(7), line(6)]).is_err());
        assert!(parse_entries(4, &[b"{\"seq\":5".to_vec()]).is_err());
        let too_many: Vec<Vec<u8>> = (1..=READ_BATCH_MAX_ENTRIES as u64 + 1).map(line).collect();
        assert!(parse_entries(0, &too_many).is_err());
        assert!(parse_entries(0, &too_many[1..]).is_ok());
    }

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
        assert!(chunk_ops(&[]).is_empty());
        let ops: Vec<Op> = (0..2500).map(|n| deliver(n, 1)).collect();
        let chunks = chunk_ops(&ops);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        let back: Vec<Op> = chunks
            .iter()
            .flatten()
            .map(|b| Op::from_json(b).unwrap())
            .collect();
        assert_eq!(back, ops);
    }

    #[test]
    fn chunks_are_bounded_in_bytes() {
        let big = APPLY_BATCH_MAX_BYTES / 3;
        let ops: Vec<Op> = (0..5).map(|n| deliver(n, big)).collect();
        let chunks = chunk_ops(&ops);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        for chunk in &chunks {
            assert!(chunk.iter().map(Vec::len).sum::<usize>() <= APPLY_BATCH_MAX_BYTES);
        }
        // One op larger than the limit still goes, alone.
        let huge = [deliver(0, APPLY_BATCH_MAX_BYTES + 1), deliver(1, 1)];
        assert_eq!(chunk_ops(&huge).len(), 2);
    }
}
