//! The "not shown yet" cursor of the MP3 variant's `Timeline`. Pure.
//!
//! An MP3 client makes one `Timeline` call per line typed and expects the
//! posts it has not been shown yet. Each user's cursor is the journal seq
//! up to which its timeline has been shown (`Op::Shown`, folded by
//! `State::shown_seq`). Timeline lines are appended in seq order by the one
//! writer, so a read that saw a line saw every earlier line of that
//! timeline: moving the cursor to the newest line read never skips one that
//! is written later.

use tsn_datastore::record::TimelineLine;

/// Most posts shown by a user's first call (cursor 0), as the classic
/// service shows when a stream opens.
pub const FIRST_CALL_MAX_POSTS: usize = 20;
/// Most timeline lines read after the cursor by one call; when more are
/// waiting, the newest ones are read and the cursor moves past the rest.
pub const CALL_READ_MAX_LINES: usize = 1_000;

/// What one call shows and where it leaves the cursor.
#[derive(Debug, PartialEq, Eq)]
pub struct Unseen {
    /// Newest first.
    pub show: Vec<TimelineLine>,
    /// The new cursor: the newest line read, or the old cursor.
    pub cursor: u64,
}

/// `lines` are `user`'s timeline lines after `cursor`, oldest first (as
/// `read_timeline_after` gives them). The user's own posts move the cursor
/// but are not shown; the first call shows at most
/// [`FIRST_CALL_MAX_POSTS`].
pub fn unseen(user: u32, cursor: u64, lines: Vec<TimelineLine>) -> Unseen {
    let newest = lines
        .iter()
        .map(|l| l.seq)
        .filter(|&s| s > cursor)
        .max()
        .unwrap_or(cursor);
    let mut show: Vec<TimelineLine> = lines
        .into_iter()
        .filter(|l| l.seq > cursor && l.post.author != user)
        .collect();
    show.reverse();
    if cursor == 0 {
        show.truncate(FIRST_CALL_MAX_POSTS);
    }
    Unseen {
        show,
        cursor: newest,
    }
}

#[cfg(test)]
mod tests {
    use tsn_datastore::record::{time_text, Post};

    use super::*;

    fn line(seq: u64, author: u32) -> TimelineLine {
        TimelineLine {
            seq,
            time: time_text(0),
            post: Post {
                id: format!("{author}-{seq}"),
                author,
                text: format!("post {seq}"),
                ts_ms: seq as i64,
            },
        }
    }

    fn seqs(u: &Unseen) -> Vec<u64> {
        u.show.iter().map(|l| l.seq).collect()
    }

    #[test]
    fn shows_newest_first_and_moves_the_cursor_to_the_newest_line() {
        let u = unseen(1, 3, vec![line(4, 2), line(6, 3), line(9, 2)]);
        assert_eq!(seqs(&u), vec![9, 6, 4]);
        assert_eq!(u.cursor, 9);
    }

    #[test]
    fn own_posts_move_the_cursor_but_are_not_shown() {
        let u = unseen(1, 3, vec![line(4, 2), line(7, 1)]);
        assert_eq!(seqs(&u), vec![4]);
        assert_eq!(u.cursor, 7);
    }

    #[test]
    fn nothing_new_leaves_the_cursor() {
        assert_eq!(
            unseen(1, 5, Vec::new()),
            Unseen {
                show: Vec::new(),
                cursor: 5
            }
        );
    }

    #[test]
    fn lines_at_or_before_the_cursor_are_never_shown_again() {
        let u = unseen(1, 5, vec![line(4, 2), line(5, 2), line(8, 2)]);
        assert_eq!(seqs(&u), vec![8]);
        assert_eq!(u.cursor, 8);
    }

    #[test]
    fn the_first_call_shows_the_newest_twenty() {
        let lines: Vec<_> = (1..=30).map(|s| line(s, 2)).collect();
        let u = unseen(1, 0, lines);
        assert_eq!(u.show.len(), FIRST_CALL_MAX_POSTS);
        assert_eq!(u.show[0].seq, 30);
        assert_eq!(u.show[FIRST_CALL_MAX_POSTS - 1].seq, 11);
        assert_eq!(u.cursor, 30, "the older ten are past the cursor too");
    }

    #[test]
    fn later_calls_show_everything_new() {
        let lines: Vec<_> = (31..=60).map(|s| line(s, 2)).collect();
        let u = unseen(1, 30, lines);
        assert_eq!(u.show.len(), 30);
    }

    #[test]
    fn successive_calls_never_show_a_line_twice() {
        let all: Vec<_> = (1..=12).map(|s| line(s, 2 + (s as u32 % 2))).collect();
        let mut cursor = 0;
        let mut shown = Vec::new();
        for upto in [3, 3, 7, 12, 12] {
            let read: Vec<_> = all
                .iter()
                .filter(|l| l.seq > cursor && l.seq <= upto)
                .cloned()
                .collect();
            let u = unseen(1, cursor, read);
            shown.extend(seqs(&u));
            cursor = u.cursor;
        }
        shown.sort_unstable();
        assert_eq!(shown, (1..=12).collect::<Vec<_>>());
    }
}
