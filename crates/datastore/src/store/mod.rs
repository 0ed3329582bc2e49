//! One server's datastore: the journal, the in-memory [`JournalFold`], and
//! the plain files derived from them. The primary stages and commits entries
//! ([`Store::stage`], [`Store::commit_staged`]); a secondary appends the
//! primary's journal lines as they came ([`Store::append_lines`]). Both
//! derive the other files from the same entries, so their directories hold
//! the same lines.
//!
//! * `recovery`: at open, each derived file gets the entries it lacks.
//! * `staging`: group commit (stage, write, fsync outside the lock, finish).
//! * `derived`: which lines an entry writes into which file, and writing them.
//! * `timeline_read`: timelines read from the end of their files.

mod derived;
mod recovery;
mod staging;
#[cfg(test)]
mod tests;
mod timeline_read;

use std::sync::Arc;

use crate::fold::JournalFold;
use crate::journal::Journal;
use crate::layout::Layout;
use crate::record::Entry;
use crate::{io_err, Result};

use self::derived::DerivedFiles;
pub use self::derived::{follower_edge_of, timelines_of};
pub use self::staging::Pending;
pub use self::timeline_read::{read_posts_since, read_timeline, read_timeline_after};

pub struct Store {
    layout: Layout,
    cluster_id: u32,
    journal: Journal,
    state: JournalFold,
    /// The derived files and the lines gathered for them.
    derived: DerivedFiles,
    /// Entries applied to `state` by [`Store::stage`] but not yet written.
    staged: Vec<Entry>,
    /// The timelines each staged entry writes to.
    staged_timelines: Vec<Vec<u32>>,
    /// Whether each staged entry writes a follower edge itself.
    staged_follower_edges: Vec<bool>,
}

impl Store {
    /// Opens (or creates) the datastore of a server of `cluster_id`,
    /// recovering from a crash: a torn line is cut, and each derived file
    /// gets the journal entries it is missing.
    pub fn open(layout: Layout, cluster_id: u32) -> Result<Store> {
        let recovered = recovery::recover(&layout, cluster_id)?;
        let mut store = Store {
            derived: DerivedFiles::new(
                layout.clone(),
                cluster_id,
                recovered.missing,
                recovered.scratch,
            ),
            layout,
            cluster_id,
            journal: recovered.journal,
            state: recovered.state,
            staged: Vec::new(),
            staged_timelines: Vec::new(),
            staged_follower_edges: Vec::new(),
        };
        store.derived.flush()?;
        Ok(store)
    }

    /// Appends entries durably (journal fsynced), then updates the state and
    /// the derived files. Entries must continue the journal's sequence.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.journal.append(entries)?;
        self.apply_and_derive(entries)
    }

    /// Like [`Store::append`], for entries that come with their journal
    /// lines (a secondary's, from the primary): the lines are stored as they
    /// came, not serialized again.
    /// Each line must be its entry's serialization on one line
    /// ([`jsonl::is_storable_line`]); entries must continue the sequence.
    pub fn append_lines(&mut self, entries: &[Entry], lines: &[Arc<[u8]>]) -> Result<()> {
        self.journal.write_lines(entries, lines)?;
        self.journal.sync()?;
        self.apply_and_derive(entries)
    }

    fn apply_and_derive(&mut self, entries: &[Entry]) -> Result<()> {
        // Each entry's timelines are taken right after it is applied, before
        // a later follow of the same batch can change them.
        let mut timelines = Vec::with_capacity(entries.len());
        let mut follower_edges = Vec::with_capacity(entries.len());
        for e in entries {
            self.state.apply(e);
            timelines.push(derived::timelines_of(&self.state, e));
            follower_edges.push(derived::follower_edge_of(&self.state, e));
        }
        self.derived.write(entries, &timelines, &follower_edges)
    }

    /// Cuts journal entries after `seq` and rebuilds every derived file from
    /// what remains. Used when a rejoining server holds a suffix that the
    /// current primary never committed (so no client was ever told of it).
    pub fn truncate_after(&mut self, seq: u64) -> Result<()> {
        tracing::warn!(
            after_seq = seq,
            last_seq = self.journal.last_seq(),
            "cutting uncommitted journal entries and rebuilding the files"
        );
        self.journal.truncate_after(seq)?;
        self.derived.close_all();
        let gc = self.layout.global_clients();
        if gc.exists() {
            std::fs::remove_file(&gc).map_err(io_err(&gc))?;
        }
        let lc = self.layout.local_clients();
        if lc.exists() {
            std::fs::remove_dir_all(&lc).map_err(io_err(&lc))?;
        }
        *self = Store::open(self.layout.clone(), self.cluster_id)?;
        Ok(())
    }

    pub fn state(&self) -> &JournalFold {
        &self.state
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn cluster_id(&self) -> u32 {
        self.cluster_id
    }

    pub fn last_seq(&self) -> u64 {
        self.journal.last_seq()
    }

    pub fn last_epoch(&self) -> u64 {
        self.journal.last_epoch()
    }

    pub fn epochs(&self) -> &[(u64, u64)] {
        self.journal.epochs()
    }

    pub fn read_journal(&self, after_seq: u64, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        self.journal.read_after(after_seq, max_entries, max_bytes)
    }

    /// Journal lines after `after_seq`, as stored (see [`Journal::read_lines_after`]).
    pub fn read_journal_lines(
        &self,
        after_seq: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Vec<crate::journal::Line> {
        self.journal
            .read_lines_after(after_seq, max_entries, max_bytes)
    }

    /// The shared handle of the journal's newest lines, readable without
    /// this store's lock. Replaced when the store is rebuilt.
    pub fn recent_lines(&self) -> std::sync::Arc<std::sync::Mutex<crate::journal::RecentLines>> {
        self.journal.recent()
    }
}
