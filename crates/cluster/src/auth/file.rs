//! The secret file: where it lives by default, creating it once, reading
//! it with its permissions checked.
//!
//! The file holds the secret in hex on one line, mode 0600. It is created
//! atomically: the secret is written and fsynced into a temp file of mode
//! 0600 beside it, which is then hard-linked to the final name. A link
//! never replaces an existing file, so when two processes start at once
//! exactly one link succeeds, and the other reads the winner's secret.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::secret::{Secret, SECRET_HEX_CHARS};

/// The mode of a secret file: read and write by its owner only.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// The mode of the directory created for the default secret file.
pub const SECRET_DIR_MODE: u32 = 0o700;
/// Largest secret file read: the hex secret and some whitespace.
pub const SECRET_FILE_MAX_BYTES: u64 = 4 * SECRET_HEX_CHARS as u64;
/// The default file, under the user's configuration directory.
pub const DEFAULT_SECRET_RELATIVE_PATH: &str = "tsn/cluster.secret";

/// Where the secret lives when no `--cluster-secret-file` is given:
/// `$XDG_CONFIG_HOME/tsn/cluster.secret`, else
/// `$HOME/.config/tsn/cluster.secret`.
pub fn default_secret_path() -> anyhow::Result<PathBuf> {
    default_secret_path_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`default_secret_path`] from the two variables' values (an empty or
/// relative `XDG_CONFIG_HOME` is ignored, as the XDG specification says).
pub fn default_secret_path_from(
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> anyhow::Result<PathBuf> {
    if let Some(xdg) = xdg_config_home.map(PathBuf::from) {
        if xdg.is_absolute() {
            return Ok(xdg.join(DEFAULT_SECRET_RELATIVE_PATH));
        }
    }
    match home.map(PathBuf::from) {
        Some(home) if home.is_absolute() => {
            Ok(home.join(".config").join(DEFAULT_SECRET_RELATIVE_PATH))
        }
        _ => anyhow::bail!(
            "no place for the cluster secret: neither XDG_CONFIG_HOME nor HOME is set; \
             pass --cluster-secret-file"
        ),
    }
}

/// Writes a new random secret to `path` unless a file is there already.
/// Returns whether this call created it. Safe against a concurrent caller:
/// both end up with one file and one secret.
pub fn create_secret_file(path: &Path) -> anyhow::Result<bool> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(SECRET_DIR_MODE)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let secret = Secret::generate()
        .map_err(|e| anyhow::anyhow!("no randomness for a cluster secret: {e}"))?;
    let temp = write_temp(path, &secret)?;
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => anyhow::bail!("cannot create {}: {e}", path.display()),
    }
}

/// A temp name beside `path`, unique to this process and call.
fn tempfile_name(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    path.with_file_name(name)
}

/// Reads the secret in `path`. A file that others may read or write (any
/// permission bit beyond 0600), that is not a regular file, or whose
/// content is not one secret is an error that names the file and the fix,
/// never the content.
pub fn read_secret_file(path: &Path) -> anyhow::Result<Secret> {
    let meta = fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read the cluster secret {}: {e}", path.display()))?;
    anyhow::ensure!(
        meta.is_file(),
        "the cluster secret {} is not a regular file",
        path.display()
    );
    let mode = meta.mode() & 0o777;
    anyhow::ensure!(
        mode & !SECRET_FILE_MODE == 0,
        "the cluster secret {} has mode {mode:o}: others could read or change it; \
         make it 600 (chmod 600 {})",
        path.display(),
        path.display()
    );
    anyhow::ensure!(
        meta.len() <= SECRET_FILE_MAX_BYTES,
        "the cluster secret {} is {} bytes, not one secret",
        path.display(),
        meta.len()
    );
    let text = fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the cluster secret {}: {e}", path.display()))?;
    let text = String::from_utf8(text).map_err(|_| {
        anyhow::anyhow!(
            "the cluster secret {} is malformed: not text",
            path.display()
        )
    })?;
    Secret::parse(&text)
        .map_err(|e| anyhow::anyhow!("the cluster secret {} is malformed: {e}", path.display()))
}

/// Writes `secret` to `path` replacing what is there (a rotation): temp
/// file of mode 0600, fsync, rename.
pub fn replace_secret_file(path: &Path, secret: &Secret) -> anyhow::Result<()> {
    let temp = write_temp(path, secret)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        anyhow::bail!("cannot write {}: {e}", path.display());
    }
    Ok(())
}

/// Writes `secret` into a new temp file beside `path`, mode 0600, fsynced;
/// returns its path. Nothing is left behind when it fails.
fn write_temp(path: &Path, secret: &Secret) -> anyhow::Result<PathBuf> {
    let temp = tempfile_name(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SECRET_FILE_MODE)
            .open(&temp)?;
        // The umask cannot widen a mode, but be explicit about it.
        f.set_permissions(fs::Permissions::from_mode(SECRET_FILE_MODE))?;
        f.write_all(format!("{}\n", secret.to_hex()).as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        anyhow::bail!("cannot write {}: {e}", temp.display());
    }
    Ok(temp)
}

/// The secret at `path`, creating the file first if there is none.
pub fn load_or_create(path: &Path) -> anyhow::Result<Secret> {
    if create_secret_file(path)? {
        tracing::info!(path = %path.display(), "created a new cluster secret");
    }
    read_secret_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn default_path_follows_xdg_then_home() {
        let p = default_secret_path_from(Some("/x/cfg".into()), Some("/home/u".into())).unwrap();
        assert_eq!(p, PathBuf::from("/x/cfg/tsn/cluster.secret"));
        let p = default_secret_path_from(Some("".into()), Some("/home/u".into())).unwrap();
        assert_eq!(p, PathBuf::from("/home/u/.config/tsn/cluster.secret"));
        let p = default_secret_path_from(Some("rel".into()), Some("/home/u".into())).unwrap();
        assert_eq!(p, PathBuf::from("/home/u/.config/tsn/cluster.secret"));
        assert!(default_secret_path_from(None, None).is_err());
    }

    #[test]
    fn created_once_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/cluster.secret");
        assert!(create_secret_file(&path).unwrap());
        assert_eq!(mode_of(&path), 0o600);
        let first = read_secret_file(&path).unwrap();
        assert!(!create_secret_file(&path).unwrap(), "never replaced");
        assert!(load_or_create(&path).unwrap().ct_eq(&first));
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn processes_starting_at_once_agree_on_one_secret() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tsn/cluster.secret");
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || load_or_create(&path).unwrap())
                })
                .collect();
            let got: Vec<Secret> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert!(got.iter().all(|s| s.ct_eq(&got[0])));
            assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        }
    }

    #[test]
    fn loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        create_secret_file(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o666, 0o700] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = read_secret_file(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{mode:o}: {err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(
            read_secret_file(&path).is_ok(),
            "read-only by the owner is fine"
        );
    }

    #[test]
    fn malformed_files_are_refused_without_showing_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        for bad in [
            &b""[..],
            b"short\n",
            b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\n",
            &[0xff; 64],
            &[b'a'; 1000],
        ] {
            fs::write(&path, bad).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = read_secret_file(&path).unwrap_err().to_string();
            assert!(err.contains("cluster secret"), "{err}");
            assert!(!err.contains("zzzz"), "{err}");
        }
        assert!(read_secret_file(&dir.path().join("missing")).is_err());
        assert!(read_secret_file(dir.path()).is_err(), "a directory");
    }

    #[test]
    fn replacing_keeps_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        create_secret_file(&path).unwrap();
        let next = Secret::generate().unwrap();
        replace_secret_file(&path, &next).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert!(read_secret_file(&path).unwrap().ct_eq(&next));
    }
}
