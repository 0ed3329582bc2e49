//! Finding the primary of a user's cluster, connecting, and reconnecting
//! through a failover: the one way every tsn client reaches a server.
//!
//! A [`Router`] never trusts a server address for long: whenever a call
//! fails in a way [`is_retryable`] allows (the primary died, a secondary
//! refuses with `UNAVAILABLE`, a call timed out), it forgets the route,
//! asks the coordinator's `GetServer` again which server is the primary
//! now, connects to it (and logs the user in, if asked to), and retries the
//! call, pausing as the [`RetryPolicy`] says. Every other status is the
//! server's final answer and is returned at once.
//!
//! Routes are kept per user, or per home cluster when the router is told
//! how many clusters there are (a load generator with thousands of users
//! then asks the coordinator once per cluster, not once per user). Clones
//! share the routes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;
use tsn_cluster::coord::{self, CoordClient};
use tsn_cluster::home_cluster;
use tsn_cluster::sync::lock;
use tsn_proto::csce438::{Request, ServerInfo};

use crate::error::{CallError, Stage};
use crate::reply;
use crate::retry::{is_retryable, Next, Retry, RetryPolicy};
use crate::route::{Bearer, Route};

/// How a router connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// HTTP/2 connections opened to each server (at least 1); callers pick
    /// one with [`Route::posts_on`].
    pub lanes: u32,
    /// Time limit of one unary call on a route's connections.
    pub call_timeout_ms: u64,
    /// Log the user in (`SNSService.Login`) on each new primary before the
    /// first call, as the classic protocol asks. Routes are then per user.
    pub login: bool,
    /// The number of clusters, to share one route among the users of a
    /// cluster (`None`: one route per user).
    pub clusters: Option<u32>,
}

impl RouterConfig {
    /// One connection per server, routes per user, no login: a program
    /// that acts for many users (a test, a load generator) but is not a
    /// person's session.
    pub const fn per_user(call_timeout_ms: u64) -> RouterConfig {
        RouterConfig {
            lanes: 1,
            call_timeout_ms,
            login: false,
            clusters: None,
        }
    }
}

enum Target {
    /// Ask this coordinator.
    Coordinator(Box<CoordClient>),
    /// Always this route (a server outside any deployment, such as the
    /// benchmark's echo server).
    Fixed(Route),
}

struct Inner {
    target: Target,
    config: RouterConfig,
    routes: Mutex<HashMap<u32, Route>>,
    /// The session token every new route's calls carry.
    bearer: Mutex<Bearer>,
}

/// Why one attempt failed.
enum Failure {
    /// A status, to be judged by the retry rule.
    Status(Stage, Status),
    /// A final failure that is not a status.
    Final(CallError),
}

/// The way to the primaries of a deployment. Cheap to clone; clones share
/// their routes.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    pub fn new(coord: CoordClient, config: RouterConfig) -> Router {
        assert!(config.lanes >= 1, "a router needs a connection");
        assert!(config.clusters != Some(0), "a deployment has a cluster");
        Router {
            inner: Arc::new(Inner {
                target: Target::Coordinator(Box::new(coord)),
                config,
                routes: Mutex::new(HashMap::new()),
                bearer: Mutex::new(Bearer::default()),
            }),
        }
    }

    /// A router that sends every call to `addr`, whoever the user.
    pub fn fixed(addr: &str, config: RouterConfig) -> anyhow::Result<Router> {
        let route = Route::connect(addr, 0, 0, &config, Bearer::default())?;
        Ok(Router {
            inner: Arc::new(Inner {
                target: Target::Fixed(route),
                config,
                routes: Mutex::new(HashMap::new()),
                bearer: Mutex::new(Bearer::default()),
            }),
        })
    }

    /// From now on every call carries `token` (an account's session), or
    /// none. Routes made before are forgotten, so none goes without it.
    pub fn set_token(&self, token: Option<&str>) -> anyhow::Result<()> {
        let bearer = match token {
            Some(t) => Bearer::of(t)
                .ok_or_else(|| anyhow::anyhow!("the session token is not plain text"))?,
            None => Bearer::default(),
        };
        *lock(&self.inner.bearer) = bearer;
        lock(&self.inner.routes).clear();
        Ok(())
    }

    /// The coordinator asked (`None` for a fixed router).
    pub fn coord(&self) -> Option<&CoordClient> {
        match &self.inner.target {
            Target::Coordinator(coord) => Some(coord),
            Target::Fixed(_) => None,
        }
    }

    fn key(&self, user: u32) -> u32 {
        match self.inner.config.clusters {
            Some(clusters) if !self.inner.config.login => home_cluster(user, clusters),
            _ => user,
        }
    }

    /// The route to the primary serving `user`: the one kept, or a new one
    /// from the coordinator. No retry.
    pub async fn route(&self, user: u32) -> Result<Route, CallError> {
        self.route_once(user)
            .await
            .map_err(|failure| match failure {
                Failure::Status(_, status) => CallError::Refused(status),
                Failure::Final(error) => error,
            })
    }

    /// Forgets `route` for `user` if it is still the one kept (another
    /// caller may already have found the next primary): the next call asks
    /// the coordinator again.
    pub fn forget(&self, user: u32, route: &Route) {
        if matches!(self.inner.target, Target::Fixed(_)) {
            return;
        }
        let key = self.key(user);
        let mut routes = lock(&self.inner.routes);
        if routes.get(&key).is_some_and(|r| r.addr == route.addr) {
            routes.remove(&key);
        }
    }

    /// Runs `op` on the route of `user`, reconnecting and retrying on a
    /// retryable failure as `policy` says. `op` must be safe to repeat:
    /// every tsn call is (a post carries its own id).
    pub async fn call<T, F, Fut>(
        &self,
        user: u32,
        policy: &RetryPolicy,
        op: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Route) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_noting(user, policy, |_, _| {}, op).await
    }

    /// [`Router::call`], telling `note` of every failure that is retried.
    pub async fn call_noting<T, F, Fut, N>(
        &self,
        user: u32,
        policy: &RetryPolicy,
        mut note: N,
        mut op: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Route) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
        N: FnMut(Stage, &Status),
    {
        let mut retry = Retry::new(policy, Instant::now());
        let attempt_timeout = Duration::from_millis(policy.attempt_timeout_ms);
        loop {
            let mut used: Option<Route> = None;
            let attempt = async {
                let route = self.route_once(user).await?;
                used = Some(route.clone());
                op(route)
                    .await
                    .map_err(|s| Failure::Status(Stage::Server, s))
            };
            let outcome = tokio::time::timeout(attempt_timeout, attempt).await;
            let failure = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(failure)) => failure,
                Err(_) => Failure::Status(
                    if used.is_some() {
                        Stage::Server
                    } else {
                        Stage::Coordinator
                    },
                    Status::deadline_exceeded(format!(
                        "no answer within {} ms",
                        policy.attempt_timeout_ms
                    )),
                ),
            };
            let (stage, status) = match failure {
                Failure::Final(error) => return Err(error),
                Failure::Status(stage, status) => (stage, status),
            };
            if let Some(route) = &used {
                if is_retryable(&status) {
                    self.forget(user, route);
                }
            }
            match retry.after(&status, Instant::now()) {
                Next::Final => return Err(CallError::Refused(status)),
                Next::GiveUp { waited } => {
                    return Err(CallError::GaveUp {
                        stage,
                        waited_ms: waited.as_millis() as u64,
                        last: status,
                    })
                }
                Next::Wait(delay) => {
                    note(stage, &status);
                    tracing::debug!(
                        %stage,
                        user,
                        code = ?status.code(),
                        error = %status.message(),
                        delay_ms = delay.as_millis() as u64,
                        "call failed; asking the coordinator again"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn route_once(&self, user: u32) -> Result<Route, Failure> {
        let coord = match &self.inner.target {
            Target::Fixed(route) => return Ok(route.clone()),
            Target::Coordinator(coord) => coord,
        };
        let key = self.key(user);
        if let Some(route) = lock(&self.inner.routes).get(&key) {
            return Ok(route.clone());
        }
        let info = coord
            .get_server(user)
            .await
            .map_err(|s| Failure::Status(Stage::Coordinator, s))?;
        let route = self
            .connect(&info)
            .map_err(|why| Failure::Status(Stage::Coordinator, Status::unavailable(why)))?;
        if self.inner.config.login {
            self.login(&route, user).await?;
        }
        tracing::debug!(server = %route.addr, user, "routed");
        Ok(lock(&self.inner.routes).entry(key).or_insert(route).clone())
    }

    /// A route to the server `info` names; the error says why it is not
    /// one (the coordinator may answer before it knows a primary).
    fn connect(&self, info: &ServerInfo) -> Result<Route, String> {
        if info.hostname.is_empty() || info.port.is_empty() {
            return Err("the coordinator named no server".to_string());
        }
        let server_id = u32::try_from(info.server_id)
            .map_err(|_| format!("the coordinator named server {}", info.server_id))?;
        let cluster = u32::try_from(info.cluster_id)
            .map_err(|_| format!("the coordinator named cluster {}", info.cluster_id))?;
        let addr = coord::server_address(info);
        let bearer = lock(&self.inner.bearer).clone();
        Route::connect(&addr, server_id, cluster, &self.inner.config, bearer)
            .map_err(|e| format!("the coordinator named a bad address: {e:#}"))
    }

    async fn login(&self, route: &Route, user: u32) -> Result<(), Failure> {
        let reply = route
            .sns()
            .login(Request {
                username: user.to_string(),
                arguments: Vec::new(),
            })
            .await
            .map_err(|s| Failure::Status(Stage::Server, s))?
            .into_inner();
        if reply::is_success(&reply) {
            Ok(())
        } else {
            Err(Failure::Final(CallError::LoginRefused(reply::describe(
                &reply,
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(clusters: Option<u32>, login: bool) -> RouterConfig {
        RouterConfig {
            lanes: 2,
            call_timeout_ms: 1_000,
            login,
            clusters,
        }
    }

    #[tokio::test]
    async fn a_fixed_router_always_routes_to_its_server() {
        let r = Router::fixed("127.0.0.1:9", config(None, false)).unwrap();
        let a = r.route(1).await.unwrap();
        let b = r.route(77).await.unwrap();
        assert_eq!((a.addr.as_str(), a.server_id), ("127.0.0.1:9", 0));
        assert_eq!(b.addr, a.addr);
        r.forget(1, &a);
        assert!(r.route(1).await.is_ok(), "a fixed route is never forgotten");
        assert!(r.coord().is_none());
    }

    #[tokio::test]
    async fn routes_are_kept_per_cluster_or_per_user() {
        let coord = CoordClient::new("127.0.0.1:9").unwrap();
        let by_cluster = Router::new(coord.clone(), config(Some(3), false));
        assert_eq!(
            (1..=6).map(|u| by_cluster.key(u)).collect::<Vec<_>>(),
            vec![1, 2, 3, 1, 2, 3]
        );
        let by_user = Router::new(coord.clone(), config(None, false));
        assert_eq!(by_user.key(5), 5);
        // A logged-in route belongs to its user.
        let logged_in = Router::new(coord, config(Some(3), true));
        assert_eq!(logged_in.key(5), 5);
    }

    #[tokio::test]
    async fn a_route_is_forgotten_only_while_it_is_the_one_kept() {
        let coord = CoordClient::new("127.0.0.1:9").unwrap();
        let r = Router::new(coord, config(Some(2), false));
        let cfg = config(Some(2), false);
        let old = Route::connect("127.0.0.1:10", 1, 1, &cfg, Bearer::default()).unwrap();
        let new = Route::connect("127.0.0.1:11", 2, 1, &cfg, Bearer::default()).unwrap();
        lock(&r.inner.routes).insert(1, new.clone());
        r.forget(3, &old);
        assert_eq!(r.route(1).await.unwrap().addr, new.addr);
        r.forget(3, &new);
        assert!(lock(&r.inner.routes).is_empty());
    }

    fn policy(retry_for_ms: u64, attempt_timeout_ms: u64) -> RetryPolicy {
        RetryPolicy {
            backoff_min_ms: 1,
            backoff_max_ms: 2,
            attempt_timeout_ms,
            retry_for: Some(Duration::from_millis(retry_for_ms)),
        }
    }

    #[tokio::test]
    async fn retryable_failures_are_noted_and_retried_until_success() {
        let r = Router::fixed("127.0.0.1:9", config(None, false)).unwrap();
        let mut tries = 0;
        let mut noted = Vec::new();
        let got = r
            .call_noting(
                1,
                &policy(10_000, 1_000),
                |stage, status| noted.push((stage, status.code())),
                |_| {
                    tries += 1;
                    let n = tries;
                    async move {
                        match n {
                            1 => Err(Status::resource_exhausted("busy")),
                            2 => Err(Status::unavailable("no primary")),
                            _ => Ok(n),
                        }
                    }
                },
            )
            .await
            .unwrap();
        assert_eq!(got, 3);
        assert_eq!(
            noted,
            vec![
                (Stage::Server, tonic::Code::ResourceExhausted),
                (Stage::Server, tonic::Code::Unavailable)
            ]
        );
    }

    #[tokio::test]
    async fn final_answers_and_exhausted_time_end_a_call() {
        let r = Router::fixed("127.0.0.1:9", config(None, false)).unwrap();
        let mut tries = 0;
        let refused = r
            .call(1, &policy(10_000, 1_000), |_| {
                tries += 1;
                async { Err::<(), _>(Status::invalid_argument("too long")) }
            })
            .await;
        assert!(matches!(refused, Err(CallError::Refused(s)) if s.message() == "too long"));
        assert_eq!(tries, 1, "a final answer is not retried");
        let gave_up = r
            .call(1, &policy(0, 1_000), |_| async {
                Err::<(), _>(Status::unavailable("down"))
            })
            .await;
        assert!(matches!(
            gave_up,
            Err(CallError::GaveUp { stage: Stage::Server, last, .. }) if last.message() == "down"
        ));
        // An attempt that does not end is cut by the attempt's time limit.
        let slow = r
            .call(1, &policy(0, 10), |_| {
                std::future::pending::<Result<(), Status>>()
            })
            .await;
        assert!(matches!(
            slow,
            Err(CallError::GaveUp { last, .. }) if last.code() == tonic::Code::DeadlineExceeded
        ));
    }

    #[tokio::test]
    async fn an_unreachable_coordinator_is_named_when_the_time_is_up() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let coord = CoordClient::new(&format!("127.0.0.1:{port}")).unwrap();
        let r = Router::new(coord, config(None, true));
        let mut called = false;
        let result = r
            .call(1, &policy(30, 1_000), |_| {
                called = true;
                async { Ok(()) }
            })
            .await;
        assert!(matches!(
            result,
            Err(CallError::GaveUp {
                stage: Stage::Coordinator,
                ..
            })
        ));
        assert!(!called);
    }

    #[tokio::test]
    async fn a_server_info_without_a_server_is_no_route() {
        let coord = CoordClient::new("127.0.0.1:9").unwrap();
        let r = Router::new(coord, config(None, false));
        let mut info = ServerInfo::default();
        assert!(r.connect(&info).unwrap_err().contains("no server"));
        info.hostname = "127.0.0.1".into();
        info.port = "7".into();
        info.server_id = -1;
        assert!(r.connect(&info).unwrap_err().contains("server -1"));
        info.server_id = 4;
        info.cluster_id = 2;
        let route = r.connect(&info).unwrap();
        assert_eq!(
            (route.addr.as_str(), route.server_id, route.cluster),
            ("127.0.0.1:7", 4, 2)
        );
    }
}
