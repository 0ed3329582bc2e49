//! How a server tells every tsn client that a refusal is final even though
//! its gRPC code is one that usually passes by itself.
//!
//! `RESOURCE_EXHAUSTED` means two things on a primary: "the write queue is
//! full" (gone in milliseconds: worth retrying) and "the disk is full"
//! (gone when an operator frees space: the user should hear it at once,
//! not after half a minute of silent retries). The code stays the one the
//! course protocols expect; a trailer says which it is.

use tonic::metadata::MetadataValue;
use tonic::Status;

/// The metadata key a server puts on a refusal that retrying will not fix
/// soon. Its value says why, e.g. `disk-full`.
pub const NO_RETRY_METADATA_KEY: &str = "tsn-no-retry";

/// `status` marked final for every tsn client, with `reason` (a short
/// token: `[a-z-]+`).
pub fn final_refusal(mut status: Status, reason: &'static str) -> Status {
    status
        .metadata_mut()
        .insert(NO_RETRY_METADATA_KEY, MetadataValue::from_static(reason));
    status
}

/// Whether a server marked `status` final (see [`final_refusal`]).
pub fn is_final_refusal(status: &Status) -> bool {
    status.metadata().contains_key(NO_RETRY_METADATA_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_status_is_final_and_an_unmarked_one_is_not() {
        let busy = Status::resource_exhausted("write queue full");
        assert!(!is_final_refusal(&busy));
        let full = final_refusal(Status::resource_exhausted("disk full"), "disk-full");
        assert!(is_final_refusal(&full));
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
    }
}
