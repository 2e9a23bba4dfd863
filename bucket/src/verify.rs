//! Verifying a bucket: every host's manifest chain checked, every object it vouches for read
//! back and hashed, and every object in the table directories accounted for.
//!
//! Per host the chain is its manifest chunks put together from entry 1
//! ([`crate::manifest::read_host`]): a gap, a chunk that holds other entries than its name
//! says, an overlap that disagrees and a chunk whose entries fail the hash chain are each named
//! by the chunk's key. An object is fine when the chain added it with its hash (also when the
//! store has removed it since: a bucket may keep segments longer than a node); it is *altered*
//! when its hash differs, *missing* when the chain lists it as present and it is gone,
//! *unlisted* when no chain of its host added it.

use std::collections::HashMap;

use quarry_store::layout::{BUCKET_MANIFEST_DIR, bucket_segment_key};
use quarry_store::manifest::{ManifestLog, ManifestOp};
use quarry_store::verify::Problem;
use serde::Serialize;

use crate::{Bucket, Result, sha256_hex};

/// One host's part of a bucket.
#[derive(Debug, Default, Clone, Serialize)]
pub struct HostReport {
    pub host: String,
    /// The manifest chunk holding the chain's last entry.
    pub manifest_key: String,
    /// Chunks put together into the chain, and the entries they hold.
    pub manifest_chunks: u64,
    pub manifest_entries: u64,
    pub head_hash: String,
    pub segments_verified: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Problems of this host's chain; objects' problems are in [`BucketReport::problems`].
    pub problems: Vec<Problem>,
}

/// The outcome of [`verify_bucket`].
#[derive(Debug, Default, Clone, Serialize)]
pub struct BucketReport {
    pub bucket: String,
    pub hosts: Vec<HostReport>,
    pub segments_verified: u64,
    pub rows: u64,
    /// Segments a host's store removed that the bucket still keeps (not a problem).
    pub kept_after_removal: u64,
    /// Object problems, paths relative to the bucket prefix.
    pub problems: Vec<Problem>,
}

impl BucketReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.hosts.iter().all(|h| h.problems.is_empty())
    }

    /// Every problem, each with the host whose chain it belongs to ("" for objects).
    pub fn all_problems(&self) -> impl Iterator<Item = (&str, &Problem)> {
        self.hosts
            .iter()
            .flat_map(|h| h.problems.iter().map(move |p| (h.host.as_str(), p)))
            .chain(self.problems.iter().map(|p| ("", p)))
    }

    /// The report for people (`quarry verify --store s3://...`): every problem with its
    /// host, each host's chain, and the verdict. Host names and problems are escaped.
    pub fn render_text(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        use quarry_store::text::printable as shown;
        for (host, p) in self.all_problems() {
            match host {
                "" => writeln!(w, "✗ {}", shown(&p.to_string()))?,
                h => writeln!(w, "✗ host {}: {}", shown(h), shown(&p.to_string()))?,
            }
        }
        for h in &self.hosts {
            writeln!(
                w,
                "- host {}: {} segments, {} rows; {} manifest entries, head {}",
                shown(&h.host),
                h.segments_verified,
                h.rows,
                h.manifest_entries,
                h.head_hash
            )?;
        }
        writeln!(
            w,
            "{}: {} hosts, {} segments, {} rows ({} kept after their store removed them); \
             {} problems",
            if self.is_ok() {
                "✓ verified"
            } else {
                "✗ FAILED"
            },
            self.hosts.len(),
            self.segments_verified,
            self.rows,
            self.kept_after_removal,
            self.all_problems().count()
        )
    }
}

/// What a host's chain says about one object key.
struct Vouched {
    sha256: String,
    rows: u64,
    bytes: u64,
    live: bool,
}

/// Verifies every host in the bucket (see the module docs).
pub async fn verify_bucket(bucket: &Bucket) -> Result<BucketReport> {
    let mut report = BucketReport {
        bucket: bucket.url().to_string(),
        ..BucketReport::default()
    };
    let listing = crate::manifest::list_chunks(bucket, None).await?;
    report.problems.extend(
        listing
            .stray
            .into_iter()
            .map(|path| Problem::Unlisted { path }),
    );
    let mut vouched: HashMap<String, Vouched> = HashMap::new();
    for (host, chunks) in listing.by_host {
        let manifest = crate::manifest::read_host(bucket, &host, &chunks).await?;
        let log = ManifestLog::parse(&manifest.data);
        let host_report = HostReport {
            host: host.clone(),
            manifest_key: manifest.last_chunk().unwrap_or_default().to_string(),
            manifest_chunks: manifest.chunks.len() as u64,
            manifest_entries: manifest.entries,
            head_hash: log.head(),
            problems: manifest
                .problems
                .into_iter()
                .map(|p| Problem::Unexpected {
                    path: p.rel,
                    what: p.what,
                })
                .collect(),
            ..HostReport::default()
        };
        let live: std::collections::HashSet<&str> =
            log.live().iter().map(|e| e.body.path.as_str()).collect();
        for (_, entry) in &log.entries {
            if entry.body.op != ManifestOp::Add {
                continue;
            }
            let Some(key) = bucket_segment_key(&entry.body.path, &host) else {
                continue;
            };
            vouched.insert(
                key,
                Vouched {
                    sha256: entry.body.sha256.clone(),
                    rows: entry.body.rows,
                    bytes: entry.body.bytes,
                    live: live.contains(entry.body.path.as_str()),
                },
            );
        }
        report.hosts.push(host_report);
    }

    let mut seen = std::collections::HashSet::new();
    for (rel, _) in bucket.list("").await? {
        if rel.starts_with(&format!("{BUCKET_MANIFEST_DIR}/")) {
            continue;
        }
        let Some(expected) = vouched.get(&rel) else {
            report.problems.push(Problem::Unlisted { path: rel });
            continue;
        };
        seen.insert(rel.clone());
        let Some(data) = bucket.get(&rel).await? else {
            continue;
        };
        let actual = sha256_hex(&data);
        if actual != expected.sha256 {
            report.problems.push(Problem::Altered {
                path: rel,
                expected: expected.sha256.clone(),
                actual,
            });
            continue;
        }
        if !expected.live {
            report.kept_after_removal += 1;
        }
        let host = rel
            .split('/')
            .nth(3)
            .and_then(|h| h.strip_prefix("host="))
            .unwrap_or_default();
        if let Some(h) = report.hosts.iter_mut().find(|h| h.host == host) {
            h.segments_verified += 1;
            h.rows += expected.rows;
            h.bytes += expected.bytes;
        }
        report.segments_verified += 1;
        report.rows += expected.rows;
    }
    let mut missing: Vec<&String> = vouched
        .iter()
        .filter(|(key, v)| v.live && !seen.contains(*key))
        .map(|(key, _)| key)
        .collect();
    missing.sort();
    for key in missing {
        report.problems.push(Problem::Missing { path: key.clone() });
    }
    Ok(report)
}
