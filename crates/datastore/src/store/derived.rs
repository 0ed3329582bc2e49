//! The plain files derived from the journal: which lines an entry writes
//! into which file, gathered per file and written with one `write` per
//! file per batch.

use std::collections::hash_map;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;

use crate::fold::JournalFold;
use crate::jsonl;
use crate::layout::{DerivedFile, Layout};
use crate::limits::OPEN_FILES_MAX;
use crate::record::{time_text, ClientLine, EdgeLine, Entry, Op, TimelineLine};
use crate::{Error, Result};

/// Line buffers of one batch kept for the next one, at most this many
/// (as many as open files are kept)...
const SPARE_BUFFERS_MAX: usize = OPEN_FILES_MAX;
/// ... and only those of at most this capacity, so that at most 8 MiB is
/// kept (a recovery may build one huge buffer, not worth keeping).
const SPARE_BUFFER_MAX_BYTES: usize = 16 * 1024;

/// Writes the derived files of one server's directory, keeping their
/// append handles open (at most [`OPEN_FILES_MAX`]).
pub(super) struct DerivedFiles {
    layout: Layout,
    cluster_id: u32,
    /// Open append handles of the derived files.
    files: FileMap<File>,
    /// The derived-file lines being gathered, one buffer per file.
    lines: FileLines,
    /// A reused buffer for the lines of one entry.
    scratch: Vec<u8>,
}

impl DerivedFiles {
    /// Starts with `lines` already gathered (by recovery) and its buffer.
    pub(super) fn new(
        layout: Layout,
        cluster_id: u32,
        lines: FileLines,
        scratch: Vec<u8>,
    ) -> DerivedFiles {
        DerivedFiles {
            layout,
            cluster_id,
            files: FileMap::default(),
            lines,
            scratch,
        }
    }

    /// Writes the derived-file lines of `entries`, whose timelines are
    /// `timelines` and whose own follower edges are `follower_edges` (see
    /// [`follower_edge_of`]): one write per file, its lines in entry order.
    pub(super) fn write(
        &mut self,
        entries: &[Entry],
        timelines: &[Vec<u32>],
        follower_edges: &[bool],
    ) -> Result<()> {
        debug_assert_eq!(entries.len(), timelines.len());
        debug_assert_eq!(entries.len(), follower_edges.len());
        let lines = &mut self.lines;
        for ((e, timelines), follower_edge) in entries.iter().zip(timelines).zip(follower_edges) {
            derived_lines(
                self.cluster_id,
                e,
                timelines,
                *follower_edge,
                &mut self.scratch,
                |file, line| {
                    if line.is_empty() {
                        lines.touch(file);
                    } else {
                        lines.push(file, line);
                    }
                },
            );
        }
        self.flush()
    }

    /// Writes the gathered lines, one write per file, and empties the batch
    /// (also on error, so that a failed batch is never written later).
    pub(super) fn flush(&mut self) -> Result<()> {
        let mut files = std::mem::take(&mut self.lines.files);
        self.lines.at.clear();
        let mut result = Ok(());
        for (file, bytes) in &files {
            if result.is_ok() {
                result = self.write_file(*file, bytes);
            }
        }
        for (_, bytes) in files.drain(..) {
            self.lines.recycle(bytes);
        }
        self.lines.files = files;
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

    /// Closes every open handle (before the files are removed).
    pub(super) fn close_all(&mut self) {
        self.files.clear();
    }
}

/// A map keyed by [`DerivedFile`], with a hash of a few integer operations.
pub(super) type FileMap<V> = HashMap<DerivedFile, V, BuildHasherDefault<FileHasher>>;

/// Hashes a [`DerivedFile`] (one `u64`, see [`DerivedFile::packed`]) by a
/// multiply-xorshift mix. The keys are user ids chosen by the service, not
/// by an adversary, so a keyed hash (SipHash) would buy nothing here.
#[derive(Default)]
pub(super) struct FileHasher(u64);

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
pub(super) struct FileLines {
    pub(super) at: FileMap<usize>,
    pub(super) files: Vec<(DerivedFile, Vec<u8>)>,
    pub(super) spare: Vec<Vec<u8>>,
}

impl FileLines {
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

    pub(super) fn has(&self, file: DerivedFile) -> bool {
        self.at.contains_key(&file)
    }

    /// The file must exist, even without a line.
    pub(super) fn touch(&mut self, file: DerivedFile) {
        self.slot(file);
    }

    /// Adds one line (without its newline) to the file's buffer.
    pub(super) fn push(&mut self, file: DerivedFile, line: &[u8]) {
        let buf = self.slot(file);
        buf.extend_from_slice(line);
        buf.push(b'\n');
    }

    pub(super) fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= SPARE_BUFFER_MAX_BYTES && self.spare.len() < SPARE_BUFFERS_MAX {
            buf.clear();
            self.spare.push(buf);
        }
    }
}

/// The timelines `entry` writes its post into, given `state` folded up to
/// and including it: for a post, its author's and its local followers'
/// ([`JournalFold::post_timelines`]); for a delivery, its recipients'; none for
/// other ops. Taken when the entry is applied, because a later follow
/// changes what a post's followers are.
pub fn timelines_of(state: &JournalFold, entry: &Entry) -> Vec<u32> {
    match &entry.op {
        Op::Post(p) => state.post_timelines(p),
        Op::Deliver { to, .. } => to.clone(),
        _ => Vec::new(),
    }
}

/// Whether `entry`, a follow or unfollow, writes the followed user's
/// follower edge itself ([`JournalFold::own_follower_edge`]), given `state`
/// folded up to and including it. Taken when the entry is applied, like
/// [`timelines_of`].
pub fn follower_edge_of(state: &JournalFold, entry: &Entry) -> bool {
    state.own_follower_edge(&entry.op).is_some()
}

/// Calls `emit(file, line)` with each derived-file line of `entry`, in
/// order. An empty line means the file must merely exist. `timelines` are the timelines of a post or delivery
/// ([`timelines_of`]); `follower_edge` says whether a follow or unfollow
/// writes the followed user's follower edge too ([`follower_edge_of`]), the
/// very line the sync service's `AddFollower` or `RemoveFollower` would
/// write. `scratch` holds the lines (it is overwritten).
pub(super) fn derived_lines(
    cluster_id: u32,
    entry: &Entry,
    timelines: &[u32],
    follower_edge: bool,
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
            if follower_edge {
                scratch.clear();
                edge(scratch, "add", *user, Some(*since_ms), Some(seq));
                emit(DerivedFile::Followers(*target), scratch);
            }
        }
        Op::Unfollow { user, target } => {
            edge(scratch, "unfollow", *target, None, None);
            emit(DerivedFile::Following(*user), scratch);
            if follower_edge {
                scratch.clear();
                edge(scratch, "remove", *user, None, Some(seq));
                emit(DerivedFile::Followers(*target), scratch);
            }
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
        // Live in the journal and its fold only: no derived file.
        Op::Shown { .. } | Op::Account { .. } | Op::Session { .. } | Op::Logout { .. } => {}
    }
}
