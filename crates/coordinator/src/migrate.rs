//! The state files of a coordinator from before the group
//! (`clusters.json`, `assignments.data`, `accounts.data`): a group whose
//! committed state is still empty takes them over once, as its first
//! commands, so that an existing deployment keeps its epochs, assignments
//! and accounts.

use std::path::Path;

use crate::config::ASSIGN_USERS_PER_CALL_MAX;
use crate::persist::{self, Files, Loaded, Persistence};
use crate::replicated::Command;

/// `loaded` if the group holds anything; else what the state files hold,
/// committed through `persistence` first.
pub fn from_state_files(
    dir: &Path,
    loaded: Loaded,
    persistence: &mut dyn Persistence,
) -> persist::Result<Loaded> {
    let empty =
        loaded.clusters.is_none() && loaded.assignments.is_empty() && loaded.accounts.is_empty();
    let not_empty = |file| std::fs::metadata(dir.join(file)).is_ok_and(|m| m.len() > 0);
    let present = dir.join(persist::CLUSTERS_FILE).exists()
        || not_empty(persist::ASSIGNMENTS_FILE)
        || not_empty(persist::ACCOUNTS_FILE);
    if !empty || !present {
        return Ok(loaded);
    }
    let mut old = Files::open(dir, false)?.load()?;
    if let Some(clusters) = &old.clusters {
        persistence.commit(&Command::Clusters(clusters.clone()))?;
    }
    for chunk in old.assignments.chunks(ASSIGN_USERS_PER_CALL_MAX) {
        persistence.commit(&Command::Assign(chunk.to_vec()))?;
    }
    // A handle that appears twice keeps its first account, as it did.
    let mut handles = std::collections::HashSet::new();
    old.accounts.retain(|a| handles.insert(a.handle.clone()));
    for account in &old.accounts {
        persistence.commit(&Command::Account(account.clone()))?;
    }
    tracing::info!(
        users = old.assignments.len(),
        accounts = old.accounts.len(),
        "took over the state files of a coordinator from before the group"
    );
    Ok(old)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::persist::{AccountRecord, Assignment, ClusterRecord, StoredClusters};
    use crate::replicated::Replicated;

    /// Applies what it is given, as every member of a group does.
    #[derive(Default)]
    struct Group(Replicated);

    impl Persistence for Group {
        fn commit(&mut self, cmd: &Command) -> persist::Result<()> {
            self.0.apply(cmd).map_err(persist::Error::Invalid)
        }
    }

    fn empty() -> Loaded {
        Loaded {
            clusters: None,
            assignments: Vec::new(),
            accounts: Vec::new(),
        }
    }

    #[test]
    fn an_empty_group_takes_over_the_state_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::open(dir.path(), false).unwrap();
        let stored = StoredClusters {
            cluster_count: 2,
            clusters: vec![
                ClusterRecord {
                    cluster_id: 1,
                    epoch: 7,
                    primary_id: 2,
                    in_sync: BTreeSet::from([1]),
                },
                ClusterRecord::fresh(2),
            ],
        };
        files.save_clusters(&stored).unwrap();
        let users: Vec<Assignment> = (1..=3)
            .map(|user| Assignment { user, cluster: 1 })
            .collect();
        files.append_assignments(&users).unwrap();
        let alice = AccountRecord {
            handle: "alice".into(),
            user: 4,
            cluster: 2,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$qLml5cbgoJ9TnLjjLOx1wYGMnQkB7hBEIW3P5a6LyUs".into(),
            created_ms: 1,
        };
        files.commit(&Command::Account(alice.clone())).unwrap();
        let mut users_then = users.clone();
        users_then.push(Assignment {
            user: 4,
            cluster: 2,
        });

        let mut group = Group::default();
        let loaded = from_state_files(dir.path(), empty(), &mut group).unwrap();
        assert_eq!(loaded.clusters.as_ref(), Some(&stored));
        assert_eq!(loaded.assignments, users_then);
        assert_eq!(group.0.loaded().clusters, Some(stored));
        assert_eq!(group.0.loaded().assignments, users_then);
        assert_eq!(group.0.loaded().accounts, vec![alice]);

        // A group that holds anything keeps it: the files are not read again.
        let held = group.0.loaded();
        let mut other = Group::default();
        let kept = from_state_files(dir.path(), held, &mut other).unwrap();
        assert_eq!(kept.assignments.len(), 4);
        assert_eq!(other.0, Replicated::default(), "committed again");
    }

    #[test]
    fn without_state_files_nothing_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut group = Group::default();
        let loaded = from_state_files(dir.path(), empty(), &mut group).unwrap();
        assert!(loaded.clusters.is_none());
        assert_eq!(group.0, Replicated::default());
        assert!(!dir.path().join(persist::ASSIGNMENTS_FILE).exists());
    }
}
