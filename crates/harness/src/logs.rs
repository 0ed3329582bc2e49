//! The log files of the processes a test starts, and their tails.
//!
//! Each process writes its stdout and stderr to files in the test's temp
//! dir, appended to across restarts. When a test fails the harness prints
//! the last lines of each, which is usually enough to see why; the files
//! themselves are kept (their paths are printed too).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::limits::{LOG_TAIL_LINES, LOG_TAIL_READ_MAX_BYTES};

/// The last `lines` lines of a text, without a trailing empty line.
pub fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// The length of a file, 0 if it does not exist yet.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The bytes of `path` from `offset` on (at most `max_bytes` of them, the
/// last ones), as lossy UTF-8. A missing file reads as empty.
pub fn read_from(path: &Path, offset: u64, max_bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = offset.max(len.saturating_sub(max_bytes)).min(len);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(max_bytes).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The tail of a log file, headed by its path, for a failure report.
pub fn tail_of(path: &Path) -> String {
    let text = read_from(path, 0, LOG_TAIL_READ_MAX_BYTES);
    let tail = tail_lines(&text, LOG_TAIL_LINES);
    if tail.is_empty() {
        format!("--- {} (empty)", path.display())
    } else {
        format!(
            "--- {} (last {LOG_TAIL_LINES} lines)\n{tail}",
            path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a\nb", 5), "a\nb");
        assert_eq!(tail_lines("", 3), "");
    }

    #[test]
    fn read_from_skips_the_offset_and_bounds_the_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, b"0123456789").expect("write");
        assert_eq!(read_from(&path, 4, 100), "456789");
        assert_eq!(read_from(&path, 0, 3), "789");
        assert_eq!(read_from(&path, 20, 3), "");
        assert_eq!(read_from(&dir.path().join("missing"), 0, 3), "");
        assert_eq!(file_len(&path), 10);
        assert_eq!(file_len(&dir.path().join("missing")), 0);
    }
}
