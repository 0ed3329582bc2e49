//! Limits of the sync service, each with its unit last in its name.
//!
//! Every queue, batch, retry and call has a bound here, so that no input and
//! no unreachable peer can make the service grow without limit or wait
//! forever on one call.

/// Journal entries asked for in one `Replica.ReadChanges` call.
pub const READ_BATCH_MAX_ENTRIES: u32 = 512;
/// Batches read from the own journal kept for the destination feeds that
/// have not had them yet (see `batch_cache`): enough for a feed a few
/// seconds behind the others at full load to read none of them again.
pub const SHARED_BATCHES_MAX: usize = 256;
/// Bytes, roughly (the entries' JSON lines plus an allowance per entry,
/// follower and home cluster looked up), those batches may hold; a batch
/// larger than this is handed to the feeds waiting for it and not kept.
pub const SHARED_BATCHES_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Lookups (one `Replica.Followers` call and the home clusters) the reader
/// may have under way ahead of the feeds; past it, a batch's lookups wait
/// for the first feed that needs them.
pub const EAGER_LOOKUPS_MAX_IN_FLIGHT: usize = 4;
/// Operations sent in one `Replica.Apply` or `Sync.Apply` call; also the most
/// a `Sync.Apply` request may carry.
pub const APPLY_BATCH_MAX_OPS: usize = 1000;
/// Posts asked for in one `Replica.PostsSince` call (one backfill).
pub const BACKFILL_MAX_POSTS: u32 = 1000;
/// Users asked about in one `Replica.Followers` call.
pub const FOLLOWERS_BATCH_MAX_USERS: usize = 512;
/// Users asked about in one `Coordinator.Assign` call.
pub const ASSIGN_BATCH_MAX_USERS: usize = 1000;
/// Users whose home cluster is cached; when full the cache is cleared (the
/// coordinator answers again, assignments never change).
pub const HOME_CACHE_MAX_USERS: usize = 1_000_000;

/// First wait after a failed call; doubled after each further failure.
pub const RETRY_BACKOFF_MIN_MS: u64 = 50;
/// Longest wait between two attempts of the same call.
pub const RETRY_BACKOFF_MAX_MS: u64 = 1_000;

/// Time limit of `Replica.Apply` and `Sync.Apply`.
pub const APPLY_CALL_TIMEOUT_MS: u64 = 5_000;
/// Time limit of `Replica.Followers` and `Replica.PostsSince`.
pub const LOOKUP_CALL_TIMEOUT_MS: u64 = 5_000;
/// A `Replica.ReadChanges` long poll may take this much longer than the
/// `wait_ms` it asked for before it counts as failed.
pub const READ_CALL_SLACK_MS: u64 = 2_000;

/// Bounds of the `-q` flag (the long-poll wait of `Replica.ReadChanges`).
pub const POLL_INTERVAL_MIN_MS: u64 = 10;
pub const POLL_INTERVAL_MAX_MS: u64 = 60_000;
/// Bounds of the `--heartbeat-interval-ms` flag.
pub const HEARTBEAT_INTERVAL_MIN_MS: u64 = 10;
pub const HEARTBEAT_INTERVAL_MAX_MS: u64 = 10_000;
/// Most clusters tsn runs with; a larger `cluster_count` from the
/// coordinator is refused (it would mean that many destination tasks).
pub const CLUSTERS_MAX: u32 = 1_000;
/// Bytes of operations sent in one Apply call, well under
/// `GRPC_MESSAGE_MAX_BYTES` to leave room for framing.
pub const APPLY_BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Longest time between writes of the positions file while positions move;
/// a crash sends at most this much of the changes again.
pub const POSITIONS_FLUSH_INTERVAL_MS: u64 = 1_000;
