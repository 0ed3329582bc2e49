//! Every limit of the benchmark, each with its unit last in its name.
//!
//! The flags are bounded so that no command line can make the tool hold
//! unbounded memory or run for ever; the records it keeps are bounded so
//! that a faster machine than expected cannot either (past a bound the
//! tool stops recording and says so in the report).

/// Bounds of `--users`.
pub const USERS_MAX: u32 = 100_000;
/// Bounds of `--follows` (users each user follows).
pub const FOLLOWS_MAX: u32 = 100;
/// Bounds of `--clients` (concurrent posters of the closed loop).
pub const CLIENTS_MAX: u32 = 1_024;
/// Bounds of `--rate`, in posts per second.
pub const RATE_MAX_PER_S: f64 = 100_000.0;
/// Lowest accepted `--rate`: below this a run measures almost nothing.
pub const RATE_MIN_PER_S: f64 = 1.0;
/// Bounds of `--duration-s` and `--warmup-s`.
pub const DURATION_MAX_S: u64 = 600;
pub const WARMUP_MAX_S: u64 = 120;
/// Bounds of `--clusters` (the harness starts at most this many).
pub const CLUSTERS_MAX: u32 = 16;
/// Bounds of `-q`, the sync services' poll interval.
pub const Q_MIN_MS: u64 = 10;
pub const Q_MAX_MS: u64 = 60_000;
/// Bounds of `--sample-followers` (open Timeline streams).
pub const SAMPLE_FOLLOWERS_MAX: u32 = 1_000;
/// Bounds of `failover --count`.
pub const FAILOVER_COUNT_MAX: u32 = 100;
/// The main run's disk probe: appends with fdatasync, one every interval.
pub const DISK_PROBE_APPENDS: u32 = 500;
pub const DISK_PROBE_INTERVAL_MS: u64 = 10;
/// Bounds of `disk --count` and `disk --interval-ms`.
pub const DISK_COUNT_MAX: u32 = 100_000;
pub const DISK_INTERVAL_MAX_MS: u64 = 1_000;
/// Bounds of `--connections` (HTTP/2 connections per server).
pub const CONNECTIONS_MAX: u32 = 64;

/// Acknowledgements kept per load phase; past this the phase stops
/// recording (and the report says how many were dropped).
pub const ACKS_MAX_RECORDS: usize = 10_000_000;
/// Timeline stream arrivals kept in a whole run.
pub const ARRIVALS_MAX_RECORDS: usize = 10_000_000;
/// Posts of one open-loop phase in flight at once; the dispatcher waits
/// for a slot past this (the wait counts in the measured latency, which is
/// measured from the scheduled time).
pub const OPEN_LOOP_IN_FLIGHT_MAX: usize = 8_192;

/// Bytes of text of every benchmark post: a short post.
pub const POST_TEXT_BYTES: usize = 64;
/// Time limit of one `Posts.Post` call (a retry follows a timeout).
pub const POST_CALL_TIMEOUT_MS: u64 = 5_000;
/// How long a post is retried (on UNAVAILABLE and the like) before it
/// counts as failed.
pub const POST_RETRY_FOR_MS: u64 = 30_000;
/// First and largest pause between two tries of a post, as a client
/// waiting for a failover would.
pub const POST_RETRY_BACKOFF_MIN_MS: u64 = 5;
pub const POST_RETRY_BACKOFF_MAX_MS: u64 = 100;

/// Calls in flight at once while creating users and follows, and while
/// checking that the follow graph arrived.
pub const SETUP_CONCURRENCY_MAX: usize = 16;
/// How long the follow graph has to reach every cluster.
pub const GRAPH_CONVERGE_DEADLINE_MS: u64 = 180_000;
/// Pause between two checks of a condition that is being waited for.
pub const POLL_INTERVAL_MS: u64 = 25;

/// How long all sampled Timeline streams have to open.
pub const STREAMS_OPEN_DEADLINE_MS: u64 = 30_000;
/// First and largest pause before a failed Timeline stream is opened
/// again.
pub const STREAM_RETRY_BACKOFF_MIN_MS: u64 = 10;
pub const STREAM_RETRY_BACKOFF_MAX_MS: u64 = 200;
/// After a load phase, how long deliveries may still arrive on the open
/// streams, on top of the sync poll interval.
pub const DELIVERY_DRAIN_EXTRA_MS: u64 = 10_000;

/// How long in-flight posts have to finish after a phase ends.
pub const PHASE_DRAIN_DEADLINE_MS: u64 = 60_000;
/// Width of the windows of the latency-over-time plot and figures.
pub const WINDOW_MS: u64 = 100;
/// How long, after a kill, the first acknowledgement by another server
/// may take before the failover counts as failed.
pub const OUTAGE_DEADLINE_MS: u64 = 30_000;
/// How long a cluster has to be whole again (primary and in-sync
/// secondary) after a restart.
pub const IN_SYNC_DEADLINE_MS: u64 = 60_000;

/// Calls in flight at once while auditing the authors' timelines.
pub const AUDIT_CONCURRENCY_MAX: usize = 16;
/// Own posts read back per author; an author with more is reported as
/// not fully audited rather than guessed about.
pub const AUDIT_POSTS_PER_AUTHOR_MAX: u32 = 1_000;
/// How long one author's audit read is retried.
pub const AUDIT_RETRY_FOR_MS: u64 = 30_000;

/// How often the progress bar is refreshed.
pub const PROGRESS_TICK_MS: u64 = 250;
/// The span over which the progress bar's current throughput is counted.
pub const PROGRESS_RATE_SPAN_MS: u64 = 1_000;

/// Size of the SVG plot, in pixels.
pub const PLOT_WIDTH_PX: u32 = 1_200;
pub const PLOT_HEIGHT_PX: u32 = 900;
