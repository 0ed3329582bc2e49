//! Per-destination positions, persisted, so a restarted sync service
//! resumes where it stopped.
//!
//! `<datastore>/<cluster>/sync/positions.json` holds, for each destination
//! cluster, the journal seq up to which every op for that destination has
//! been acknowledged by it:
//!
//! ```json
//! {"positions": {"1": 120, "2": 118}}
//! ```
//!
//! Positions move in memory as destinations acknowledge batches; the file
//! is rewritten whole and atomically at most every
//! [`POSITIONS_FLUSH_INTERVAL_MS`](crate::limits::POSITIONS_FLUSH_INTERVAL_MS)
//! and at shutdown, not after every batch: a crash then sends at most that
//! much again, and every op is idempotent at the receiver. (Writing after
//! every batch cost an fsync per batch per destination, about a fifth of a
//! deployment's CPU at low load.) A missing or corrupt file means "start
//! from 0": sending a change again costs time, never correctness.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The on-disk form.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PositionsFile {
    positions: BTreeMap<u32, u64>,
}

/// The positions of every destination, shared by the destination tasks.
#[derive(Debug)]
pub struct Positions {
    path: PathBuf,
    seqs: Mutex<Seqs>,
    /// Held while the file is written, so that two flushes never write the
    /// one temporary file at the same time.
    writing: Mutex<()>,
}

#[derive(Debug, Default)]
struct Seqs {
    by_dest: BTreeMap<u32, u64>,
    /// Moved since the file was last written.
    dirty: bool,
}

/// Where the positions of cluster `cluster_id` live under `datastore`.
pub fn positions_path(datastore: &Path, cluster_id: u32) -> PathBuf {
    datastore
        .join(cluster_id.to_string())
        .join("sync")
        .join("positions.json")
}

/// Reads the positions file: a missing file holds no positions; a file that
/// cannot be read or parsed is an error (its text says why).
fn read_file(path: &Path) -> Result<BTreeMap<u32, u64>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    serde_json::from_slice::<PositionsFile>(&bytes)
        .map(|file| file.positions)
        .map_err(|e| format!("corrupt {}: {e}", path.display()))
}

impl Positions {
    /// Loads the positions at `path`. A file that cannot be read is reported
    /// and every destination starts from 0.
    pub fn load(path: PathBuf) -> Positions {
        let seqs = match read_file(&path) {
            Ok(seqs) => seqs,
            Err(problem) => {
                tracing::warn!(
                    %problem,
                    "starting every destination from the beginning of the journal \
                     (changes are sent again; receivers skip what they have)"
                );
                BTreeMap::new()
            }
        };
        Positions {
            path,
            seqs: Mutex::new(Seqs {
                by_dest: seqs,
                dirty: false,
            }),
            writing: Mutex::new(()),
        }
    }

    /// Every destination's position.
    pub fn all(&self) -> BTreeMap<u32, u64> {
        self.lock().by_dest.clone()
    }

    /// The seq up to which `dest` has acknowledged everything (0: nothing).
    pub fn get(&self, dest: u32) -> u64 {
        self.lock().by_dest.get(&dest).copied().unwrap_or(0)
    }

    /// Records that `dest` acknowledged everything up to `seq` (in memory;
    /// see [`Positions::flush`]). Positions only move forward.
    pub fn advance(&self, dest: u32, seq: u64) {
        let mut seqs = self.lock();
        let old = seqs.by_dest.get(&dest).copied().unwrap_or(0);
        // An invariant of the feed, not a check of input: it advances only
        // to a `last_seq` beyond its position (`parse_entries` made the
        // seqs of a reply rise past it).
        assert!(
            seq >= old,
            "position of cluster {dest} moves back: {old} -> {seq}"
        );
        if seq > old {
            seqs.by_dest.insert(dest, seq);
            seqs.dirty = true;
        }
    }

    /// Writes the file if a position moved since it was last written
    /// (blocking: fsync). On an error it is tried again at the next flush.
    pub fn flush(&self) -> tsn_datastore::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let file = {
            let mut seqs = self.lock();
            if !seqs.dirty {
                return Ok(());
            }
            seqs.dirty = false;
            PositionsFile {
                positions: seqs.by_dest.clone(),
            }
        };
        let mut bytes = serde_json::to_vec(&file).expect("positions always serialize");
        bytes.push(b'\n');
        let result = tsn_datastore::jsonl::write_atomic(&self.path, &bytes);
        if result.is_err() {
            self.lock().dirty = true;
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seqs> {
        // A panic while holding the lock cannot leave the map half-changed
        // (one insert), so a poisoned lock is still good.
        tsn_cluster::sync::lock(&self.seqs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = positions_path(dir.path(), 2);
        assert!(path.ends_with("2/sync/positions.json"));
        let p = Positions::load(path.clone());
        assert_eq!((p.get(1), p.get(2), p.get(3)), (0, 0, 0));
        p.advance(1, 10);
        p.advance(3, 7);
        p.advance(1, 12);
        assert!(
            !path.exists(),
            "positions are written by flush, not by advance"
        );
        p.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"positions\":{\"1\":12,\"3\":7}}\n");
        let again = Positions::load(path);
        assert_eq!((again.get(1), again.get(2), again.get(3)), (12, 0, 7));
    }

    #[test]
    fn a_corrupt_file_is_reported_and_starts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = positions_path(dir.path(), 1);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for bad in [
            &b"{\"positions\": {\"1\": 5"[..],
            b"not json",
            b"{\"positions\": {\"one\": 5}}",
            b"{\"positions\": {\"1\": -5}}",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                read_file(&path).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
            let p = Positions::load(path.clone());
            assert_eq!(p.get(1), 0);
        }
        // Writing replaces the corrupt file.
        let p = Positions::load(path.clone());
        p.advance(1, 3);
        p.flush().unwrap();
        assert_eq!(Positions::load(path).get(1), 3);
    }

    #[test]
    fn a_missing_file_is_all_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = positions_path(dir.path(), 1);
        assert_eq!(read_file(&path), Ok(BTreeMap::new()));
    }

    #[test]
    #[should_panic(expected = "moves back")]
    fn positions_never_move_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = Positions::load(positions_path(dir.path(), 1));
        p.advance(2, 5);
        p.advance(2, 4);
    }
}
