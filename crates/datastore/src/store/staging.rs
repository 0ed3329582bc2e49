//! Group commit: ops staged one by one (each decided against the state
//! the ops before it left), then written with one journal write, fsynced
//! without the store's lock, and only then derived into the files.

use std::fs::File;
use std::path::PathBuf;

use super::derived::{follower_edge_of, timelines_of};
use super::Store;
use crate::record::{Entry, Op};
use crate::{io_err, Result};

/// Journal entries written but not yet fsynced (see [`Store::write_staged`]).
pub struct Pending {
    file: File,
    path: PathBuf,
    pub entries: Vec<Entry>,
    /// The timelines each entry writes to (see [`timelines_of`]), as of
    /// when it was staged: whose open streams to wake once committed.
    pub timelines: Vec<Vec<u32>>,
    /// Whether each entry writes a follower edge itself (see
    /// [`follower_edge_of`]), as of when it was staged.
    follower_edges: Vec<bool>,
}

impl Pending {
    /// fsyncs the journal: when this returns, the entries survive a crash.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

impl Store {
    /// Gives `op` the next sequence number and applies it to the in-memory
    /// state at once, so the next op of the same batch is decided against
    /// it; [`Store::commit_staged`] then writes the whole batch with one
    /// fsync (group commit). Returns the op's sequence number.
    ///
    /// The caller checks `epoch` against [`Store::last_epoch`] first (the
    /// writer refuses the batch otherwise): an epoch that went back is a
    /// bug here, not an input. Sequence numbers grow by one per entry from
    /// 0, so the sum cannot come near `u64::MAX`.
    pub fn stage(&mut self, op: Op, epoch: u64) -> u64 {
        assert!(epoch >= self.journal.last_epoch(), "epochs never go back");
        let seq = self.journal.last_seq() + self.staged.len() as u64 + 1;
        let entry = Entry { seq, epoch, op };
        self.state.apply(&entry);
        self.staged_timelines
            .push(timelines_of(&self.state, &entry));
        self.staged_follower_edges
            .push(follower_edge_of(&self.state, &entry));
        self.staged.push(entry);
        seq
    }

    /// Writes the staged entries: journal (fsynced), then derived files.
    /// On error the in-memory state is ahead of the disk: the caller must
    /// stop the process, and recovery at the next start is exact.
    pub fn commit_staged(&mut self) -> Result<Vec<Entry>> {
        let pending = self.write_staged()?;
        pending.sync()?;
        self.finish(&pending)?;
        Ok(pending.entries)
    }

    /// The first half of [`Store::commit_staged`]: writes the staged
    /// entries to the journal, not yet fsynced. The caller fsyncs with
    /// [`Pending::sync`] — without holding the lock that guards this store,
    /// so that readers are not held up by the disk — and then calls
    /// [`Store::finish`]. Each entry is serialized here, once.
    pub fn write_staged(&mut self) -> Result<Pending> {
        let entries = std::mem::take(&mut self.staged);
        let timelines = std::mem::take(&mut self.staged_timelines);
        let follower_edges = std::mem::take(&mut self.staged_follower_edges);
        self.journal.write(&entries)?;
        Ok(Pending {
            file: self.journal.sync_handle()?,
            path: self.journal.path().to_path_buf(),
            entries,
            timelines,
            follower_edges,
        })
    }

    /// The second half: writes the derived files of durable entries. They
    /// are written only once the journal holds the entries durably, so a
    /// derived file never holds a line the journal could lose.
    pub fn finish(&mut self, pending: &Pending) -> Result<()> {
        self.derived.write(
            &pending.entries,
            &pending.timelines,
            &pending.follower_edges,
        )
    }
}
