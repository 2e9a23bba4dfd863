//! What an engine may read from a bucket: the segments each host's manifest vouches for.
//!
//! Per host, its manifest chunks put together from entry 1 are the host's store as of its
//! last upload ([`crate::manifest`]); the live segments of their verified prefix (added and
//! not removed since: compacted or expired ones are left out, as a local store leaves them
//! out) are what the host contributes. A chunk that does not fit (a gap before it, a broken
//! chain, a malformed entry, an overlap that disagrees) is named, and only the whole chunks
//! before the first such one are read. The list comes from the manifests, never from listing
//! the tables, so an object nobody vouches for is never read; each segment carries the hash
//! the engine must check before it uses a byte of it (see `quarry_query`'s bucket reader).
//! `quarry verify --store s3://` is what checks the rest (unlisted and missing objects).
//!
//! This module must not write to the bucket.

use quarry_store::layout::bucket_segment_key;
use quarry_store::manifest::ManifestLog;

use crate::{Bucket, Result};

/// A segment in the bucket that its host's manifest vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VouchedSegment {
    /// Key relative to the bucket prefix: `<table>/dt=/hour=/host=<host>/<segment>.parquet`.
    pub rel: String,
    pub host: String,
    /// Size and SHA-256 (hex) the host sealed it with.
    pub bytes: u64,
    pub sha256: String,
    pub rows: u64,
}

/// Why a vouched segment's bytes cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// The manifest lists it; the bucket does not hold it.
    Missing,
    /// The bucket holds other bytes than the host sealed.
    Altered { bytes: u64, sha256: String },
    /// Its manifest entry's hash is not a SHA-256 (64 hex digits).
    NotSha256,
}

impl VouchedSegment {
    /// Downloads the segment whole from `bucket` (whose prefix its `rel` is below) and checks
    /// its size and SHA-256 against what its host sealed: the bytes, or why they are unusable.
    /// The one check every reader of a bucket's segments makes before using a byte.
    pub async fn fetch_checked(
        &self,
        bucket: &Bucket,
    ) -> Result<std::result::Result<bytes::Bytes, Unusable>> {
        let Some(data) = bucket.get(&self.rel).await? else {
            return Ok(Err(Unusable::Missing));
        };
        let sha256 = crate::sha256_hex(&data);
        if data.len() as u64 != self.bytes || sha256 != self.sha256 {
            return Ok(Err(Unusable::Altered {
                bytes: data.len() as u64,
                sha256,
            }));
        }
        Ok(Ok(data))
    }

    /// Why `unusable` keeps this segment out, in the words warnings and refusals use.
    pub fn refusal(&self, unusable: &Unusable) -> String {
        match unusable {
            Unusable::Missing => "missing from the bucket (its host's manifest lists it)".into(),
            Unusable::NotSha256 => "its manifest hash is not SHA-256".into(),
            Unusable::Altered { bytes, sha256 } => format!(
                "altered in the bucket: {bytes} bytes with SHA-256 {sha256}, sealed as {} bytes \
                 with {}",
                self.bytes, self.sha256
            ),
        }
    }
}

/// Something of the bucket left out of reading, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// A key relative to the bucket prefix (a manifest chunk).
    pub rel: String,
    pub reason: String,
}

/// The outcome of [`vouched_segments`].
#[derive(Debug, Default, Clone)]
pub struct Vouched {
    pub segments: Vec<VouchedSegment>,
    pub left_out: Vec<LeftOut>,
}

/// Lists what the bucket's hosts vouch for (see the module docs).
pub async fn vouched_segments(bucket: &Bucket) -> Result<Vouched> {
    let mut out = Vouched::default();
    let listing = crate::manifest::list_chunks(bucket, None).await?;
    for (host, chunks) in listing.by_host {
        let manifest = crate::manifest::read_host(bucket, &host, &chunks).await?;
        let mut named: Vec<(String, Vec<String>)> = Vec::new();
        for problem in manifest.problems.iter() {
            match named.iter_mut().find(|(rel, _)| *rel == problem.rel) {
                Some((_, whats)) => whats.push(problem.what.clone()),
                None => named.push((problem.rel.clone(), vec![problem.what.clone()])),
            }
        }
        for (rel, whats) in named {
            out.left_out.push(LeftOut {
                rel,
                reason: format!(
                    "{}: only host {host}'s first {} manifest entries (the chunks before the \
                     first that does not fit) are read (run `quarry verify --store {}`)",
                    whats.join("; "),
                    manifest.verified_entries(),
                    bucket.url()
                ),
            });
        }
        let log = ManifestLog::parse(manifest.verified());
        for entry in log.live() {
            let Some(rel) = bucket_segment_key(&entry.body.path, &host) else {
                continue;
            };
            out.segments.push(VouchedSegment {
                rel,
                host: host.clone(),
                bytes: entry.body.bytes,
                sha256: entry.body.sha256.clone(),
                rows: entry.body.rows,
            });
        }
    }
    out.segments.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}
