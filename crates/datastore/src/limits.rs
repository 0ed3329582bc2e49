//! Limits of the datastore, each with its unit in its name.

/// Longest post text, in bytes of UTF-8. Longer posts are refused.
pub const POST_TEXT_MAX_BYTES: usize = 1024;
/// Longest line a reader accepts; a longer one is corrupt.
pub const LINE_MAX_BYTES: usize = 64 * 1024;
/// How many posts a timeline read returns at most.
pub const TIMELINE_READ_MAX_POSTS: usize = 1000;
/// Size of the blocks read backwards from the end of a file.
pub const READ_BACK_BLOCK_BYTES: u64 = 16 * 1024;
/// Open append handles kept; past this, the cache is emptied.
pub const OPEN_FILES_MAX: usize = 512;
/// Largest user id (client ids are positive 31-bit integers, as in the
/// classic protocol's `int32`).
pub const USER_ID_MAX: u32 = i32::MAX as u32;
/// Most recipients of one delivery entry. With ids of at most 10 digits a
/// full list is ~45 KiB, so the journal line stays under [`LINE_MAX_BYTES`]
/// even with a post text of the longest, fully escaped.
pub const DELIVER_RECIPIENTS_MAX: usize = 4096;
/// Most sessions one account holds; a new one beyond this ends the one that
/// expires first (the same on every replica: the fold decides).
pub const SESSIONS_PER_USER_MAX: usize = 16;
/// Longest stored password hash, in bytes (an Argon2id PHC string is about
/// 100).
pub const PASSWORD_HASH_MAX_BYTES: usize = 256;
/// Length of a session token's SHA-256 in hex.
pub const TOKEN_SHA256_HEX_CHARS: usize = 64;
