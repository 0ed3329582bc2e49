//! Where each post goes, as a real client finds it: the coordinator's
//! `GetServer` names the primary of the author's cluster, and the answer is
//! kept until a call to that server fails (then the next post asks again).
//!
//! Each server gets a few HTTP/2 connections that all posters share, the
//! way many clients of one process would; the echo phase uses the very
//! same router with one fixed address, so both loads take the same client
//! path and differ only in what the server does.

use std::collections::HashMap;
use std::sync::Mutex;

use tonic::transport::Channel;
use tonic::Status;
use tsn_cluster::coord::{channel, server_address, CoordClient};
use tsn_cluster::home_cluster;
use tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES;
use tsn_cluster::sync::lock;
use tsn_proto::tsn::posts_client::PostsClient;

use crate::limits::POST_CALL_TIMEOUT_MS;

/// Most distinct server addresses remembered (each kill and restart may
/// add one); past this the table stops growing and later addresses share
/// the last index.
const SERVERS_MAX: usize = 1_024;

/// The connections to one server.
#[derive(Clone)]
pub struct Route {
    pub addr: String,
    /// Index of `addr` in the router's address table.
    pub server: u16,
    clients: Vec<PostsClient<Channel>>,
}

impl Route {
    /// The client of connection `lane` (any number: it wraps around).
    pub fn client(&self, lane: usize) -> PostsClient<Channel> {
        assert!(!self.clients.is_empty());
        self.clients[lane % self.clients.len()].clone()
    }
}

enum Target {
    /// Ask the coordinator; key routes by cluster.
    Coordinator {
        coord: Box<CoordClient>,
        clusters: u32,
    },
    /// Always this one server (the echo server).
    Fixed,
}

pub struct Router {
    target: Target,
    connections: u32,
    routes: Mutex<HashMap<u32, Route>>,
    servers: Mutex<Vec<String>>,
}

impl Router {
    pub fn new(coord: CoordClient, clusters: u32, connections: u32) -> Router {
        assert!(clusters >= 1 && connections >= 1);
        Router {
            target: Target::Coordinator {
                coord: Box::new(coord),
                clusters,
            },
            connections,
            routes: Mutex::new(HashMap::new()),
            servers: Mutex::new(Vec::new()),
        }
    }

    /// A router that sends every post to `addr`.
    pub fn fixed(addr: &str, connections: u32) -> anyhow::Result<Router> {
        assert!(connections >= 1);
        let router = Router {
            target: Target::Fixed,
            connections,
            routes: Mutex::new(HashMap::new()),
            servers: Mutex::new(Vec::new()),
        };
        let route = router.connect(addr)?;
        lock(&router.routes).insert(0, route);
        Ok(router)
    }

    /// The cluster serving `user` (0 for a fixed router).
    pub fn cluster_of(&self, user: u32) -> u32 {
        match &self.target {
            Target::Coordinator { clusters, .. } => home_cluster(user, *clusters),
            Target::Fixed => 0,
        }
    }

    /// The route to the primary serving `user`.
    pub async fn route(&self, user: u32) -> Result<Route, Status> {
        let key = self.cluster_of(user);
        if let Some(r) = lock(&self.routes).get(&key) {
            return Ok(r.clone());
        }
        let Target::Coordinator { coord, .. } = &self.target else {
            return Err(Status::internal("the fixed route is missing"));
        };
        let info = coord.get_server(user).await?;
        let addr = server_address(&info);
        let route = self
            .connect(&addr)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        Ok(lock(&self.routes).entry(key).or_insert(route).clone())
    }

    /// Forgets the route of `user`'s cluster if it still goes to `addr`:
    /// the next post asks the coordinator again.
    pub fn forget(&self, user: u32, addr: &str) {
        if matches!(self.target, Target::Fixed) {
            return;
        }
        let key = self.cluster_of(user);
        let mut routes = lock(&self.routes);
        if routes.get(&key).is_some_and(|r| r.addr == addr) {
            routes.remove(&key);
        }
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

    fn connect(&self, addr: &str) -> anyhow::Result<Route> {
        let clients = (0..self.connections)
            .map(|_| {
                channel(addr, POST_CALL_TIMEOUT_MS).map(|ch| {
                    PostsClient::new(ch).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Route {
            addr: addr.to_string(),
            server: self.server_index(addr),
            clients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fixed_router_always_routes_to_its_server() {
        let r = Router::fixed("127.0.0.1:9", 3).unwrap();
        let a = r.route(1).await.unwrap();
        let b = r.route(77).await.unwrap();
        assert_eq!((a.addr.as_str(), a.server), ("127.0.0.1:9", 0));
        assert_eq!(b.addr, a.addr);
        r.forget(1, "127.0.0.1:9");
        assert!(r.route(1).await.is_ok(), "a fixed route is never forgotten");
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
