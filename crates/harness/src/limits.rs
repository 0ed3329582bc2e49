//! Every limit of the harness, each with its unit last in its name.
//!
//! Deadlines are generous because the tests run on small, loaded machines
//! next to other builds; they bound how long a broken build takes to fail,
//! they are not performance targets. The one speed the tests do assert (the
//! delivery bound) lives in the test itself.

/// How often [`crate::wait::wait_until`] re-checks its condition.
pub const POLL_INTERVAL_MS: u64 = 25;
/// How long a started process has to accept connections (or print its
/// ready line) before the start counts as failed.
pub const PROC_READY_DEADLINE_MS: u64 = 15_000;
/// How long one readiness probe (a TCP connect to the process's port) may
/// take.
pub const READY_CONNECT_TIMEOUT_MS: u64 = 500;
/// How many times a start is tried again on a fresh port when the process
/// fails with "address in use" (another process took the port between
/// [`crate::port::free_port`] and the bind).
pub const START_ATTEMPTS_MAX: u32 = 5;
/// How long [`crate::proc::Proc::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_DEADLINE_MS: u64 = 10_000;
/// How long a deployment has to become healthy: every cluster with a live
/// primary, every server and sync service alive.
pub const HEALTHY_DEADLINE_MS: u64 = 20_000;
/// The default deadline of a test's wait for replicated state to converge.
pub const CONVERGE_DEADLINE_MS: u64 = 30_000;
/// How long one gRPC call of the harness may take.
pub const CALL_TIMEOUT_MS: u64 = 5_000;
/// How long the harness keeps retrying a call that failed for a transient
/// reason (no primary yet, connection refused, timeout).
pub const CALL_RETRY_FOR_MS: u64 = 15_000;
/// First and largest pause between two tries of a call.
pub const CALL_RETRY_BACKOFF_MIN_MS: u64 = 25;
pub const CALL_RETRY_BACKOFF_MAX_MS: u64 = 500;
/// How long one run of `tsn_client` may take before it is killed.
pub const CLIENT_RUN_DEADLINE_MS: u64 = 30_000;
/// Messages a timeline recorder keeps; more is a bug in the test or server.
pub const RECORDED_MESSAGES_MAX: usize = 10_000;
/// Bytes of a process's output an interactive client session keeps.
pub const CLIENT_OUTPUT_MAX_BYTES: usize = 1024 * 1024;
/// Lines of each log file printed when a test fails.
pub const LOG_TAIL_LINES: usize = 40;
/// Bytes read from the end of a log file to find its tail.
pub const LOG_TAIL_READ_MAX_BYTES: u64 = 64 * 1024;
/// Deployments alive at once in one test binary (override with
/// `TSN_E2E_DEPLOYMENTS_MAX`). Each is a dozen processes; more at once on a
/// two-core machine starves heartbeats and causes false failovers.
pub const DEPLOYMENTS_CONCURRENT_MAX: usize = 2;
/// Largest value accepted for `TSN_E2E_DEPLOYMENTS_MAX`.
pub const DEPLOYMENTS_CONCURRENT_LIMIT: usize = 64;
/// The failure timeout the harness gives the coordinator unless a test asks
/// for another: long enough that a loaded machine does not fail over by
/// itself, short enough that a kill is noticed quickly.
pub const FAILURE_TIMEOUT_DEFAULT_MS: u64 = 2_000;
/// How long the classic client keeps asking the coordinator for its server
/// and logging in there (a failover may be under way).
pub const CLASSIC_CONNECT_DEADLINE_MS: u64 = 20_000;
/// Pause between two attempts of the classic client to find its server.
pub const CLASSIC_RETRY_PAUSE_MS: u64 = 100;
/// Bounds of [`crate::trace`]'s walk over a deployment's datastore.
pub const DATA_WALK_DEPTH_MAX: usize = 8;
pub const DATA_FILES_MAX: usize = 10_000;
