//! The queue in front of the group-commit writer: what a request needs to
//! submit ops and read what became of them.
//!
//! It lives apart from [`crate::writer`] (the thread that drains it) so that
//! the shared state ([`crate::node`]) can hold the sending end without
//! depending on the writer, which itself works on that shared state.

use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tsn_datastore::Op;

/// Most requests waiting for the writer; past this, clients are told the
/// server is busy instead of queueing without bound.
pub const WRITE_QUEUE_MAX_REQUESTS: usize = 4096;

/// Ops to decide and commit together, and where to send the answer.
pub struct WriteRequest {
    pub ops: Vec<Op>,
    pub reply: oneshot::Sender<Result<Written, Status>>,
}

/// The writer's answer to one [`WriteRequest`], once its batch is durable
/// here (not yet necessarily committed).
pub struct Written {
    pub outcomes: Vec<WriteOutcome>,
    pub epoch: u64,
    /// The seq that must be committed before answering (0: none): the last
    /// applied op, or the journal's end when an op was a duplicate of one
    /// that may not be committed yet.
    pub wait_for_seq: u64,
}

/// What became of one op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored under this seq.
    Applied(u64),
    /// Already present: nothing stored (this is how retries stay single).
    Duplicate,
    /// Refused by a rule of the service, with the classic reply code.
    Rejected(&'static str),
}

/// The sending end of the writer's queue.
#[derive(Clone)]
pub struct WriteQueue(mpsc::Sender<WriteRequest>);

/// A queue of [`WRITE_QUEUE_MAX_REQUESTS`] and the receiving end the writer
/// thread drains.
pub fn channel() -> (WriteQueue, mpsc::Receiver<WriteRequest>) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX_REQUESTS);
    (WriteQueue(tx), rx)
}

impl WriteQueue {
    /// Queues `ops` without waiting for room (a full queue is an error the
    /// client retries) and waits for the writer's answer.
    pub async fn submit(&self, ops: Vec<Op>) -> Result<Written, Status> {
        let (tx, rx) = oneshot::channel();
        self.0
            .try_send(WriteRequest { ops, reply: tx })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Status::resource_exhausted(format!(
                    "server busy: {WRITE_QUEUE_MAX_REQUESTS} writes are waiting; retry"
                )),
                mpsc::error::TrySendError::Closed(_) => Status::unavailable("shutting down"),
            })?;
        rx.await.map_err(|_| Status::unavailable("shutting down"))?
    }
}
