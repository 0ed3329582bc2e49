//! Where the tsn binaries are.
//!
//! Integration tests of one package cannot ask Cargo for the binaries of
//! another (`CARGO_BIN_EXE_*` only names the package's own), so the harness
//! looks where Cargo puts them: `$TSN_BIN_DIR` if set, else the profile
//! directory above the test executable (`target/debug/deps/core-…` runs,
//! `target/debug/tsn_server` is next to `deps/`).

use std::path::{Path, PathBuf};

/// The coordinator binary.
pub const COORDINATOR: &str = "tsn_coordinator";
/// The server binary.
pub const SERVER: &str = "tsn_server";
/// The sync service binary.
pub const SYNC_SERVICE: &str = "tsn_sync_service";
/// The client binary.
pub const CLIENT: &str = "tsn_client";

/// The environment variable that overrides where binaries are looked for.
pub const BIN_DIR_ENV: &str = "TSN_BIN_DIR";

/// The path of binary `name`. Panics with the fix when it is missing:
/// a test cannot do anything useful without it.
pub fn bin_path(name: &str) -> PathBuf {
    let env_dir = std::env::var_os(BIN_DIR_ENV).map(PathBuf::from);
    let exe = std::env::current_exe().ok();
    match find(name, env_dir.as_deref(), exe.as_deref()) {
        Some(path) => path,
        None => panic!(
            "{name} not found (looked in ${BIN_DIR_ENV} or next to the test executable): \
             build the binaries first: cargo build --bins"
        ),
    }
}

/// The directories searched, in order: the override, then the test
/// executable's directory and its parent.
fn candidates(env_dir: Option<&Path>, exe: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = env_dir {
        // An explicit directory is the only place looked at: silently
        // falling back would test other binaries than the ones asked for.
        return vec![dir.to_path_buf()];
    }
    let mut dirs = Vec::new();
    if let Some(exe_dir) = exe.and_then(Path::parent) {
        if let Some(profile_dir) = exe_dir.parent() {
            dirs.push(profile_dir.to_path_buf());
        }
        dirs.push(exe_dir.to_path_buf());
    }
    dirs
}

fn find(name: &str, env_dir: Option<&Path>, exe: Option<&Path>) -> Option<PathBuf> {
    candidates(env_dir, exe)
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_comes_before_deps() {
        let dirs = candidates(None, Some(Path::new("/t/debug/deps/core-1234")));
        assert_eq!(
            dirs,
            vec![PathBuf::from("/t/debug"), PathBuf::from("/t/debug/deps")]
        );
    }

    #[test]
    fn override_is_the_only_place() {
        let dirs = candidates(
            Some(Path::new("/opt/tsn")),
            Some(Path::new("/t/debug/deps/core-1234")),
        );
        assert_eq!(dirs, vec![PathBuf::from("/opt/tsn")]);
    }

    #[test]
    fn finds_an_existing_file_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("tsn_x"), b"").expect("write");
        assert_eq!(
            find("tsn_x", Some(dir.path()), None),
            Some(dir.path().join("tsn_x"))
        );
        assert_eq!(find("tsn_y", Some(dir.path()), None), None);
    }
}
