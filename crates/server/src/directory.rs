//! What a server asks beyond its own data: which cluster serves a user (the
//! coordinator's remembered assignment), and whether a user of another
//! cluster exists (that cluster's primary). Answers about assignments are
//! cached: they never change.

use std::collections::HashMap;
use std::sync::Mutex;

use tsn_cluster::coord::server_address;
use tsn_proto::tsn::replica_client::ReplicaClient;
use tsn_proto::tsn::UserExistsRequest;

use crate::node::{lock, Node};

/// Most cached assignments; the cache is emptied when full.
const ASSIGNMENT_CACHE_MAX_USERS: usize = 1_000_000;
/// Time limit of asking another cluster's primary.
const REMOTE_CALL_TIMEOUT_MS: u64 = 1_000;

#[derive(Default)]
pub struct Directory {
    home: Mutex<HashMap<u32, u32>>,
}

/// Whether a user exists, as far as this server can tell.
pub enum Existence {
    Yes,
    No,
    /// Its cluster could not be asked.
    Unknown(String),
}

impl Directory {
    /// The cluster serving `user`.
    pub async fn home(&self, node: &Node, user: u32) -> Result<u32, String> {
        if let Some(c) = lock(&self.home).get(&user) {
            return Ok(*c);
        }
        let clusters = node
            .coord
            .assign(&[user])
            .await
            .map_err(|e| format!("the coordinator cannot be asked: {}", e.message()))?;
        // `CoordClient::assign` answers one cluster per user asked.
        let Some(&c) = clusters.first() else {
            return Err("the coordinator assigned no cluster".into());
        };
        let mut cache = lock(&self.home);
        if cache.len() >= ASSIGNMENT_CACHE_MAX_USERS {
            cache.clear();
        }
        cache.insert(user, c);
        Ok(c)
    }

    /// Whether `user` has logged in on its cluster. Known users are
    /// answered here; others by their cluster's primary, so that a user can
    /// be followed as soon as it has logged in, before the next sync round.
    pub async fn exists(&self, node: &Node, user: u32) -> Existence {
        if lock(&node.store).state().user_cluster(user).is_some() {
            return Existence::Yes;
        }
        let home = match self.home(node, user).await {
            Ok(h) => h,
            Err(e) => return Existence::Unknown(e),
        };
        if home == node.cluster_id {
            return Existence::No;
        }
        let info = match node.coord.get_server(user).await {
            Ok(i) => i,
            Err(e) => return Existence::Unknown(format!("cluster {home}: {}", e.message())),
        };
        let ch = match node
            .auth
            .channel(&server_address(&info), REMOTE_CALL_TIMEOUT_MS)
        {
            Ok(c) => c,
            Err(e) => return Existence::Unknown(e.to_string()),
        };
        match ReplicaClient::new(ch)
            .user_exists(UserExistsRequest { user })
            .await
        {
            Ok(r) if r.get_ref().exists => Existence::Yes,
            Ok(_) => Existence::No,
            Err(e) => Existence::Unknown(format!("cluster {home}: {}", e.message())),
        }
    }
}
