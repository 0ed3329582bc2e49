//! The lines an open `Timeline` stream has yet to send, handed over in
//! memory by the writer, so that a stream woken by a commit does not read
//! its user's `timeline.data` back from the disk each time.
//!
//! Each open stream registers a [`Feed`]; the writer pushes every timeline
//! line it made durable into the feeds of the line's owner, in seq order
//! (it is the one writer while this server is primary). A feed is
//! *complete after* a seq: it holds every line of its user above it that
//! has been made durable. It starts complete after the journal's end when
//! it registers (lines durable before are in the file only); a batch that
//! finds entries the writer did not push before it (written while this
//! server was a secondary) makes every feed complete only after them; and
//! a feed that overflows drops its oldest lines and is complete only after
//! those. A stream whose position is below that reads the file, as
//! before; past it, it takes its lines from the feed. Pure but for the
//! lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use tsn_cluster::sync::lock;
use tsn_datastore::record::{time_text, Post, TimelineLine};

/// Lines one stream's feed holds before it drops its oldest (the stream
/// then reads them from the file).
pub const FEED_MAX_LINES: usize = 1_024;

#[derive(Debug, Default)]
struct FeedState {
    lines: VecDeque<Arc<TimelineLine>>,
    /// Every durable line of the user with a greater seq is in `lines` or
    /// was taken.
    complete_after: u64,
}

/// One stream's share of its user's new lines.
#[derive(Debug)]
pub struct Feed {
    state: Mutex<FeedState>,
    max_lines: usize,
}

impl Feed {
    fn new(complete_after: u64, max_lines: usize) -> Feed {
        Feed {
            state: Mutex::new(FeedState {
                lines: VecDeque::new(),
                complete_after,
            }),
            max_lines,
        }
    }

    fn push(&self, line: Arc<TimelineLine>) {
        let mut s = lock(&self.state);
        if s.lines.len() >= self.max_lines {
            if let Some(old) = s.lines.pop_front() {
                s.complete_after = s.complete_after.max(old.seq);
            }
        }
        s.lines.push_back(line);
    }

    /// The lines with `after < seq <= upto`, oldest first, taken out of
    /// the feed (lines at or below `after` are dropped), or `None` when
    /// the feed cannot tell: it is not complete after `after`, and the
    /// caller reads the file instead.
    pub fn take(&self, after: u64, upto: u64) -> Option<Vec<Arc<TimelineLine>>> {
        let mut s = lock(&self.state);
        if after < s.complete_after {
            // Lines the stream has not sent may be missing here; those in
            // the feed up to `upto` will come from the file.
            while s.lines.front().is_some_and(|l| l.seq <= upto) {
                s.lines.pop_front();
            }
            s.complete_after = s.complete_after.max(upto);
            return None;
        }
        let mut out = Vec::new();
        while s.lines.front().is_some_and(|l| l.seq <= upto) {
            if let Some(l) = s.lines.pop_front() {
                if l.seq > after {
                    out.push(l);
                }
            }
        }
        Some(out)
    }
}

/// The feeds of every open stream, by user.
#[derive(Default)]
pub struct Feeds {
    inner: Mutex<FeedsState>,
}

#[derive(Default)]
struct FeedsState {
    by_user: HashMap<u32, Vec<Weak<Feed>>>,
    /// The journal's end after the last batch pushed.
    pushed: u64,
}

impl Feeds {
    /// A new feed for a stream of `user`, complete after `durable_seq`
    /// (the journal's end now). Dropping it unregisters it.
    pub fn register(&self, user: u32, durable_seq: u64) -> Arc<Feed> {
        let mut s = lock(&self.inner);
        let feed = Arc::new(Feed::new(durable_seq, FEED_MAX_LINES));
        let list = s.by_user.entry(user).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&feed));
        feed
    }

    /// Pushes the durable lines of one batch of the writer, which took
    /// the journal from `end_before` to `end_after`, in seq order: each
    /// line's seq and post with the users whose timelines it went into.
    /// A line is made (once, shared) only for a user with an open stream.
    pub fn push<'a>(
        &self,
        end_before: u64,
        end_after: u64,
        lines: impl IntoIterator<Item = (u64, &'a Post, &'a [u32])>,
    ) {
        let mut s = lock(&self.inner);
        if end_before > s.pushed {
            // Entries the writer did not push: no feed has their lines.
            for feed in s.by_user.values().flatten().filter_map(Weak::upgrade) {
                let mut f = lock(&feed.state);
                f.complete_after = f.complete_after.max(end_before);
            }
        }
        s.pushed = end_after;
        let by_user = &mut s.by_user;
        for (seq, post, owners) in lines {
            if by_user.is_empty() {
                break;
            }
            let mut made: Option<Arc<TimelineLine>> = None;
            for owner in owners {
                let Some(list) = by_user.get_mut(owner) else {
                    continue;
                };
                let line = made.get_or_insert_with(|| {
                    Arc::new(TimelineLine {
                        seq,
                        time: time_text(post.ts_ms),
                        post: post.clone(),
                    })
                });
                list.retain(|w| match w.upgrade() {
                    Some(feed) => {
                        feed.push(line.clone());
                        true
                    }
                    None => false,
                });
                if list.is_empty() {
                    by_user.remove(owner);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_datastore::record::Post;

    /// A post made durable at `seq`, leaked: the tests push references.
    fn line(seq: u64, author: u32) -> (u64, &'static Post) {
        let post = Box::leak(Box::new(Post {
            id: format!("{author}-{seq}"),
            author,
            text: "t".into(),
            ts_ms: 0,
        }));
        (seq, post)
    }

    /// `line(seq, author)` into the timelines of `owners`.
    fn into(
        (seq, post): (u64, &'static Post),
        owners: &'static [u32],
    ) -> (u64, &'static Post, &'static [u32]) {
        (seq, post, owners)
    }

    fn seqs(lines: &[Arc<TimelineLine>]) -> Vec<u64> {
        lines.iter().map(|l| l.seq).collect()
    }

    #[test]
    fn a_stream_gets_its_users_lines_up_to_the_commit_point() {
        let feeds = Feeds::default();
        feeds.push(0, 1, [into(line(1, 9), &[7u32])]);
        let feed = feeds.register(7, 1);
        feeds.push(
            1,
            4,
            [
                into(line(2, 9), &[7u32, 8]),
                into(line(3, 9), &[8u32]),
                into(line(4, 9), &[7u32]),
            ],
        );
        // Line 1 was durable before the feed: a stream at 0 reads the file.
        assert!(feed.take(0, 4).is_none());
        let feed = feeds.register(7, 4);
        feeds.push(4, 6, [into(line(5, 9), &[7u32]), into(line(6, 9), &[7u32])]);
        // Committed up to 5 only: 6 stays for later.
        assert_eq!(seqs(&feed.take(4, 5).unwrap()), [5]);
        assert_eq!(seqs(&feed.take(5, 6).unwrap()), [6]);
        assert!(feed.take(6, 9).unwrap().is_empty());
    }

    #[test]
    fn lines_the_file_read_already_sent_are_not_sent_twice() {
        let feeds = Feeds::default();
        let feed = feeds.register(7, 0);
        feeds.push(0, 2, [into(line(1, 9), &[7u32]), into(line(2, 9), &[7u32])]);
        // The stream's first read of the file covered up to 1.
        assert_eq!(seqs(&feed.take(1, 2).unwrap()), [2]);
    }

    #[test]
    fn a_full_feed_sends_the_stream_back_to_the_file_once() {
        let feeds = Feeds::default();
        let feed = Arc::new(Feed::new(0, 2));
        lock(&feeds.inner)
            .by_user
            .insert(7, vec![Arc::downgrade(&feed)]);
        feeds.push(0, 3, (1..=3).map(|s| into(line(s, 9), &[7u32])));
        // Line 1 was dropped: the stream at 0 reads (0, 3] from the file.
        assert!(feed.take(0, 3).is_none());
        feeds.push(3, 4, [into(line(4, 9), &[7u32])]);
        assert_eq!(seqs(&feed.take(3, 4).unwrap()), [4]);
    }

    #[test]
    fn two_streams_of_one_user_each_get_every_line() {
        let feeds = Feeds::default();
        let a = feeds.register(7, 0);
        let b = feeds.register(7, 0);
        feeds.push(0, 1, [into(line(1, 9), &[7u32])]);
        assert_eq!(seqs(&a.take(0, 1).unwrap()), [1]);
        assert_eq!(seqs(&b.take(0, 1).unwrap()), [1]);
    }

    #[test]
    fn closed_streams_are_forgotten() {
        let feeds = Feeds::default();
        let _a = feeds.register(7, 0);
        drop(feeds.register(8, 0));
        feeds.push(0, 1, [into(line(1, 9), &[7u32, 8])]);
        assert!(!lock(&feeds.inner).by_user.contains_key(&8));
    }

    #[test]
    fn entries_the_writer_did_not_push_send_streams_to_the_file() {
        let feeds = Feeds::default();
        let feed = feeds.register(7, 2);
        feeds.push(2, 3, [into(line(3, 9), &[7u32])]);
        assert_eq!(seqs(&feed.take(2, 3).unwrap()), [3]);
        // Entries 4 and 5 came another way (as a secondary).
        feeds.push(5, 6, [into(line(6, 9), &[7u32])]);
        assert!(feed.take(3, 6).is_none());
        feeds.push(6, 7, [into(line(7, 9), &[7u32])]);
        assert_eq!(seqs(&feed.take(6, 7).unwrap()), [7]);
    }
}
