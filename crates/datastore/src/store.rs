//! One server's datastore: the journal, the in-memory [`State`], and the
//! plain files derived from them. The primary and the secondaries append
//! entries through the same [`Store::append`], so their directories hold the
//! same lines.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::journal::Journal;
use crate::jsonl;
use crate::layout::Layout;
use crate::limits::{OPEN_FILES_MAX, TIMELINE_READ_MAX_POSTS};
use crate::record::{time_text, ClientLine, EdgeLine, Entry, Op, Post, SeqOnly, TimelineLine};
use crate::state::State;
use crate::{io_err, Result};

/// Journal entries written but not yet fsynced (see [`Store::write_staged`]).
pub struct Pending {
    file: File,
    path: PathBuf,
    pub entries: Vec<Entry>,
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
    files: HashMap<PathBuf, File>,
    /// Entries applied to `state` by [`Store::stage`] but not yet written.
    staged: Vec<Entry>,
}

impl Store {
    /// Opens (or creates) the datastore of a server of `cluster_id`,
    /// recovering from a crash: a torn line is cut, and each derived file
    /// gets the journal entries it is missing.
    pub fn open(layout: Layout, cluster_id: u32) -> Result<Store> {
        std::fs::create_dir_all(layout.local_clients()).map_err(io_err(layout.dir()))?;
        let mut state = State::default();
        // Seq of the newest line of each derived file, read once per file.
        let mut file_seq: HashMap<PathBuf, u64> = HashMap::new();
        let mut repairs: Vec<(PathBuf, String)> = Vec::new();
        let mut failure = None;
        let journal = Journal::open(&layout.journal(), |entry| {
            state.apply(entry);
            for (path, line) in view_lines(&layout, cluster_id, entry) {
                if line.is_empty() {
                    // The file must merely exist.
                    if !path.exists() {
                        repairs.push((path, line));
                    }
                    continue;
                }
                let last = match file_seq.get(&path) {
                    Some(s) => *s,
                    None => match last_line_seq(&path) {
                        Ok(s) => s,
                        Err(e) => {
                            failure.get_or_insert(e);
                            0
                        }
                    },
                };
                if entry.seq > last {
                    repairs.push((path.clone(), line));
                    file_seq.insert(path, entry.seq);
                } else {
                    file_seq.insert(path, last);
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut store = Store {
            layout,
            cluster_id,
            journal,
            state,
            files: HashMap::new(),
            staged: Vec::new(),
        };
        let restored = repairs.iter().filter(|(_, l)| !l.is_empty()).count();
        if restored > 0 {
            tracing::warn!(
                lines = restored,
                "restored lines of derived files from the journal"
            );
        }
        store.write_lines(repairs)?;
        Ok(store)
    }

    /// Appends entries durably (journal fsynced), then updates the state and
    /// the derived files. Entries must continue the journal's sequence.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.journal.append(entries)?;
        let mut lines = Vec::new();
        for e in entries {
            self.state.apply(e);
            lines.extend(view_lines(&self.layout, self.cluster_id, e));
        }
        self.write_lines(lines)
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
    /// [`Store::finish`].
    pub fn write_staged(&mut self) -> Result<Pending> {
        let entries = std::mem::take(&mut self.staged);
        self.journal.write(&entries)?;
        Ok(Pending {
            file: self.journal.sync_handle()?,
            path: self.journal.path().to_path_buf(),
            entries,
        })
    }

    /// The second half: writes the derived files of durable entries. They
    /// are written only once the journal holds the entries durably, so a
    /// derived file never holds a line the journal could lose.
    pub fn finish(&mut self, pending: &Pending) -> Result<()> {
        let mut lines = Vec::new();
        for e in &pending.entries {
            lines.extend(view_lines(&self.layout, self.cluster_id, e));
        }
        self.write_lines(lines)
    }

    fn write_lines(&mut self, lines: Vec<(PathBuf, String)>) -> Result<()> {
        // One write per file per batch, in entry order within each file.
        let mut by_file: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut at: HashMap<PathBuf, usize> = HashMap::new();
        for (path, line) in lines {
            let i = *at.entry(path.clone()).or_insert_with(|| {
                by_file.push((path, Vec::new()));
                by_file.len() - 1
            });
            by_file[i].1.extend_from_slice(line.as_bytes());
            by_file[i].1.push(b'\n');
        }
        for (path, bytes) in by_file {
            if bytes.is_empty() {
                // A user's files exist from the moment it exists.
                jsonl::open_append(&path)?;
                continue;
            }
            if self.files.len() >= OPEN_FILES_MAX && !self.files.contains_key(&path) {
                self.files.clear();
            }
            let file = match self.files.entry(path.clone()) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(jsonl::open_append(&path)?)
                }
            };
            jsonl::append(file, &path, &bytes)?;
        }
        Ok(())
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

/// The derived-file lines one entry produces: (file, line). A line may be
/// empty: the file must merely exist.
fn view_lines(layout: &Layout, cluster_id: u32, e: &Entry) -> Vec<(PathBuf, String)> {
    let json = |v: &dyn erased::Line| v.line();
    match &e.op {
        Op::User { user, cluster } => {
            let mut v = vec![(
                layout.global_clients(),
                json(&ClientLine {
                    seq: e.seq,
                    user: *user,
                    cluster: *cluster,
                }),
            )];
            if *cluster == cluster_id {
                v.push((layout.timeline(*user), String::new()));
                v.push((layout.following(*user), String::new()));
                v.push((layout.followers(*user), String::new()));
            }
            v
        }
        Op::Follow {
            user,
            target,
            since_ms,
        } => vec![(
            layout.following(*user),
            json(&EdgeLine {
                seq: e.seq,
                op: "follow".into(),
                user: *target,
                since_ms: Some(*since_ms),
                version: None,
            }),
        )],
        Op::Unfollow { user, target } => vec![(
            layout.following(*user),
            json(&EdgeLine {
                seq: e.seq,
                op: "unfollow".into(),
                user: *target,
                since_ms: None,
                version: None,
            }),
        )],
        Op::Post(post) => vec![(layout.timeline(post.author), timeline_line(e.seq, post))],
        Op::Deliver { to, post } => {
            // The same line in every recipient's timeline: serialized once.
            let line = timeline_line(e.seq, post);
            to.iter()
                .map(|t| (layout.timeline(*t), line.clone()))
                .collect()
        }
        Op::AddFollower {
            user,
            follower,
            since_ms,
            version,
        } => vec![(
            layout.followers(*user),
            json(&EdgeLine {
                seq: e.seq,
                op: "add".into(),
                user: *follower,
                since_ms: Some(*since_ms),
                version: Some(*version),
            }),
        )],
        Op::RemoveFollower {
            user,
            follower,
            version,
        } => vec![(
            layout.followers(*user),
            json(&EdgeLine {
                seq: e.seq,
                op: "remove".into(),
                user: *follower,
                since_ms: None,
                version: Some(*version),
            }),
        )],
    }
}

fn timeline_line(seq: u64, post: &Post) -> String {
    serde_json::to_string(&TimelineLine {
        seq,
        time: time_text(post.ts_ms),
        post: post.clone(),
    })
    .expect("timeline lines always serialize")
}

mod erased {
    /// Any record that serializes to one JSON line.
    pub trait Line {
        fn line(&self) -> String;
    }
    impl<T: serde::Serialize> Line for T {
        fn line(&self) -> String {
            serde_json::to_string(self).expect("records always serialize")
        }
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
}
