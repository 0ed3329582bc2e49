//! A continuous write load that behaves like a well-made client under
//! failures, and remembers everything it did.
//!
//! One [`Writer`] task per author posts `"<author>-w<n>"` with the text
//! `"w<n> by <author>"` for n = 1, 2, …, one post at a time, through the
//! client library's [`Router`]. A post that fails for a reason the
//! library's retry rule calls transient (no primary, connection refused, a
//! time limit, a busy server) is sent again *with the same post id*, after
//! asking the coordinator for the primary again, with a bounded backoff;
//! the server stores a post id once, so sending again is safe. A post
//! counts as acknowledged only when `Posts.Post` returned `Ok`.
//!
//! Every post is recorded: when it was first sent, when and by which server
//! it was acknowledged. That record is what the checker holds the
//! deployment to, and what the write outage after a kill is measured from.
//!
//! Writers never stop by themselves on a failure they can retry; they give
//! up on a post only after [`WRITER_POST_RETRY_FOR_MS`], which the tests
//! treat as a failure of the promise that clients carry on by themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tsn_client::{CallError, RetryPolicy, Router, RouterConfig};
use tsn_cluster::coord::CoordClient;
use tsn_cluster::sync::lock;
use tsn_proto::tsn::PostRequest;

use crate::limits::POLL_INTERVAL_MS;

/// First pause before a post is sent again; it doubles on every failure.
pub const WRITER_BACKOFF_MIN_MS: u64 = 20;
/// Largest pause before a post is sent again.
pub const WRITER_BACKOFF_MAX_MS: u64 = 500;
/// Time limit of one `Posts.Post` call. A primary answers a write once it is
/// committed or after its own mirror time limit, well within this.
pub const WRITER_CALL_TIMEOUT_MS: u64 = 5_000;
/// How long one post is retried before the writer gives up on it (and
/// stops, reporting a failure). Far beyond any failover: reaching it means
/// clients could not carry on.
pub const WRITER_POST_RETRY_FOR_MS: u64 = 60_000;
/// Most posts one writer makes; it stops by itself at this count so that a
/// forgotten writer cannot fill the disk.
pub const WRITER_POSTS_MAX: u64 = 100_000;
/// Most writers in one [`Load`].
pub const LOAD_WRITERS_MAX: usize = 64;
/// How long [`Writer::stop`] waits for the post in flight, beyond the
/// writer's own retry limit, before it aborts the task.
pub const WRITER_STOP_SLACK_MS: u64 = 5_000;
/// Distinct failure messages a writer keeps (the count of every failure is
/// kept regardless).
pub const WRITER_ERROR_SAMPLES_MAX: usize = 20;

/// The post id of post `n` of `author`.
pub fn post_id(author: u32, n: u64) -> String {
    format!("{author}-w{n}")
}

/// The text of post `n` of `author`.
pub fn post_text(author: u32, n: u64) -> String {
    format!("w{n} by {author}")
}

/// The author and number of a post id made by [`post_id`]; `None` for any
/// other id.
pub fn parse_post_id(id: &str) -> Option<(u32, u64)> {
    let (author, rest) = id.split_once('-')?;
    let n = rest.strip_prefix('w')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(author) || !all_digits(n) {
        return None;
    }
    let (author, n) = (author.parse().ok()?, n.parse().ok()?);
    (author >= 1 && n >= 1).then_some((author, n))
}

/// Who acknowledged a post, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    pub at: Instant,
    /// When the try that was acknowledged was sent.
    pub try_sent_at: Instant,
    pub cluster: u32,
    pub server_id: u32,
    pub address: String,
    /// The server already had the post (an earlier try was stored).
    pub duplicate: bool,
}

/// One post of a writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostRecord {
    pub author: u32,
    pub n: u64,
    pub post_id: String,
    pub text: String,
    /// When it was first sent.
    pub sent_at: Instant,
    /// How many times it was sent.
    pub attempts: u32,
    /// `None`: never acknowledged (in flight, or given up).
    pub acked: Option<Acked>,
}

impl PostRecord {
    pub fn is_acked(&self) -> bool {
        self.acked.is_some()
    }
}

/// A kill of a process of `cluster` at `at`, to measure the write outage
/// that followed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillMark {
    pub cluster: u32,
    pub at: Instant,
    /// The server killed, whose late answers (sent before it died, read
    /// after) do not end the outage.
    pub killed_server: Option<u32>,
}

impl KillMark {
    pub fn now(cluster: u32, killed_server: Option<u32>) -> KillMark {
        KillMark {
            cluster,
            at: Instant::now(),
            killed_server,
        }
    }
}

/// The write outage after `mark`: the time from the kill to the first post
/// acknowledged on its cluster after it. Only a try sent after the kill
/// counts, and none answered by the server killed: an answer sent just
/// before the kill and read just after it says nothing of the recovery.
/// `None` while no such post exists.
pub fn outage_after<'a>(
    posts: impl IntoIterator<Item = &'a PostRecord>,
    mark: &KillMark,
) -> Option<Duration> {
    posts
        .into_iter()
        .filter_map(|p| p.acked.as_ref())
        .filter(|a| a.cluster == mark.cluster && a.try_sent_at > mark.at)
        .filter(|a| mark.killed_server != Some(a.server_id))
        .map(|a| a.at.duration_since(mark.at))
        .min()
}

/// What a writer did, once stopped.
#[derive(Clone, Debug)]
pub struct WriterReport {
    pub author: u32,
    pub posts: Vec<PostRecord>,
    /// Why the writer gave up, if it did.
    pub failure: Option<String>,
    /// Sends that failed and were retried.
    pub retries: u64,
    /// A few of the failures that were retried, for reading a failure.
    pub error_samples: Vec<String>,
}

#[derive(Default)]
struct Shared {
    posts: Mutex<Vec<PostRecord>>,
    acked: AtomicU64,
    retries: AtomicU64,
    failure: Mutex<Option<String>>,
    error_samples: Mutex<Vec<String>>,
}

impl Shared {
    fn note_error(&self, what: String) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        let mut samples = lock(&self.error_samples);
        if samples.len() < WRITER_ERROR_SAMPLES_MAX && !samples.contains(&what) {
            samples.push(what);
        }
    }

    fn fail(&self, why: String) {
        lock(&self.failure).get_or_insert(why);
    }
}

/// One author posting continuously in the background.
pub struct Writer {
    author: u32,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Starts posting as `author` through the coordinator at `coord`.
    pub fn spawn(coord: CoordClient, author: u32) -> Writer {
        assert!(author >= 1, "user ids start at 1");
        let shared = Arc::new(Shared::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(coord, author, shared.clone(), stop_rx));
        Writer {
            author,
            shared,
            stop,
            task,
        }
    }

    pub fn author(&self) -> u32 {
        self.author
    }

    /// Posts acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Acquire)
    }

    /// Why the writer gave up, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// A copy of every post so far.
    pub fn posts(&self) -> Vec<PostRecord> {
        lock(&self.shared.posts).clone()
    }

    /// Tells the writer to stop after the post in flight (which it keeps
    /// sending until acknowledged, within its retry limit), and waits.
    pub async fn stop(self) -> WriterReport {
        let _ = self.stop.send(true);
        let limit = Duration::from_millis(WRITER_POST_RETRY_FOR_MS + WRITER_STOP_SLACK_MS);
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            task.abort();
            self.shared.fail(format!(
                "writer {} did not stop within {} ms",
                self.author,
                limit.as_millis()
            ));
        }
        WriterReport {
            author: self.author,
            posts: lock(&self.shared.posts).clone(),
            failure: lock(&self.shared.failure).clone(),
            retries: self.shared.retries.load(Ordering::Relaxed),
            error_samples: lock(&self.shared.error_samples).clone(),
        }
    }
}

/// How a writer retries one post.
const WRITER_POLICY: RetryPolicy = RetryPolicy {
    backoff_min_ms: WRITER_BACKOFF_MIN_MS,
    backoff_max_ms: WRITER_BACKOFF_MAX_MS,
    attempt_timeout_ms: WRITER_CALL_TIMEOUT_MS,
    retry_for: Some(Duration::from_millis(WRITER_POST_RETRY_FOR_MS)),
};

async fn run(coord: CoordClient, author: u32, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let router = Router::new(coord, RouterConfig::per_user(WRITER_CALL_TIMEOUT_MS));
    for n in 1..=WRITER_POSTS_MAX {
        if *stop.borrow() {
            return;
        }
        let record = PostRecord {
            author,
            n,
            post_id: post_id(author, n),
            text: post_text(author, n),
            sent_at: Instant::now(),
            attempts: 0,
            acked: None,
        };
        let index = {
            let mut posts = lock(&shared.posts);
            posts.push(record.clone());
            posts.len() - 1
        };
        match post_until_acked(&router, &record, &shared, index).await {
            Ok(acked) => {
                lock(&shared.posts)[index].acked = Some(acked);
                shared.acked.fetch_add(1, Ordering::AcqRel);
            }
            Err(why) => {
                shared.fail(why);
                return;
            }
        }
    }
}

/// Sends one post until it is acknowledged, or fails for good.
async fn post_until_acked(
    router: &Router,
    record: &PostRecord,
    shared: &Shared,
    index: usize,
) -> Result<Acked, String> {
    let note = |stage, status: &tonic::Status| {
        shared.note_error(format!(
            "post {} ({stage}): {:?}: {}",
            record.post_id,
            status.code(),
            status.message()
        ))
    };
    let send = |route: tsn_client::Route| {
        lock(&shared.posts)[index].attempts += 1;
        let req = PostRequest {
            user: record.author,
            post_id: record.post_id.clone(),
            text: record.text.clone(),
        };
        let try_sent_at = Instant::now();
        async move {
            let reply = route.posts().post(req).await?.into_inner();
            Ok(Acked {
                at: Instant::now(),
                try_sent_at,
                cluster: route.cluster,
                server_id: route.server_id,
                address: route.addr,
                duplicate: reply.duplicate,
            })
        }
    };
    let result = router
        .call_noting(record.author, &WRITER_POLICY, note, send)
        .await;
    result.map_err(|error| match error {
        CallError::GaveUp { .. } => format!(
            "post {} was not acknowledged within {WRITER_POST_RETRY_FOR_MS} ms: {error}",
            record.post_id
        ),
        error => format!("post {}: {error}", record.post_id),
    })
}

/// Every post of every writer, once the load stopped.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub writers: Vec<WriterReport>,
}

impl LoadReport {
    /// Every post, writer by writer, each writer's in order.
    pub fn posts(&self) -> Vec<PostRecord> {
        self.writers
            .iter()
            .flat_map(|w| w.posts.iter().cloned())
            .collect()
    }

    pub fn acked_count(&self) -> usize {
        self.writers
            .iter()
            .map(|w| w.posts.iter().filter(|p| p.is_acked()).count())
            .sum()
    }

    pub fn unacked_count(&self) -> usize {
        self.writers
            .iter()
            .map(|w| w.posts.iter().filter(|p| !p.is_acked()).count())
            .sum()
    }

    pub fn retries(&self) -> u64 {
        self.writers.iter().map(|w| w.retries).sum()
    }

    /// Why each writer that gave up did.
    pub fn failures(&self) -> Vec<String> {
        self.writers
            .iter()
            .filter_map(|w| {
                w.failure
                    .as_ref()
                    .map(|f| format!("writer {}: {f}", w.author))
            })
            .collect()
    }

    /// One line per writer: posts, acknowledged, retries.
    pub fn summary(&self) -> String {
        self.writers
            .iter()
            .map(|w| {
                format!(
                    "writer {}: {} posts, {} acknowledged, {} retries",
                    w.author,
                    w.posts.len(),
                    w.posts.iter().filter(|p| p.is_acked()).count(),
                    w.retries
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Writers for several authors, with the waits a test needs.
pub struct Load {
    writers: Vec<Writer>,
}

impl Load {
    /// Starts one writer per author, through the coordinator at `coord_addr`.
    pub fn start(coord_addr: &str, authors: &[u32]) -> Load {
        assert!(
            !authors.is_empty() && authors.len() <= LOAD_WRITERS_MAX,
            "a load has 1..={LOAD_WRITERS_MAX} writers"
        );
        let coord = match CoordClient::new(coord_addr) {
            Ok(c) => c,
            Err(e) => panic!("bad coordinator address {coord_addr:?}: {e:#}"),
        };
        Load {
            writers: authors
                .iter()
                .map(|&a| Writer::spawn(coord.clone(), a))
                .collect(),
        }
    }

    /// (author, posts acknowledged) of every writer.
    pub fn acked(&self) -> Vec<(u32, u64)> {
        self.writers.iter().map(|w| (w.author, w.acked())).collect()
    }

    /// Every post so far, writer by writer.
    pub fn posts(&self) -> Vec<PostRecord> {
        self.writers.iter().flat_map(Writer::posts).collect()
    }

    fn failures(&self) -> Vec<String> {
        self.writers
            .iter()
            .filter_map(|w| w.failure().map(|f| format!("writer {}: {f}", w.author)))
            .collect()
    }

    /// Waits until every writer acknowledged `more` posts beyond what it
    /// had when called. Panics (saying how far each got) if `deadline`
    /// passes first or a writer gave up.
    pub async fn wait_each_acked_more(&self, more: u64, deadline: Duration) {
        let base = self.acked();
        self.wait(
            deadline,
            &format!("every writer to acknowledge {more} more posts"),
            || {
                let now = self.acked();
                let behind: Vec<_> = base
                    .iter()
                    .zip(&now)
                    .filter(|((_, b), (_, n))| *n < b + more)
                    .map(|((a, b), (_, n))| {
                        format!("writer {a}: {} of {more}", n.saturating_sub(*b))
                    })
                    .collect();
                if behind.is_empty() {
                    Ok(())
                } else {
                    Err(behind.join(", "))
                }
            },
        )
        .await
    }

    /// Waits until a post is acknowledged on `mark`'s cluster after the
    /// kill, and returns the outage. Panics if `deadline` passes first.
    pub async fn wait_outage(&self, mark: &KillMark, deadline: Duration) -> Duration {
        let what = format!(
            "a post acknowledged on cluster {} after the kill of server {:?}",
            mark.cluster, mark.killed_server
        );
        self.wait(deadline, &what, || {
            let posts = self.posts();
            outage_after(&posts, mark).ok_or_else(|| {
                format!(
                    "{} ms since the kill, acknowledged: {:?}",
                    mark.at.elapsed().as_millis(),
                    self.acked()
                )
            })
        })
        .await
    }

    /// Polls `check` until it is `Ok`, failing early when a writer gave up.
    async fn wait<T>(
        &self,
        deadline: Duration,
        what: &str,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            let failures = self.failures();
            if !failures.is_empty() {
                panic!(
                    "a writer gave up while waiting for {what}:\n{}",
                    failures.join("\n")
                );
            }
            let seen = match check() {
                Ok(v) => return v,
                Err(seen) => seen,
            };
            if start.elapsed() >= deadline {
                panic!(
                    "timed out after {} ms waiting for {what}\nlast seen: {seen}",
                    deadline.as_millis()
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }

    /// Stops every writer after its post in flight, and returns what they
    /// did.
    pub async fn stop(self) -> LoadReport {
        for w in &self.writers {
            let _ = w.stop.send(true);
        }
        let mut writers = Vec::with_capacity(self.writers.len());
        for w in self.writers {
            writers.push(w.stop().await);
        }
        LoadReport { writers }
    }
}

#[cfg(test)]
impl PostRecord {
    /// Writer `author`'s post `n`, sent at `at`; acknowledged at once by
    /// server `server_id` of `cluster` when `acked_by` says so.
    pub(crate) fn for_test(
        author: u32,
        n: u64,
        at: Instant,
        acked_by: Option<(u32, u32)>,
    ) -> PostRecord {
        PostRecord {
            author,
            n,
            post_id: post_id(author, n),
            text: post_text(author, n),
            sent_at: at,
            attempts: 1,
            acked: acked_by.map(|(cluster, server_id)| Acked {
                at,
                try_sent_at: at,
                cluster,
                server_id,
                address: format!("127.0.0.1:{server_id}"),
                duplicate: false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked_post(author: u32, n: u64, at: Instant, cluster: u32, server_id: u32) -> PostRecord {
        PostRecord::for_test(author, n, at, Some((cluster, server_id)))
    }

    #[test]
    fn post_ids_round_trip() {
        assert_eq!(post_id(4, 17), "4-w17");
        assert_eq!(post_text(4, 17), "w17 by 4");
        assert_eq!(parse_post_id("4-w17"), Some((4, 17)));
        for bad in [
            "4-17", "4-w", "-w1", "x-w1", "4-w1x", "4-wx", "0-w1", "4-w0", "4", "",
        ] {
            assert_eq!(parse_post_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn outage_ends_with_the_first_ack_on_the_cluster_by_another_server() {
        let kill = Instant::now();
        let ms = Duration::from_millis;
        let mark = KillMark {
            cluster: 1,
            at: kill,
            killed_server: Some(1),
        };
        let posts = vec![
            // Before the kill: not counted.
            acked_post(1, 1, kill - ms(5), 1, 1),
            // A late answer of the killed server: not counted.
            acked_post(1, 2, kill + ms(3), 1, 1),
            // Another cluster: not counted.
            acked_post(2, 1, kill + ms(10), 2, 1),
            acked_post(1, 3, kill + ms(900), 1, 2),
            acked_post(4, 1, kill + ms(700), 1, 2),
        ];
        assert_eq!(outage_after(&posts, &mark), Some(ms(700)));
        assert_eq!(outage_after(&posts[..3], &mark), None);
        let any = KillMark {
            killed_server: None,
            ..mark
        };
        assert_eq!(outage_after(&posts, &any), Some(ms(3)));
        // An answer read after the kill to a try sent before it: not
        // counted either.
        let mut late = acked_post(3, 1, kill + ms(1), 1, 2);
        if let Some(a) = late.acked.as_mut() {
            a.try_sent_at = kill - ms(1);
        }
        assert_eq!(outage_after([&late], &any), None);
    }

    #[test]
    fn unacknowledged_posts_never_end_an_outage() {
        let kill = Instant::now();
        let mut p = acked_post(1, 1, kill + Duration::from_millis(1), 1, 2);
        p.acked = None;
        assert_eq!(outage_after([&p], &KillMark::now(1, None)), None);
    }

    #[test]
    fn report_counts_acked_and_failures() {
        let now = Instant::now();
        let mut unacked = acked_post(1, 2, now, 1, 1);
        unacked.acked = None;
        let report = LoadReport {
            writers: vec![
                WriterReport {
                    author: 1,
                    posts: vec![acked_post(1, 1, now, 1, 1), unacked],
                    failure: Some("gave up".into()),
                    retries: 3,
                    error_samples: vec![],
                },
                WriterReport {
                    author: 2,
                    posts: vec![acked_post(2, 1, now, 2, 1)],
                    failure: None,
                    retries: 0,
                    error_samples: vec![],
                },
            ],
        };
        assert_eq!(report.acked_count(), 2);
        assert_eq!(report.unacked_count(), 1);
        assert_eq!(report.retries(), 3);
        assert_eq!(report.failures(), vec!["writer 1: gave up".to_string()]);
        assert_eq!(report.posts().len(), 3);
        assert!(report
            .summary()
            .contains("writer 2: 1 posts, 1 acknowledged"));
    }
}
