//! What the coordinator group replicates: the commands that are its
//! durable decisions, and the state they build.
//!
//! Every change of what must survive a crash (a cluster's epoch, primary
//! and in-sync set; a user's cluster; an account and its handle) is a
//! [`Command`]. A command takes
//! effect only once the group has committed it; every member then applies
//! the same commands in the same order to its [`Replicated`] state. This
//! file is the one owner of the rules that hold across commands — epochs
//! never go back, a cluster once stored is never forgotten, a user keeps
//! its first cluster, a handle has one owner — so a command that would break one is refused here,
//! on every member alike, and changes nothing. Pure: no I/O, no clock.
//!
//! A new kind of decision is a new variant of [`Command`], a field of
//! [`Replicated`] if it keeps state, and its arm in [`Replicated::apply`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ASSIGN_USERS_PER_CALL_MAX;
use crate::persist::{valid_assignment, AccountRecord, Assignment, Loaded, StoredClusters};

/// One durable decision of the coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Every cluster's record as decided (epochs, primaries, in-sync sets),
    /// and the cluster count it was decided under.
    Clusters(StoredClusters),
    /// Users given a cluster. A user already assigned keeps its cluster.
    Assign(Vec<Assignment>),
    /// A sign-up: the account's handle, its fresh id and that id's cluster
    /// (assigned by the same command), its password hash.
    Account(AccountRecord),
}

impl Command {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Clusters(_) => "clusters",
            Command::Assign(_) => "assign",
            Command::Account(_) => "account",
        }
    }
}

/// What applying a command answered: `Some(reason)` if it was refused (and
/// changed nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    pub refused: Option<String>,
}

/// The state every member builds from the committed commands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicated {
    /// None until a cluster count was first stored.
    pub clusters: Option<StoredClusters>,
    /// user -> cluster, the first assignment of each user.
    pub assignments: BTreeMap<u32, u32>,
    /// The handle registry: handle (lower case) -> account. Absent from the
    /// snapshots of a group from before accounts.
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountRecord>,
}

impl Replicated {
    /// Applies `cmd`, or refuses it with the reason and changes nothing.
    pub fn apply(&mut self, cmd: &Command) -> Result<(), String> {
        match cmd {
            Command::Clusters(next) => self.apply_clusters(next),
            Command::Assign(new) => self.apply_assign(new),
            Command::Account(account) => self.apply_account(account),
        }
    }

    fn apply_account(&mut self, account: &AccountRecord) -> Result<(), String> {
        account.validate()?;
        if self.accounts.contains_key(&account.handle) {
            return Err(format!("the handle {} is taken", account.handle));
        }
        if self.accounts.values().any(|a| a.user == account.user) {
            return Err(format!("user {} already has an account", account.user));
        }
        match self.assignments.get(&account.user) {
            Some(&cluster) if cluster != account.cluster => {
                return Err(format!(
                    "user {} is assigned to cluster {cluster}, not {}",
                    account.user, account.cluster
                ));
            }
            _ => {}
        }
        self.assignments.insert(account.user, account.cluster);
        self.accounts
            .insert(account.handle.clone(), account.clone());
        Ok(())
    }

    fn apply_clusters(&mut self, next: &StoredClusters) -> Result<(), String> {
        next.validate()?;
        if let Some(old) = &self.clusters {
            for rec in &old.clusters {
                let Some(now) = next
                    .clusters
                    .iter()
                    .find(|r| r.cluster_id == rec.cluster_id)
                else {
                    return Err(format!("cluster {} would be forgotten", rec.cluster_id));
                };
                if now.epoch < rec.epoch {
                    return Err(format!(
                        "cluster {}: epoch {} would go back from {}",
                        rec.cluster_id, now.epoch, rec.epoch
                    ));
                }
            }
        }
        self.clusters = Some(next.clone());
        Ok(())
    }

    fn apply_assign(&mut self, new: &[Assignment]) -> Result<(), String> {
        if new.len() > ASSIGN_USERS_PER_CALL_MAX {
            return Err(format!(
                "{} assignments in one command; at most {ASSIGN_USERS_PER_CALL_MAX}",
                new.len()
            ));
        }
        if let Some(bad) = new.iter().find(|a| !valid_assignment(**a)) {
            return Err(format!("assignment {bad:?} is out of range"));
        }
        for a in new {
            self.assignments.entry(a.user).or_insert(a.cluster);
        }
        Ok(())
    }

    /// The state as the [`crate::control::ControlPlane`] loads it at start.
    #[allow(dead_code)] // Used by the coordinator group.
    pub fn loaded(&self) -> Loaded {
        Loaded {
            clusters: self.clusters.clone(),
            assignments: self
                .assignments
                .iter()
                .map(|(&user, &cluster)| Assignment { user, cluster })
                .collect(),
            accounts: self.accounts.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::ClusterRecord;

    fn clusters(epochs: &[(u32, u64, u32)]) -> Command {
        Command::Clusters(StoredClusters {
            cluster_count: epochs.len() as u32,
            clusters: epochs
                .iter()
                .map(|&(c, epoch, primary)| ClusterRecord {
                    cluster_id: c,
                    epoch,
                    primary_id: primary,
                    in_sync: Default::default(),
                })
                .collect(),
        })
    }

    #[test]
    fn epochs_never_go_back() {
        let mut s = Replicated::default();
        s.apply(&clusters(&[(1, 3, 1), (2, 1, 4)])).unwrap();
        let before = s.clone();
        let err = s.apply(&clusters(&[(1, 2, 2), (2, 1, 4)])).unwrap_err();
        assert!(err.contains("go back"), "{err}");
        assert_eq!(s, before, "a refused command changed the state");
        s.apply(&clusters(&[(1, 4, 2), (2, 1, 4)])).unwrap();
        assert_eq!(s.clusters.as_ref().unwrap().clusters[0].epoch, 4);
    }

    #[test]
    fn a_stored_cluster_is_never_forgotten() {
        let mut s = Replicated::default();
        s.apply(&clusters(&[(1, 3, 1), (2, 1, 4)])).unwrap();
        let err = s.apply(&clusters(&[(1, 3, 1)])).unwrap_err();
        assert!(err.contains("forgotten"), "{err}");
    }

    #[test]
    fn invalid_clusters_are_refused() {
        let mut s = Replicated::default();
        let Command::Clusters(mut c) = clusters(&[(1, 3, 1)]) else {
            unreachable!()
        };
        c.clusters[0].in_sync.insert(1);
        assert!(s.apply(&Command::Clusters(c)).is_err());
        assert_eq!(s, Replicated::default());
    }

    #[test]
    fn a_user_keeps_its_first_cluster() {
        let mut s = Replicated::default();
        let a = |user, cluster| Assignment { user, cluster };
        s.apply(&Command::Assign(vec![a(1, 1), a(2, 2)])).unwrap();
        s.apply(&Command::Assign(vec![a(1, 3), a(3, 3)])).unwrap();
        assert_eq!(
            s.loaded().assignments,
            vec![a(1, 1), a(2, 2), a(3, 3)],
            "user 1 moved"
        );
        assert!(s.apply(&Command::Assign(vec![a(0, 1)])).is_err());
        assert!(s.apply(&Command::Assign(vec![a(4, 0)])).is_err());
        assert_eq!(s.assignments.len(), 3);
    }

    fn account(handle: &str, user: u32, cluster: u32) -> AccountRecord {
        AccountRecord {
            handle: handle.into(),
            user,
            cluster,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$qLml5cbgoJ9TnLjjLOx1wYGMnQkB7hBEIW3P5a6LyUs".into(),
            created_ms: 1,
        }
    }

    #[test]
    fn a_handle_has_one_owner() {
        let mut s = Replicated::default();
        s.apply(&Command::Account(account("alice", 7, 1))).unwrap();
        assert_eq!(s.assignments.get(&7), Some(&1), "the id was not assigned");
        let before = s.clone();
        let err = s
            .apply(&Command::Account(account("alice", 8, 2)))
            .unwrap_err();
        assert!(err.contains("taken"), "{err}");
        let err = s
            .apply(&Command::Account(account("bob", 7, 1)))
            .unwrap_err();
        assert!(err.contains("already has an account"), "{err}");
        assert_eq!(s, before, "a refused command changed the state");
        s.apply(&Command::Account(account("bob", 8, 2))).unwrap();
        assert_eq!(s.loaded().accounts.len(), 2);
    }

    #[test]
    fn an_account_keeps_its_ids_cluster() {
        let mut s = Replicated::default();
        s.apply(&Command::Assign(vec![Assignment {
            user: 5,
            cluster: 2,
        }]))
        .unwrap();
        assert!(s.apply(&Command::Account(account("carol", 5, 1))).is_err());
        s.apply(&Command::Account(account("carol", 5, 2))).unwrap();
        let mut bad = account("Dave", 6, 1);
        assert!(
            s.apply(&Command::Account(bad.clone())).is_err(),
            "upper case"
        );
        bad.handle = "dave".into();
        bad.password_hash = "plain".into();
        assert!(s.apply(&Command::Account(bad)).is_err(), "not a hash");
        assert_eq!(s.accounts.len(), 1);
    }

    #[test]
    fn a_snapshot_from_before_accounts_still_loads() {
        let old = r#"{"clusters":null,"assignments":{"3":1}}"#;
        let s: Replicated = serde_json::from_str(old).unwrap();
        assert!(s.accounts.is_empty());
        assert_eq!(s.assignments.get(&3), Some(&1));
    }
}
