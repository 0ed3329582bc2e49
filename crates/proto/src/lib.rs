//! The protocols of tsn, generated from `proto/*.proto` at build time.
//!
//! * [`csce438`]: the classic Tiny SNS client protocol (`SNSService`) and the
//!   classic coordinator lookup (`CoordService`), wire-compatible.
//! * [`tsn`]: tsn's own control plane, replication, sync and client extensions.
//! * [`mp3`]: the MP3 variant of the Tiny SNS protocol (`SNSService` with
//!   its own `List` reply and one `Timeline` call per line, and the
//!   coordinator's `SNSCoordinatorService`). Its package on the wire is
//!   `csce438` too, so it is generated apart and served on its own port.

#![allow(clippy::all, missing_docs)]

pub mod csce438 {
    tonic::include_proto!("csce438");
}

pub mod mp3 {
    include!(concat!(env!("OUT_DIR"), "/mp3/csce438.rs"));
}

pub mod tsn {
    tonic::include_proto!("tsn");
}

pub use prost_types::Timestamp;
