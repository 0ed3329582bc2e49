//! A bounded, single-flight cache of the batches read from the own
//! cluster's journal, shared by the destination feeds and the reader that
//! reads ahead of them (see `source`).
//!
//! Every feed keeps its own position, so that a destination that cannot be
//! reached stalls only itself. But the feeds need the same batches, and
//! each used to read them, parse them and look up their followers and home
//! clusters on its own: three times the work with three clusters. Here a
//! reader (a feed, or the reader task) asks the cache first:
//!
//! * a batch stored earlier that covers the position is handed out at once
//!   (a batch read after `k` up to `end` serves any position `p` with
//!   `k <= p < end`: the reader takes the entries after `p`; so a feed whose
//!   batches were cut differently falls back in step with the others);
//! * if a read from the very same position is in flight, the reader waits
//!   for it instead of issuing its own (single flight);
//! * otherwise it reads on its own, as a feed that lags behind what the
//!   cache holds does, and stores what it read for the others.
//!
//! What is stored is immutable (committed entries never change), so
//! handing the same batch to several feeds is safe. A read that failed is
//! given to the feeds waiting for it (each retries on its own schedule) and
//! never stored; nor is a read that moved nothing forward (an idle long
//! poll), since asking again may find new entries.
//!
//! Bounds: at most `max_batches` batches and about `max_bytes` bytes are
//! stored (checked whenever a batch is stored); past either, the lowest
//! positions (those only the slowest feed still needs) go first, and a feed
//! that finds nothing reads on its own.
//! A batch that every reader has passed is dropped at once. At most one
//! read is in flight per position asked for, so at most one per reader.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// What the cache needs to know of a batch.
pub trait Span {
    /// The position the batch reaches: read after `k`, it holds everything
    /// a reader needs from `k` up to and including `end_seq`.
    fn end_seq(&self) -> u64;
    /// Roughly the memory the batch holds, for the byte bound. It may grow
    /// after the batch is stored (lookups made for it later); the bound is
    /// checked, with what each batch holds then, whenever a batch is
    /// stored.
    fn approx_bytes(&self) -> usize;
}

/// How a reader got its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Stored by an earlier read.
    Stored,
    /// From a read another reader had in flight from the same position.
    Joined,
    /// Read by this reader itself.
    Fetched,
}

/// A batch handed to a reader, and how it was obtained.
#[derive(Debug)]
pub struct Got<T> {
    pub batch: Arc<T>,
    pub how: How,
}

/// The outcome of a read in flight: `None` until it ends.
type Outcome<T, E> = Option<Result<Arc<T>, E>>;

struct Flight<T, E> {
    /// Tells this flight from a later one from the same position.
    id: u64,
    outcome: watch::Receiver<Outcome<T, E>>,
}

struct Inner<T, E> {
    /// Stored batches by the position they were read after.
    stored: BTreeMap<u64, Arc<T>>,
    /// Reads in flight, by the position they read after.
    flights: HashMap<u64, Flight<T, E>>,
    next_flight_id: u64,
    /// The position each reader asked for last.
    cursors: HashMap<u32, u64>,
}

/// The cache; `T` is a batch, `E` the error of a read.
pub struct BatchCache<T, E> {
    max_batches: usize,
    max_bytes: usize,
    inner: Mutex<Inner<T, E>>,
}

enum Begin<T, E> {
    Stored(Arc<T>),
    Join(watch::Receiver<Outcome<T, E>>),
    Lead(watch::Sender<Outcome<T, E>>, u64),
}

/// Ends the flight it guards when dropped: when the leader's read ends, and
/// also when the leader is cancelled mid-read (its waiters then see the
/// channel close and read again themselves).
struct FlightGuard<'a, T: Span, E: Clone> {
    cache: &'a BatchCache<T, E>,
    after_seq: u64,
    id: u64,
}

impl<T: Span, E: Clone> Drop for FlightGuard<'_, T, E> {
    fn drop(&mut self) {
        self.cache.lock().end_flight(self.after_seq, self.id);
    }
}

impl<T: Span, E: Clone> Inner<T, E> {
    fn end_flight(&mut self, after_seq: u64, id: u64) {
        if self.flights.get(&after_seq).is_some_and(|f| f.id == id) {
            self.flights.remove(&after_seq);
        }
    }

    /// A stored batch that serves a reader at `after_seq`: read at or
    /// before it and reaching past it.
    fn covering(&self, after_seq: u64) -> Option<Arc<T>> {
        self.stored
            .range(..=after_seq)
            .rev()
            .find(|(_, batch)| batch.end_seq() > after_seq)
            .map(|(_, batch)| batch.clone())
    }

    /// Drops the batches every reader has passed: no reader asks for a
    /// position behind its last one.
    fn prune(&mut self) {
        let Some(slowest) = self.cursors.values().min().copied() else {
            return;
        };
        self.stored.retain(|_, batch| batch.end_seq() > slowest);
    }

    /// The stored batches' bytes now (a batch may have grown since it was
    /// stored: see [`Span::approx_bytes`]).
    fn bytes(&self) -> usize {
        self.stored.values().map(|b| b.approx_bytes()).sum()
    }

    fn store(&mut self, after_seq: u64, batch: Arc<T>, max_batches: usize, max_bytes: usize) {
        if max_batches == 0 || batch.approx_bytes() > max_bytes {
            return;
        }
        self.stored.insert(after_seq, batch);
        let mut bytes = self.bytes();
        while self.stored.len() > max_batches || bytes > max_bytes {
            let Some((_, evicted)) = self.stored.pop_first() else {
                break;
            };
            bytes = bytes.saturating_sub(evicted.approx_bytes());
        }
    }
}

impl<T: Span, E: Clone> BatchCache<T, E> {
    /// A cache storing at most `max_batches` batches and about `max_bytes`
    /// bytes of them.
    pub fn new(max_batches: usize, max_bytes: usize) -> BatchCache<T, E> {
        BatchCache {
            max_batches,
            max_bytes,
            inner: Mutex::new(Inner {
                stored: BTreeMap::new(),
                flights: HashMap::new(),
                next_flight_id: 0,
                cursors: HashMap::new(),
            }),
        }
    }

    /// The batch for `reader` at position `after_seq`: a stored one that
    /// covers it, the outcome of a read from `after_seq` in flight, or the
    /// outcome of `fetch` (a read from `after_seq`), run by this reader. A
    /// stored batch may have been read from an earlier position: the
    /// caller takes only what follows `after_seq`.
    pub async fn get<F, Fut>(&self, reader: u32, after_seq: u64, fetch: F) -> Result<Got<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut fetch = Some(fetch);
        loop {
            match self.begin(reader, after_seq) {
                Begin::Stored(batch) => {
                    return Ok(Got {
                        batch,
                        how: How::Stored,
                    })
                }
                Begin::Join(outcome) => {
                    if let Some(result) = Self::join(outcome).await {
                        return result;
                    }
                    // The leader was cancelled: read again (perhaps leading
                    // this time).
                }
                Begin::Lead(sender, id) => {
                    // Safe: leading returns below, so this is the only take.
                    let fetch = fetch
                        .take()
                        .expect("a reader leads at most once per get: leading ends the get");
                    return self.lead(after_seq, sender, id, fetch).await;
                }
            }
        }
    }

    /// Waits for the outcome of a read in flight; `None` if its leader was
    /// cancelled.
    async fn join(mut outcome: watch::Receiver<Outcome<T, E>>) -> Option<Result<Got<T>, E>> {
        let outcome = match outcome.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        outcome.map(|result| {
            result.map(|batch| Got {
                batch,
                how: How::Joined,
            })
        })
    }

    /// Records where `reader` is and finds what serves it: a stored batch,
    /// a read in flight to join, or a new flight it leads.
    fn begin(&self, reader: u32, after_seq: u64) -> Begin<T, E> {
        let mut inner = self.lock();
        inner.cursors.insert(reader, after_seq);
        inner.prune();
        if let Some(batch) = inner.covering(after_seq) {
            return Begin::Stored(batch);
        }
        if let Some(flight) = inner.flights.get(&after_seq) {
            return Begin::Join(flight.outcome.clone());
        }
        let (sender, outcome) = watch::channel(None);
        let id = inner.next_flight_id;
        inner.next_flight_id += 1;
        inner.flights.insert(after_seq, Flight { id, outcome });
        Begin::Lead(sender, id)
    }

    /// Runs the read of flight `id` from `after_seq`, stores what it brought
    /// (if it moved forward) and hands it to the readers waiting for it.
    async fn lead<F, Fut>(
        &self,
        after_seq: u64,
        sender: watch::Sender<Outcome<T, E>>,
        id: u64,
        fetch: F,
    ) -> Result<Got<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // Declared after the sender, so dropped before it: the flight is
        // gone by the time its waiters wake up.
        let _guard = FlightGuard {
            cache: self,
            after_seq,
            id,
        };
        let result = fetch().await.map(Arc::new);
        {
            let mut inner = self.lock();
            inner.end_flight(after_seq, id);
            if let Ok(batch) = &result {
                if batch.end_seq() > after_seq {
                    inner.store(after_seq, batch.clone(), self.max_batches, self.max_bytes);
                }
            }
        }
        sender.send_replace(Some(result.clone()));
        result.map(|batch| Got {
            batch,
            how: How::Fetched,
        })
    }

    /// Records that `reader` is at `after_seq` before it asks for anything:
    /// a batch it has not reached is not dropped as passed by every reader
    /// (readers that have not asked yet are not known otherwise).
    pub fn register(&self, reader: u32, after_seq: u64) {
        self.lock().cursors.insert(reader, after_seq);
    }

    /// A stored batch that covers `after_seq` for `reader`, without reading
    /// or waiting: for a reader that takes several consecutive batches at
    /// once (its next position is the end of the batch it already has).
    pub fn stored(&self, reader: u32, after_seq: u64) -> Option<Arc<T>> {
        let mut inner = self.lock();
        inner.cursors.insert(reader, after_seq);
        inner.prune();
        inner.covering(after_seq)
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T, E>> {
        // Every critical section leaves the maps consistent before anything
        // that could panic, so a poisoned lock still guards good data.
        tsn_cluster::sync::lock(&self.inner)
    }

    /// Batches stored now (for tests and logs).
    #[cfg(test)]
    fn stored_len(&self) -> usize {
        self.lock().stored.len()
    }

    #[cfg(test)]
    fn stored_bytes(&self) -> usize {
        self.lock().bytes()
    }

    /// The position `reader` asked for last (set, with the decision to
    /// lead or join a read, under one lock: see `begin`).
    #[cfg(test)]
    fn cursor(&self, reader: u32) -> Option<u64> {
        self.lock().cursors.get(&reader).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    /// A batch read after some position, reaching `end`, holding `bytes`
    /// (which may grow, as a batch's lookups arrive).
    #[derive(Debug)]
    struct B {
        end: u64,
        bytes: AtomicUsize,
    }

    impl Span for B {
        fn end_seq(&self) -> u64 {
            self.end
        }
        fn approx_bytes(&self) -> usize {
            self.bytes.load(Ordering::SeqCst)
        }
    }

    type Cache = BatchCache<B, String>;

    fn sized(end: u64, bytes: usize) -> B {
        B {
            end,
            bytes: AtomicUsize::new(bytes),
        }
    }

    fn b(end: u64) -> B {
        sized(end, 10)
    }

    async fn fetched(cache: &Cache, reader: u32, after_seq: u64, batch: B) -> Got<B> {
        cache
            .get(reader, after_seq, || async { Ok(batch) })
            .await
            .unwrap()
    }

    /// Waits (at most 5 s) until `reader` has asked for `after_seq`: from
    /// then on it holds a stored batch, a read in flight, or its own read.
    async fn until_asked(cache: &Cache, reader: u32, after_seq: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while cache.cursor(reader) != Some(after_seq) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "reader {reader} did not ask for {after_seq}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn must_not_fetch(cache: &Cache, reader: u32, after_seq: u64) -> Got<B> {
        cache
            .get(reader, after_seq, || async {
                panic!("read from {after_seq} although it should be cached")
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn readers_in_step_share_one_read() {
        let cache = Arc::new(Cache::new(8, 1000));
        let reads = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        for reader in 1..=3 {
            let (cache, reads, release) = (cache.clone(), reads.clone(), release.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(reader, 5, || async {
                        reads.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        Ok(b(9))
                    })
                    .await
                    .unwrap()
            }));
        }
        // Every reader reaches the cache before the read ends.
        for reader in 1..=3 {
            until_asked(&cache, reader, 5).await;
        }
        release.notify_one();
        let mut hows = Vec::new();
        let mut batches = Vec::new();
        for task in tasks {
            let got = task.await.unwrap();
            hows.push(got.how);
            batches.push(got.batch);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        hows.sort_by_key(|h| format!("{h:?}"));
        assert_eq!(hows, vec![How::Fetched, How::Joined, How::Joined]);
        assert!(batches.iter().all(|x| Arc::ptr_eq(x, &batches[0])));
        // And a reader that comes later finds it stored.
        let later = must_not_fetch(&cache, 4, 5).await;
        assert_eq!(later.how, How::Stored);
        assert!(Arc::ptr_eq(&later.batch, &batches[0]));
    }

    #[tokio::test]
    async fn a_stored_batch_serves_every_position_it_covers() {
        let cache = Cache::new(8, 1000);
        assert_eq!(fetched(&cache, 1, 10, b(20)).await.how, How::Fetched);
        for p in [10, 11, 19] {
            let got = must_not_fetch(&cache, 2, p).await;
            assert_eq!((got.how, got.batch.end), (How::Stored, 20));
        }
        // At its end the batch has nothing more: read on.
        assert_eq!(fetched(&cache, 2, 20, b(25)).await.how, How::Fetched);
    }

    #[tokio::test]
    async fn a_lagging_reader_reads_on_its_own_and_catches_up_into_the_cache() {
        let cache = Cache::new(8, 1000);
        // Reader 2 is at 40 (its first read failed).
        let failed = cache.get(2, 40, || async { Err("down".to_string()) }).await;
        assert!(failed.is_err());
        // Reader 1 is ahead: batches (100, 110] and (110, 120].
        fetched(&cache, 1, 100, b(110)).await;
        fetched(&cache, 1, 110, b(120)).await;
        // Reader 2 lags: nothing covers 40, it reads itself.
        assert_eq!(fetched(&cache, 2, 40, b(105)).await.how, How::Fetched);
        // Reader 3 lags further, below every stored batch: it reads itself.
        assert_eq!(fetched(&cache, 3, 20, b(30)).await.how, How::Fetched);
        // Reader 2's batch ended inside reader 1's first one: from there on
        // it is served from the cache, in step with reader 1's batches.
        assert_eq!(must_not_fetch(&cache, 2, 105).await.batch.end, 110);
        assert_eq!(must_not_fetch(&cache, 2, 110).await.batch.end, 120);
    }

    #[tokio::test]
    async fn a_reader_can_take_the_next_stored_batches_without_reading() {
        let cache = Cache::new(8, 1000);
        // Reader 2 reads (0, 10]; reader 1 shares it and reads on.
        fetched(&cache, 2, 0, b(10)).await;
        must_not_fetch(&cache, 1, 0).await;
        fetched(&cache, 1, 10, b(20)).await;
        // Reader 2 looks for what follows (0, 10], in the cache only.
        assert_eq!(cache.stored(2, 10).map(|x| x.end), Some(20));
        assert_eq!(cache.stored(2, 15).map(|x| x.end), Some(20));
        assert!(cache.stored(2, 20).is_none());
        // Asking moved reader 2's cursor past (0, 10]: dropped.
        assert_eq!(cache.stored_len(), 1);
    }

    #[tokio::test]
    async fn failed_reads_are_shared_but_not_stored() {
        let cache = Arc::new(Cache::new(8, 1000));
        let release = Arc::new(Notify::new());
        let leader = {
            let (cache, release) = (cache.clone(), release.clone());
            tokio::spawn(async move {
                cache
                    .get(1, 5, || async move {
                        release.notified().await;
                        Err("primary down".to_string())
                    })
                    .await
            })
        };
        until_asked(&cache, 1, 5).await;
        let joiner = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(2, 5, || async { Ok(b(9)) }).await })
        };
        until_asked(&cache, 2, 5).await;
        release.notify_one();
        assert_eq!(leader.await.unwrap().unwrap_err(), "primary down");
        assert_eq!(joiner.await.unwrap().unwrap_err(), "primary down");
        assert_eq!(cache.stored_len(), 0);
        // The next attempt reads again.
        assert_eq!(fetched(&cache, 1, 5, b(9)).await.how, How::Fetched);
    }

    #[tokio::test]
    async fn a_read_that_moved_nothing_forward_is_not_stored() {
        let cache = Cache::new(8, 1000);
        // An idle poll: nothing after 5.
        assert_eq!(fetched(&cache, 1, 5, b(5)).await.how, How::Fetched);
        assert_eq!(cache.stored_len(), 0);
        assert_eq!(fetched(&cache, 2, 5, b(7)).await.how, How::Fetched);
        assert_eq!(cache.stored_len(), 1);
    }

    #[tokio::test]
    async fn the_batch_count_is_bounded_lowest_positions_first() {
        let cache = Cache::new(3, 1000);
        // Reader 9 stays at 0, so no batch is passed by every reader.
        fetched(&cache, 9, 0, b(1)).await;
        for k in 1..=5 {
            fetched(&cache, 1, k * 10, b(k * 10 + 10)).await;
        }
        assert_eq!(cache.stored_len(), 3);
        assert_eq!(cache.stored_bytes(), 30);
        // The latest three are kept: 30, 40, 50.
        for p in [30, 40, 50] {
            must_not_fetch(&cache, 2, p).await;
        }
        // 10 and 20 (and 0) were evicted: a reader there reads itself.
        assert_eq!(fetched(&cache, 9, 10, b(20)).await.how, How::Fetched);
    }

    #[tokio::test]
    async fn the_bytes_are_bounded() {
        let cache = Cache::new(100, 250);
        fetched(&cache, 9, 0, b(1)).await;
        for k in 1..=4 {
            fetched(&cache, 1, k * 10, sized(k * 10 + 10, 100)).await;
        }
        assert_eq!(cache.stored_len(), 2);
        assert_eq!(cache.stored_bytes(), 200);
        // A batch larger than the bound is handed out but never stored.
        let got = fetched(&cache, 1, 50, sized(60, 251)).await;
        assert_eq!(got.batch.approx_bytes(), 251);
        assert_eq!(cache.stored_len(), 2);
        assert_eq!(cache.stored_bytes(), 200);
    }

    #[tokio::test]
    async fn a_batch_that_grew_after_it_was_stored_counts_at_the_next_store() {
        let cache = Cache::new(100, 250);
        fetched(&cache, 9, 0, b(1)).await;
        let first = fetched(&cache, 1, 10, sized(20, 100)).await.batch;
        fetched(&cache, 1, 20, sized(30, 100)).await;
        assert_eq!(cache.stored_len(), 3);
        // The first one's lookups arrive: 100 bytes more.
        first.bytes.fetch_add(100, Ordering::SeqCst);
        fetched(&cache, 1, 30, sized(40, 10)).await;
        // 10 + 200 + 100 + 10 > 250: the lowest go until it fits.
        assert_eq!(cache.stored_bytes(), 110);
        assert_eq!(cache.stored_len(), 2);
    }

    #[tokio::test]
    async fn a_batch_every_reader_passed_is_dropped() {
        let cache = Cache::new(8, 1000);
        fetched(&cache, 1, 0, b(10)).await;
        must_not_fetch(&cache, 2, 0).await;
        fetched(&cache, 1, 10, b(20)).await;
        assert_eq!(cache.stored_len(), 2);
        // Reader 2 moves past the first batch too: it is of no more use.
        must_not_fetch(&cache, 2, 10).await;
        assert_eq!(cache.stored_len(), 1);
        assert_eq!(cache.stored_bytes(), 10);
    }

    #[tokio::test]
    async fn a_registered_reader_keeps_the_batches_it_has_not_reached() {
        let cache = Cache::new(8, 1000);
        cache.register(2, 0);
        fetched(&cache, 1, 0, b(10)).await;
        fetched(&cache, 1, 10, b(20)).await;
        // Reader 2 has asked for nothing yet, but (0, 10] is kept for it.
        assert_eq!(must_not_fetch(&cache, 2, 0).await.batch.end, 10);
        // Unregistered, reader 3 finds (0, 10] gone once 1 and 2 passed it.
        must_not_fetch(&cache, 2, 10).await;
        assert_eq!(fetched(&cache, 3, 0, b(10)).await.how, How::Fetched);
    }

    #[tokio::test]
    async fn a_waiter_reads_itself_when_the_leader_is_cancelled() {
        let cache = Arc::new(Cache::new(8, 1000));
        let leader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get(1, 5, std::future::pending::<Result<B, String>>)
                    .await
            })
        };
        until_asked(&cache, 1, 5).await;
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(2, 5, || async { Ok(b(8)) }).await })
        };
        until_asked(&cache, 2, 5).await;
        assert!(!waiter.is_finished(), "it waits for the leader's read");
        leader.abort();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter does not hang")
            .unwrap()
            .unwrap();
        assert_eq!((got.how, got.batch.end), (How::Fetched, 8));
    }
}
