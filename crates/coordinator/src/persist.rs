//! The coordinator's state files.
//!
//! The files of a coordinator from before the group: a group whose
//! committed state is still empty takes them over once (`migrate`); the
//! group itself keeps its state in its Raft log and snapshots. Three files
//! under `--state-dir`:
//!
//! * `clusters.json`: each cluster's epoch, primary and in-sync set. Small,
//!   rewritten whole and atomically (temporary file, fsync, rename) on every
//!   change, before the change is announced to anyone. Epochs only grow, so
//!   a corrupt file stops the coordinator instead of being reset: starting
//!   over from epoch 0 could hand out an epoch that was already used.
//! * `assignments.data`: JSON Lines `{"user":U,"cluster":C}`, appended and
//!   fsynced before a reply names the cluster. A torn last line is cut, a
//!   corrupt line is reported and skipped (its user is assigned again).
//! * `accounts.data`: JSON Lines, one [`AccountRecord`] per sign-up
//!   (handle, client id, cluster, Argon2id hash, time), appended and
//!   fsynced before the sign-up is answered, in the same way. A line that
//!   does not parse or holds an invalid handle, id or hash is reported and
//!   skipped; a handle that appears twice keeps its first line. The handle
//!   registry is part of the coordinator's control state, not of any
//!   cluster, so that one place decides who owns a handle; in a group it is
//!   replicated state (`Command::Account`).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tsn_datastore::jsonl;

use crate::config::{CLUSTERS_MAX, EPOCH_MAX, SERVERS_PER_CLUSTER_MAX};
use crate::replicated::Command;

pub const CLUSTERS_FILE: &str = "clusters.json";
pub const ASSIGNMENTS_FILE: &str = "assignments.data";
pub const ACCOUNTS_FILE: &str = "accounts.data";
/// Largest `clusters.json` read; 64 clusters of 64 servers fit in far less.
pub const CLUSTERS_FILE_MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] tsn_datastore::Error),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is corrupt ({reason}); repair it, or start with -c to forget the stored state"
    )]
    Corrupt { path: String, reason: String },
    /// The coordinator group did not commit the decision (this member
    /// does not lead, or no majority answered); nothing was decided.
    #[error("not committed: {0}")]
    NotCommitted(String),
    /// A state that must not be written (or a count that cannot be served);
    /// nothing was written.
    #[error("refused to store an invalid state: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What the coordinator keeps of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub cluster_id: u32,
    /// Only grows; every promotion adds one.
    pub epoch: u64,
    /// 0: the cluster never had a primary.
    pub primary_id: u32,
    /// Secondaries the primary waits for before it acknowledges a change.
    pub in_sync: BTreeSet<u32>,
}

impl ClusterRecord {
    pub fn fresh(cluster_id: u32) -> ClusterRecord {
        ClusterRecord {
            cluster_id,
            epoch: 0,
            primary_id: 0,
            in_sync: BTreeSet::new(),
        }
    }
}

/// The content of `clusters.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredClusters {
    /// `--clusters` when the file was written.
    pub cluster_count: u32,
    /// Every cluster ever managed, also those beyond a later, smaller
    /// `--clusters`: their epochs must not start over if they come back.
    pub clusters: Vec<ClusterRecord>,
}

impl StoredClusters {
    /// Checks what a hand edit or a foreign file could break.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=CLUSTERS_MAX).contains(&self.cluster_count) {
            return Err(format!(
                "cluster_count {} is not in 1..={CLUSTERS_MAX}",
                self.cluster_count
            ));
        }
        let mut seen = HashSet::new();
        for r in &self.clusters {
            let c = r.cluster_id;
            if !(1..=CLUSTERS_MAX).contains(&c) {
                return Err(format!("cluster id {c} is not in 1..={CLUSTERS_MAX}"));
            }
            if !seen.insert(c) {
                return Err(format!("cluster {c} appears twice"));
            }
            if r.epoch > EPOCH_MAX {
                return Err(format!(
                    "cluster {c}: epoch {} is beyond {EPOCH_MAX}",
                    r.epoch
                ));
            }
            if r.in_sync.len() > SERVERS_PER_CLUSTER_MAX {
                return Err(format!(
                    "cluster {c}: more than {SERVERS_PER_CLUSTER_MAX} in-sync servers"
                ));
            }
            if r.in_sync.contains(&0) {
                return Err(format!("cluster {c}: server id 0 in the in-sync set"));
            }
            if r.primary_id != 0 && r.in_sync.contains(&r.primary_id) {
                return Err(format!(
                    "cluster {c}: the primary is in its own in-sync set"
                ));
            }
        }
        Ok(())
    }
}

/// One line of `assignments.data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub user: u32,
    pub cluster: u32,
}

/// One line of `accounts.data`: an account as signed up.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// In lower case ([`tsn_datastore::handle::Handle`]).
    pub handle: String,
    pub user: u32,
    pub cluster: u32,
    /// Argon2id, PHC string ([`tsn_cluster::password`]).
    pub password_hash: String,
    /// When it was signed up, in ms since the Unix epoch.
    pub created_ms: i64,
}

impl AccountRecord {
    /// Checks what a hand edit or a foreign file could break.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        let parsed = tsn_datastore::handle::Handle::parse(&self.handle)
            .map_err(|e| format!("handle {:?}: {e}", self.handle))?;
        if parsed.as_str() != self.handle {
            return Err(format!("handle {:?} is not in lower case", self.handle));
        }
        if !valid_assignment(Assignment {
            user: self.user,
            cluster: self.cluster,
        }) {
            return Err(format!(
                "user {} or cluster {} out of range",
                self.user, self.cluster
            ));
        }
        if !tsn_cluster::password::is_valid_hash(&self.password_hash) {
            return Err("not an Argon2id hash".into());
        }
        Ok(())
    }
}

/// Never shows the hash: an account may be logged.
impl fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountRecord")
            .field("handle", &self.handle)
            .field("user", &self.user)
            .field("cluster", &self.cluster)
            .field("password_hash", &"[redacted]")
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// What the state directory held at start.
pub struct Loaded {
    /// None if no cluster was ever stored.
    pub clusters: Option<StoredClusters>,
    pub assignments: Vec<Assignment>,
    pub accounts: Vec<AccountRecord>,
}

/// Where the coordinator's decisions are made durable. The decisions take
/// it as a trait object, so that they hold no file of their own: each
/// change is a [`Command`], which the state files store, and which a
/// coordinator group commits through Raft.
pub trait Persistence: Send {
    /// Makes `cmd` durable; returns once it is, and only then may the
    /// caller adopt it.
    fn commit(&mut self, cmd: &Command) -> Result<()>;
}

impl Persistence for Files {
    fn commit(&mut self, cmd: &Command) -> Result<()> {
        match cmd {
            Command::Clusters(stored) => self.save_clusters(stored),
            Command::Assign(new) => self.append_assignments(new),
            // The id first: a crash between the two leaves an id assigned
            // to nobody, never an account without its cluster.
            Command::Account(account) => {
                self.append_assignments(&[Assignment {
                    user: account.user,
                    cluster: account.cluster,
                }])?;
                self.append_account(account)
            }
        }
    }
}

/// The open state directory.
pub struct Files {
    clusters_path: PathBuf,
    assignments_path: PathBuf,
    assignments: File,
    /// Length of `assignments.data` after the last complete append, to cut a
    /// failed (partial) append before the next one lands after it.
    assignments_len: u64,
    accounts: AppendOnly,
}

/// A JSON Lines file appended to with fsync, cut back after a failed
/// append so that a partial line cannot join the next one.
struct AppendOnly {
    path: PathBuf,
    file: File,
    len: u64,
}

impl AppendOnly {
    fn open(path: PathBuf) -> Result<AppendOnly> {
        let len = jsonl::repair_tail(&path)?;
        let file = jsonl::open_append(&path)?;
        Ok(AppendOnly { path, file, len })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let path = &self.path;
        let written = jsonl::append(&mut self.file, path, bytes).and_then(|()| {
            self.file
                .sync_data()
                .map_err(|source| tsn_datastore::Error::Io {
                    path: path.clone(),
                    source,
                })
        });
        match written {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.file.set_len(self.len) {
                    tracing::error!(file = %path.display(), error = %cut, "could not cut a failed append");
                }
                Err(e.into())
            }
        }
    }
}

impl Files {
    /// Opens `dir` (creating it), first deleting the stored state if `clear`.
    /// A torn last line of `assignments.data` is cut here.
    pub fn open(dir: &Path, clear: bool) -> Result<Files> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let clusters_path = dir.join(CLUSTERS_FILE);
        let assignments_path = dir.join(ASSIGNMENTS_FILE);
        let accounts_path = dir.join(ACCOUNTS_FILE);
        if clear {
            // `write_atomic` leaves `clusters.tmp` behind after a crash.
            for path in [
                &clusters_path,
                &clusters_path.with_extension("tmp"),
                &assignments_path,
                &accounts_path,
            ] {
                remove_if_present(path)?;
            }
            tracing::info!(dir = %dir.display(), "cleared the stored state");
        }
        let assignments_len = jsonl::repair_tail(&assignments_path)?;
        let assignments = jsonl::open_append(&assignments_path)?;
        Ok(Files {
            clusters_path,
            assignments_path,
            assignments,
            assignments_len,
            accounts: AppendOnly::open(accounts_path)?,
        })
    }

    /// Everything stored, read once at start.
    pub fn load(&self) -> Result<Loaded> {
        Ok(Loaded {
            clusters: self.load_clusters()?,
            assignments: self.load_assignments()?,
            accounts: self.load_accounts()?,
        })
    }

    /// The stored clusters, or None if none were ever stored.
    pub fn load_clusters(&self) -> Result<Option<StoredClusters>> {
        let path = &self.clusters_path;
        let shown = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    path: shown,
                    source,
                })
            }
        };
        if bytes.len() as u64 > CLUSTERS_FILE_MAX_BYTES {
            return Err(Error::Corrupt {
                path: shown,
                reason: format!("larger than {CLUSTERS_FILE_MAX_BYTES} bytes"),
            });
        }
        let stored: StoredClusters =
            serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        stored.validate().map_err(|reason| Error::Corrupt {
            path: shown,
            reason,
        })?;
        Ok(Some(stored))
    }

    /// Replaces `clusters.json` atomically; returns once it is durable.
    pub fn save_clusters(&self, stored: &StoredClusters) -> Result<()> {
        stored.validate().map_err(Error::Invalid)?;
        let mut bytes = serde_json::to_vec_pretty(stored).map_err(|e| Error::Io {
            path: self.clusters_path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        jsonl::write_atomic(&self.clusters_path, &bytes)?;
        Ok(())
    }

    /// Every valid stored assignment, in the order written. Corrupt lines and
    /// out-of-range values are reported and skipped.
    pub fn load_assignments(&self) -> Result<Vec<Assignment>> {
        let path = &self.assignments_path;
        let mut out = Vec::new();
        jsonl::read_forward(path, 0, |offset, line| {
            if let Some(a) = jsonl::parse::<Assignment>(path, line) {
                if valid_assignment(a) {
                    out.push(a);
                } else {
                    tracing::warn!(
                        file = %path.display(),
                        offset,
                        user = a.user,
                        cluster = a.cluster,
                        "skipped an assignment with an out-of-range user or cluster"
                    );
                }
            }
            true
        })?;
        Ok(out)
    }

    /// Appends `new` with one write and fsyncs it. On failure the file is cut
    /// back to where it was, so a partial line cannot join the next one.
    pub fn append_assignments(&mut self, new: &[Assignment]) -> Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(new.len() * 32);
        for a in new {
            if !valid_assignment(*a) {
                return Err(Error::Invalid(format!("assignment {a:?}")));
            }
            let line = serde_json::to_vec(a).map_err(|e| Error::Io {
                path: self.assignments_path.display().to_string(),
                source: std::io::Error::other(e),
            })?;
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
        }
        let path = &self.assignments_path;
        let written = jsonl::append(&mut self.assignments, path, &bytes).and_then(|()| {
            self.assignments
                .sync_data()
                .map_err(|source| tsn_datastore::Error::Io {
                    path: path.clone(),
                    source,
                })
        });
        match written {
            Ok(()) => {
                self.assignments_len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.assignments.set_len(self.assignments_len) {
                    tracing::error!(file = %path.display(), error = %cut, "could not cut a failed append");
                }
                Err(e.into())
            }
        }
    }
}

impl Files {
    /// Every valid stored account, in the order written. Corrupt or invalid
    /// lines are reported and skipped.
    pub fn load_accounts(&self) -> Result<Vec<AccountRecord>> {
        let path = &self.accounts.path;
        let mut out = Vec::new();
        jsonl::read_forward(path, 0, |offset, line| {
            if let Some(a) = jsonl::parse::<AccountRecord>(path, line) {
                match a.validate() {
                    Ok(()) => out.push(a),
                    Err(reason) => tracing::warn!(
                        file = %path.display(),
                        offset,
                        reason,
                        "skipped an invalid account"
                    ),
                }
            }
            true
        })?;
        Ok(out)
    }

    /// Appends `account` and fsyncs it.
    pub fn append_account(&mut self, account: &AccountRecord) -> Result<()> {
        account.validate().map_err(Error::Invalid)?;
        let mut line = serde_json::to_vec(account).map_err(|e| Error::Io {
            path: self.accounts.path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.accounts.append(&line)
    }
}

pub(crate) fn valid_assignment(a: Assignment) -> bool {
    (1..=tsn_datastore::limits::USER_ID_MAX).contains(&a.user)
        && (1..=CLUSTERS_MAX).contains(&a.cluster)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(c: u32, epoch: u64, primary: u32, in_sync: &[u32]) -> ClusterRecord {
        ClusterRecord {
            cluster_id: c,
            epoch,
            primary_id: primary,
            in_sync: in_sync.iter().copied().collect(),
        }
    }

    #[test]
    fn clusters_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path(), false).unwrap();
        assert_eq!(files.load_clusters().unwrap(), None);
        let stored = StoredClusters {
            cluster_count: 2,
            clusters: vec![record(1, 3, 2, &[1, 5]), record(2, 0, 0, &[])],
        };
        files.save_clusters(&stored).unwrap();
        assert_eq!(files.load_clusters().unwrap(), Some(stored));
    }

    #[test]
    fn corrupt_clusters_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path(), false).unwrap();
        let path = dir.path().join(CLUSTERS_FILE);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(files.load_clusters(), Err(Error::Corrupt { .. })));
        let bad = r#"{"cluster_count":1,"clusters":[{"cluster_id":1,"epoch":1,"primary_id":2,"in_sync":[2]}]}"#;
        std::fs::write(&path, bad).unwrap();
        let err = files.load_clusters().unwrap_err().to_string();
        assert!(err.contains("own in-sync set"), "{err}");
    }

    #[test]
    fn assignments_skip_corrupt_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ASSIGNMENTS_FILE);
        std::fs::write(
            &path,
            b"{\"user\":1,\"cluster\":1}\ngarbage\n{\"user\":0,\"cluster\":1}\n{\"user\":2,\"cluster\":2}\n{\"user\":3,\"clu",
        )
        .unwrap();
        let mut files = Files::open(dir.path(), false).unwrap();
        let got = files.load_assignments().unwrap();
        assert_eq!(
            got,
            vec![
                Assignment {
                    user: 1,
                    cluster: 1
                },
                Assignment {
                    user: 2,
                    cluster: 2
                }
            ]
        );
        files
            .append_assignments(&[Assignment {
                user: 3,
                cluster: 3,
            }])
            .unwrap();
        let got = Files::open(dir.path(), false)
            .unwrap()
            .load_assignments()
            .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[2],
            Assignment {
                user: 3,
                cluster: 3
            }
        );
    }

    fn account(handle: &str, user: u32) -> AccountRecord {
        AccountRecord {
            handle: handle.into(),
            user,
            cluster: 1,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$qLml5cbgoJ9TnLjjLOx1wYGMnQkB7hBEIW3P5a6LyUs".into(),
            created_ms: 1,
        }
    }

    #[test]
    fn accounts_round_trip_and_skip_invalid_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::open(dir.path(), false).unwrap();
        assert!(files.load_accounts().unwrap().is_empty());
        files.append_account(&account("alice", 4)).unwrap();
        // Nothing invalid is written.
        assert!(matches!(
            files.append_account(&account("Bob", 5)),
            Err(Error::Invalid(_))
        ));
        let mut bad_hash = account("carol", 6);
        bad_hash.password_hash = "plain".into();
        assert!(files.append_account(&bad_hash).is_err());
        // Lines a hand edit broke are skipped, a torn tail is cut.
        let path = dir.path().join(ACCOUNTS_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("garbage\n");
        text.push_str(&serde_json::to_string(&account("42", 7)).unwrap());
        text.push('\n');
        text.push_str(&serde_json::to_string(&bad_hash).unwrap());
        text.push_str("\n{\"handle\":\"da");
        std::fs::write(&path, text).unwrap();
        let mut files = Files::open(dir.path(), false).unwrap();
        assert_eq!(files.load_accounts().unwrap(), vec![account("alice", 4)]);
        files.append_account(&account("dave", 8)).unwrap();
        let got = Files::open(dir.path(), false)
            .unwrap()
            .load_accounts()
            .unwrap();
        assert_eq!(got, vec![account("alice", 4), account("dave", 8)]);
        assert!(Files::open(dir.path(), true)
            .unwrap()
            .load_accounts()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn clear_forgets_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::open(dir.path(), false).unwrap();
        files
            .save_clusters(&StoredClusters {
                cluster_count: 1,
                clusters: vec![record(1, 4, 1, &[])],
            })
            .unwrap();
        files
            .append_assignments(&[Assignment {
                user: 7,
                cluster: 1,
            }])
            .unwrap();
        let files = Files::open(dir.path(), true).unwrap();
        assert_eq!(files.load_clusters().unwrap(), None);
        assert!(files.load_assignments().unwrap().is_empty());
    }
}
