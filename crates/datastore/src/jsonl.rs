//! JSON Lines files: durable append, reading from the end, torn-tail repair.
//!
//! Only complete lines (ending in `\n`) are ever read. A writer appends each
//! batch with one `write`, so a reader running at the same time sees either a
//! whole line or a partial last line, which it ignores.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::limits::{LINE_MAX_BYTES, READ_BACK_BLOCK_BYTES};
use crate::{io_err, Result};

/// Opens `path` for appending, creating it (and its directory) if needed.
pub fn open_append(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))
}

/// Appends `bytes` (whole lines) with one write.
pub fn append(file: &mut File, path: &Path, bytes: &[u8]) -> Result<()> {
    debug_assert!(bytes.is_empty() || bytes.ends_with(b"\n"));
    file.write_all(bytes).map_err(io_err(path))
}

/// Whether `line` can be appended as one line that every reader gives back
/// whole: not empty, no newline inside, at most [`LINE_MAX_BYTES`]. A line
/// received from elsewhere is checked with this before it is stored as it
/// came (a JSON value may span lines; a reader skips an over-long line).
pub fn is_storable_line(line: &[u8]) -> bool {
    !line.is_empty() && line.len() <= LINE_MAX_BYTES && !line.contains(&b'\n')
}

/// Cuts a torn last line (no trailing newline: a crash mid-write) off the
/// file, with a warning. Returns the file's length after the repair.
pub fn repair_tail(path: &Path) -> Result<u64> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(path)(e)),
    };
    let len = file.metadata().map_err(io_err(path))?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1)).map_err(io_err(path))?;
    file.read_exact(&mut last).map_err(io_err(path))?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    // Find the last newline, reading backwards block by block.
    let mut pos = len;
    let mut keep = 0u64;
    let mut block = vec![0u8; READ_BACK_BLOCK_BYTES as usize];
    while pos > 0 {
        let start = pos.saturating_sub(READ_BACK_BLOCK_BYTES);
        let n = (pos - start) as usize;
        file.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
        file.read_exact(&mut block[..n]).map_err(io_err(path))?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        pos = start;
    }
    tracing::warn!(
        file = %path.display(),
        dropped_bytes = len - keep,
        "dropped a torn last line (the process stopped in the middle of a write)"
    );
    file.set_len(keep).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))?;
    Ok(keep)
}

/// Calls `visit` with each complete line of the file, newest first, until it
/// returns false. The cost depends on how many lines are visited, not on the
/// size of the file. Lines longer than [`LINE_MAX_BYTES`] are reported and
/// skipped. A missing file has no lines.
pub fn read_back(path: &Path, mut visit: impl FnMut(&[u8]) -> bool) -> Result<()> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut pos = len;
    // Bytes [pos, pos + pending.len()) not yet emitted.
    let mut pending: Vec<u8> = Vec::new();
    let mut found_end = false;
    while pos > 0 {
        let start = pos.saturating_sub(READ_BACK_BLOCK_BYTES);
        let mut block = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
        file.read_exact(&mut block).map_err(io_err(path))?;
        block.extend_from_slice(&pending);
        pending = block;
        pos = start;
        if !found_end {
            // Ignore a partial last line: it is torn or still being written.
            match pending.iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    pending.truncate(i + 1);
                    found_end = true;
                }
                None => {
                    pending.clear();
                    continue;
                }
            }
        }
        // pending ends with '\n'; emit every line that starts inside it.
        loop {
            let body = &pending[..pending.len() - 1];
            match body.iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    let line = &body[i + 1..];
                    if !emit(path, line, &mut visit) {
                        return Ok(());
                    }
                    pending.truncate(i + 1);
                }
                None if pos == 0 => {
                    emit(path, body, &mut visit);
                    return Ok(());
                }
                None => break,
            }
        }
        if pending.len() > LINE_MAX_BYTES + 1 {
            tracing::warn!(file = %path.display(), "skipped an over-long line");
            // Drop what we have of it; its head is skipped the same way.
            pending.clear();
            found_end = false;
        }
    }
    Ok(())
}

fn emit(path: &Path, line: &[u8], visit: &mut impl FnMut(&[u8]) -> bool) -> bool {
    if line.is_empty() {
        return true;
    }
    if line.len() > LINE_MAX_BYTES {
        tracing::warn!(file = %path.display(), "skipped an over-long line");
        return true;
    }
    visit(line)
}

/// Calls `visit(offset, line)` with each complete line from `offset` on, in
/// order, until it returns false. A partial last line is not visited.
pub fn read_forward(
    path: &Path,
    offset: u64,
    mut visit: impl FnMut(u64, &[u8]) -> bool,
) -> Result<()> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    file.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::with_capacity(256);
    let mut at = offset;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io_err(path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(());
        }
        let start = at;
        at += n as u64;
        let body = &line[..n - 1];
        if body.is_empty() {
            continue;
        }
        if body.len() > LINE_MAX_BYTES {
            tracing::warn!(file = %path.display(), offset = start, "skipped an over-long line");
            continue;
        }
        if !visit(start, body) {
            return Ok(());
        }
    }
}

/// Parses a line as `T`, reporting (not failing on) a corrupt one.
pub fn parse<T: serde::de::DeserializeOwned>(path: &Path, line: &[u8]) -> Option<T> {
    match serde_json::from_slice(line) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(
                file = %path.display(),
                error = %e,
                line = %String::from_utf8_lossy(&line[..line.len().min(120)]),
                "skipped a corrupt line"
            );
            None
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename,
/// fsync of the directory. For small state files that are rewritten whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines_back(path: &Path) -> Vec<String> {
        let mut out = Vec::new();
        read_back(path, |l| {
            out.push(String::from_utf8(l.to_vec()).unwrap());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn read_back_gives_complete_lines_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.data");
        let mut f = open_append(&p).unwrap();
        let mut all = String::new();
        for i in 0..5000 {
            all.push_str(&format!("line {i}\n"));
        }
        append(&mut f, &p, all.as_bytes()).unwrap();
        f.write_all(b"partial").unwrap();
        let got = lines_back(&p);
        assert_eq!(got.len(), 5000);
        assert_eq!(got[0], "line 4999");
        assert_eq!(got[4999], "line 0");
    }

    #[test]
    fn read_back_stops_early() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.data");
        let mut f = open_append(&p).unwrap();
        append(&mut f, &p, b"a\nb\nc\n").unwrap();
        let mut got = Vec::new();
        read_back(&p, |l| {
            got.push(l.to_vec());
            got.len() < 2
        })
        .unwrap();
        assert_eq!(got, vec![b"c".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn repair_tail_cuts_only_the_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.data");
        std::fs::write(&p, b"{\"a\":1}\n{\"a\":2}\n{\"a\"").unwrap();
        assert_eq!(repair_tail(&p).unwrap(), 16);
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
        // Nothing more to cut.
        assert_eq!(repair_tail(&p).unwrap(), 16);
        // A file that is one torn line becomes empty.
        std::fs::write(&p, b"torn").unwrap();
        assert_eq!(repair_tail(&p).unwrap(), 0);
    }

    #[test]
    fn read_forward_skips_partial_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.data");
        std::fs::write(&p, b"one\ntwo\nthr").unwrap();
        let mut got = Vec::new();
        read_forward(&p, 0, |off, l| {
            got.push((off, l.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(got, vec![(0, b"one".to_vec()), (4, b"two".to_vec())]);
    }

    #[test]
    fn storable_lines_are_single_bounded_lines() {
        assert!(is_storable_line(b"{\"a\":1}"));
        assert!(!is_storable_line(b""));
        assert!(!is_storable_line(b"{\"a\":\n1}"));
        assert!(!is_storable_line(&vec![b' '; LINE_MAX_BYTES + 1]));
        assert!(is_storable_line(&vec![b' '; LINE_MAX_BYTES]));
    }

    #[test]
    fn missing_files_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("none.data");
        assert!(lines_back(&p).is_empty());
        assert_eq!(repair_tail(&p).unwrap(), 0);
    }
}
