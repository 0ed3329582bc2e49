//! Where each file lives. The one place that knows the directory layout.

use std::path::{Path, PathBuf};

/// The directory of one server: `<root>/<cluster>/<server>/`.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn new(root: &Path, cluster_id: u32, server_id: u32) -> Self {
        Layout {
            dir: root
                .join(cluster_id.to_string())
                .join(server_id.to_string()),
        }
    }

    pub fn from_dir(dir: PathBuf) -> Self {
        Layout { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.data")
    }

    pub fn global_clients(&self) -> PathBuf {
        self.dir.join("global_clients.data")
    }

    pub fn local_clients(&self) -> PathBuf {
        self.dir.join("local_clients")
    }

    pub fn client_dir(&self, user: u32) -> PathBuf {
        self.local_clients().join(user.to_string())
    }

    pub fn timeline(&self, user: u32) -> PathBuf {
        self.client_dir(user).join("timeline.data")
    }

    pub fn following(&self, user: u32) -> PathBuf {
        self.client_dir(user).join("following.data")
    }

    pub fn followers(&self, user: u32) -> PathBuf {
        self.client_dir(user).join("followers.data")
    }

    /// The path of a derived file.
    pub fn derived(&self, file: DerivedFile) -> PathBuf {
        match file {
            DerivedFile::GlobalClients => self.global_clients(),
            DerivedFile::Timeline(u) => self.timeline(u),
            DerivedFile::Following(u) => self.following(u),
            DerivedFile::Followers(u) => self.followers(u),
        }
    }
}

/// One file derived from the journal, named without building its path:
/// the write path groups lines and caches open files by this key, which
/// costs a few integer operations to hash and compare, where a `PathBuf`
/// costs allocations and a hash over every byte of the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DerivedFile {
    GlobalClients,
    Timeline(u32),
    Following(u32),
    Followers(u32),
}

impl DerivedFile {
    /// The key as one integer: the user id above two bits of kind.
    pub fn packed(self) -> u64 {
        let (user, kind) = match self {
            DerivedFile::GlobalClients => (0, 0),
            DerivedFile::Timeline(u) => (u, 1),
            DerivedFile::Following(u) => (u, 2),
            DerivedFile::Followers(u) => (u, 3),
        };
        (u64::from(user) << 2) | kind
    }
}

impl std::hash::Hash for DerivedFile {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.packed());
    }
}
