//! The `tsn.Sync` gRPC service: other clusters' sync services hand it the
//! operations this cluster needs, and it passes them to this cluster's
//! current primary, the one writer of the cluster.
//!
//! It keeps no state of its own: a request is checked, forwarded and
//! answered with the primary's reply. When there is no primary (a failover)
//! the answer is UNAVAILABLE and the sender retries, so nothing is lost.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};
use tsn_cluster::clock::SharedClock;
use tsn_datastore::{validate, Op};
use tsn_proto::tsn::sync_server::Sync;
use tsn_proto::tsn::{ApplyReply, ApplyRequest};

use crate::limits::{APPLY_BATCH_MAX_OPS, APPLY_CALL_TIMEOUT_MS};
use crate::peers::{call_within, Peers};

pub struct SyncService {
    peers: Arc<Peers>,
    /// Cluster time, for how far ahead an arriving post may be.
    clock: SharedClock,
}

impl SyncService {
    pub fn new(peers: Arc<Peers>, clock: SharedClock) -> SyncService {
        SyncService { peers, clock }
    }
}

/// Checks an Apply request from another cluster: a known sender cluster, at
/// most [`APPLY_BATCH_MAX_OPS`] ops, each one a valid [`Op`] that this
/// cluster admits from the sender ([`validate::admit`], without the state,
/// which the primary checks again with its own). A bad request is refused
/// whole, so nothing of it reaches the primary.
pub fn check_apply(
    request: &ApplyRequest,
    cluster_count: u32,
    own_cluster: u32,
    now_ms: i64,
) -> Result<(), Status> {
    if !(1..=cluster_count).contains(&request.from_cluster) {
        return Err(Status::invalid_argument(format!(
            "from_cluster {} is not a cluster (1..={cluster_count})",
            request.from_cluster
        )));
    }
    if request.ops.len() > APPLY_BATCH_MAX_OPS {
        return Err(Status::invalid_argument(format!(
            "{} ops in one request, more than {APPLY_BATCH_MAX_OPS}",
            request.ops.len()
        )));
    }
    let at = validate::Receiver {
        cluster: own_cluster,
        cluster_count: Some(cluster_count),
        now_ms,
        users: None,
    };
    let origin = validate::Origin::Cluster(request.from_cluster);
    for (i, op) in request.ops.iter().enumerate() {
        let op = Op::try_from(op.clone()).map_err(|e| {
            Status::invalid_argument(format!("op {i} is not a valid operation: {e}"))
        })?;
        validate::admit(&op, origin, &at)
            .map_err(|m| Status::invalid_argument(format!("op {i}: {m}")))?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Sync for SyncService {
    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<ApplyReply>, Status> {
        let request = request.into_inner();
        let cluster_count = self
            .peers
            .cluster_count()
            .ok_or_else(|| Status::unavailable("the number of clusters is not known yet"))?;
        let now_ms = self
            .clock
            .now_ms()
            .ok_or_else(|| Status::unavailable("the cluster time is not known yet"))?;
        check_apply(&request, cluster_count, self.peers.own_cluster(), now_ms)?;
        let (addr, mut primary) = self.peers.primary()?;
        let from_cluster = request.from_cluster;
        let op_count = request.ops.len();
        let reply = call_within(
            APPLY_CALL_TIMEOUT_MS,
            &format!("the primary at {addr}"),
            async move { Ok(primary.apply(request).await?.into_inner()) },
        )
        .await
        .map_err(|status| match status.code() {
            // A primary that cannot be reached, or that went away in the
            // middle of the call: the sender should try again.
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                Status::unavailable(format!(
                    "the primary at {addr} cannot be reached: {}",
                    status.message()
                ))
            }
            _ => status,
        })?;
        tracing::debug!(
            from_cluster,
            ops = op_count,
            applied = reply.applied,
            duplicates = reply.duplicates,
            "forwarded ops to the primary"
        );
        Ok(Response::new(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tsn_proto::tsn::{operation, Operation, PostRecord};

    fn user_op(user: u32) -> Operation {
        Op::User { user, cluster: 2 }.into()
    }

    #[test]
    fn a_good_request_passes() {
        let request = ApplyRequest {
            from_cluster: 2,
            ops: vec![user_op(2), user_op(5)],
        };
        assert!(check_apply(&request, 3, 1, 0).is_ok());
        let empty = ApplyRequest {
            from_cluster: 3,
            ops: vec![],
        };
        assert!(check_apply(&empty, 3, 1, 0).is_ok());
    }

    #[test]
    fn bad_requests_are_invalid_arguments() {
        let bad = [
            ApplyRequest {
                from_cluster: 0,
                ops: vec![user_op(1)],
            },
            ApplyRequest {
                from_cluster: 4,
                ops: vec![user_op(1)],
            },
            ApplyRequest {
                from_cluster: 2,
                ops: vec![user_op(1), Operation { op: None }],
            },
            ApplyRequest {
                from_cluster: 2,
                ops: vec![Operation {
                    op: Some(operation::Op::Post(PostRecord::default())),
                }],
            },
            ApplyRequest {
                from_cluster: 2,
                ops: (0..=APPLY_BATCH_MAX_OPS as u32).map(user_op).collect(),
            },
        ];
        for request in &bad {
            let status = check_apply(request, 3, 1, 0).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Random well-formed but wrong requests from a peer: refused or
        /// passed on, never a panic; what is passed on has the shape every
        /// replica accepts.
        #[test]
        fn random_requests_never_panic(
            request in tsn_proto::arbitrary::apply_request(),
            cluster_count in 1u32..5,
            own in 1u32..5,
            now_ms in tsn_proto::arbitrary::time_ms(),
        ) {
            if check_apply(&request, cluster_count, own, now_ms).is_ok() {
                for op in request.ops {
                    let op = Op::try_from(op);
                    proptest::prop_assert!(op.is_ok());
                    if let Ok(op) = op {
                        proptest::prop_assert!(validate::shape(&op).is_ok());
                    }
                }
            }
        }
    }
}
