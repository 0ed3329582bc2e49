//! The session file: an account's session token, kept in the client's
//! state directory so that later commands, and a client restarted after a
//! crash, act as the account without asking for the password again.
//!
//! `<state-dir>/<id>.session` holds `{"user":..,"handle":..,"token":..,
//! "expires_ms":..}`. It is created with mode 0600 (a temporary file
//! created so, fsynced, renamed over the old one), because the token is as
//! good as the password until it expires or is logged out. A file that is
//! readable or writable by others, malformed, of another user or expired
//! is not used (and said why); nothing else depends on it.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest session file read, in bytes.
pub const SESSION_FILE_MAX_BYTES: u64 = 4 * 1024;
/// The mode a session file is created with and must have.
pub const SESSION_FILE_MODE: u32 = 0o600;

/// One account's session, as the client keeps it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: u32,
    pub handle: String,
    pub token: String,
    pub expires_ms: i64,
}

/// Never shows the token.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("handle", &self.handle)
            .field("token", &"[redacted]")
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// The session file of `user` in `dir`.
pub fn path(dir: &Path, user: u32) -> PathBuf {
    dir.join(format!("{user}.session"))
}

/// Writes `session` as `user`'s file in `dir`, mode 0600, atomically.
pub fn save(dir: &Path, session: &Session) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = path(dir, session.user);
    let tmp = file.with_extension("session.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut bytes = serde_json::to_vec(session).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SESSION_FILE_MODE)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &file)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes `user`'s session file, if any.
pub fn remove(dir: &Path, user: u32) -> std::io::Result<()> {
    match std::fs::remove_file(path(dir, user)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `user`'s session in `dir`, valid at `now_ms`: `Ok(None)` when there is
/// no file, `Err(why)` when there is one that cannot be used.
pub fn load(dir: &Path, user: u32, now_ms: i64) -> Result<Option<Session>, String> {
    let file = path(dir, user);
    let meta = match std::fs::metadata(&file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is open to other users (mode {:o}); not used: log in again",
            file.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    if meta.len() > SESSION_FILE_MAX_BYTES {
        return Err(format!("{} is too large; not used", file.display()));
    }
    let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let session: Session = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a session file ({e}); not used", file.display()))?;
    if session.user != user {
        return Err(format!(
            "{} is of user {}; not used",
            file.display(),
            session.user
        ));
    }
    if session.expires_ms <= now_ms {
        return Err("the saved session has expired: log in again".into());
    }
    Ok(Some(session))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: u32, expires_ms: i64) -> Session {
        Session {
            user,
            handle: "alice".into(),
            token: "ab".repeat(32),
            expires_ms,
        }
    }

    #[test]
    fn a_saved_session_is_private_and_read_back_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), 4, 0), Ok(None));
        save(dir.path(), &session(4, 100)).unwrap();
        let mode = std::fs::metadata(path(dir.path(), 4))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(dir.path(), 4, 99), Ok(Some(session(4, 100))));
        assert!(load(dir.path(), 4, 100).unwrap_err().contains("expired"));
        assert!(!format!("{:?}", session(4, 1)).contains("abab"));
        save(dir.path(), &session(4, 200)).unwrap();
        assert_eq!(load(dir.path(), 4, 150), Ok(Some(session(4, 200))));
        remove(dir.path(), 4).unwrap();
        remove(dir.path(), 4).unwrap();
        assert_eq!(load(dir.path(), 4, 0), Ok(None));
    }

    #[test]
    fn an_unsafe_or_foreign_file_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &session(4, 100)).unwrap();
        let file = path(dir.path(), 4);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(dir.path(), 4, 0)
            .unwrap_err()
            .contains("open to other users"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&file, path(dir.path(), 5)).unwrap();
        assert!(load(dir.path(), 5, 0).unwrap_err().contains("of user 4"));
        std::fs::write(path(dir.path(), 5), b"{oops").unwrap();
        assert!(load(dir.path(), 5, 0)
            .unwrap_err()
            .contains("not a session file"));
    }
}
