//! Crash recovery at open: the journal is read once, folded, and each
//! derived file receives exactly the entries it lacks (a torn last line
//! is cut first).

use std::path::Path;

use super::derived::{derived_lines, follower_edge_of, timelines_of, FileLines, FileMap};
use crate::fold::JournalFold;
use crate::journal::Journal;
use crate::jsonl;
use crate::layout::Layout;
use crate::record::SeqOnly;
use crate::{io_err, Result};

/// What opening a server's directory found: the journal, its fold, and
/// the derived-file lines that were missing (not yet written).
pub(super) struct Recovered {
    pub(super) journal: Journal,
    pub(super) state: JournalFold,
    pub(super) missing: FileLines,
    /// The buffer the lines were made in, for reuse.
    pub(super) scratch: Vec<u8>,
}

/// Opens (or creates) the journal under `layout` and gathers the lines
/// each derived file lacks.
pub(super) fn recover(layout: &Layout, cluster_id: u32) -> Result<Recovered> {
    std::fs::create_dir_all(layout.local_clients()).map_err(io_err(layout.dir()))?;
    let mut state = JournalFold::new(cluster_id);
    // Seq of the newest line of each derived file, read once per file.
    let mut file_seq: FileMap<u64> = FileMap::default();
    let mut lines = FileLines::default();
    let mut scratch = Vec::new();
    let mut restored = 0usize;
    let mut failure = None;
    let journal = Journal::open(&layout.journal(), |entry| {
        state.apply(entry);
        let timelines = timelines_of(&state, entry);
        let follower_edge = follower_edge_of(&state, entry);
        derived_lines(
            cluster_id,
            entry,
            &timelines,
            follower_edge,
            &mut scratch,
            |file, line| {
                if line.is_empty() {
                    // The file must merely exist.
                    if !lines.has(file) && !layout.derived(file).exists() {
                        lines.touch(file);
                    }
                    return;
                }
                let last = match file_seq.get(&file) {
                    Some(s) => *s,
                    None => match last_line_seq(&layout.derived(file)) {
                        Ok(s) => s,
                        Err(e) => {
                            failure.get_or_insert(e);
                            0
                        }
                    },
                };
                if entry.seq > last {
                    lines.push(file, line);
                    restored += 1;
                    file_seq.insert(file, entry.seq);
                } else {
                    file_seq.insert(file, last);
                }
            },
        );
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if restored > 0 {
        tracing::warn!(
            lines = restored,
            "restored lines of derived files from the journal"
        );
    }
    Ok(Recovered {
        journal,
        state,
        missing: lines,
        scratch,
    })
}

/// The `seq` of the newest complete line of a derived file (0 if none),
/// after cutting a torn last line.
fn last_line_seq(path: &Path) -> Result<u64> {
    jsonl::repair_tail(path)?;
    let mut seq = 0;
    jsonl::read_back(path, |line| match serde_json::from_slice::<SeqOnly>(line) {
        Ok(s) => {
            seq = s.seq;
            false
        }
        Err(_) => {
            tracing::warn!(file = %path.display(), "skipped a corrupt line");
            true
        }
    })?;
    Ok(seq)
}
