//! The own cluster's committed changes, read for every destination feed:
//! one `Replica.ReadChanges`, one parse and one set of follower and home
//! cluster lookups per batch, however many feeds use it.
//!
//! A reader task ([`Source::spawn_reader`]) keeps reading the journal at
//! its head, one long poll after the other, and stores each batch in the
//! [`BatchCache`] as soon as its entries are parsed; it starts the batch's
//! lookups ([`Source::lookups`]) at once, in the background, and goes on
//! reading. A feed asks [`Source::read`] for the batch after its position:
//! a batch already read (it takes every one that follows, too), the
//! reader's long poll when it is at the head, or, when it lags behind what
//! the cache holds, a read of its own (see `batch_cache` for the bounds).
//! A batch's lookups are made once, by the reader or else by the first
//! feed that needs them, while any other waits for them. What differs per
//! destination (the posts of a backfill and the followers that decide it,
//! deriving, sending, the position) stays in the feed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinHandle;
use tsn_cluster::retry::{Backoff, FailureLog};
use tsn_cluster::shutdown::Shutdown;

use tsn_datastore::limits::USER_ID_MAX;
use tsn_datastore::Entry;
use tsn_proto::records::entry_of;
use tsn_proto::tsn::{FollowersRequest, JournalEntry, ReadChangesRequest};

use crate::batch_cache::{BatchCache, Got, Span};
use crate::derive::{followers_needed, homes_needed, FollowerList, Lookups};
use crate::limits::{
    EAGER_LOOKUPS_MAX_IN_FLIGHT, FOLLOWERS_BATCH_MAX_USERS, LOOKUP_CALL_TIMEOUT_MS,
    READ_BATCH_MAX_ENTRIES, READ_CALL_SLACK_MS, RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MIN_MS,
    SHARED_BATCHES_MAX, SHARED_BATCHES_MAX_BYTES,
};
use crate::peers::{call_within, Peers};

/// The reader id of the source's own reader in the cache (feeds use their
/// destination cluster, from 1).
const HEAD_READER: u32 = 0;

/// Bytes counted for each follower, home cluster and entry held, beyond
/// the entry's JSON line: a rough allowance for map nodes and struct sizes,
/// so that the cache's byte bound also covers batches of authors with very
/// many followers.
const LOOKUP_ITEM_APPROX_BYTES: usize = 32;

/// A batch of committed entries after some position, parsed, and (once
/// made, by the reader or a feed) the lookups every destination needs for
/// it.
#[derive(Debug)]
pub struct ChangeBatch {
    /// The entries the primary returned (deliveries left out), in seq order.
    pub entries: Vec<Entry>,
    /// How far the batch reaches: every entry up to this seq that a feed
    /// needs is in `entries`.
    pub end_seq: u64,
    /// The primary's commit point when it answered.
    pub commit_seq: u64,
    /// When the `ReadChanges` call was sent: an idle poll that came back
    /// before the poll interval passed since then was answered early.
    pub read_at: Instant,
    /// When the reply came: how long the batch then waited for a feed is
    /// in the feed's debug log.
    pub received_at: Instant,
    /// Followers of the batch's post authors and home clusters, looked up
    /// after the entries were committed: see [`Source::lookups`].
    lookups: OnceCell<Lookups>,
    /// The bytes of the entries' lines.
    line_bytes: usize,
}

impl ChangeBatch {
    /// Whether its lookups are made (see [`Source::lookups`]).
    pub fn looked_up(&self) -> bool {
        self.lookups.initialized()
    }

    /// The entries a feed at `after_seq` has not had yet.
    pub fn entries_after(&self, after_seq: u64) -> &[Entry] {
        let first = self.entries.partition_point(|e| e.seq <= after_seq);
        &self.entries[first..]
    }
}

impl Span for ChangeBatch {
    fn end_seq(&self) -> u64 {
        self.end_seq
    }

    fn approx_bytes(&self) -> usize {
        let looked_up = self.lookups.get().map_or(0, |l| {
            l.homes.len() + l.followers.values().map(BTreeMap::len).sum::<usize>()
        });
        self.line_bytes + (self.entries.len() + looked_up) * LOOKUP_ITEM_APPROX_BYTES
    }
}

/// Why a batch could not be read. Cloned to every feed that waited for the
/// read, so it carries its text only.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(String);

/// Reads the own cluster's journal for every feed of this sync service.
pub struct Source {
    peers: Arc<Peers>,
    poll_interval_ms: u64,
    batches: BatchCache<ChangeBatch, ReadError>,
    /// Bounds the lookups the reader starts ahead of the feeds.
    eager_lookups: Arc<Semaphore>,
    /// The newest committed seq the reader has read (the operator's lag is
    /// measured from it).
    read_end_seq: std::sync::atomic::AtomicU64,
}

/// Parses the entries of a `ReadChanges` reply and checks that they are
/// what was asked for: at most [`READ_BATCH_MAX_ENTRIES`], each line what
/// its envelope says ([`entry_of`]), in strictly increasing seq order, all
/// after `after_seq`.
pub fn parse_entries(after_seq: u64, lines: &[JournalEntry]) -> Result<Vec<Entry>, String> {
    if lines.len() > READ_BATCH_MAX_ENTRIES as usize {
        return Err(format!(
            "{} entries in one reply, more than the {READ_BATCH_MAX_ENTRIES} asked for",
            lines.len()
        ));
    }
    let mut entries = Vec::with_capacity(lines.len());
    let mut last_seq = after_seq;
    for line in lines {
        let entry =
            entry_of(line).map_err(|e| format!("an entry after seq {last_seq} is bad: {e}"))?;
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

impl Source {
    pub fn new(peers: Arc<Peers>, poll_interval_ms: u64) -> Source {
        Source {
            peers,
            poll_interval_ms,
            batches: BatchCache::new(SHARED_BATCHES_MAX, SHARED_BATCHES_MAX_BYTES),
            eager_lookups: Arc::new(Semaphore::new(EAGER_LOOKUPS_MAX_IN_FLIGHT)),
            read_end_seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The batch for the feed of `dest` at `after_seq`: possibly read from
    /// an earlier position (take [`ChangeBatch::entries_after`]); possibly empty
    /// after an idle long poll. One attempt: on an error the feed retries.
    pub async fn read(&self, dest: u32, after_seq: u64) -> Result<Got<ChangeBatch>, ReadError> {
        self.batches
            .get(dest, after_seq, || self.fetch(after_seq))
            .await
    }

    /// Starts the reader: it reads from `after_seq` on, batch after batch,
    /// for as long as the process runs, and starts each batch's lookups at
    /// once. So the newest committed entries are read, parsed and looked up
    /// about as soon as they are committed, whatever the feeds are doing,
    /// and a feed that comes back from sending takes them all, ready, in
    /// its next round (or waits on the reader's long poll when there is
    /// nothing new). Without it the feeds read in turns: entries committed
    /// while one feed read and looked up waited for the next feed's turn.
    pub fn spawn_reader(self: &Arc<Self>, after_seq: u64, shutdown: Shutdown) -> JoinHandle<()> {
        tokio::spawn(self.clone().run_reader(after_seq, shutdown))
    }

    async fn run_reader(self: Arc<Self>, mut after_seq: u64, mut shutdown: Shutdown) {
        tracing::info!(after_seq, "reading the journal");
        let mut backoff = Backoff::new(RETRY_BACKOFF_MIN_MS, RETRY_BACKOFF_MAX_MS);
        let mut failures = FailureLog::default();
        loop {
            let result = tokio::select! {
                result = self.read(HEAD_READER, after_seq) => result,
                _ = shutdown.wait() => return,
            };
            let pause = match result {
                Ok(got) => {
                    backoff = Backoff::new(RETRY_BACKOFF_MIN_MS, RETRY_BACKOFF_MAX_MS);
                    failures.succeeded();
                    let batch = got.batch;
                    if batch.end_seq > after_seq {
                        self.read_end_seq
                            .fetch_max(batch.end_seq, std::sync::atomic::Ordering::Relaxed);
                        self.look_up_ahead(&batch);
                        after_seq = batch.end_seq;
                        Duration::ZERO
                    } else {
                        // An idle poll answered early must not make this a
                        // busy loop (as in the feeds).
                        Duration::from_millis(self.poll_interval_ms)
                            .saturating_sub(batch.read_at.elapsed())
                    }
                }
                Err(error) => {
                    // The feeds say so too, each for its destination.
                    if failures.failed() {
                        tracing::debug!(%error, "the reader cannot read; retrying");
                    }
                    backoff.next_delay()
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.wait() => return,
                }
            }
        }
    }

    /// Starts the lookups of `batch` in the background, unless
    /// [`EAGER_LOOKUPS_MAX_IN_FLIGHT`] are under way (a slow primary): then
    /// the first feed that takes the batch makes them.
    fn look_up_ahead(self: &Arc<Self>, batch: &Arc<ChangeBatch>) {
        if batch.entries.is_empty() || batch.looked_up() {
            return;
        }
        let Ok(permit) = self.eager_lookups.clone().try_acquire_owned() else {
            return;
        };
        let (source, batch) = (self.clone(), batch.clone());
        tokio::spawn(async move {
            // A failure is not the reader's to retry: the feeds that need
            // the lookups make them again, with backoff.
            let _ = source.lookups(&batch).await;
            drop(permit);
        });
    }

    /// The newest committed seq of the own journal read so far.
    pub fn read_end_seq(&self) -> u64 {
        self.read_end_seq.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tells the cache that the feed of `dest` starts at `after_seq`, before
    /// the reader starts: the batches it will need are kept for it.
    pub fn register(&self, dest: u32, after_seq: u64) {
        self.batches.register(dest, after_seq);
    }

    /// A batch already read that serves the feed of `dest` at `after_seq`,
    /// if any, without reading or waiting: a feed takes every batch read
    /// since its position, several at once, in one Apply rather than one
    /// per batch.
    pub fn stored(&self, dest: u32, after_seq: u64) -> Option<Arc<ChangeBatch>> {
        self.batches.stored(dest, after_seq)
    }

    /// The lookups of `batch` (all its entries, whichever part a feed
    /// takes): made once, by the reader as soon as it read the batch or
    /// else by the first feed that asks, and waited for by any other
    /// meanwhile; after an error the next one that asks makes them.
    pub async fn lookups<'b>(&self, batch: &'b ChangeBatch) -> anyhow::Result<&'b Lookups> {
        batch
            .lookups
            .get_or_try_init(|| self.make_lookups(&batch.entries))
            .await
    }

    /// Reads the committed entries after `after_seq` (a long poll).
    async fn fetch(&self, after_seq: u64) -> Result<ChangeBatch, ReadError> {
        let read_at = Instant::now();
        let (entries, end_seq, commit_seq, line_bytes) = self
            .read_changes(after_seq)
            .await
            .map_err(|e| ReadError(format!("{e:#}")))?;
        Ok(ChangeBatch {
            entries,
            end_seq,
            commit_seq,
            read_at,
            received_at: Instant::now(),
            lookups: OnceCell::new(),
            line_bytes,
        })
    }

    /// The entries after `after_seq` (waiting up to the poll interval for
    /// one), the seq up to which the primary looked (entries it left out,
    /// deliveries, need nothing), its commit point, and the bytes of the
    /// entries' lines.
    async fn read_changes(&self, after_seq: u64) -> anyhow::Result<(Vec<Entry>, u64, u64, usize)> {
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
        let line_bytes = reply.entries.iter().map(|e| e.line.len()).sum();
        // What the primary looked at, but never past what it committed.
        let last = entries.last().map_or(after_seq, |e| e.seq);
        let scanned_to = reply.scanned_to_seq.min(reply.commit_seq).max(last);
        Ok((entries, scanned_to, reply.commit_seq, line_bytes))
    }

    /// The lookups of `entries` that do not depend on the destination.
    async fn make_lookups(&self, entries: &[Entry]) -> anyhow::Result<Lookups> {
        let mut lookups = Lookups::default();
        let authors = followers_needed(entries);
        if !authors.is_empty() {
            lookups.followers = self.followers(&authors).await?;
        }
        let users = homes_needed(entries, &lookups);
        if !users.is_empty() {
            lookups.homes = self.peers.homes(&users).await?;
        }
        Ok(lookups)
    }

    /// The current followers of each of `users` (users without followers
    /// get an empty list), from the own primary.
    pub async fn followers(
        &self,
        users: &BTreeSet<u32>,
    ) -> anyhow::Result<HashMap<u32, FollowerList>> {
        let mut found: HashMap<u32, FollowerList> =
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_datastore::journal::Line;
    use tsn_datastore::{Op, Post};

    fn line(seq: u64) -> JournalEntry {
        let entry = Entry {
            seq,
            epoch: 1,
            op: Op::User {
                user: seq as u32,
                cluster: 1,
            },
        };
        let bytes = Arc::from(entry.to_line().into_bytes());
        JournalEntry::from(&Line::of(&entry, bytes))
    }

    #[test]
    fn entries_must_follow_the_position_in_order() {
        assert_eq!(parse_entries(4, &[]).unwrap(), vec![]);
        let got = parse_entries(4, &[line(5), line(7)]).unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 7]);
        assert!(parse_entries(5, &[line(5)]).is_err());
        assert!(parse_entries(4, &[line(6), line(6)]).is_err());
        assert!(parse_entries(4, &[line(7), line(6)]).is_err());
        let torn = JournalEntry {
            line: b"{\"seq\":5".to_vec(),
            ..line(5)
        };
        assert!(parse_entries(4, &[torn]).is_err());
        let too_many: Vec<JournalEntry> =
            (1..=READ_BATCH_MAX_ENTRIES as u64 + 1).map(line).collect();
        assert!(parse_entries(0, &too_many).is_err());
        assert!(parse_entries(0, &too_many[1..]).is_ok());
    }

    #[test]
    fn a_feed_takes_only_the_entries_after_its_position() {
        let entry = |seq: u64| Entry {
            seq,
            epoch: 1,
            op: Op::Post(Post {
                id: format!("1-{seq}"),
                author: 1,
                text: "x".into(),
                ts_ms: 0,
            }),
        };
        let batch = ChangeBatch {
            entries: vec![entry(11), entry(14), entry(15)],
            end_seq: 20,
            commit_seq: 20,
            read_at: Instant::now(),
            received_at: Instant::now(),
            lookups: OnceCell::new(),
            line_bytes: 0,
        };
        let seqs = |after: u64| {
            batch
                .entries_after(after)
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(10), vec![11, 14, 15]);
        assert_eq!(seqs(11), vec![14, 15]);
        assert_eq!(seqs(12), vec![14, 15]);
        assert_eq!(seqs(15), Vec::<u64>::new());
        assert_eq!(seqs(19), Vec::<u64>::new());
    }
}
