//! The trace store: the contract between the recorder, the query tool, retention and export.
//!
//! A store is a directory that any Parquet engine can read as it is:
//!
//! ```text
//! <store>/<table>/dt=YYYY-MM-DD/hour=HH/host=<host>/<segment>.parquet   sealed segments (zstd)
//! <store>/manifest.jsonl                                                hash-chained manifest
//! <store>/.staging/                                                     segments being sealed
//! ```
//!
//! Three promises hold for evidence kept here:
//! - a segment is never visible half-written: it is written in `.staging/`, fsync'd, logged in
//!   the manifest and only then renamed into its partition ([`Store::seal`]);
//! - the manifest is append-only and hash-chained, so an edited, removed or slipped-in segment,
//!   and an edited manifest line, are detected by [`verify::verify_store`];
//! - the schemas of every table live in [`schema`] and nowhere else.

pub mod action;
pub mod alert;
pub mod baseline;
pub mod compact;
pub mod fixture;
pub mod history;
pub mod holds;
pub mod human;
pub mod layout;
pub mod manifest;
pub mod read;
mod removal;
pub mod retention;
mod runs;
pub mod schema;
pub mod segment;
pub mod severity;
pub mod text;
pub mod verified;
pub mod verify;

use std::io;
use std::path::PathBuf;

pub use compact::{CompactPolicy, Compaction};
pub use holds::{Hold, HoldError, HoldSpec};
pub use layout::{Partition, Store, Table};
pub use manifest::{Manifest, ManifestEntry, ManifestOp};
pub use retention::{RetentionPolicy, RetentionReport, UploadGate};
pub use segment::{SealedSegment, SegmentWriter};
pub use verify::{Problem, RemovalSummary, VerifyReport, verify_store};

/// Errors from reading or writing a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store directory (or one below it) cannot be created or written.
    #[error(
        "cannot write to the store at {path}; pass a writable directory with --store \
         (the recorder needs to create files there as root)"
    )]
    Unwritable { path: PathBuf, source: io::Error },

    /// The filesystem holding the store ran out of space. Nothing already sealed was touched.
    #[error(
        "no space left for the store at {path}; free space, lower the retention caps or move the \
         store with --store (sealed segments are intact)"
    )]
    DiskFull { path: PathBuf },

    /// Any other I/O failure, with the path it happened on.
    #[error("I/O error on {path}")]
    Io { path: PathBuf, source: io::Error },

    /// Encoding or decoding a Parquet segment failed.
    #[error("Parquet error in {path}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },

    /// An Arrow batch did not match the table's schema (a bug in the caller).
    #[error("Arrow error")]
    Arrow(#[from] arrow::error::ArrowError),

    /// A manifest line could not be parsed or appended.
    #[error("manifest {path}, line {line}: {reason}")]
    Manifest {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    /// A path below the store is a symlink, escapes the store or is otherwise not what the store
    /// layout allows. The store refuses to follow it rather than write evidence elsewhere.
    #[error("refusing {path}: {reason}")]
    UnsafePath { path: PathBuf, reason: String },
}

impl StoreError {
    /// Classifies an I/O error on `path`, turning ENOSPC/EDQUOT into [`StoreError::DiskFull`].
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::DiskFull { path },
            _ => StoreError::Io { path, source },
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
