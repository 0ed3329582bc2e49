//! An advisory lock on a file (`flock`), so two clients of the same user
//! never rewrite the state file at the same time.
//!
//! The lock is held only while the small file is read, changed and
//! rewritten, never across a network call, so a second client waits at most
//! a few milliseconds; the wait is bounded all the same.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::limits::{PENDING_LOCK_POLL_MS, PENDING_LOCK_WAIT_MS};

/// Holds the lock until dropped (closing the file releases it).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Takes the exclusive lock on `path` (created if missing), waiting up to
/// `PENDING_LOCK_WAIT_MS` for another holder to release it.
pub fn lock(path: &Path) -> std::io::Result<FileLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let deadline = Instant::now() + Duration::from_millis(PENDING_LOCK_WAIT_MS);
    loop {
        // SAFETY: `file` is open for the whole call, so the descriptor is
        // valid; flock touches nothing but the lock of that open file.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(FileLock { _file: file });
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => {}
            _ => return Err(error),
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "another client of this user held {} for {PENDING_LOCK_WAIT_MS} ms",
                    path.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(PENDING_LOCK_POLL_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.lock");
        let first = lock(&path).unwrap();
        // flock locks belong to the open file, so a second open in the same
        // process contends like another process would.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_ne!(rc, 0);
        drop(first);
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0);
    }
}
