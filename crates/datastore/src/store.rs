//! One server's datastore: the journal, the in-memory [`State`], and the
//! plain files derived from them. The primary stages and commits entries
//! ([`Store::stage`], [`Store::commit_staged`]); a secondary appends the
//! primary's journal lines as they came ([`Store::append_lines`]). Both
//! derive the other files from the same entries, so their directories hold
//! the same lines.

use std::collections::hash_map;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::journal::Journal;
use crate::jsonl;
use crate::layout::{DerivedFile, Layout};
use crate::limits::{OPEN_FILES_MAX, TIMELINE_READ_MAX_POSTS};
use crate::record::{time_text, ClientLine, EdgeLine, Entry, Op, Post, SeqOnly, TimelineLine};
use crate::state::State;
use crate::{io_err, Error, Result};

/// Line buffers of one batch kept for the next one, at most this many
/// (as many as open files are kept)...
const SPARE_BUFFERS_MAX: usize = OPEN_FILES_MAX;
/// ... and only those of at most this capacity, so that at most 8 MiB is
/// kept (a recovery may build one huge buffer, not worth keeping).
const SPARE_BUFFER_MAX_BYTES: usize = 16 * 1024;

/// Journal entries written but not yet fsynced (see [`Store::write_staged`]).
pub struct Pending {
    file: File,
    path: PathBuf,
    pub entries: Vec<Entry>,
    /// The timelines each entry writes to (see [`timelines_of`]), as of
    /// when it was staged: whose open streams to wake once committed.
    pub timelines: Vec<Vec<u32>>,
}

impl Pending {
    /// fsyncs the journal: when this returns, the entries survive a crash.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

pub struct Store {
    layout: Layout,
    cluster_id: u32,
    journal: Journal,
    state: State,
    /// Open append handles of the derived files.
    files: FileMap<File>,
    /// The derived-file lines being gathered, one buffer per file.
    batch: Batch,
    /// A reused buffer for the lines of one entry.
    scratch: Vec<u8>,
    /// Entries applied to `state` by [`Store::stage`] but not yet written.
    staged: Vec<Entry>,
    /// The timelines each staged entry writes to.
    staged_timelines: Vec<Vec<u32>>,
}

impl Store {
    /// Opens (or creates) the datastore of a server of `cluster_id`,
    /// recovering from a crash: a torn line is cut, and each derived file
    /// gets the journal entries it is missing.
    pub fn open(layout: Layout, cluster_id: u32) -> Result<Store> {
        std::fs::create_dir_all(layout.local_clients()).map_err(io_err(layout.dir()))?;
        let mut state = State::default();
        // Seq of the newest line of each derived file, read once per file.
        let mut file_seq: FileMap<u64> = FileMap::default();
        let mut batch = Batch::default();
        let mut scratch = Vec::new();
        let mut restored = 0usize;
        let mut failure = None;
        let journal = Journal::open(&layout.journal(), |entry| {
            state.apply(entry);
            let timelines = timelines_of(&state, entry);
            derive(cluster_id, entry, &timelines, &mut scratch, |file, line| {
                if line.is_empty() {
                    // The file must merely exist.
                    if !batch.has(file) && !layout.derived(file).exists() {
                        batch.touch(file);
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
                    batch.push(file, line);
                    restored += 1;
                    file_seq.insert(file, entry.seq);
                } else {
                    file_seq.insert(file, last);
                }
            });
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut store = Store {
            layout,
            cluster_id,
            journal,
            state,
            files: FileMap::default(),
            batch,
            scratch,
            staged: Vec::new(),
            staged_timelines: Vec::new(),
        };
        if restored > 0 {
            tracing::warn!(
                lines = restored,
                "restored lines of derived files from the journal"
            );
        }
        store.write_batch()?;
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
        for e in entries {
            self.state.apply(e);
            timelines.push(timelines_of(&self.state, e));
        }
        self.write_derived(entries, &timelines)
    }

    /// Gives `op` the next sequence number and applies it to the in-memory
    /// state at once, so the next op of the same batch is decided against
    /// it; [`Store::commit_staged`] then writes the whole batch with one
    /// fsync (group commit). Returns the op's sequence number.
    pub fn stage(&mut self, op: Op, epoch: u64) -> u64 {
        assert!(epoch >= self.journal.last_epoch(), "epochs never go back");
        let seq = self.journal.last_seq() + self.staged.len() as u64 + 1;
        let entry = Entry { seq, epoch, op };
        self.state.apply(&entry);
        self.staged_timelines
            .push(timelines_of(&self.state, &entry));
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
        self.journal.write(&entries)?;
        Ok(Pending {
            file: self.journal.sync_handle()?,
            path: self.journal.path().to_path_buf(),
            entries,
            timelines,
        })
    }

    /// The second half: writes the derived files of durable entries. They
    /// are written only once the journal holds the entries durably, so a
    /// derived file never holds a line the journal could lose.
    pub fn finish(&mut self, pending: &Pending) -> Result<()> {
        self.write_derived(&pending.entries, &pending.timelines)
    }

    /// Writes the derived-file lines of `entries`, whose timelines are
    /// `timelines`: one write per file, its lines in entry order.
    fn write_derived(&mut self, entries: &[Entry], timelines: &[Vec<u32>]) -> Result<()> {
        debug_assert_eq!(entries.len(), timelines.len());
        let batch = &mut self.batch;
        for (e, timelines) in entries.iter().zip(timelines) {
            derive(
                self.cluster_id,
                e,
                timelines,
                &mut self.scratch,
                |file, line| {
                    if line.is_empty() {
                        batch.touch(file);
                    } else {
                        batch.push(file, line);
                    }
                },
            );
        }
        self.write_batch()
    }

    /// Writes the gathered lines, one write per file, and empties the batch
    /// (also on error, so that a failed batch is never written later).
    fn write_batch(&mut self) -> Result<()> {
        let mut files = std::mem::take(&mut self.batch.files);
        self.batch.at.clear();
        let mut result = Ok(());
        for (file, bytes) in &files {
            if result.is_ok() {
                result = self.write_file(*file, bytes);
            }
        }
        for (_, bytes) in files.drain(..) {
            self.batch.recycle(bytes);
        }
        self.batch.files = files;
        result
    }

    fn write_file(&mut self, file: DerivedFile, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            // A user's files exist from the moment it exists; an open
            // handle means the file is there.
            if !self.files.contains_key(&file) {
                jsonl::open_append(&self.layout.derived(file))?;
            }
            return Ok(());
        }
        if self.files.len() >= OPEN_FILES_MAX && !self.files.contains_key(&file) {
            self.files.clear();
        }
        // The path is built only when a file is opened (or on an error).
        let handle = match self.files.entry(file) {
            hash_map::Entry::Occupied(o) => o.into_mut(),
            hash_map::Entry::Vacant(v) => v.insert(jsonl::open_append(&self.layout.derived(file))?),
        };
        debug_assert!(bytes.ends_with(b"\n"));
        handle.write_all(bytes).map_err(|source| Error::Io {
            path: self.layout.derived(file),
            source,
        })
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
        self.files.clear();
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

    pub fn state(&self) -> &State {
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

/// The last `limit` lines of a user's timeline with `seq <= max_seq`,
/// newest first. Reads from the end of the file: the cost does not depend
/// on how long the timeline is.
pub fn read_timeline(layout: &Layout, user: u32, limit: usize, max_seq: u64) -> Vec<TimelineLine> {
    let limit = limit.min(TIMELINE_READ_MAX_POSTS);
    let path = layout.timeline(user);
    let mut out = Vec::new();
    if limit == 0 {
        return out;
    }
    let res = jsonl::read_back(&path, |line| {
        if let Some(l) = jsonl::parse::<TimelineLine>(&path, line) {
            if l.seq <= max_seq {
                out.push(l);
            }
        }
        out.len() < limit
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "reading a timeline failed");
    }
    out
}

/// Timeline lines with `after_seq < seq <= max_seq`, oldest first, at most
/// `limit` (the newest ones, if there are more).
pub fn read_timeline_after(
    layout: &Layout,
    user: u32,
    after_seq: u64,
    max_seq: u64,
    limit: usize,
) -> Vec<TimelineLine> {
    let path = layout.timeline(user);
    let limit = limit.min(TIMELINE_READ_MAX_POSTS);
    let mut out = Vec::new();
    let res = jsonl::read_back(&path, |line| {
        let Some(l) = jsonl::parse::<TimelineLine>(&path, line) else {
            return true;
        };
        if l.seq <= after_seq {
            return false;
        }
        if l.seq <= max_seq {
            out.push(l);
        }
        out.len() < limit
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "reading a timeline failed");
    }
    out.reverse();
    out
}

/// `author`'s own posts with `ts_ms >= since_ms`, oldest first, at most
/// `limit`. Reads back from the end until an older post of the author.
pub fn read_posts_since(layout: &Layout, author: u32, since_ms: i64, limit: usize) -> Vec<Post> {
    let path = layout.timeline(author);
    let limit = limit.min(TIMELINE_READ_MAX_POSTS);
    let mut out = Vec::new();
    let res = jsonl::read_back(&path, |line| {
        let Some(l) = jsonl::parse::<TimelineLine>(&path, line) else {
            return true;
        };
        if l.post.author != author {
            return true;
        }
        if l.post.ts_ms < since_ms {
            return false;
        }
        out.push(l.post);
        out.len() < limit
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "reading a timeline failed");
    }
    out.reverse();
    out
}

/// A map keyed by [`DerivedFile`], with a hash of a few integer operations.
type FileMap<V> = HashMap<DerivedFile, V, BuildHasherDefault<FileHasher>>;

/// Hashes a [`DerivedFile`] (one `u64`, see [`DerivedFile::packed`]) by a
/// multiply-xorshift mix. The keys are user ids chosen by the service, not
/// by an adversary, so a keyed hash (SipHash) would buy nothing here.
#[derive(Default)]
struct FileHasher(u64);

impl Hasher for FileHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        let mut h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 32;
        self.0 = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        self.0 ^= self.0 >> 32;
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
}

/// The derived-file lines of one batch, one buffer per file, files in the
/// order first seen and each file's lines in entry order: one `write` per
/// file per batch. The buffers are reused from batch to batch.
#[derive(Default)]
struct Batch {
    at: FileMap<usize>,
    files: Vec<(DerivedFile, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl Batch {
    fn slot(&mut self, file: DerivedFile) -> &mut Vec<u8> {
        let i = match self.at.entry(file) {
            hash_map::Entry::Occupied(o) => *o.get(),
            hash_map::Entry::Vacant(v) => {
                self.files
                    .push((file, self.spare.pop().unwrap_or_default()));
                *v.insert(self.files.len() - 1)
            }
        };
        &mut self.files[i].1
    }

    fn has(&self, file: DerivedFile) -> bool {
        self.at.contains_key(&file)
    }

    /// The file must exist, even without a line.
    fn touch(&mut self, file: DerivedFile) {
        self.slot(file);
    }

    /// Adds one line (without its newline) to the file's buffer.
    fn push(&mut self, file: DerivedFile, line: &[u8]) {
        let buf = self.slot(file);
        buf.extend_from_slice(line);
        buf.push(b'\n');
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= SPARE_BUFFER_MAX_BYTES && self.spare.len() < SPARE_BUFFERS_MAX {
            buf.clear();
            self.spare.push(buf);
        }
    }
}

/// The timelines `entry` writes its post into, given `state` folded up to
/// and including it: for a post, its author's and its local followers'
/// ([`State::post_timelines`]); for a delivery, its recipients'; none for
/// other ops. Taken when the entry is applied, because a later follow
/// changes what a post's followers are.
pub fn timelines_of(state: &State, entry: &Entry) -> Vec<u32> {
    match &entry.op {
        Op::Post(p) => state.post_timelines(p),
        Op::Deliver { to, .. } => to.clone(),
        _ => Vec::new(),
    }
}

/// Calls `emit(file, line)` with each derived-file line of `entry`, in
/// order. An empty line means the file
/// must merely exist. `timelines` are the timelines of a post or delivery
/// ([`timelines_of`]). `scratch` holds the lines (it is overwritten).
fn derive(
    cluster_id: u32,
    entry: &Entry,
    timelines: &[u32],
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(DerivedFile, &[u8]),
) {
    scratch.clear();
    let seq = entry.seq;
    let edge = |scratch: &mut Vec<u8>, op: &str, user, since_ms, version| {
        let line = EdgeLine {
            seq,
            op: op.into(),
            user,
            since_ms,
            version,
        };
        serde_json::to_writer(scratch, &line).expect("records always serialize");
    };
    match &entry.op {
        Op::User { user, cluster } => {
            let line = ClientLine {
                seq,
                user: *user,
                cluster: *cluster,
            };
            serde_json::to_writer(&mut *scratch, &line).expect("records always serialize");
            emit(DerivedFile::GlobalClients, scratch);
            if *cluster == cluster_id {
                emit(DerivedFile::Timeline(*user), b"");
                emit(DerivedFile::Following(*user), b"");
                emit(DerivedFile::Followers(*user), b"");
            }
        }
        Op::Follow {
            user,
            target,
            since_ms,
        } => {
            edge(scratch, "follow", *target, Some(*since_ms), None);
            emit(DerivedFile::Following(*user), scratch);
        }
        Op::Unfollow { user, target } => {
            edge(scratch, "unfollow", *target, None, None);
            emit(DerivedFile::Following(*user), scratch);
        }
        Op::Post(post) | Op::Deliver { post, .. } => {
            // The same line in every timeline it goes into: made once.
            debug_assert!(match &entry.op {
                Op::Post(p) => timelines.first() == Some(&p.author),
                Op::Deliver { to, .. } => timelines == to.as_slice(),
                _ => false,
            });
            let line = TimelineLine {
                seq,
                time: time_text(post.ts_ms),
                post: post.clone(),
            };
            serde_json::to_writer(&mut *scratch, &line).expect("records always serialize");
            for t in timelines {
                emit(DerivedFile::Timeline(*t), scratch);
            }
        }
        Op::AddFollower {
            user,
            follower,
            since_ms,
            version,
        } => {
            edge(scratch, "add", *follower, Some(*since_ms), Some(*version));
            emit(DerivedFile::Followers(*user), scratch);
        }
        Op::RemoveFollower {
            user,
            follower,
            version,
        } => {
            edge(scratch, "remove", *follower, None, Some(*version));
            emit(DerivedFile::Followers(*user), scratch);
        }
        // Lives in the journal and its fold only: no derived file.
        Op::Shown { .. } => {}
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn post(id: &str, author: u32, ts_ms: i64) -> Post {
        Post {
            id: id.into(),
            author,
            text: format!("text of {id}"),
            ts_ms,
        }
    }

    fn append_ops(store: &mut Store, ops: Vec<Op>) {
        let mut seq = store.last_seq();
        let entries: Vec<Entry> = ops
            .into_iter()
            .map(|op| {
                seq += 1;
                Entry { seq, epoch: 1, op }
            })
            .collect();
        store.append(&entries).unwrap();
    }

    #[test]
    fn files_follow_the_journal_and_recover_after_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1, 1);
        let mut store = Store::open(layout.clone(), 1).unwrap();
        append_ops(
            &mut store,
            vec![
                Op::User {
                    user: 1,
                    cluster: 1,
                },
                Op::User {
                    user: 2,
                    cluster: 2,
                },
                Op::Post(post("1-a", 1, 10)),
                Op::Post(post("1-b", 1, 20)),
                Op::Follow {
                    user: 1,
                    target: 2,
                    since_ms: 15,
                },
            ],
        );
        let tl = read_timeline(&layout, 1, 20, u64::MAX);
        assert_eq!(
            tl.iter().map(|l| l.post.id.as_str()).collect::<Vec<_>>(),
            vec!["1-b", "1-a"]
        );
        assert!(layout.following(1).exists() && !layout.client_dir(2).exists());
        drop(store);

        // Crash in the middle of writing the timeline: its last line is
        // torn. The journal has it, so it comes back whole.
        let tpath = layout.timeline(1);
        let full = std::fs::read(&tpath).unwrap();
        std::fs::write(&tpath, &full[..full.len() - 7]).unwrap();
        let store = Store::open(layout.clone(), 1).unwrap();
        assert_eq!(std::fs::read(&tpath).unwrap(), full);
        assert_eq!(store.last_seq(), 5);
        assert!(store.state().follows(1, 2));
    }

    #[test]
    fn reads_after_and_since() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1, 1);
        let mut store = Store::open(layout.clone(), 1).unwrap();
        let mut ops = vec![Op::User {
            user: 1,
            cluster: 1,
        }];
        for i in 0..30 {
            ops.push(Op::Post(post(&format!("1-{i}"), 1, 100 + i)));
            ops.push(Op::Deliver {
                to: vec![1],
                post: post(&format!("2-{i}"), 2, 100 + i),
            });
        }
        append_ops(&mut store, ops);
        let last = read_timeline(&layout, 1, 20, u64::MAX);
        assert_eq!(last.len(), 20);
        assert_eq!(last[0].post.id, "2-29");
        let after = read_timeline_after(&layout, 1, last[1].seq, u64::MAX, 100);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].post.id, "2-29");
        let since = read_posts_since(&layout, 1, 127, 100);
        assert_eq!(
            since.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            vec!["1-27", "1-28", "1-29"]
        );
        // Lines not yet committed (seq > max_seq) are not shown.
        let upto = read_timeline(&layout, 1, 5, 10);
        assert!(upto.iter().all(|l| l.seq <= 10));
    }

    #[test]
    fn truncate_rebuilds_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1, 1);
        let mut store = Store::open(layout.clone(), 1).unwrap();
        append_ops(
            &mut store,
            vec![
                Op::User {
                    user: 1,
                    cluster: 1,
                },
                Op::Post(post("1-a", 1, 10)),
                Op::Post(post("1-b", 1, 20)),
            ],
        );
        store.truncate_after(2).unwrap();
        assert_eq!(store.last_seq(), 2);
        assert!(!store.state().has_post(1, "1-b"));
        let tl = read_timeline(&layout, 1, 20, u64::MAX);
        assert_eq!(tl.len(), 1);
        assert_eq!(tl[0].post.id, "1-a");
    }

    /// Every file under a server's directory and its bytes, by relative path.
    fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).unwrap().display().to_string();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        let mut out = std::collections::BTreeMap::new();
        walk(dir, dir, &mut out);
        out
    }

    /// A mix of every kind of op, with post texts that need escaping.
    fn mixed_ops() -> Vec<Op> {
        let odd = "\"quoted\"}} {braces] \\ \n\ttab \u{1} é ✓ 😀 </script>";
        let mut ops = vec![
            Op::User {
                user: 1,
                cluster: 1,
            },
            Op::User {
                user: 4,
                cluster: 1,
            },
            Op::User {
                user: 2,
                cluster: 2,
            },
            Op::Follow {
                user: 1,
                target: 2,
                since_ms: 15,
            },
            Op::AddFollower {
                user: 1,
                follower: 4,
                since_ms: 16,
                version: 9,
            },
        ];
        for i in 0..6 {
            // 4 follows 1 from post 2 on, in the same batch as the posts,
            // and unfollows before post 4: posts 2 and 3 go into 4's
            // timeline in their own entries, the others do not.
            if i == 2 {
                ops.push(Op::Follow {
                    user: 4,
                    target: 1,
                    since_ms: 1_700_000_000_000 + i,
                });
            }
            if i == 4 {
                ops.push(Op::Unfollow { user: 4, target: 1 });
            }
            ops.push(Op::Post(Post {
                id: format!("1-{i}"),
                author: 1,
                text: format!("{odd} {i}"),
                ts_ms: 1_700_000_000_000 + i,
            }));
            ops.push(Op::Deliver {
                to: vec![1, 4],
                post: Post {
                    id: format!("2-{i}"),
                    author: 2,
                    text: format!("{i} {odd}"),
                    ts_ms: 1_700_000_000_500 + i,
                },
            });
        }
        ops.push(Op::Unfollow { user: 1, target: 2 });
        ops.push(Op::RemoveFollower {
            user: 1,
            follower: 4,
            version: 11,
        });
        ops
    }

    /// The derived files as the serialization of the record types makes
    /// them, line for line: what every way of writing them must give.
    fn serialized_views(ops: &[Op]) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut out: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        let mut add = |file: &str, line: String| {
            let f = out.entry(file.to_string()).or_default();
            f.extend_from_slice(line.as_bytes());
            f.push(b'\n');
        };
        let edge = |seq, op: &str, user, since_ms, version| {
            serde_json::to_string(&EdgeLine {
                seq,
                op: op.into(),
                user,
                since_ms,
                version,
            })
            .unwrap()
        };
        let tl = |seq, post: &Post| {
            serde_json::to_string(&TimelineLine {
                seq,
                time: time_text(post.ts_ms),
                post: post.clone(),
            })
            .unwrap()
        };
        // Followed user -> local followers (with since_ms), as folded so far.
        let mut local_followers: BTreeMap<u32, BTreeMap<u32, i64>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let seq = i as u64 + 1;
            match op {
                Op::Follow {
                    user,
                    target,
                    since_ms,
                } => {
                    local_followers
                        .entry(*target)
                        .or_default()
                        .insert(*user, *since_ms);
                }
                Op::Unfollow { user, target } => {
                    local_followers.entry(*target).or_default().remove(user);
                }
                _ => {}
            }
            match op {
                Op::User { user, cluster } => {
                    let line = ClientLine {
                        seq,
                        user: *user,
                        cluster: *cluster,
                    };
                    add("global_clients.data", serde_json::to_string(&line).unwrap());
                }
                Op::Follow {
                    user,
                    target,
                    since_ms,
                } => add(
                    &format!("local_clients/{user}/following.data"),
                    edge(seq, "follow", *target, Some(*since_ms), None),
                ),
                Op::Unfollow { user, target } => add(
                    &format!("local_clients/{user}/following.data"),
                    edge(seq, "unfollow", *target, None, None),
                ),
                Op::AddFollower {
                    user,
                    follower,
                    since_ms,
                    version,
                } => add(
                    &format!("local_clients/{user}/followers.data"),
                    edge(seq, "add", *follower, Some(*since_ms), Some(*version)),
                ),
                Op::RemoveFollower {
                    user,
                    follower,
                    version,
                } => add(
                    &format!("local_clients/{user}/followers.data"),
                    edge(seq, "remove", *follower, None, Some(*version)),
                ),
                Op::Post(p) => {
                    add(
                        &format!("local_clients/{}/timeline.data", p.author),
                        tl(seq, p),
                    );
                    let followers = local_followers.get(&p.author).cloned().unwrap_or_default();
                    for (f, since_ms) in followers {
                        if since_ms <= p.ts_ms {
                            add(&format!("local_clients/{f}/timeline.data"), tl(seq, p));
                        }
                    }
                }
                Op::Deliver { to, post } => {
                    for t in to {
                        add(&format!("local_clients/{t}/timeline.data"), tl(seq, post));
                    }
                }
                Op::Shown { .. } => {}
            }
        }
        out
    }

    #[test]
    fn derived_files_are_the_serialized_records_whichever_way_entries_come() {
        let ops = mixed_ops();
        let expected = serialized_views(&ops);
        let dir = tempfile::tempdir().unwrap();

        // The primary's way: staged in two batches, committed.
        let primary = Layout::new(dir.path(), 1, 1);
        let mut store = Store::open(primary.clone(), 1).unwrap();
        let (first, second) = ops.split_at(7);
        for batch in [first, second] {
            for op in batch {
                store.stage(op.clone(), 1);
            }
            let pending = store.write_staged().unwrap();
            pending.sync().unwrap();
            store.finish(&pending).unwrap();
        }
        let lines = store.read_journal_lines(0, usize::MAX, usize::MAX);
        drop(store);
        let files = snapshot(primary.dir());
        for (name, bytes) in &expected {
            assert_eq!(
                String::from_utf8_lossy(&files[name]),
                String::from_utf8_lossy(bytes),
                "{name}"
            );
        }
        // Each local user has its three files; the remote one has none.
        for f in ["timeline", "following", "followers"] {
            assert!(primary
                .dir()
                .join(format!("local_clients/4/{f}.data"))
                .exists());
        }
        assert!(!primary.client_dir(2).exists());

        // A secondary's way: the primary's lines, as they came, one Append
        // of three entries at a time.
        let secondary = Layout::new(dir.path(), 1, 2);
        let mut store = Store::open(secondary.clone(), 1).unwrap();
        for chunk in lines.chunks(3) {
            let lines: Vec<Arc<[u8]>> = chunk.iter().map(|l| l.bytes.clone()).collect();
            let entries: Vec<Entry> = lines.iter().map(|l| Entry::from_line(l).unwrap()).collect();
            store.append_lines(&entries, &lines).unwrap();
        }
        drop(store);
        assert_eq!(
            snapshot(secondary.dir()),
            files,
            "the same bytes in every file"
        );

        // Store::append (serializing the entries itself) makes them too.
        let third = Layout::new(dir.path(), 1, 3);
        let mut store = Store::open(third.clone(), 1).unwrap();
        append_ops(&mut store, ops.clone());
        drop(store);
        assert_eq!(snapshot(third.dir()), files);

        // Torn last lines of every kind of file come back whole.
        for rel in [
            "global_clients.data",
            "local_clients/1/following.data",
            "local_clients/1/followers.data",
            "local_clients/4/timeline.data",
        ] {
            let path = third.dir().join(rel);
            let full = std::fs::read(&path).unwrap();
            std::fs::write(&path, &full[..full.len() - 5]).unwrap();
        }
        drop(Store::open(third.clone(), 1).unwrap());
        assert_eq!(snapshot(third.dir()), files);

        // Recovery rebuilds every derived file from the journal alone, the
        // same bytes again.
        let gc = third.global_clients();
        std::fs::remove_file(&gc).unwrap();
        std::fs::remove_dir_all(third.local_clients()).unwrap();
        let store = Store::open(third.clone(), 1).unwrap();
        assert_eq!(store.last_seq(), ops.len() as u64);
        drop(store);
        assert_eq!(snapshot(third.dir()), files);
    }

    #[test]
    fn received_lines_are_stored_as_they_came() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1, 2);
        let mut store = Store::open(layout.clone(), 1).unwrap();
        // Valid lines, though not as this code writes them: extra spaces,
        // fields in another order, an escaped letter, an older delivery
        // with one recipient as a number.
        let lines: Vec<&[u8]> = vec![
            br#"{"seq":1,"epoch":1,"op":{"type":"user","user":1,"cluster":1}}"#,
            br#"{"seq":2, "epoch":1,"op":{"type":"post","id":"1-a","author":1,"text":"\u0041 a","ts_ms":5}}"#,
            br#"{"epoch":1,"seq":3,"op":{"type":"post","id":"1-b","author":1,"text":"b","ts_ms":6}}"#,
            br#"{"seq":4,"epoch":1,"op":{"type":"deliver","to":1,"post":{"id":"2-c","author":2,"text":"c","ts_ms":7}}}"#,
            br#"{"seq":5,"epoch":1,"op":{"type":"post","id":"1-d","author":1,"text":"d \"}\" ","ts_ms":8}}"#,
        ];
        let arcs: Vec<Arc<[u8]>> = lines.iter().map(|l| Arc::from(*l)).collect();
        let entries: Vec<Entry> = lines.iter().map(|l| Entry::from_line(l).unwrap()).collect();
        store.append_lines(&entries, &arcs).unwrap();
        let mut journal = Vec::new();
        for l in &lines {
            journal.extend_from_slice(l);
            journal.push(b'\n');
        }
        assert_eq!(std::fs::read(layout.journal()).unwrap(), journal);
        let held = store.read_journal_lines(0, 10, 1 << 20);
        assert!(held.iter().zip(&lines).all(|(h, l)| &h.bytes[..] == *l));
        // The timeline holds the serialized records either way.
        let ops: Vec<Op> = entries.iter().map(|e| e.op.clone()).collect();
        let expected = serialized_views(&ops);
        let tl = "local_clients/1/timeline.data";
        assert_eq!(
            String::from_utf8(std::fs::read(layout.dir().join(tl)).unwrap()).unwrap(),
            String::from_utf8(expected[tl].clone()).unwrap()
        );
        drop(store);
        // And the reopened journal serves the same bytes from the file.
        let store = Store::open(layout.clone(), 1).unwrap();
        let from_file = store.read_journal_lines(0, 10, 1 << 20);
        assert!(from_file
            .iter()
            .zip(&lines)
            .all(|(h, l)| &h.bytes[..] == *l));
        assert_eq!(from_file.len(), lines.len());
    }

    #[test]
    fn a_line_that_does_not_continue_the_journal_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1, 2);
        let mut store = Store::open(layout.clone(), 1).unwrap();
        append_ops(
            &mut store,
            vec![Op::User {
                user: 1,
                cluster: 1,
            }],
        );
        let before = snapshot(layout.dir());
        let gap = Entry {
            seq: 3,
            epoch: 1,
            op: Op::Post(post("1-a", 1, 1)),
        };
        let line: Arc<[u8]> = Arc::from(gap.to_line().into_bytes());
        assert!(store
            .append_lines(std::slice::from_ref(&gap), std::slice::from_ref(&line))
            .is_err());
        // An older epoch inside a batch is refused whole, too.
        let two = [
            Entry {
                seq: 2,
                epoch: 2,
                op: Op::Post(post("1-b", 1, 1)),
            },
            Entry {
                seq: 3,
                epoch: 1,
                op: Op::Post(post("1-c", 1, 1)),
            },
        ];
        let lines: Vec<Arc<[u8]>> = two
            .iter()
            .map(|e| Arc::from(e.to_line().into_bytes()))
            .collect();
        assert!(store.append_lines(&two, &lines).is_err());
        assert_eq!(store.last_seq(), 1);
        assert!(!store.state().has_post(1, "1-b"));
        assert_eq!(snapshot(layout.dir()), before);
        assert!(store.read_journal_lines(1, 10, 1 << 20).is_empty());
    }

    #[test]
    fn a_batch_groups_lines_by_file_in_entry_order() {
        let ops = mixed_ops();
        let mut batch = Batch::default();
        let mut scratch = Vec::new();
        let mut state = State::default();
        for (i, op) in ops.iter().enumerate() {
            let entry = Entry {
                seq: i as u64 + 1,
                epoch: 1,
                op: op.clone(),
            };
            state.apply(&entry);
            let timelines = timelines_of(&state, &entry);
            derive(1, &entry, &timelines, &mut scratch, |f, l| {
                if l.is_empty() {
                    batch.touch(f)
                } else {
                    batch.push(f, l)
                }
            });
        }
        let files: Vec<DerivedFile> = batch.files.iter().map(|(f, _)| *f).collect();
        let mut unique = files.clone();
        unique.sort_by_key(|f| f.packed());
        unique.dedup();
        assert_eq!(
            unique.len(),
            files.len(),
            "one buffer, so one write, per file"
        );
        assert_eq!(
            files[..4],
            [
                DerivedFile::GlobalClients,
                DerivedFile::Timeline(1),
                DerivedFile::Following(1),
                DerivedFile::Followers(1)
            ],
            "files in the order first seen"
        );
        let expected = serialized_views(&ops);
        let layout = Layout::from_dir(PathBuf::from("/d"));
        for (f, bytes) in &batch.files {
            let rel = layout.derived(*f);
            let rel = rel.strip_prefix("/d").unwrap().display().to_string();
            assert_eq!(bytes, expected.get(&rel).unwrap_or(&Vec::new()), "{rel}");
        }
        // The buffers are reused by the next batch.
        let n = batch.files.len();
        for (_, b) in std::mem::take(&mut batch.files) {
            batch.recycle(b);
        }
        batch.at.clear();
        assert_eq!(batch.spare.len(), n);
        batch.push(DerivedFile::Timeline(9), b"x");
        assert_eq!(batch.spare.len(), n - 1);
        assert_eq!(batch.files[0].1, b"x\n");
    }
}
