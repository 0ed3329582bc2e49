//! Reading timelines from the end of their files: the cost of a read
//! does not depend on how long the timeline is.

use crate::jsonl;
use crate::layout::Layout;
use crate::limits::TIMELINE_READ_MAX_POSTS;
use crate::record::{Post, TimelineLine};

/// The last `limit` lines of a user's timeline with `seq <= max_seq`,
/// newest first. Reads from the end of the file: the cost does not depend
/// on how long the timeline is.
pub fn read_timeline(layout: &Layout, user: u32, limit: usize, max_seq: u64) -> Vec<TimelineLine> {
    let limit = limit.min(TIMELINE_READ_MAX_POSTS);
    let path = layout.timeline(user);
    let mut out = Vec::new();
    if limit == 0 {
        return out;
    }
    let res = jsonl::read_back(&path, |line| {
        if let Some(l) = jsonl::parse::<TimelineLine>(&path, line) {
            if l.seq <= max_seq {
                out.push(l);
            }
        }
        out.len() < limit
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "reading a timeline failed");
    }
    out
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
    let path = layout.timeline(user);
    let limit = limit.min(TIMELINE_READ_MAX_POSTS);
    let mut out = Vec::new();
    let res = jsonl::read_back(&path, |line| {
        let Some(l) = jsonl::parse::<TimelineLine>(&path, line) else {
            return true;
        };
        if l.seq <= after_seq {
            return false;
        }
        if l.seq <= max_seq {
            out.push(l);
        }
        out.len() < limit
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "reading a timeline failed");
    }
    out.reverse();
    out
}

/// `author`'s own posts with `ts_ms >= since_ms`, oldest first, at most
/// `limit`. Reads back from the end until an older post of the author.
pub fn read_posts_since(layout: &Layout, author: u32, since_ms: i64, limit: usize) -> Vec<Post> {
    let path = layout.timeline(author);
    let limit = limit.min(TIMELINE_READ_MAX_POSTS);
    let mut out = Vec::new();
    let res = jsonl::read_back(&path, |line| {
        let Some(l) = jsonl::parse::<TimelineLine>(&path, line) else {
            return true;
        };
        if l.post.author != author {
            return true;
        }
        if l.post.ts_ms < since_ms {
            return false;
        }
        out.push(l.post);
        out.len() < limit
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "reading a timeline failed");
    }
    out.reverse();
    out
}
