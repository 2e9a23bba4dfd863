//! The bundle manifest (`MANIFEST.json`) and its signature file.

use serde::{Deserialize, Serialize};

/// What a bundle file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Rows of one store table, as Parquet.
    Table,
    /// A file of the case directory (snapshot images and facts).
    Case,
    /// The chain-of-custody log.
    Custody,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Path inside the bundle root, `/`-separated, e.g. `tables/process.parquet`.
    pub path: String,
    pub kind: FileKind,
    pub sha256: String,
    pub bytes: u64,
    /// Table files: the table and how many rows the file holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// The container a bundle is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleContainer {
    pub id: String,
    pub name: Option<String>,
}

/// The store the rows came from, as it was when they were read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSource {
    pub store: String,
    /// The store manifest's head hash when the export read it: the rows came from segments
    /// listed in the chain up to this entry.
    pub manifest_head: String,
    /// Segments read (each re-hashed against the store manifest before use).
    pub segments_read: u64,
}

/// `MANIFEST.json`: everything a bundle holds and how it came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    pub format: String,
    /// e.g. `quarry 0.1.0`.
    pub tool: String,
    /// When the export ran (RFC 3339, UTC).
    pub created: String,
    pub host: String,
    /// Who ran the export.
    pub actor: String,
    /// The exact command line.
    pub command: String,
    pub container: BundleContainer,
    /// The time window exported (RFC 3339; None: unbounded).
    pub since: Option<String>,
    pub until: Option<String>,
    pub source: BundleSource,
    /// The case directory included, as given.
    pub case_dir: Option<String>,
    pub files: Vec<BundleFile>,
}

/// `MANIFEST.json.sig`: an ed25519 signature of the exact bytes of `MANIFEST.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureFile {
    pub algorithm: String,
    /// The signer's public key, hex (checked against `--key` when given).
    pub public_key: String,
    pub signature: String,
}
