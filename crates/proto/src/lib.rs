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

pub use prost_types::Timestamp;
