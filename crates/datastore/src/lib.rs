//! tsn's datastore: every byte tsn keeps lives in plain JSON Lines files.
//!
//! A server owns one directory, `datastore/<cluster>/<server>/`:
//!
//! ```text
//! journal.data                         every change, in commit order (the source of truth)
//! global_clients.data                  every user of every cluster
//! local_clients/<cid>/timeline.data    the user's own posts and those of users it follows
//! local_clients/<cid>/following.data   follow / unfollow records of the user
//! local_clients/<cid>/followers.data   add / remove records of the user's followers
//! ```
//!
//! A change is acknowledged once its journal line is fsynced ([`journal`]).
//! The other files are views of the journal: every line carries the journal
//! sequence number (`seq`) that wrote it, so at start [`store::Store::open`]
//! re-applies to each file exactly the journal entries it is missing.
//! A torn last line (a crash in the middle of a write) is cut off with a
//! warning; a corrupt line elsewhere is reported and skipped.

pub mod fold;
pub mod handle;
pub mod journal;
pub mod jsonl;
pub mod layout;
pub mod limits;
pub mod record;
pub mod store;
pub mod validate;

pub use journal::Journal;
pub use layout::Layout;
pub use record::{Entry, Op, Post};
pub use store::Store;

/// Errors of the datastore. Corrupt data is not an error: it is reported and
/// skipped where it is read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal sequence {got} does not follow {last}")]
    Gap { last: u64, got: u64 },
}

impl Error {
    /// Whether the disk (or the quota) is full: a condition that passes
    /// when space returns, so a writer refuses and retries instead of
    /// stopping.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || matches!(
                        source.raw_os_error(),
                        Some(libc_enospc::ENOSPC | libc_enospc::EDQUOT)
                    )
            }
            Error::Gap { .. } => false,
        }
    }
}

/// The two errno values of a full disk (Linux), without a libc dependency.
mod libc_enospc {
    pub const ENOSPC: i32 = 28;
    pub const EDQUOT: i32 = 122;
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
