//! The journal: every change of a server's data, one [`Entry`] a line, in
//! sequence order. It is the only file fsynced before an acknowledgement;
//! every other file can be re-derived from it.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::jsonl;
use crate::record::{Entry, OpKind};
use crate::{io_err, Error, Result};

/// Most recent journal lines kept in memory.
pub const RECENT_MAX_ENTRIES: usize = 200_000;
/// Most bytes of recent journal lines kept in memory.
pub const RECENT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// One journal line: its exact bytes (without the newline), and what a
/// reader of lines needs to know of its entry without parsing them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub seq: u64,
    pub epoch: u64,
    pub kind: OpKind,
    pub bytes: Arc<[u8]>,
}

impl Line {
    /// The line of `entry`, whose serialization is `bytes`.
    pub fn of(entry: &Entry, bytes: Arc<[u8]>) -> Line {
        Line {
            seq: entry.seq,
            epoch: entry.epoch,
            kind: entry.op.kind(),
            bytes,
        }
    }
}

/// The newest journal lines, in memory, as written. Mirroring and the sync
/// services' change feed read the journal's tail over and over; serving it
/// from here costs no file read and no JSON parsing, and needs no lock on
/// the store (a handle is shared with [`Journal::recent`]).
#[derive(Default)]
pub struct RecentLines {
    lines: VecDeque<Line>,
    bytes: usize,
}

impl RecentLines {
    fn push(&mut self, line: Line) {
        debug_assert!(self.lines.back().is_none_or(|l| l.seq < line.seq));
        self.bytes += line.bytes.len();
        self.lines.push_back(line);
        while self.lines.len() > RECENT_MAX_ENTRIES || self.bytes > RECENT_MAX_BYTES {
            match self.lines.pop_front() {
                Some(l) => self.bytes -= l.bytes.len(),
                None => break,
            }
        }
    }

    fn clear(&mut self) {
        self.lines.clear();
        self.bytes = 0;
    }

    /// Lines after `after_seq` (up to `max_entries`, stopping past
    /// `max_bytes`), or `None` when the lines right after `after_seq` are
    /// no longer (or not yet) held here.
    pub fn after(&self, after_seq: u64, max_entries: usize, max_bytes: usize) -> Option<Vec<Line>> {
        let first = self.lines.front()?.seq;
        let last = self.lines.back()?.seq;
        if after_seq >= last {
            return Some(Vec::new());
        }
        // No overflow: `after_seq < last` here.
        if after_seq + 1 < first {
            return None;
        }
        let start = self.lines.partition_point(|l| l.seq <= after_seq);
        let mut out = Vec::new();
        let mut bytes = 0;
        for line in self.lines.range(start..) {
            if out.len() >= max_entries || bytes >= max_bytes {
                break;
            }
            bytes += line.bytes.len();
            out.push(line.clone());
        }
        Some(out)
    }
}

pub struct Journal {
    recent: Arc<Mutex<RecentLines>>,
    path: PathBuf,
    file: File,
    /// (seq, byte offset) of every entry, in order.
    index: Vec<(u64, u64)>,
    /// (epoch, first seq) of each epoch seen, in order.
    epochs: Vec<(u64, u64)>,
    len_bytes: u64,
    last_seq: u64,
    last_epoch: u64,
}

impl Journal {
    /// Opens the journal, cutting a torn last line and skipping corrupt or
    /// out-of-order lines with a warning, and calls `visit` with each entry.
    pub fn open(path: &Path, mut visit: impl FnMut(&Entry)) -> Result<Journal> {
        let len_bytes = jsonl::repair_tail(path)?;
        let mut index = Vec::new();
        let mut epochs: Vec<(u64, u64)> = Vec::new();
        let (mut last_seq, mut last_epoch) = (0u64, 0u64);
        jsonl::read_forward(path, 0, |offset, line| {
            let Some(entry) = jsonl::parse::<Entry>(path, line) else {
                return true;
            };
            if entry.seq <= last_seq || entry.epoch < last_epoch {
                tracing::warn!(
                    file = %path.display(), seq = entry.seq, last_seq,
                    "skipped a journal entry out of order"
                );
                return true;
            }
            // No overflow: `last_seq < entry.seq` here.
            if entry.seq != last_seq + 1 {
                tracing::warn!(
                    file = %path.display(), seq = entry.seq, last_seq,
                    "journal entries are missing (a corrupt line was skipped)"
                );
            }
            if entry.epoch != last_epoch {
                epochs.push((entry.epoch, entry.seq));
            }
            index.push((entry.seq, offset));
            last_seq = entry.seq;
            last_epoch = entry.epoch;
            visit(&entry);
            true
        })?;
        let file = jsonl::open_append(path)?;
        Ok(Journal {
            recent: Arc::default(),
            path: path.to_path_buf(),
            file,
            index,
            epochs,
            len_bytes,
            last_seq,
            last_epoch,
        })
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    /// (epoch, first seq) of each epoch in the journal.
    pub fn epochs(&self) -> &[(u64, u64)] {
        &self.epochs
    }

    /// Appends entries and fsyncs: when this returns, they survive a crash.
    /// Entries must continue the sequence without a gap.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.write(entries)?;
        self.sync()
    }

    /// fsyncs what was written.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(io_err(&self.path))
    }

    /// A second handle of the journal file, to fsync it without holding
    /// whatever lock guards this journal.
    pub fn sync_handle(&self) -> Result<File> {
        self.file.try_clone().map_err(io_err(&self.path))
    }

    /// Appends entries without fsync (see [`Journal::sync`]). Entries must
    /// continue the sequence without a gap. Each entry is serialized here
    /// once: the same bytes are written and kept in memory for mirroring and
    /// the change feed.
    pub fn write(&mut self, entries: &[Entry]) -> Result<()> {
        let mut scratch = Vec::with_capacity(512);
        let lines: Vec<Arc<[u8]>> = entries
            .iter()
            .map(|e| {
                scratch.clear();
                serde_json::to_writer(&mut scratch, e).expect("entries always serialize");
                Arc::from(&scratch[..])
            })
            .collect();
        self.write_lines(entries, &lines)
    }

    /// Appends entries given with their lines, without fsync: the lines are
    /// written exactly as given (a secondary stores the primary's bytes as
    /// they came, so both journals hold the same bytes). Each line must be
    /// the entry's serialization, one line (see [`jsonl::is_storable_line`]);
    /// entries must continue the sequence without a gap.
    pub fn write_lines(&mut self, entries: &[Entry], lines: &[Arc<[u8]>]) -> Result<()> {
        assert_eq!(entries.len(), lines.len(), "one line per entry");
        if entries.is_empty() {
            return Ok(());
        }
        let mut expect = self.last_seq + 1;
        let mut epoch = self.last_epoch;
        for (e, line) in entries.iter().zip(lines) {
            if e.seq != expect || e.epoch < epoch {
                return Err(Error::Gap {
                    last: expect - 1,
                    got: e.seq,
                });
            }
            debug_assert!(jsonl::is_storable_line(line));
            expect += 1;
            epoch = e.epoch;
        }
        let total: usize = lines.iter().map(|l| l.len() + 1).sum();
        let mut buf = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(entries.len());
        for (e, line) in entries.iter().zip(lines) {
            offsets.push((e.seq, self.len_bytes + buf.len() as u64));
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        if let Err(e) = jsonl::append(&mut self.file, &self.path, &buf) {
            // A failed append (a full disk) may leave part of a line: cut
            // it, so that the next append starts a whole line (the file is
            // opened for appending). Shrinking needs no space.
            if let Err(cut) = self.file.set_len(self.len_bytes) {
                tracing::warn!(error = %cut, "cannot cut a partly written journal line");
            }
            return Err(e);
        }
        self.len_bytes += buf.len() as u64;
        self.index.extend(offsets);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            for (e, line) in entries.iter().zip(lines) {
                recent.push(Line::of(e, line.clone()));
            }
        }
        for e in entries {
            if e.epoch != self.last_epoch {
                self.epochs.push((e.epoch, e.seq));
                self.last_epoch = e.epoch;
            }
        }
        self.last_seq = expect - 1;
        Ok(())
    }

    /// The shared handle of the newest lines.
    pub fn recent(&self) -> Arc<Mutex<RecentLines>> {
        self.recent.clone()
    }

    /// Up to `max_entries` lines after `after_seq`, in order, stopping early
    /// past `max_bytes`: from memory when held there, else from the file.
    pub fn read_lines_after(
        &self,
        after_seq: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Vec<Line> {
        let held = self.recent.lock().unwrap_or_else(|e| e.into_inner()).after(
            after_seq,
            max_entries,
            max_bytes,
        );
        if let Some(lines) = held {
            return lines;
        }
        let mut out = Vec::new();
        self.scan_after(after_seq, max_entries, max_bytes, |e, line| {
            out.push(Line::of(&e, Arc::from(line)))
        });
        out
    }

    /// Up to `max_entries` entries after `after_seq`, in order, stopping
    /// early past `max_bytes` of lines.
    pub fn read_after(&self, after_seq: u64, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        self.scan_after(after_seq, max_entries, max_bytes, |e, _| out.push(e));
        out
    }

    /// Calls `visit` with each entry after `after_seq` read from the file,
    /// and its line as stored, in order: at most `max_entries`, stopping
    /// early past `max_bytes` of lines. Corrupt lines are skipped.
    fn scan_after(
        &self,
        after_seq: u64,
        max_entries: usize,
        max_bytes: usize,
        mut visit: impl FnMut(Entry, &[u8]),
    ) {
        let i = self.index.partition_point(|&(s, _)| s <= after_seq);
        let Some(&(_, offset)) = self.index.get(i) else {
            return;
        };
        let (mut count, mut bytes) = (0usize, 0usize);
        let end = self.len_bytes;
        let res = jsonl::read_forward(&self.path, offset, |off, line| {
            if off >= end {
                return false;
            }
            if let Some(e) = jsonl::parse::<Entry>(&self.path, line) {
                if e.seq > after_seq {
                    bytes += line.len();
                    count += 1;
                    visit(e, line);
                }
            }
            count < max_entries && bytes < max_bytes
        });
        if let Err(e) = res {
            tracing::warn!(error = %e, "reading the journal failed");
        }
    }

    /// Cuts every entry after `seq` off the journal. Used when a rejoining
    /// server holds entries that the current primary never committed.
    pub fn truncate_after(&mut self, seq: u64) -> Result<()> {
        let i = self.index.partition_point(|&(s, _)| s <= seq);
        let Some(&(_, offset)) = self.index.get(i) else {
            return Ok(());
        };
        self.file.set_len(offset).map_err(io_err(&self.path))?;
        self.file.sync_all().map_err(io_err(&self.path))?;
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.index.truncate(i);
        self.len_bytes = offset;
        self.epochs.retain(|&(_, first)| first <= seq);
        self.last_seq = self.index.last().map_or(0, |&(s, _)| s);
        self.last_epoch = self.epochs.last().map_or(0, |&(e, _)| e);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Op;

    fn entry(seq: u64, epoch: u64) -> Entry {
        Entry {
            seq,
            epoch,
            op: Op::User {
                user: seq as u32,
                cluster: 1,
            },
        }
    }

    #[test]
    fn append_reopen_read_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.data");
        let mut j = Journal::open(&p, |_| {}).unwrap();
        j.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        j.append(&[entry(3, 2)]).unwrap();
        assert!(j.append(&[entry(5, 2)]).is_err(), "gaps are refused");
        drop(j);

        // A torn line at the end is dropped on open.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"seq\":4,\"ep").unwrap();
        let mut seen = Vec::new();
        let mut j = Journal::open(&p, |e| seen.push(e.seq)).unwrap();
        assert_eq!(seen, vec![1, 2, 3]);
        assert_eq!(j.epochs(), &[(1, 1), (2, 3)]);
        assert_eq!(j.read_after(1, 10, 1 << 20).len(), 2);
        assert_eq!(j.read_after(3, 10, 1 << 20).len(), 0);
        assert_eq!(j.read_after(0, 2, 1 << 20).len(), 2);

        // Lines written since the open come from memory, older ones from
        // the file; both give the same bytes.
        j.append(&[entry(4, 2)]).unwrap();
        let from_memory = j.read_lines_after(3, 10, 1 << 20);
        assert_eq!(from_memory.len(), 1);
        assert_eq!(&*from_memory[0].bytes, entry(4, 2).to_line().as_bytes());
        assert_eq!(
            (
                from_memory[0].seq,
                from_memory[0].epoch,
                from_memory[0].kind
            ),
            (4, 2, OpKind::User)
        );
        let from_file = j.read_lines_after(0, 10, 1 << 20);
        assert_eq!(
            from_file.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(j.read_lines_after(0, 2, 1 << 20).len(), 2);

        j.truncate_after(2).unwrap();
        assert!(j.read_lines_after(2, 10, 1 << 20).is_empty());
        assert_eq!(j.last_seq(), 2);
        assert_eq!(j.epochs(), &[(1, 1)]);
        j.append(&[entry(3, 3)]).unwrap();
        drop(j);
        let mut seen = Vec::new();
        Journal::open(&p, |e| seen.push((e.seq, e.epoch))).unwrap();
        assert_eq!(seen, vec![(1, 1), (2, 1), (3, 3)]);
    }

    #[test]
    fn corrupt_middle_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.data");
        let a = entry(1, 1).to_line();
        let c = entry(3, 1).to_line();
        std::fs::write(&p, format!("{a}\nnot json at all\n{c}\n")).unwrap();
        let mut seen = Vec::new();
        let j = Journal::open(&p, |e| seen.push(e.seq)).unwrap();
        assert_eq!(seen, vec![1, 3]);
        assert_eq!(j.last_seq(), 3);
    }
}
