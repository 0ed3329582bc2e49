//! Limits of the client, each with its unit last in its name. Those an
//! operator may want to change are defaults of command-line flags.

/// The first pause before asking the coordinator again after a failed call.
pub const RETRY_BACKOFF_START_MS: u64 = 50;
/// The longest pause between two attempts: the pause doubles up to this.
pub const RETRY_BACKOFF_MAX_MS: u64 = 1_000;
/// Default of `--retry-for-ms`: how long a one-shot command keeps retrying
/// through a failover before it gives up.
pub const RETRY_FOR_MS_DEFAULT: u64 = 30_000;
/// Largest accepted `--retry-for-ms` (one day).
pub const RETRY_FOR_MS_MAX: u64 = 24 * 60 * 60 * 1_000;
/// Largest accepted `--duration-ms` of `timeline --watch` (one day).
pub const WATCH_DURATION_MS_MAX: u64 = 24 * 60 * 60 * 1_000;

/// Time limit of one unary call to a server. A post is answered only once
/// it is durable on the primary and its in-sync secondaries, so this leaves
/// room for an fsync on each; a call cut short is retried with the same
/// post id, which the server stores once.
pub const SERVER_CALL_TIMEOUT_MS: u64 = 5_000;

/// How many posts `timeline` shows unless `--limit` says otherwise (and how
/// many the server sends first on a timeline stream).
pub const TIMELINE_LIMIT_DEFAULT: u32 = 20;
/// Largest `--limit`: the most a server returns from one read.
pub const TIMELINE_LIMIT_MAX: u32 = tsn_datastore::limits::TIMELINE_READ_MAX_POSTS as u32;

/// Most unacknowledged posts kept in the state file. Past this the client
/// refuses new posts: tsn has been unreachable for long enough that the
/// user should know, and the file stays small enough to rewrite whole.
pub const PENDING_POSTS_MAX: usize = 1_000;
/// Largest state file read. A full file holds `PENDING_POSTS_MAX` posts of
/// `POST_TEXT_MAX_BYTES` each, which JSON escaping may grow up to six times;
/// anything bigger is not a file this client wrote.
pub const PENDING_FILE_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Longest post id accepted from the state file.
pub const POST_ID_MAX_BYTES: usize = 64;
/// Random hex characters in a post id chosen by this client (64 bits).
pub const POST_ID_RANDOM_HEX_CHARS: usize = 16;
/// How long to wait for another client of the same user to release the
/// state file's lock. It is held only while the small file is rewritten.
pub const PENDING_LOCK_WAIT_MS: u64 = 10_000;
/// Pause between two attempts to take the state file's lock.
pub const PENDING_LOCK_POLL_MS: u64 = 5;

/// Longest line read from stdin in interactive mode. Longer lines are
/// refused with a message (posts are refused well before this, at
/// `POST_TEXT_MAX_BYTES`).
pub const STDIN_LINE_MAX_BYTES: usize = 64 * 1024;

/// Post ids remembered by a timeline watcher to drop repeats. Older ones are
/// forgotten first; after a reconnect the resume point drops them anyway.
pub const WATCH_SHOWN_IDS_MAX: usize = 10_000;
/// Messages queued towards the server on a timeline stream. The client sends
/// only the identifying first message.
pub const WATCH_OUTBOUND_QUEUE_MAX: usize = 4;
