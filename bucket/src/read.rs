//! What an engine may read from a bucket: the segments each host's manifest vouches for.
//!
//! Per host, the newest manifest copy is the host's store as of its last upload; its live
//! segments (added and not removed since: compacted or expired ones are left out, as a local
//! store leaves them out) are what the host contributes. A host whose copy does not verify on
//! its own (a broken chain, a malformed entry, a copy holding another number of entries than
//! its name says) contributes nothing and is named. The list comes from the manifests, never
//! from listing the bucket, so an object nobody vouches for is never read; each segment carries
//! the hash the engine must check before it uses a byte of it (see `quarry_query`'s bucket
//! reader). `quarry verify --store s3://` is what checks the rest (older copies, unlisted and
//! missing objects).
//!
//! This module must not write to the bucket.

use quarry_store::layout::bucket_segment_key;
use quarry_store::manifest::ManifestLog;
use quarry_store::verify::chain_problems;

use crate::{Bucket, Result};

/// A segment in the bucket that its host's newest manifest copy vouches for.
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

/// Something of the bucket left out of reading, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// A key relative to the bucket prefix (a manifest copy, or a host's manifest directory).
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
    let copies = crate::verify::manifest_copies(bucket).await?;
    for (host, keys) in copies.by_host {
        let Some((entries, newest_key)) = keys.last().cloned() else {
            continue;
        };
        let Some(data) = bucket.get(&newest_key).await? else {
            out.left_out.push(LeftOut {
                rel: newest_key,
                reason: "the manifest copy disappeared while reading".into(),
            });
            continue;
        };
        let log = ManifestLog::parse(&data);
        let mut problems: Vec<String> =
            chain_problems(&log).iter().map(|p| p.to_string()).collect();
        problems.extend(
            log.malformed
                .iter()
                .map(|(line, error)| format!("line {line} is malformed: {error}")),
        );
        if log.entries.len() as u64 != entries {
            problems.push(format!(
                "named for {entries} entries, holds {}",
                log.entries.len()
            ));
        }
        if !problems.is_empty() {
            out.left_out.push(LeftOut {
                rel: newest_key,
                reason: format!(
                    "host {host}'s manifest does not verify ({}): none of its segments are read \
                     (run `quarry verify --store {}`)",
                    problems.join("; "),
                    bucket.url()
                ),
            });
            continue;
        }
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
