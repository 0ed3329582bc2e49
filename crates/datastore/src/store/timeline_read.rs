//! Reading timelines from the end of their files: the cost of a read
//! does not depend on how long the timeline is.

use crate::jsonl;
use crate::layout::Layout;
use crate::limits::TIMELINE_READ_MAX_POSTS;
use crate::record::{Post, TimelineLine};

/// What to do with one line read back from a timeline.
enum Step<T> {
    /// Keep this value, and go on while fewer than the limit are kept.
    Keep(T),
    /// Pass this line by and go on.
    Skip,
    /// Stop reading.
    Stop,
}

/// Reads `user`'s timeline from its end, newest line first, handing each
/// line that parses to `step` until it says stop or `limit` values (at
/// most [`TIMELINE_READ_MAX_POSTS`]) are kept. A line that does not parse
/// is reported and passed by; a file that cannot be read ends the read
/// with a warning. Returns the kept values, newest first.
fn read_back<T>(
    layout: &Layout,
    user: u32,
    limit: usize,
    mut step: impl FnMut(TimelineLine) -> Step<T>,
) -> Vec<T> {
    let path = layout.timeline(user);
    let limit = limit.min(TIMELINE_READ_MAX_POSTS);
    let mut out = Vec::new();
    let res = jsonl::read_back(&path, |line| {
        let Some(l) = jsonl::parse::<TimelineLine>(&path, line) else {
            return true;
        };
        match step(l) {
            Step::Keep(v) => out.push(v),
            Step::Skip => return true,
            Step::Stop => return false,
        }
        out.len() < limit
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "reading a timeline failed");
    }
    out
}

/// The last `limit` lines of a user's timeline with `seq <= max_seq`,
/// newest first.
pub fn read_timeline(layout: &Layout, user: u32, limit: usize, max_seq: u64) -> Vec<TimelineLine> {
    if limit == 0 {
        return Vec::new();
    }
    read_back(layout, user, limit, |l| {
        if l.seq <= max_seq {
            Step::Keep(l)
        } else {
            Step::Skip
        }
    })
}

/// Timeline lines with `after_seq < seq <= max_seq`, oldest first, at most
/// `limit` (the newest ones, if there are more).
pub fn read_timeline_after(
    layout: &Layout,
    user: u32,
    after_seq: u64,
    max_seq: u64,
    limit: usize,
) -> Vec<TimelineLine> {
    let mut out = read_back(layout, user, limit, |l| {
        if l.seq <= after_seq {
            Step::Stop
        } else if l.seq <= max_seq {
            Step::Keep(l)
        } else {
            Step::Skip
        }
    });
    out.reverse();
    out
}

/// `author`'s own posts with `ts_ms >= since_ms`, oldest first, at most
/// `limit`. Reads back from the end until an older post of the author.
pub fn read_posts_since(layout: &Layout, author: u32, since_ms: i64, limit: usize) -> Vec<Post> {
    let mut out = read_back(layout, author, limit, |l| {
        if l.post.author != author {
            Step::Skip
        } else if l.post.ts_ms < since_ms {
            Step::Stop
        } else {
            Step::Keep(l.post)
        }
    });
    out.reverse();
    out
}
