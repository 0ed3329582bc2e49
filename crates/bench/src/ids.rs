//! The ids and texts of benchmark posts.
//!
//! Each run picks a random run id; post number `n` by `author` gets the id
//! `<author>-b<run>n<n>`. The author prefix is what the server requires of
//! a client-chosen id; the run id tells this run's posts apart from any
//! earlier run's on a long-lived deployment (`-c`), so timeline streams and
//! the audit count only this run's posts.

use crate::limits::POST_TEXT_BYTES;

/// Hex digits of a run id.
const RUN_ID_DIGITS: usize = 8;

/// A new random run id: 8 hex digits.
pub fn new_run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

pub fn post_id(run: &str, author: u32, n: u64) -> String {
    debug_assert_eq!(run.len(), RUN_ID_DIGITS);
    format!("{author}-b{run}n{n}")
}

/// The post number of `id` if it is a post of run `run`; `None` for any
/// other id (another run's, a person's, a malformed one).
pub fn parse_post_id(run: &str, id: &str) -> Option<(u32, u64)> {
    let (author, rest) = id.split_once('-')?;
    let n = rest
        .strip_prefix('b')?
        .strip_prefix(run)?
        .strip_prefix('n')?;
    if author.is_empty() || !author.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((author.parse().ok()?, n.parse().ok()?))
}

/// The text of post `n`: always [`POST_TEXT_BYTES`] long, so every post
/// costs the same to store and send.
pub fn post_text(n: u64) -> String {
    let head = format!("tsn_bench post {n} ");
    let mut text = head;
    while text.len() < POST_TEXT_BYTES {
        text.push('.');
    }
    text.truncate(POST_TEXT_BYTES);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let run = "0123abcd";
        let id = post_id(run, 42, 7);
        assert_eq!(id, "42-b0123abcdn7");
        assert_eq!(parse_post_id(run, &id), Some((42, 7)));
    }

    #[test]
    fn other_ids_are_not_this_runs() {
        let run = "0123abcd";
        for other in [
            "42-b99999999n7",
            "42-0123abcd",
            "42-b0123abcdn",
            "42-b0123abcdnx",
            "-b0123abcdn7",
            "x-b0123abcdn7",
            "42-abcdef0123456789",
            "",
        ] {
            assert_eq!(parse_post_id(run, other), None, "{other:?}");
        }
    }

    #[test]
    fn run_ids_have_eight_hex_digits() {
        let id = new_run_id();
        assert_eq!(id.len(), RUN_ID_DIGITS);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn texts_have_one_length() {
        for n in [0, 7, u64::MAX] {
            let t = post_text(n);
            assert_eq!(t.len(), POST_TEXT_BYTES);
            assert!(t.starts_with("tsn_bench post "));
        }
    }
}
