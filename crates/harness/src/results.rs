//! Small pure helpers the tests use to read what they got: sets of ids,
//! texts of posts, the client's error line and JSON output, the datastore's
//! files.

use std::collections::BTreeSet;
use std::path::Path;

use tsn_proto::tsn::TimelinePost;

/// A set of user ids as LIST returns them (strings).
pub fn ids<const N: usize>(ids: [u32; N]) -> BTreeSet<String> {
    ids.iter().map(|i| i.to_string()).collect()
}

/// The texts of some posts, in order.
pub fn post_texts(posts: &[TimelinePost]) -> Vec<String> {
    posts.iter().map(|p| p.text.clone()).collect()
}

/// `prefix1 … prefixN` for the numbers of `numbers`, in the order given,
/// e.g. `texts("p", (3..=22).rev())` is p22 … p3.
pub fn texts(prefix: &str, numbers: impl IntoIterator<Item = u32>) -> Vec<String> {
    numbers
        .into_iter()
        .map(|n| format!("{prefix}{n}"))
        .collect()
}

/// The one line of a client's error output: it must be the only non-empty
/// line and start with `error: `.
pub fn one_line_error(stderr: &str) -> Result<String, String> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.as_slice() {
        [line] if line.starts_with("error: ") => Ok(line.to_string()),
        [line] => Err(format!(
            "the error line does not start with \"error: \": {line:?}"
        )),
        [] => Err("nothing on stderr".to_string()),
        more => Err(format!(
            "{} lines on stderr, expected one:\n{}",
            more.len(),
            stderr
        )),
    }
}

/// The posts of `tsn_client timeline --json`: either one JSON array, or one
/// JSON object per line.
pub fn client_json_posts(stdout: &str) -> Result<Vec<serde_json::Value>, String> {
    let trimmed = stdout.trim();
    if trimmed.starts_with('[') {
        return match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Array(items)) => Ok(items),
            Ok(other) => Err(format!("not an array: {other}")),
            Err(e) => Err(format!("bad JSON ({e}): {trimmed}")),
        };
    }
    trimmed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map_err(|e| format!("bad JSON line ({e}): {l:?}"))
        })
        .collect()
}

/// The text of a post in the client's JSON output (`text`, or the classic
/// `msg`).
pub fn json_text(post: &serde_json::Value) -> Option<String> {
    post.get("text")
        .or_else(|| post.get("msg"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
}

/// How many complete lines a file has (0 if missing).
pub fn line_count(path: &Path) -> usize {
    match std::fs::read(path) {
        Ok(bytes) => bytes.iter().filter(|&&b| b == b'\n').count(),
        Err(_) => 0,
    }
}

/// Every problem with a JSON Lines file: lines that are not JSON objects
/// with a `seq`, and a last line without its newline.
pub fn jsonl_problems(path: &Path) -> Vec<String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let mut problems = Vec::new();
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        problems.push(format!("{}: the last line has no newline", path.display()));
    }
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let ok = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("seq").and_then(|s| s.as_u64()))
            .is_some();
        if !ok {
            problems.push(format!(
                "{} line {}: {}",
                path.display(),
                i + 1,
                String::from_utf8_lossy(line)
            ));
        }
    }
    problems
}

/// The post ids that occur more than once.
pub fn duplicate_ids(posts: &[TimelinePost]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut dups = BTreeSet::new();
    for p in posts {
        if !seen.insert(p.post_id.as_str()) {
            dups.insert(p.post_id.clone());
        }
    }
    dups.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_output_is_one_line() {
        assert_eq!(
            one_line_error("error: bad id \"abc\"\n"),
            Ok("error: bad id \"abc\"".to_string())
        );
        assert!(one_line_error("").is_err());
        assert!(one_line_error("oops\n").is_err());
        assert!(one_line_error("error: a\n\nFor more information, try '--help'.\n").is_err());
    }

    #[test]
    fn client_json_is_an_array_or_lines() {
        let lines = "{\"text\":\"p2\"}\n{\"msg\":\"p1\"}\n";
        let got: Vec<_> = client_json_posts(lines)
            .expect("lines")
            .iter()
            .map(json_text)
            .collect();
        assert_eq!(got, vec![Some("p2".into()), Some("p1".into())]);
        let array = "[{\"text\":\"a\"}]";
        assert_eq!(client_json_posts(array).expect("array").len(), 1);
        assert!(client_json_posts("not json").is_err());
        assert!(client_json_posts("").expect("empty").is_empty());
    }

    #[test]
    fn texts_are_numbered_in_the_order_given() {
        assert_eq!(texts("p", (1..=3).rev()), vec!["p3", "p2", "p1"]);
        assert_eq!(ids([3, 1]).into_iter().collect::<Vec<_>>(), vec!["1", "3"]);
    }

    #[test]
    fn files_are_checked_line_by_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.data");
        std::fs::write(&path, b"{\"seq\":1}\n{\"seq\":2}\n").expect("write");
        assert_eq!(line_count(&path), 2);
        assert!(jsonl_problems(&path).is_empty());
        std::fs::write(&path, b"{\"seq\":1}\nnope\n{\"seq\":3").expect("write");
        assert_eq!(jsonl_problems(&path).len(), 3);
        assert_eq!(line_count(&dir.path().join("missing")), 0);
    }

    #[test]
    fn duplicates_are_found_by_id() {
        let p = |id: &str| TimelinePost {
            post_id: id.into(),
            ..Default::default()
        };
        assert_eq!(duplicate_ids(&[p("a"), p("b"), p("a")]), vec!["a"]);
        assert!(duplicate_ids(&[p("a"), p("b")]).is_empty());
    }
}
