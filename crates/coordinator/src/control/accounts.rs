//! The handle registry: sign-ups and handle lookups.
//!
//! A handle is unique across tsn because this one place decides it, under
//! the coordinator's state lock, whatever the clusters can see of each
//! other. A sign-up takes a fresh client id (the one after the highest id
//! ever assigned, so no classic client has used it) and assigns it to its cluster by the
//! classic rule, in the one [`Command::Account`] that also stores the
//! account; it is committed by the coordinator group before the reply. The password arrives already hashed: hashing is slow, and the
//! handler does it outside the lock, between [`ControlPlane::admit_signup`]
//! and [`ControlPlane::sign_up`].

use std::net::IpAddr;
use std::time::Instant;

use tsn_datastore::handle::{Handle, Pattern};
use tsn_datastore::limits::USER_ID_MAX;

use super::rate::SIGNUPS_PER_PEER_PER_S;
use super::{ControlPlane, Error, Result};
use crate::persist::AccountRecord;
use crate::replicated::Command;

impl ControlPlane {
    /// Whether the caller at `peer` may sign up `handle` now: one token of
    /// its sign-up bucket, and the handle still free. Checked before the
    /// password is hashed, so a refused sign-up costs no hash.
    pub fn admit_signup(
        &mut self,
        peer: Option<IpAddr>,
        handle: &Handle,
        now: Instant,
    ) -> Result<()> {
        self.check_handle_free(handle)?;
        if let Some(peer) = peer {
            if !self.signups.take(peer, 1, now) {
                return Err(Error::ResourceExhausted(format!(
                    "{peer} asked for more than {SIGNUPS_PER_PEER_PER_S} sign-ups per second; try again later"
                )));
            }
        }
        Ok(())
    }

    /// Creates the account `handle` with `password_hash` (Argon2id, PHC
    /// string) at `now_ms` (wall clock, ms since the Unix epoch): a fresh
    /// client id, assigned to its home cluster, both stored durably before
    /// they are adopted.
    pub fn sign_up(
        &mut self,
        handle: &Handle,
        password_hash: String,
        now_ms: i64,
    ) -> Result<AccountRecord> {
        self.check_handle_free(handle)?;
        if self.assignments.len() >= self.users_max {
            return Err(Error::ResourceExhausted(format!(
                "the coordinator already serves {} users (--users-max)",
                self.users_max
            )));
        }
        let user = self.fresh_user()?;
        let cluster = tsn_cluster::home_cluster(user, self.cluster_count);
        let account = AccountRecord {
            handle: handle.as_str().to_string(),
            user,
            cluster,
            password_hash,
            created_ms: now_ms,
        };
        // One command: the id's assignment and the account are decided
        // together, on every member of the group alike.
        self.persistence
            .commit(&Command::Account(account.clone()))?;
        self.assignments.insert(user, cluster);
        self.next_user = user.saturating_add(1);
        self.account_handles
            .insert(account.user, account.handle.clone());
        self.accounts
            .insert(account.handle.clone(), account.clone());
        tracing::info!(handle = %account.handle, user, cluster, "signed up");
        Ok(account)
    }

    /// The account of `handle`.
    pub fn resolve(&self, handle: &Handle) -> Result<&AccountRecord> {
        self.accounts
            .get(handle.as_str())
            .ok_or_else(|| Error::NotFound(format!("no account {handle}")))
    }

    /// The accounts whose handle matches `pattern`, in handle order, at
    /// most `max`; and whether more matched.
    pub fn list_accounts(&self, pattern: &Pattern, max: usize) -> (Vec<&AccountRecord>, bool) {
        let prefix = pattern.literal_prefix();
        let mut found = self
            .accounts
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(h, _)| h.starts_with(prefix))
            .filter(|(h, _)| pattern.matches(h))
            .map(|(_, a)| a);
        let listed: Vec<&AccountRecord> = found.by_ref().take(max).collect();
        let more = found.next().is_some();
        (listed, more)
    }

    /// The account whose id is `user`, if `user` signed up.
    pub fn account_of(&self, user: u32) -> Option<&AccountRecord> {
        self.account_handles
            .get(&user)
            .and_then(|h| self.accounts.get(h))
    }

    fn check_handle_free(&self, handle: &Handle) -> Result<()> {
        if self.accounts.contains_key(handle.as_str()) {
            return Err(Error::AlreadyExists(format!(
                "the handle {handle} is taken"
            )));
        }
        Ok(())
    }

    /// The lowest id at or after `next_user` that nobody was ever assigned.
    fn fresh_user(&self) -> Result<u32> {
        let mut user = self.next_user.max(1);
        while self.assignments.contains_key(&user) {
            user = user.saturating_add(1);
            if user > USER_ID_MAX {
                break;
            }
        }
        if user > USER_ID_MAX {
            return Err(Error::ResourceExhausted(
                "no client id is left for a new account".into(),
            ));
        }
        Ok(user)
    }
}
