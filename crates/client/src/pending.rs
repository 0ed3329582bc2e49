//! The state file of posts not yet acknowledged by tsn.
//!
//! A post is written here *before* it is sent and removed once the server
//! acknowledged it (which it does only once the post is durable). A client
//! that crashes, or gives up during a long outage, re-sends what is left at
//! its next start with the original post id, and the server stores a post id
//! once: so a post is never lost and never doubled.
//!
//! `<state-dir>/<id>.json` holds `{"pending":[{"post_id":..,"text":..}]}`
//! and is rewritten whole and atomically. Every change takes the flock on
//! `<state-dir>/<id>.lock` and re-reads the file first, so two clients of
//! the same user (an interactive session and a script) both keep their
//! posts. A file that cannot be read as such is reported, kept aside as
//! `<id>.json.corrupt`, and replaced by an empty one.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::{PENDING_FILE_MAX_BYTES, PENDING_POSTS_MAX, POST_ID_MAX_BYTES};
use crate::lock::{self, FileLock};
use crate::post_text;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPost {
    pub post_id: String,
    pub text: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    pending: Vec<PendingPost>,
}

#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("cannot use the state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the state file: {0}")]
    Write(#[from] tsn_datastore::Error),
    #[error(
        "{PENDING_POSTS_MAX} posts are already waiting to be acknowledged by tsn; \
         no more are accepted until they are sent"
    )]
    Full,
}

/// The pending posts of one user, in one state directory.
#[derive(Debug)]
pub struct PendingStore {
    user: u32,
    file: PathBuf,
    lock: PathBuf,
    corrupt: PathBuf,
}

impl PendingStore {
    /// The store of `user` in `dir`, creating the directory if needed.
    pub fn open(dir: &Path, user: u32) -> Result<PendingStore, PendingError> {
        assert!(user >= 1);
        std::fs::create_dir_all(dir).map_err(|source| PendingError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(PendingStore {
            user,
            file: dir.join(format!("{user}.json")),
            lock: dir.join(format!("{user}.lock")),
            corrupt: dir.join(format!("{user}.json.corrupt")),
        })
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Every pending post, oldest first.
    pub fn load(&self) -> Result<Vec<PendingPost>, PendingError> {
        let _held = self.lock()?;
        self.read()
    }

    /// Records `post` as sent but not yet acknowledged. Adding a post id
    /// that is already pending changes nothing.
    pub fn add(&self, post: &PendingPost) -> Result<(), PendingError> {
        assert!(valid_entry(self.user, post), "adding an invalid post");
        let _held = self.lock()?;
        let mut posts = self.read()?;
        if posts.iter().any(|p| p.post_id == post.post_id) {
            return Ok(());
        }
        if posts.len() >= PENDING_POSTS_MAX {
            return Err(PendingError::Full);
        }
        posts.push(post.clone());
        self.write(posts)
    }

    /// Forgets `post_id` once tsn acknowledged (or finally refused) it.
    /// Returns whether it was pending.
    pub fn remove(&self, post_id: &str) -> Result<bool, PendingError> {
        let _held = self.lock()?;
        let mut posts = self.read()?;
        let before = posts.len();
        posts.retain(|p| p.post_id != post_id);
        if posts.len() == before {
            return Ok(false);
        }
        self.write(posts)?;
        Ok(true)
    }

    fn lock(&self) -> Result<FileLock, PendingError> {
        lock::lock(&self.lock).map_err(|source| PendingError::Lock {
            path: self.lock.clone(),
            source,
        })
    }

    /// Reads the file; the caller holds the lock. A missing file is empty;
    /// a corrupt one is set aside.
    fn read(&self) -> Result<Vec<PendingPost>, PendingError> {
        let file = match std::fs::File::open(&self.file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(PendingError::Read {
                    path: self.file.clone(),
                    source,
                })
            }
        };
        let mut bytes = Vec::new();
        file.take(PENDING_FILE_MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| PendingError::Read {
                path: self.file.clone(),
                source,
            })?;
        match parse(self.user, &bytes) {
            Ok(posts) => Ok(posts),
            Err(reason) => {
                self.set_aside(&reason)?;
                Ok(Vec::new())
            }
        }
    }

    fn set_aside(&self, reason: &str) -> Result<(), PendingError> {
        std::fs::rename(&self.file, &self.corrupt).map_err(|source| PendingError::Read {
            path: self.file.clone(),
            source,
        })?;
        // Said on stderr, not only logged: the user may have lost posts and
        // should look at the copy.
        eprintln!(
            "warning: the pending-post file {} is corrupt ({reason}); kept it as {} and started empty",
            self.file.display(),
            self.corrupt.display()
        );
        Ok(())
    }

    fn write(&self, posts: Vec<PendingPost>) -> Result<(), PendingError> {
        assert!(posts.len() <= PENDING_POSTS_MAX);
        let state = StateFile { pending: posts };
        let mut bytes = serde_json::to_vec(&state).expect("pending posts always serialize");
        bytes.push(b'\n');
        tsn_datastore::jsonl::write_atomic(&self.file, &bytes)?;
        Ok(())
    }
}

/// Parses and checks the bytes of a state file of `user`.
fn parse(user: u32, bytes: &[u8]) -> Result<Vec<PendingPost>, String> {
    if bytes.len() as u64 > PENDING_FILE_MAX_BYTES {
        return Err(format!("larger than {PENDING_FILE_MAX_BYTES} bytes"));
    }
    let state: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if state.pending.len() > PENDING_POSTS_MAX {
        return Err(format!("more than {PENDING_POSTS_MAX} posts"));
    }
    if let Some(bad) = state.pending.iter().find(|p| !valid_entry(user, p)) {
        return Err(format!("invalid entry {:?}", bad.post_id));
    }
    Ok(state.pending)
}

/// A pending post this client could have written: its id names the user and
/// its text is one the client would send.
fn valid_entry(user: u32, post: &PendingPost) -> bool {
    let prefix = format!("{user}-");
    let id = &post.post_id;
    id.len() <= POST_ID_MAX_BYTES
        && id.len() > prefix.len()
        && id.starts_with(&prefix)
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && post_text::validate(&post.text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: &str, text: &str) -> PendingPost {
        PendingPost {
            post_id: id.to_string(),
            text: text.to_string(),
        }
    }

    #[test]
    fn add_remove_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = PendingStore::open(dir.path(), 7).unwrap();
        assert!(store.load().unwrap().is_empty());
        store.add(&post("7-aaaa", "first")).unwrap();
        store.add(&post("7-bbbb", "second")).unwrap();
        store.add(&post("7-aaaa", "first")).unwrap();
        // Another handle (another client of the same user) sees the same.
        let other = PendingStore::open(dir.path(), 7).unwrap();
        assert_eq!(
            other.load().unwrap(),
            vec![post("7-aaaa", "first"), post("7-bbbb", "second")]
        );
        assert!(other.remove("7-aaaa").unwrap());
        assert!(!store.remove("7-aaaa").unwrap());
        assert_eq!(store.load().unwrap(), vec![post("7-bbbb", "second")]);
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert_eq!(
            text,
            "{\"pending\":[{\"post_id\":\"7-bbbb\",\"text\":\"second\"}]}\n"
        );
        // Users do not share a file.
        let eight = PendingStore::open(dir.path(), 8).unwrap();
        assert!(eight.load().unwrap().is_empty());
    }

    #[test]
    fn corrupt_file_is_kept_aside_and_replaced_by_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = PendingStore::open(dir.path(), 3).unwrap();
        let garbage = b"{\"pending\":[{\"post_id\":\"3-ab".to_vec();
        std::fs::write(store.path(), &garbage).unwrap();
        assert!(store.load().unwrap().is_empty());
        let kept = dir.path().join("3.json.corrupt");
        assert_eq!(std::fs::read(&kept).unwrap(), garbage);
        assert!(!store.path().exists());
        store.add(&post("3-cd", "after")).unwrap();
        assert_eq!(store.load().unwrap(), vec![post("3-cd", "after")]);
    }

    #[test]
    fn entries_a_client_would_not_write_make_the_file_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = PendingStore::open(dir.path(), 3).unwrap();
        for bad in [
            r#"{"pending":[{"post_id":"4-ab","text":"someone else's"}]}"#,
            r#"{"pending":[{"post_id":"3-ab","text":"   "}]}"#,
            r#"{"pending":[{"post_id":"3-a b","text":"x"}]}"#,
            r#"{"pending":[],"extra":1}"#,
            r#"[]"#,
        ] {
            std::fs::write(store.path(), bad).unwrap();
            assert!(store.load().unwrap().is_empty(), "{bad}");
            assert!(dir.path().join("3.json.corrupt").exists());
        }
    }

    #[test]
    fn refuses_more_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = PendingStore::open(dir.path(), 1).unwrap();
        let full = StateFile {
            pending: (0..PENDING_POSTS_MAX)
                .map(|i| post(&format!("1-{i:x}"), "x"))
                .collect(),
        };
        std::fs::write(store.path(), serde_json::to_vec(&full).unwrap()).unwrap();
        assert!(matches!(
            store.add(&post("1-new", "one too many")),
            Err(PendingError::Full)
        ));
        assert_eq!(store.load().unwrap().len(), PENDING_POSTS_MAX);
        assert!(store.remove("1-0").unwrap());
        store.add(&post("1-new", "fits now")).unwrap();
        assert_eq!(store.load().unwrap().len(), PENDING_POSTS_MAX);
    }
}
