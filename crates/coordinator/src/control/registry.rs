//! The registry of processes: heartbeats register and refresh them, and
//! the coordinator's replies and views are read from it. Not persisted: a
//! restarted coordinator learns it again from the next heartbeats.

use std::net::IpAddr;
use std::time::Instant;

use tsn_proto::tsn::{
    ClusterView, HeartbeatReply, HeartbeatRequest, Peer, ProcessKind, ProcessView, Role,
};

use super::{ControlPlane, Error, Result};
use tsn_datastore::validate::SEQ_MAX;

use crate::config::{
    ADDRESS_MAX_BYTES, EPOCH_CLAIM_MAX, EPOCH_MAX, SERVERS_PER_CLUSTER_MAX, SERVER_ID_MAX,
};

/// (cluster id, kind, server id); a sync service has server id 0.
pub(super) type ProcessKey = (u32, ProcessKind, u32);

/// What the coordinator knows of one registered process. Not persisted: a
/// restarted coordinator learns it again from the next heartbeats.
#[derive(Clone, Debug)]
pub(super) struct Process {
    pub(super) address: String,
    /// host:port of its MP3 variant listener (empty: none).
    pub(super) mp3_address: String,
    pub(super) last_heartbeat: Instant,
    pub(super) last_seq: u64,
    pub(super) last_epoch: u64,
    pub(super) requested_role: Role,
    /// Its last beat said its cluster time is unknown or beyond its bound:
    /// it is not made primary.
    pub(super) clock_unbounded: bool,
    /// Whether its last logged transition was to alive, so each transition
    /// is logged once.
    pub(super) reported_alive: bool,
}

impl ControlPlane {
    /// Registers or refreshes the sender, decides a server's role, and tells
    /// it the cluster's current view.
    pub fn heartbeat(&mut self, req: &HeartbeatRequest, now: Instant) -> Result<HeartbeatReply> {
        let kind = self.check_heartbeat(req)?;
        let c = req.cluster_id;
        self.register((c, kind, req.server_id), req, now)?;
        let role = match kind {
            ProcessKind::Server => self.decide_role(req)?,
            _ => Role::Unspecified,
        };
        Ok(self.reply(c, role, now))
    }

    /// Refuses a malformed heartbeat before anything changes; returns its kind.
    pub(super) fn check_heartbeat(&self, req: &HeartbeatRequest) -> Result<ProcessKind> {
        let invalid = |m: String| Err(Error::InvalidArgument(m));
        self.check_cluster(req.cluster_id)?;
        let kind = match ProcessKind::try_from(req.kind) {
            Ok(ProcessKind::Server) => ProcessKind::Server,
            Ok(ProcessKind::SyncService) => ProcessKind::SyncService,
            _ => {
                return invalid(format!(
                    "process kind {} is not SERVER or SYNC_SERVICE",
                    req.kind
                ))
            }
        };
        match kind {
            ProcessKind::Server if req.server_id == 0 || req.server_id > SERVER_ID_MAX => {
                return invalid(format!(
                    "server ids are 1..={SERVER_ID_MAX}, got {}",
                    req.server_id
                ))
            }
            ProcessKind::SyncService if req.server_id != 0 => {
                return invalid(format!(
                    "a sync service heartbeats with server id 0, got {}",
                    req.server_id
                ))
            }
            _ => {}
        }
        check_address(&req.address)?;
        if !req.mp3_address.is_empty() {
            check_address(&req.mp3_address)?;
        }
        if req.epoch > EPOCH_MAX || req.last_epoch > EPOCH_MAX {
            return invalid(format!("epochs are at most {EPOCH_MAX}"));
        }
        if req.last_seq > SEQ_MAX {
            return invalid(format!("journal seqs are at most {SEQ_MAX}"));
        }
        if Role::try_from(req.requested_role).is_err() {
            return invalid(format!("role {} is not a role", req.requested_role));
        }
        // A server's epochs come from this coordinator: one beyond what it
        // announced (+1, a promotion it may not have stored yet) is a lie
        // or a bug, and adopting it would use up the epochs. A cluster
        // without a primary (fresh, or after -c) learns its epoch from the
        // servers, up to what leaves room for promotions.
        let rec = self.record(req.cluster_id);
        let claimed = req.epoch.max(req.last_epoch);
        let room = EPOCH_CLAIM_MAX.max(rec.epoch);
        let limit = if rec.primary_id == 0 {
            room
        } else {
            rec.epoch.saturating_add(1).min(room)
        };
        if kind == ProcessKind::Server && claimed > limit {
            return invalid(format!(
                "epoch {claimed} is beyond cluster {}'s epoch {} (at most {limit} is believed)",
                req.cluster_id, rec.epoch
            ));
        }
        Ok(kind)
    }

    pub(super) fn register(
        &mut self,
        key: ProcessKey,
        req: &HeartbeatRequest,
        now: Instant,
    ) -> Result<()> {
        let (c, kind, s) = key;
        let requested_role = Role::try_from(req.requested_role).unwrap_or(Role::Unspecified);
        if let Some(p) = self.processes.get(&key) {
            if p.address != req.address && self.is_alive(p, now) {
                return Err(Error::AlreadyExists(match kind {
                    ProcessKind::Server => format!(
                        "server id {s} of cluster {c} is already registered at {}",
                        p.address
                    ),
                    _ => format!(
                        "the sync service of cluster {c} is already registered at {}",
                        p.address
                    ),
                }));
            }
        } else if kind == ProcessKind::Server {
            self.make_room(c, now)?;
        }

        let name = process_name(key);
        match self.processes.get_mut(&key) {
            Some(p) => {
                if p.address != req.address {
                    tracing::info!(
                        cluster = c,
                        "{name} moved from {} to {}",
                        p.address,
                        req.address
                    );
                    p.address = req.address.clone();
                }
                if !p.reported_alive {
                    tracing::info!(cluster = c, address = %p.address, "{name} is alive again");
                    p.reported_alive = true;
                }
                p.last_heartbeat = p.last_heartbeat.max(now);
                p.mp3_address.clone_from(&req.mp3_address);
                p.last_seq = req.last_seq;
                p.last_epoch = req.last_epoch;
                p.requested_role = requested_role;
                p.clock_unbounded = req.clock_unbounded;
            }
            None => {
                tracing::info!(cluster = c, address = %req.address, "{name} registered");
                self.processes.insert(
                    key,
                    Process {
                        address: req.address.clone(),
                        mp3_address: req.mp3_address.clone(),
                        last_heartbeat: now,
                        last_seq: req.last_seq,
                        last_epoch: req.last_epoch,
                        requested_role,
                        clock_unbounded: req.clock_unbounded,
                        reported_alive: true,
                    },
                );
            }
        }
        Ok(())
    }

    /// Before a new server of cluster `c` registers: forgets dead secondaries
    /// if the cluster is full, and refuses if it is still full.
    pub(super) fn make_room(&mut self, c: u32, now: Instant) -> Result<()> {
        if self.servers(c).count() < SERVERS_PER_CLUSTER_MAX {
            return Ok(());
        }
        let primary = self.record(c).primary_id;
        let dead: Vec<ProcessKey> = self
            .servers(c)
            .filter(|(k, p)| k.2 != primary && !self.is_alive(p, now))
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            tracing::info!(cluster = c, "forgot dead {} to make room", process_name(k));
            self.processes.remove(&k);
        }
        if self.servers(c).count() >= SERVERS_PER_CLUSTER_MAX {
            return Err(Error::ResourceExhausted(format!(
                "cluster {c} already has {SERVERS_PER_CLUSTER_MAX} live servers"
            )));
        }
        Ok(())
    }

    pub(super) fn reply(&self, c: u32, role: Role, now: Instant) -> HeartbeatReply {
        let rec = self.record(c);
        let primary_address = self
            .processes
            .get(&(c, ProcessKind::Server, rec.primary_id))
            .filter(|_| rec.primary_id != 0)
            .map(|p| p.address.clone())
            .unwrap_or_default();
        let secondaries = self
            .servers(c)
            .filter(|(k, p)| k.2 != rec.primary_id && self.is_alive(p, now))
            .map(|(k, p)| Peer {
                server_id: k.2,
                address: p.address.clone(),
            })
            .collect();
        HeartbeatReply {
            epoch: rec.epoch,
            role: role as i32,
            primary_id: rec.primary_id,
            primary_address,
            in_sync: rec.in_sync.iter().copied().collect(),
            secondaries,
            failure_timeout_ms: u32::try_from(self.failure_timeout.as_millis()).unwrap_or(u32::MAX),
            cluster_count: self.cluster_count,
            // Set by the service as it answers: the decision is pure.
            coordinator_time_ms: 0,
        }
    }

    /// The MP3 lookup: client `user`'s cluster and the MP3 listener of its
    /// live primary (`None` for the address when there is none, or when
    /// it has no MP3 listener).
    /// Open to every MP3 client: a user it adds to the table comes out of
    /// the token bucket of the caller at `peer` ([`ControlPlane::assign_for`]).
    pub fn mp3_primary(
        &mut self,
        peer: Option<IpAddr>,
        user: u32,
        now: Instant,
    ) -> Result<(u32, Option<String>)> {
        let (c, primary) = self.home_primary(peer, user, now)?;
        let address = primary
            .filter(|(_, p)| !p.mp3_address.is_empty())
            .map(|(_, p)| p.mp3_address.clone());
        Ok((c, address))
    }

    /// (cluster, server id, MP3 listener, alive) of every server that has one.
    pub fn mp3_listeners(&self, now: Instant) -> Vec<(u32, u32, String, bool)> {
        self.processes
            .iter()
            .filter(|((_, kind, _), p)| *kind == ProcessKind::Server && !p.mp3_address.is_empty())
            .map(|(&(c, _, s), p)| (c, s, p.mp3_address.clone(), self.is_alive(p, now)))
            .collect()
    }

    /// Every cluster 1..=N with its registered processes.
    pub fn clusters(&self, now: Instant) -> Vec<ClusterView> {
        (1..=self.cluster_count)
            .map(|c| {
                let rec = self.record(c);
                let processes = self
                    .processes
                    .range(
                        (c, ProcessKind::Unspecified, 0)..=(c, ProcessKind::SyncService, u32::MAX),
                    )
                    .map(|(&(_, kind, s), p)| ProcessView {
                        server_id: s,
                        kind: kind as i32,
                        address: p.address.clone(),
                        role: match kind {
                            ProcessKind::Server if s == rec.primary_id => Role::Primary,
                            ProcessKind::Server => Role::Secondary,
                            _ => Role::Unspecified,
                        } as i32,
                        alive: self.is_alive(p, now),
                        last_seq: p.last_seq,
                        since_heartbeat_ms: u64::try_from(
                            now.saturating_duration_since(p.last_heartbeat).as_millis(),
                        )
                        .unwrap_or(u64::MAX),
                    })
                    .collect();
                ClusterView {
                    cluster_id: c,
                    epoch: rec.epoch,
                    primary_id: rec.primary_id,
                    processes,
                    in_sync: rec.in_sync.iter().copied().collect(),
                }
            })
            .collect()
    }

    /// Alive: heard from within the failure timeout, or still in the grace
    /// period after start (no heartbeat history yet to judge by).
    pub(super) fn is_alive(&self, p: &Process, now: Instant) -> bool {
        self.in_grace(now)
            || now.saturating_duration_since(p.last_heartbeat) <= self.failure_timeout
    }

    pub(super) fn servers(&self, c: u32) -> impl Iterator<Item = (&ProcessKey, &Process)> {
        self.processes
            .range((c, ProcessKind::Server, 0)..=(c, ProcessKind::Server, u32::MAX))
    }
}

/// Checks that `address` looks like `host:port`.
fn check_address(address: &str) -> Result<()> {
    if address.is_empty() {
        return Err(Error::InvalidArgument("the address is empty".into()));
    }
    if address.len() > ADDRESS_MAX_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the address is longer than {ADDRESS_MAX_BYTES} bytes"
        )));
    }
    let (host, port) = split_address(address);
    if host.is_empty() || port.parse::<u16>().is_err() || address.chars().any(char::is_whitespace) {
        return Err(Error::InvalidArgument(format!(
            "address {address:?} is not host:port"
        )));
    }
    Ok(())
}

/// Splits `host:port` at the last ':' (an IPv6 host has colons of its own).
pub fn split_address(address: &str) -> (&str, &str) {
    address.rsplit_once(':').unwrap_or((address, ""))
}

pub(super) fn process_name(key: ProcessKey) -> String {
    match key.1 {
        ProcessKind::SyncService => "sync service".to_string(),
        _ => format!("server {}", key.2),
    }
}
