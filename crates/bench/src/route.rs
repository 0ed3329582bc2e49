//! Where each post goes: the client library's router, as a real client
//! finds the primary (the coordinator's `GetServer`, kept until a call to
//! that server fails), with one route per cluster shared by all its
//! authors, and a table that numbers the servers that acknowledged posts.
//!
//! Each server gets a few HTTP/2 connections that all posters share, the
//! way many clients of one process would; the echo phase uses the very
//! same router with one fixed address, so both loads take the same client
//! path and differ only in what the server does.

use std::sync::Mutex;

use tsn_client::RouterConfig;
use tsn_cluster::coord::CoordClient;
use tsn_cluster::home_cluster;
use tsn_cluster::sync::lock;

use crate::limits::POST_CALL_TIMEOUT_MS;

/// Most distinct server addresses remembered (each kill and restart may
/// add one); past this the table stops growing and later addresses share
/// the last index.
const SERVERS_MAX: usize = 1_024;

pub struct Router {
    client: tsn_client::Router,
    /// Clusters of the deployment (`None`: the fixed echo route).
    clusters: Option<u32>,
    servers: Mutex<Vec<String>>,
}

fn config(clusters: Option<u32>, connections: u32) -> RouterConfig {
    RouterConfig {
        lanes: connections,
        call_timeout_ms: POST_CALL_TIMEOUT_MS,
        login: false,
        clusters,
    }
}

impl Router {
    pub fn new(coord: CoordClient, clusters: u32, connections: u32) -> Router {
        assert!(clusters >= 1 && connections >= 1);
        Router {
            client: tsn_client::Router::new(coord, config(Some(clusters), connections)),
            clusters: Some(clusters),
            servers: Mutex::new(Vec::new()),
        }
    }

    /// A router that sends every post to `addr`.
    pub fn fixed(addr: &str, connections: u32) -> anyhow::Result<Router> {
        assert!(connections >= 1);
        let router = Router {
            client: tsn_client::Router::fixed(addr, config(None, connections))?,
            clusters: None,
            servers: Mutex::new(Vec::new()),
        };
        router.server_index(addr);
        Ok(router)
    }

    /// The library's router, to make calls through.
    pub fn client(&self) -> &tsn_client::Router {
        &self.client
    }

    /// The cluster serving `user` (0 for a fixed router).
    pub fn cluster_of(&self, user: u32) -> u32 {
        self.clusters.map_or(0, |n| home_cluster(user, n))
    }

    /// The address with index `server`.
    pub fn server_addr(&self, server: u16) -> Option<String> {
        lock(&self.servers).get(server as usize).cloned()
    }

    /// The index of `addr` in the address table, adding it if new.
    pub fn server_index(&self, addr: &str) -> u16 {
        let mut servers = lock(&self.servers);
        if let Some(i) = servers.iter().position(|s| s == addr) {
            return i as u16;
        }
        if servers.len() >= SERVERS_MAX {
            return (SERVERS_MAX - 1) as u16;
        }
        servers.push(addr.to_string());
        (servers.len() - 1) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fixed_router_numbers_its_server_first() {
        let r = Router::fixed("127.0.0.1:9", 3).unwrap();
        assert_eq!(r.server_addr(0).as_deref(), Some("127.0.0.1:9"));
        let route = r.client().route(77).await.unwrap();
        assert_eq!(r.server_index(&route.addr), 0);
        assert_eq!(r.cluster_of(5), 0);
    }

    #[tokio::test]
    async fn server_indexes_are_stable() {
        let r = Router::fixed("127.0.0.1:9", 1).unwrap();
        assert_eq!(r.server_index("127.0.0.1:9"), 0);
        assert_eq!(r.server_index("127.0.0.1:10"), 1);
        assert_eq!(r.server_index("127.0.0.1:9"), 0);
        assert_eq!(r.server_addr(1).as_deref(), Some("127.0.0.1:10"));
        assert_eq!(r.server_addr(9), None);
    }

    #[tokio::test]
    async fn routes_follow_the_home_cluster() {
        let coord = CoordClient::new("127.0.0.1:9").unwrap();
        let r = Router::new(coord, 3, 2);
        assert_eq!(
            (1..=6).map(|u| r.cluster_of(u)).collect::<Vec<_>>(),
            vec![1, 2, 3, 1, 2, 3]
        );
    }
}
