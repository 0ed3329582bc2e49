//! The Raft log of a coordinator member, in plain files of its state
//! directory:
//!
//! * `raft-log.jsonl`: one entry per line, appended with one write per
//!   batch and fsynced before openraft is told the batch is stored (a vote
//!   for a leader counts only what a member holds durably). A torn last
//!   line (a crash mid-write) is cut at open with a warning: it was never
//!   acknowledged. Any other line that does not parse, or entries that do
//!   not follow each other, stop the member: a Raft log with a hole would
//!   vote and commit wrongly, so it is reported, never skipped.
//! * `raft-meta.json`: the vote, the last known commit point and the last
//!   purged entry, rewritten whole and atomically.
//!
//! The entries since the last purge are also kept in memory (the
//! coordinator's decisions are few and small, and a snapshot lets the log
//! be purged), so reads never touch the disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogId,
    RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};

use super::{NodeId, TypeConfig};

pub const LOG_FILE: &str = "raft-log.jsonl";
pub const META_FILE: &str = "raft-meta.json";
/// Largest `raft-meta.json` read: it holds three small values.
pub const META_FILE_MAX_BYTES: u64 = 64 * 1024;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// What `raft-meta.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

/// The log store; clones share the same files (openraft's log reader is a
/// clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogFiles>>,
}

struct LogFiles {
    log_path: PathBuf,
    meta_path: PathBuf,
    log: File,
    /// Length of the log file after the last complete append.
    log_len: u64,
    /// index -> (offset of its line, the entry).
    entries: BTreeMap<u64, (u64, Entry<TypeConfig>)>,
    meta: Meta,
}

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl ToString,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

fn read_error(e: impl ToString) -> StorageError<NodeId> {
    io_error(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_error(e: impl ToString) -> StorageError<NodeId> {
    io_error(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    /// Opens (creating) the log under `dir`, cutting a torn last line.
    pub fn open(dir: &Path) -> StorageResult<LogStore> {
        let log_path = dir.join(LOG_FILE);
        let meta_path = dir.join(META_FILE);
        let meta = read_meta(&meta_path)?;
        tsn_datastore::jsonl::repair_tail(&log_path).map_err(read_error)?;
        let bytes = match std::fs::read(&log_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(read_error(format!("{}: {e}", log_path.display()))),
        };
        let purged = meta.last_purged.map(|l| l.index);
        let mut entries = BTreeMap::new();
        let mut offset = 0u64;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let at = offset;
            offset += line.len() as u64;
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let entry: Entry<TypeConfig> = serde_json::from_slice(body).map_err(|e| {
                read_error(format!(
                    "{} is corrupt at byte {at}: {e}; the member cannot vote or commit with a hole in its log",
                    log_path.display()
                ))
            })?;
            let index = entry.get_log_id().index;
            // Entries up to the last purge may be left over from a purge
            // that stopped before it rewrote the file.
            if purged.is_some_and(|p| index <= p) {
                continue;
            }
            let expected = entries
                .last_key_value()
                .map(|(&i, _): (&u64, _)| i + 1)
                .or(purged.map(|p| p + 1));
            if expected.is_some_and(|e| e != index) {
                return Err(read_error(format!(
                    "{}: entry {index} at byte {at} does not follow entry {:?}",
                    log_path.display(),
                    expected.map(|e| e - 1)
                )));
            }
            entries.insert(index, (at, entry));
        }
        let log = tsn_datastore::jsonl::open_append(&log_path).map_err(write_error)?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogFiles {
                log_path,
                meta_path,
                log,
                log_len: offset,
                entries,
                meta,
            })),
        })
    }

    fn files(&self) -> std::sync::MutexGuard<'_, LogFiles> {
        tsn_cluster::sync::lock(&self.inner)
    }
}

fn read_meta(path: &Path) -> StorageResult<Meta> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Meta::default()),
        Err(e) => return Err(read_error(format!("{}: {e}", path.display()))),
    };
    if bytes.len() as u64 > META_FILE_MAX_BYTES {
        return Err(read_error(format!(
            "{} is larger than {META_FILE_MAX_BYTES} bytes",
            path.display()
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| read_error(format!("{} is corrupt: {e}", path.display())))
}

impl LogFiles {
    fn save_meta(&self, subject: ErrorSubject<NodeId>) -> StorageResult<()> {
        let mut bytes = serde_json::to_vec(&self.meta)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        bytes.push(b'\n');
        tsn_datastore::jsonl::write_atomic(&self.meta_path, &bytes)
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }

    /// Appends `lines` (whole lines) and fsyncs; on failure cuts the file
    /// back, so a partial line never joins the next append.
    fn append_lines(&mut self, lines: &[u8]) -> std::io::Result<()> {
        let written = self
            .log
            .write_all(lines)
            .and_then(|()| self.log.sync_data());
        if written.is_err() {
            if let Err(cut) = self.log.set_len(self.log_len) {
                tracing::error!(file = %self.log_path.display(), error = %cut, "could not cut a failed append");
            }
        } else {
            self.log_len += lines.len() as u64;
        }
        written
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .last_key_value()
            .map(|(_, (_, e))| *e.get_log_id())
            .or(self.meta.last_purged)
    }

    /// Rewrites the log file with the entries kept in memory.
    fn rewrite(&mut self) -> StorageResult<()> {
        let mut bytes = Vec::new();
        for (offset, entry) in self.entries.values_mut() {
            *offset = bytes.len() as u64;
            serde_json::to_writer(&mut bytes, &*entry).map_err(write_error)?;
            bytes.push(b'\n');
        }
        tsn_datastore::jsonl::write_atomic(&self.log_path, &bytes).map_err(write_error)?;
        self.log = tsn_datastore::jsonl::open_append(&self.log_path).map_err(write_error)?;
        self.log_len = bytes.len() as u64;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(self
            .files()
            .entries
            .range(range)
            .map(|(_, (_, e))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let files = self.files();
        Ok(LogState {
            last_purged_log_id: files.meta.last_purged,
            last_log_id: files.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut files = self.files();
        let before = files.meta.vote;
        files.meta.vote = Some(*vote);
        if let Err(e) = files.save_meta(ErrorSubject::Vote) {
            files.meta.vote = before;
            return Err(e);
        }
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.files().meta.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut files = self.files();
        let before = files.meta.committed;
        files.meta.committed = committed;
        if let Err(e) = files.save_meta(ErrorSubject::Store) {
            files.meta.committed = before;
            return Err(e);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.files().meta.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut files = self.files();
        let mut lines = Vec::new();
        let mut batch = Vec::new();
        for entry in entries {
            let offset = files.log_len + lines.len() as u64;
            serde_json::to_writer(&mut lines, &entry).map_err(write_error)?;
            lines.push(b'\n');
            batch.push((offset, entry));
        }
        match files.append_lines(&lines) {
            Ok(()) => {
                for (offset, entry) in batch {
                    files
                        .entries
                        .insert(entry.get_log_id().index, (offset, entry));
                }
                drop(files);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let shown = format!("{}: {e}", files.log_path.display());
                drop(files);
                callback.log_io_completed(Err(std::io::Error::new(e.kind(), shown.clone())));
                Err(write_error(shown))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut files = self.files();
        let Some(&(offset, _)) = files.entries.get(&log_id.index) else {
            return Ok(());
        };
        files.log.set_len(offset).map_err(write_error)?;
        files.log.sync_data().map_err(write_error)?;
        files.log_len = offset;
        files.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut files = self.files();
        if files
            .meta
            .last_purged
            .is_some_and(|p| p.index >= log_id.index)
        {
            return Ok(());
        }
        let before = files.meta.last_purged;
        files.meta.last_purged = Some(log_id);
        if let Err(e) = files.save_meta(ErrorSubject::Logs) {
            files.meta.last_purged = before;
            return Err(e);
        }
        let kept = files.entries.split_off(&(log_id.index + 1));
        files.entries = kept;
        files.rewrite()
    }
}
