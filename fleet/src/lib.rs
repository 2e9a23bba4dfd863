//! Quarry's distributed engine: an Apache Ballista cluster built from Ballista's own library
//! crates, and the client that runs a store's SQL on it.
//!
//! - [`cluster`] starts a Ballista scheduler or executor server inside the calling process
//!   (`quarry fleet scheduler`, `quarry fleet executor`). They are Ballista's servers with
//!   Ballista's default codecs (no Quarry codec: any Ballista 55 client can use the same
//!   cluster), Quarry's functions and [`objects`]; building them here keeps one DataFusion in
//!   the workspace.
//! - [`remote`] opens a session on a scheduler over a store (`quarry sql --engine ballista`):
//!   the store's tables and views as plans Ballista's default codec can ship, made only of the
//!   segments the manifest vouches for, or over a fleet's bucket (`s3://`), every host's.
//! - [`objects`] is what the servers read through: local files as named, and of a bucket only
//!   the segments its hosts' manifests vouch for, hash-checked before they are decoded.
//!
//! This crate must not write to a store, and it must not let the cluster read a file the
//! store's manifest does not vouch for: the plans it submits name every segment file
//! explicitly (never a directory to list); a local segment is hash-checked against the
//! manifest before the query is submitted (see [`remote`] for what that does and does not
//! cover), a bucket's by the server that reads it ([`objects`]).

pub mod cluster;
pub mod objects;
pub mod remote;

mod error;

pub use error::{FleetError, Result};
