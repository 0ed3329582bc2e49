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
}
