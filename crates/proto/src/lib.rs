//! The protocols of tsn, generated from `proto/*.proto` at build time.
//!
//! * [`csce438`]: the classic Tiny SNS client protocol (`SNSService`) and the
//!   classic coordinator lookup (`CoordService`), wire-compatible.
//! * [`tsn`]: tsn's own control plane, replication, sync and client extensions.

#![allow(clippy::all, missing_docs)]

pub mod csce438 {
    tonic::include_proto!("csce438");
}

pub mod tsn {
    tonic::include_proto!("tsn");
}

pub use prost_types::Timestamp;
