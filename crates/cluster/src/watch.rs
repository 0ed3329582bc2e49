//! Following files that can change on disk (the cluster secret, TLS
//! certificates, keys and CAs), so that they are rotated without a restart.
//!
//! Why both `notify` and a poll: inotify tells at once when a file is
//! rewritten or renamed over (the watch is on the file's directory, so a
//! replacement by rename is seen too), but it can miss changes on some file
//! systems (network mounts, bind mounts of a container). A look at the
//! files' metadata every [`WATCH_POLL_INTERVAL_MS`] catches those. Events
//! are debounced for [`WATCH_DEBOUNCE_MS`], so that a certificate and its
//! key written one after the other are read together.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime};

/// How long after a file event the files are read (more events in between
/// restart nothing: they are read once).
pub const WATCH_DEBOUNCE_MS: u64 = 200;
/// How often the files' metadata is compared, whatever `notify` says.
pub const WATCH_POLL_INTERVAL_MS: u64 = 1_000;

/// What a file looks like, to notice a change without reading it.
pub type Stamp = Option<(SystemTime, u64, u64)>;

/// The modification time, length and inode of `path` (`None` if missing).
pub fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Calls `on_change` with the owner whenever one of `paths` changes, on a
/// thread named `name`, until the owner is dropped. `on_change` returns
/// whether it took the new files: when it did not (a broken file), the
/// same change is tried again at the next event or poll.
pub fn follow<T, F>(
    name: &str,
    paths: Vec<PathBuf>,
    owner: Weak<T>,
    mut on_change: F,
) -> anyhow::Result<()>
where
    T: Send + Sync + 'static,
    F: FnMut(&T) -> bool + Send + 'static,
{
    let stamps = |paths: &[PathBuf]| paths.iter().map(|p| stamp(p)).collect::<Vec<_>>();
    let mut seen = stamps(&paths);
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            let (tx, rx) = mpsc::channel::<()>();
            // Kept alive by this thread; without it, the poll alone remains.
            let _watcher = watch_dirs(&paths, tx)
                .map_err(|e| {
                    tracing::warn!(watcher = %thread_name, error = %e,
                    "cannot watch files for changes; polling them instead")
                })
                .ok();
            loop {
                match rx.recv_timeout(Duration::from_millis(WATCH_POLL_INTERVAL_MS)) {
                    Ok(()) => {
                        // Debounce: gather the events of one rewrite.
                        let until = Instant::now() + Duration::from_millis(WATCH_DEBOUNCE_MS);
                        while let Some(left) = until.checked_duration_since(Instant::now()) {
                            if rx.recv_timeout(left).is_err() {
                                break;
                            }
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(WATCH_POLL_INTERVAL_MS))
                    }
                }
                let Some(owner) = owner.upgrade() else { return };
                let now = stamps(&paths);
                if now != seen && on_change(&owner) {
                    seen = now;
                }
            }
        })?;
    Ok(())
}

/// A `notify` watch on the directory of each path, sending on every event
/// that names one of them.
fn watch_dirs(
    paths: &[PathBuf],
    tx: mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let names: Vec<PathBuf> = paths.to_vec();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(e) => e
                .paths
                .iter()
                .any(|p| names.iter().any(|n| p.file_name() == n.file_name())),
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_rewritten_file_is_reported_and_a_refused_change_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let accept = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, a) = (calls.clone(), accept.clone());
        follow(
            "test-watch",
            vec![path.clone()],
            Arc::downgrade(&calls),
            move |_| {
                c.fetch_add(1, Ordering::SeqCst);
                a.load(Ordering::SeqCst)
            },
        )
        .unwrap();
        std::fs::write(&path, "two!").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "refused change not retried");
            std::thread::sleep(Duration::from_millis(20));
        }
        accept.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = calls.load(Ordering::SeqCst);
        // Once taken, the change is not reported again.
        loop {
            std::thread::sleep(Duration::from_millis(WATCH_POLL_INTERVAL_MS * 2));
            let now = calls.load(Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
            assert!(
                Instant::now() < deadline,
                "a taken change is reported again"
            );
        }
    }
}
