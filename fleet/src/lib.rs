//! Quarry's distributed engine: an Apache Ballista cluster built from Ballista's own library
//! crates, and the client that runs a store's SQL on it.
//!
//! - [`cluster`] starts a Ballista scheduler or executor server inside the calling process
//!   (`quarry fleet scheduler`, `quarry fleet executor`). They are Ballista's servers with
//!   Ballista's default codecs: no Quarry code runs on them, so any Ballista 55 client can use
//!   the same cluster, and building them here keeps one DataFusion in the workspace.
//! - [`remote`] opens a session on a scheduler over a store (`quarry sql --engine ballista`):
//!   the store's tables and views as plans Ballista's default codec can ship, made only of the
//!   segments the manifest vouches for.
//!
//! This crate must not write to a store, and it must not let the cluster read a file the
//! store's manifest does not vouch for: the plans it submits name every segment file
//! explicitly (never a directory to list), and each is hash-checked against the manifest
//! before the query is submitted (see [`remote`] for what that does and does not cover).

pub mod cluster;
pub mod remote;

mod error;

pub use error::{FleetError, Result};
