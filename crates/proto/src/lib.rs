//! The protocols of tsn, generated from `proto/*.proto` at build time.
//!
//! * [`csce438`]: the classic Tiny SNS client protocol (`SNSService`) and the
//!   classic coordinator lookup (`CoordService`), wire-compatible.
//! * [`tsn`]: tsn's own control plane, replication, sync and client extensions.
//! * [`records`]: the conversion between the datastore's records and their
//!   messages, both directions, in one place.
//! * [`mp3`]: the MP3 variant of the Tiny SNS protocol (`SNSService` with
//!   its own `List` reply and one `Timeline` call per line, and the
//!   coordinator's `SNSCoordinatorService`). Its package on the wire is
//!   `csce438` too, so it is generated apart and served on its own port.
//! * `arbitrary` (feature `arbitrary`): random messages of the internal
//!   services, for the property tests of their handlers.

#![allow(missing_docs)]

#[allow(clippy::all)]
pub mod csce438 {
    tonic::include_proto!("csce438");
}

#[allow(clippy::all)]
pub mod mp3 {
    include!(concat!(env!("OUT_DIR"), "/mp3/csce438.rs"));
}

#[allow(clippy::all)]
pub mod tsn {
    tonic::include_proto!("tsn");
}

pub mod records;

#[cfg(feature = "arbitrary")]
pub mod arbitrary;

pub use prost_types::Timestamp;

/// The protobuf timestamp of a time in milliseconds since the Unix epoch
/// (before 1970 too: the nanoseconds stay within 0..1e9).
pub fn timestamp_of_ms(ts_ms: i64) -> Timestamp {
    Timestamp {
        seconds: ts_ms.div_euclid(1000),
        // rem_euclid(1000) is 0..=999, so the product fits an i32.
        nanos: (ts_ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::timestamp_of_ms;

    #[test]
    fn milliseconds_become_seconds_and_nanos_both_sides_of_the_epoch() {
        let t = timestamp_of_ms(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
        let t = timestamp_of_ms(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_000_000));
    }
}
