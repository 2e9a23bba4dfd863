//! Evidence that leaves the machine: export bundles and their verification.
//!
//! A bundle is one file, a tar archive compressed with zstd (with frame checksums):
//!
//! ```text
//! quarry-bundle/tables/<table>.parquet   the container's rows of every table, in the window
//! quarry-bundle/case/...                 the case directory of `quarry snapshot`, as it was
//! quarry-bundle/custody.log              chain of custody: who collected what, from where, when
//! quarry-bundle/MANIFEST.json            every file's SHA-256, size and row count; tool, host,
//!                                        who, when, the exact command; the store's manifest head
//! quarry-bundle/MANIFEST.json.sig        optional ed25519 signature of MANIFEST.json
//! ```
//!
//! The Parquet files are plain zstd Parquet with the store's schemas: DuckDB, pyarrow or Spark
//! open them as they are. [`verify::verify_bundle`] extracts a bundle only inside a fresh
//! directory (refusing `..`, absolute paths, links, devices and decompression bombs), then checks
//! every hash, that nothing was added or removed, and the signature.

pub mod export;
pub mod keys;
pub mod manifest;
pub mod verify;

use std::path::PathBuf;

pub use export::{ExportReport, ExportRequest, Progress, export};
pub use keys::{PublicKey, SecretKey, generate_keypair};
pub use manifest::{BundleFile, BundleManifest, FileKind};
pub use verify::{BundleProblem, BundleReport, VerifyOptions, verify_bundle};

/// The directory every bundle entry lives under.
pub const BUNDLE_ROOT: &str = "quarry-bundle";
/// The bundle manifest's name inside [`BUNDLE_ROOT`].
pub const MANIFEST_NAME: &str = "MANIFEST.json";
/// The signature's name inside [`BUNDLE_ROOT`].
pub const SIGNATURE_NAME: &str = "MANIFEST.json.sig";
/// The chain-of-custody log's name inside [`BUNDLE_ROOT`].
pub const CUSTODY_NAME: &str = "custody.log";
/// The bundle format this crate writes and reads.
pub const FORMAT: &str = "quarry-bundle/1";

/// Errors of export, key handling and bundle verification (problems *found* in a bundle are
/// not errors: they are [`BundleProblem`]s in the report).
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] quarry_store::StoreError),

    /// Any I/O failure, with the path it happened on.
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Encoding or decoding Parquet failed.
    #[error("Parquet error in {path}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },

    /// Filtering rows failed (a bug: the store's schemas always have the columns used).
    #[error("Arrow error")]
    Arrow(#[from] arrow::error::ArrowError),

    /// The output bundle exists already; evidence is never overwritten.
    #[error("{0} exists already; evidence bundles are never overwritten: choose another -o")]
    OutputExists(PathBuf),

    /// Retention (or compaction) removed a segment while the export was reading the store.
    #[error(
        "segment {path} was removed ({reason}) while the export ran; run the export again, or \
         place a hold first (`quarry hold`) so retention keeps the container's data"
    )]
    RemovedDuringExport { path: String, reason: String },

    /// The case directory holds something that is not a plain file or directory.
    #[error("refusing {path} in the case directory: {reason}")]
    UnsafeCase { path: PathBuf, reason: String },

    /// A key file is unreadable or not a Quarry key.
    #[error("{path} is not a Quarry ed25519 {what} key: {reason}")]
    BadKey {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },

    /// The extraction directory is not usable (exists and is not empty).
    #[error("{0} exists and is not empty; verify extracts only into a new or empty directory")]
    TargetNotEmpty(PathBuf),
}

impl EvidenceError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvidenceError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = EvidenceError> = std::result::Result<T, E>;
