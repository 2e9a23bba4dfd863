//! A host's manifest in a bucket: its chunks listed, put together in order from entry 1, and
//! verified as one chain.
//!
//! Each upload pass writes the entries the bucket does not have yet as one create-only chunk
//! (`_manifest/host=<host>/<first>-<last>.jsonl`, see
//! [`quarry_store::layout::bucket_manifest_key`]), so the bucket holds each entry about once
//! however often a node uploads. Put together, the chunks must start at entry 1 and follow each
//! other without a gap; a chunk that holds entries an earlier one holds too (a whole copy of
//! an earlier release beside chunks, or a pass repeated) is fine when those entries are byte
//! for byte the same. Putting together stops at the first chunk that does not fit: a gap
//! before it, another number of entries than its name says, an overlap that disagrees. The
//! hash chain (every entry's own hash, each chaining to the one before, across chunk
//! boundaries) is then checked over what was put together, and each problem is named by the
//! chunk that holds it.
//!
//! The *verified prefix* is the whole chunks before the first problem (an upload pass's chunk
//! is a state the host's manifest was in, so a prefix of whole chunks never splits an append
//! such as a compaction's add and its removals): readers use it and warn about the rest;
//! verification names every problem.
//!
//! This module must not write to the bucket, and lists nothing but the manifest directory.

use std::collections::BTreeMap;

use quarry_store::layout::{BUCKET_MANIFEST_DIR, bucket_manifest_dir, parse_bucket_manifest_key};
use quarry_store::manifest::ManifestLog;
use quarry_store::verify::chain_problems;

use crate::{Bucket, Result};

/// One chunk object of a host's manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Chunk {
    /// The first and last entry (manifest line, from 1) it holds, as its key names them.
    pub first: u64,
    pub last: u64,
    /// Key relative to the bucket prefix.
    pub rel: String,
}

/// The manifest chunks in a bucket (or of one host).
#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// By host: its chunks ordered by first entry, then last.
    pub by_host: BTreeMap<String, Vec<Chunk>>,
    /// Keys in the manifest directory that are not a chunk's.
    pub stray: Vec<String>,
}

/// Lists the manifest chunks of `host`, or of every host when None (the one listing an
/// uploader or reader does: segments are found through the manifests, never by listing).
pub async fn list_chunks(bucket: &Bucket, host: Option<&str>) -> Result<Listing> {
    let dir = host.map_or_else(|| BUCKET_MANIFEST_DIR.to_string(), bucket_manifest_dir);
    let mut listing = Listing::default();
    for (rel, _) in bucket.list(&dir).await? {
        match parse_bucket_manifest_key(&rel) {
            Some(key) => listing.by_host.entry(key.host).or_default().push(Chunk {
                first: key.first,
                last: key.last,
                rel,
            }),
            None => listing.stray.push(rel),
        }
    }
    for chunks in listing.by_host.values_mut() {
        chunks.sort();
    }
    Ok(listing)
}

/// How far `chunks` (ordered as [`list_chunks`] orders them) reach from entry 1 without a gap,
/// and the chunk that reaches that far. `(0, None)` when no chunk starts at entry 1.
pub fn contiguous(chunks: &[Chunk]) -> (u64, Option<&Chunk>) {
    let mut reach = (0, None);
    for chunk in chunks {
        if chunk.first > reach.0 + 1 {
            break;
        }
        if chunk.last > reach.0 {
            reach = (chunk.last, Some(chunk));
        }
    }
    reach
}

/// A chunk that does not fit the host's chain, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkProblem {
    /// The chunk's key relative to the bucket prefix.
    pub rel: String,
    pub what: String,
}

/// A host's manifest as its chunks put it together.
#[derive(Debug, Default, Clone)]
pub struct HostManifest {
    pub host: String,
    /// The entries put together, from entry 1 as far as the chunks fit (whole lines).
    pub data: Vec<u8>,
    /// Entries (lines) in `data`.
    pub entries: u64,
    /// The chunks whose entries are in `data`, in order, each with the last entry it adds.
    pub chunks: Vec<(String, u64)>,
    /// Chunks that do not fit, first the chain's problems in entry order, then where putting
    /// together stopped.
    pub problems: Vec<ChunkProblem>,
    verified_entries: u64,
    verified_len: usize,
}

impl HostManifest {
    /// The verified prefix (see the module docs): whole chunks before the first problem.
    pub fn verified(&self) -> &[u8] {
        &self.data[..self.verified_len]
    }

    /// Entries in [`HostManifest::verified`].
    pub fn verified_entries(&self) -> u64 {
        self.verified_entries
    }

    /// The chunk holding the last entry put together.
    pub fn last_chunk(&self) -> Option<&str> {
        self.chunks.last().map(|(rel, _)| rel.as_str())
    }

    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// `data` as lines, each with its newline; None unless it is whole lines (ends in one).
pub fn split_lines(data: &[u8]) -> Option<Vec<&[u8]>> {
    if data.last() != Some(&b'\n') {
        return None;
    }
    Some(data.split_inclusive(|&b| b == b'\n').collect())
}

/// Lists `host`'s chunks and puts them together ([`read_host`]).
pub async fn host_manifest(bucket: &Bucket, host: &str) -> Result<HostManifest> {
    let listing = list_chunks(bucket, Some(host)).await?;
    let host = quarry_store::layout::sanitize_host(host);
    let chunks = listing.by_host.get(&host).cloned().unwrap_or_default();
    read_host(bucket, &host, &chunks).await
}

/// Reads `host`'s `chunks` (ordered as [`list_chunks`] orders them) and puts them together,
/// checking the chain (see the module docs).
pub async fn read_host(bucket: &Bucket, host: &str, chunks: &[Chunk]) -> Result<HostManifest> {
    let mut out = HostManifest {
        host: host.to_string(),
        ..HostManifest::default()
    };
    // Byte offset where each line put together ends.
    let mut ends: Vec<usize> = Vec::new();
    let mut stopped = None;
    for chunk in chunks {
        let covered = ends.len() as u64;
        let stop = |what: String| {
            Some(ChunkProblem {
                rel: chunk.rel.clone(),
                what,
            })
        };
        if chunk.first > covered + 1 {
            stopped = stop(format!(
                "a manifest chunk of host {host} from entry {}, but the chunks before it end at \
                 entry {covered}: entries {}..{} are not in the bucket, so neither this chunk \
                 nor any after it is part of the host's chain",
                chunk.first,
                covered + 1,
                chunk.first - 1
            ));
            break;
        }
        let Some(bytes) = bucket.get(&chunk.rel).await? else {
            stopped = stop("a manifest chunk that disappeared while it was read".into());
            break;
        };
        let lines = split_lines(&bytes).unwrap_or_default();
        let named = chunk.last - chunk.first + 1;
        if lines.len() as u64 != named {
            stopped = stop(format!(
                "a manifest chunk of host {host} named for entries {}..{} ({named}) that holds \
                 {} whole lines",
                chunk.first,
                chunk.last,
                lines.len()
            ));
            break;
        }
        let mut disagrees = None;
        for (n, line) in (chunk.first..).zip(&lines) {
            if n <= covered {
                let start = if n == 1 { 0 } else { ends[n as usize - 2] };
                if out.data[start..ends[n as usize - 1]] != **line {
                    disagrees = Some(n);
                    break;
                }
            } else {
                out.data.extend_from_slice(line);
                ends.push(out.data.len());
            }
        }
        if let Some(n) = disagrees {
            let holder = out
                .chunks
                .iter()
                .find(|(_, last)| *last >= n)
                .map_or("", |(rel, _)| rel.as_str());
            stopped = stop(format!(
                "a manifest chunk of host {host} whose entry {n} differs from the same entry in \
                 {holder}: the host's history was rewritten"
            ));
            break;
        }
        if chunk.last > covered {
            out.chunks.push((chunk.rel.clone(), chunk.last));
        }
    }
    out.entries = ends.len() as u64;

    let log = ManifestLog::parse(&out.data);
    let mut bad_lines: Vec<(usize, String)> = log
        .malformed
        .iter()
        .map(|(line, error)| {
            (
                *line,
                format!("manifest line {line} is not a valid entry: {error}"),
            )
        })
        .collect();
    bad_lines.extend(chain_problems(&log).into_iter().map(|p| {
        let line = match p {
            quarry_store::verify::Problem::TamperedEntry { line, .. }
            | quarry_store::verify::Problem::BrokenChain { line, .. } => line,
            _ => 0,
        };
        (line, p.to_string())
    }));
    bad_lines.sort_by_key(|(line, _)| *line);
    // Index of the chunk holding each bad line.
    let holder = |line: usize| {
        out.chunks
            .iter()
            .position(|(_, last)| *last >= line as u64)
            .unwrap_or(out.chunks.len().saturating_sub(1))
    };
    let first_bad = bad_lines.first().map(|(line, _)| holder(*line));
    for (line, what) in &bad_lines {
        let rel = out.chunks[holder(*line)].0.clone();
        out.problems.push(ChunkProblem {
            rel,
            what: format!("a manifest chunk of host {host} that fails the hash chain: {what}"),
        });
    }
    out.problems.extend(stopped);
    let verified_chunks = first_bad.unwrap_or(out.chunks.len());
    out.verified_entries = verified_chunks
        .checked_sub(1)
        .map_or(0, |i| out.chunks[i].1);
    out.verified_len = out
        .verified_entries
        .checked_sub(1)
        .map_or(0, |i| ends[i as usize]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BucketUrl;
    use object_store::{ObjectStoreExt, PutPayload};
    use quarry_store::Store;
    use quarry_store::layout::bucket_manifest_key;
    use quarry_store::manifest::{Manifest, ManifestOp, NewEntry};
    use std::sync::Arc;

    /// A store manifest of `n` chained entries, as whole lines.
    fn manifest(n: usize) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let m = Manifest::new(store.manifest_path());
        for i in 0..n {
            m.append(NewEntry {
                op: ManifestOp::Add,
                table: "gap".into(),
                path: format!("gap/dt=2026-11-28/hour=10/host=n/{i}.parquet"),
                rows: 1,
                bytes: 1,
                sha256: "00".into(),
                reason: None,
                replaces: Vec::new(),
            })
            .unwrap();
        }
        let data = std::fs::read(store.manifest_path()).unwrap();
        split_lines(&data)
            .unwrap()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    async fn put(bucket: &Bucket, rel: &str, lines: &[Vec<u8>]) {
        bucket
            .objects()
            .put(&bucket.key(rel), PutPayload::from(lines.concat()))
            .await
            .unwrap();
    }

    fn memory_bucket() -> Bucket {
        Bucket::with_objects(
            BucketUrl::parse("s3://b/fleet").unwrap(),
            Arc::new(object_store::memory::InMemory::new()),
        )
    }

    #[tokio::test]
    async fn chunks_put_together_are_the_host_manifest_across_chunk_boundaries() {
        let lines = manifest(6);
        let bucket = memory_bucket();
        put(&bucket, &bucket_manifest_key("h", 1, 2), &lines[0..2]).await;
        put(&bucket, &bucket_manifest_key("h", 3, 5), &lines[2..5]).await;
        // A whole copy of an earlier release overlapping the chunks, agreeing.
        put(&bucket, "_manifest/host=h/000000000004.jsonl", &lines[0..4]).await;
        put(&bucket, &bucket_manifest_key("h", 6, 6), &lines[5..6]).await;
        let m = host_manifest(&bucket, "h").await.unwrap();
        assert!(m.is_ok(), "{:?}", m.problems);
        assert_eq!(m.data, lines.concat());
        assert_eq!((m.entries, m.verified_entries()), (6, 6));
        assert_eq!(m.verified(), &m.data[..]);
        // The legacy copy adds entries 3..4, the chunk 3..5 only entry 5.
        assert_eq!(m.chunks.len(), 4);
        assert_eq!(
            m.last_chunk(),
            Some(bucket_manifest_key("h", 6, 6).as_str())
        );
        let listing = list_chunks(&bucket, Some("h")).await.unwrap();
        assert_eq!(contiguous(&listing.by_host["h"]).0, 6);
    }

    #[tokio::test]
    async fn a_gap_an_overlap_that_disagrees_and_a_broken_chain_are_named_by_chunk() {
        let lines = manifest(6);
        // A gap: entries 3..4 missing; what comes before is the verified prefix.
        let bucket = memory_bucket();
        put(&bucket, &bucket_manifest_key("h", 1, 2), &lines[0..2]).await;
        let after_gap = bucket_manifest_key("h", 5, 6);
        put(&bucket, &after_gap, &lines[4..6]).await;
        let m = host_manifest(&bucket, "h").await.unwrap();
        assert_eq!(m.problems.len(), 1, "{:?}", m.problems);
        assert_eq!(m.problems[0].rel, after_gap);
        assert!(
            m.problems[0].what.contains("entries 3..4"),
            "{:?}",
            m.problems
        );
        assert_eq!(m.verified(), &lines[0..2].concat()[..]);
        let listing = list_chunks(&bucket, None).await.unwrap();
        let (reach, last) = contiguous(&listing.by_host["h"]);
        assert_eq!((reach, last.map(|c| c.last)), (2, Some(2)));

        // An overlap whose entry differs from the chunk before.
        let bucket = memory_bucket();
        put(&bucket, &bucket_manifest_key("h", 1, 3), &lines[0..3]).await;
        let mut other = lines[2..4].to_vec();
        other[0] = lines[5].clone();
        let rewritten = bucket_manifest_key("h", 3, 4);
        put(&bucket, &rewritten, &other).await;
        let m = host_manifest(&bucket, "h").await.unwrap();
        assert_eq!(m.problems.len(), 1, "{:?}", m.problems);
        assert_eq!(m.problems[0].rel, rewritten);
        assert!(m.problems[0].what.contains("entry 3"), "{:?}", m.problems);
        assert_eq!((m.entries, m.verified_entries()), (3, 3));

        // A chunk whose entries do not chain to the chunk before (one entry dropped at its
        // start): named, and only the chunks before it are verified.
        let bucket = memory_bucket();
        put(&bucket, &bucket_manifest_key("h", 1, 2), &lines[0..2]).await;
        let broken = bucket_manifest_key("h", 3, 4);
        put(&bucket, &broken, &lines[3..5]).await;
        put(&bucket, &bucket_manifest_key("h", 5, 5), &lines[5..6]).await;
        let m = host_manifest(&bucket, "h").await.unwrap();
        assert!(!m.problems.is_empty());
        assert!(
            m.problems.iter().all(|p| p.rel == broken),
            "{:?}",
            m.problems
        );
        assert!(m.problems[0].what.contains("chain"), "{:?}", m.problems);
        assert_eq!((m.entries, m.verified_entries()), (5, 2));
        assert_eq!(m.verified(), &lines[0..2].concat()[..]);

        // A chunk holding fewer entries than its name says.
        let bucket = memory_bucket();
        let short = bucket_manifest_key("h", 1, 3);
        put(&bucket, &short, &lines[0..2]).await;
        let m = host_manifest(&bucket, "h").await.unwrap();
        assert_eq!(m.problems.len(), 1);
        assert_eq!(m.problems[0].rel, short);
        assert_eq!((m.entries, m.verified_entries()), (0, 0));
    }
}
