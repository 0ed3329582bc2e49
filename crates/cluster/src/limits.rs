//! Timing defaults and limits shared by every process. Each is a default of
//! a command-line flag where an operator may want another value.

/// How often servers and sync services heartbeat the coordinator.
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// How long without a heartbeat before the coordinator declares a process
/// dead (and promotes a secondary if it was a primary). Five missed beats:
/// short enough for a failover in about a second, long enough that a
/// saturated machine does not cause a false one.
pub const FAILURE_TIMEOUT_MS: u64 = 500;
/// A primary's lease lasts this share of the failure timeout (in percent),
/// counted from when it sent the heartbeat (or mirror) that confirmed it, so
/// it ends before the coordinator could promote anyone else.
pub const LEASE_PERCENT_OF_FAILURE_TIMEOUT: u64 = 80;
/// Time limit of one call to the coordinator.
pub const COORDINATOR_CALL_TIMEOUT_MS: u64 = 1_000;
/// Time limit for establishing a connection to any tsn process.
pub const CONNECT_TIMEOUT_MS: u64 = 500;
/// Largest gRPC message any tsn process accepts or sends.
pub const GRPC_MESSAGE_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Most concurrent requests served per connection.
pub const CONCURRENT_STREAMS_MAX: u32 = 1024;
