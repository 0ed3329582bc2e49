//! Client assignment: each user's cluster, remembered durably before any
//! reply names it, and the classic `GetServer` lookup built on it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use tsn_datastore::limits::USER_ID_MAX;
use tsn_proto::csce438::ServerInfo;
use tsn_proto::tsn::ProcessKind;

use super::rate::ASSIGN_NEW_USERS_PER_PEER_PER_S;
use super::registry::{split_address, Process};
use super::{ControlPlane, Error, Result};
use crate::config::ASSIGN_USERS_PER_CALL_MAX;
use crate::persist::Assignment;
use crate::replicated::Command;

impl ControlPlane {
    /// The cluster of each user: the remembered one, else its home cluster
    /// among the current clusters, remembered durably before replying.
    /// Unlimited per caller: the handlers use `assign_for`.
    #[cfg(test)]
    pub fn assign(&mut self, users: &[u32]) -> Result<Vec<u32>> {
        self.assign_for(None, users, Instant::now())
    }

    /// The cluster of each user (the remembered one, else its home cluster
    /// among the current clusters, remembered durably before replying),
    /// for the caller at `peer`: the users it
    /// adds to the table (not those already there) come out of its token
    /// bucket ([`super::rate`]), and the table holds at most `--users-max`.
    pub fn assign_for(
        &mut self,
        peer: Option<IpAddr>,
        users: &[u32],
        now: Instant,
    ) -> Result<Vec<u32>> {
        if users.len() > ASSIGN_USERS_PER_CALL_MAX {
            return Err(Error::InvalidArgument(format!(
                "at most {ASSIGN_USERS_PER_CALL_MAX} users per call, got {}",
                users.len()
            )));
        }
        if let Some(bad) = users.iter().find(|&&u| u == 0 || u > USER_ID_MAX) {
            return Err(Error::InvalidArgument(format!(
                "user ids are 1..={USER_ID_MAX}, got {bad}"
            )));
        }
        let mut fresh: HashMap<u32, u32> = HashMap::new();
        let mut new = Vec::new();
        let mut clusters = Vec::with_capacity(users.len());
        for &u in users {
            let c = match self.assignments.get(&u).or_else(|| fresh.get(&u)) {
                Some(&c) => c,
                None => {
                    let c = tsn_cluster::home_cluster(u, self.cluster_count);
                    fresh.insert(u, c);
                    new.push(Assignment {
                        user: u,
                        cluster: c,
                    });
                    c
                }
            };
            clusters.push(c);
        }
        if self.assignments.len() + new.len() > self.users_max {
            return Err(Error::ResourceExhausted(format!(
                "the coordinator already serves {} users (--users-max)",
                self.users_max
            )));
        }
        if let Some(peer) = peer.filter(|_| !new.is_empty()) {
            if !self.new_users.take(peer, new.len(), now) {
                return Err(Error::ResourceExhausted(format!(
                    "{peer} asked for more than {ASSIGN_NEW_USERS_PER_PEER_PER_S} new users per second; try again later"
                )));
            }
        }
        if let Some(highest) = new.iter().map(|a| a.user).max() {
            self.persistence.commit(&Command::Assign(new))?;
            self.next_user = self.next_user.max(highest.saturating_add(1));
        }
        self.assignments.extend(fresh);
        Ok(clusters)
    }

    /// The classic lookup: the live primary of client `id`'s cluster.
    /// Unlimited per caller: the handler uses `get_server_for`.
    #[cfg(test)]
    pub fn get_server(&mut self, id: i32, now: Instant) -> Result<ServerInfo> {
        self.get_server_for(None, id, now)
    }

    /// [`ControlPlane::get_server`] for the caller at `peer`: the lookup is
    /// open to every client, so a user it adds to the table comes out of
    /// the caller's token bucket, as in [`ControlPlane::assign_for`]; a
    /// user already there is always answered.
    pub fn get_server_for(
        &mut self,
        peer: Option<IpAddr>,
        id: i32,
        now: Instant,
    ) -> Result<ServerInfo> {
        let Some(user) = u32::try_from(id).ok().filter(|&u| u > 0) else {
            return Err(Error::InvalidArgument(
                "client ids are positive integers".into(),
            ));
        };
        let (c, primary) = self.home_primary(peer, user, now)?;
        let Some((primary_id, p)) = primary else {
            return Err(Error::Unavailable(format!(
                "cluster {c} has no live primary"
            )));
        };
        let (hostname, port) = split_address(&p.address);
        Ok(ServerInfo {
            server_id: i32::try_from(primary_id).unwrap_or(i32::MAX),
            hostname: hostname.to_string(),
            port: port.to_string(),
            r#type: "server".to_string(),
            cluster_id: i32::try_from(c).unwrap_or(0),
            is_master: true,
        })
    }

    /// `user`'s cluster (assigned now if new, from the token bucket of the
    /// caller at `peer`) and its primary (id, process) while that one is
    /// alive. The one
    /// lookup behind `GetServer` and the MP3 `FetchAssignment`.
    pub(super) fn home_primary(
        &mut self,
        peer: Option<IpAddr>,
        user: u32,
        now: Instant,
    ) -> Result<(u32, Option<(u32, &Process)>)> {
        // One user asked, one cluster answered: `first` is always there.
        let c = self
            .assign_for(peer, &[user], now)?
            .first()
            .copied()
            .unwrap_or(0);
        let primary_id = self.record(c).primary_id;
        let primary = self
            .processes
            .get(&(c, ProcessKind::Server, primary_id))
            .filter(|p| primary_id != 0 && self.is_alive(p, now))
            .map(|p| (primary_id, p));
        Ok((c, primary))
    }
}
