//! Compaction: merging the small segments of a closed hour into larger ones. Same rows, fewer
//! files; the manifest records the new segment (with the paths it `replaces`) and then the
//! removal of each source, so `verify` passes throughout and shows where the rows went.
//!
//! Order, for crash safety: the merged segment is written and fsync'd in `.staging/` (a crash
//! leaves an unlisted staged file recovery deletes), its `add` is logged, it is renamed into
//! place, then each source is removed as retention removes segments. A crash between the `add`
//! and the last removal leaves sources the new segment `replaces` still listed;
//! [`Store::recover`] finishes removing them, so rows are never lost and duplicates do not
//! outlive the next start.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::layout::{self, Partition, Store, segment_file_name};
use crate::manifest::{EntryBody, Manifest, ManifestLock, ManifestOp, NewEntry};
use crate::retention::HoldCheck;
use crate::segment::write_parquet_batches;
use crate::{Result, StoreError};

/// Which segments to merge.
#[derive(Debug, Clone)]
pub struct CompactPolicy {
    /// Segments smaller than this are merged.
    pub small_bytes: u64,
    /// A merged segment is built from at most this many bytes of sources.
    pub target_bytes: u64,
    /// An hour is compacted only once it ended at least this long ago (late rows of a just
    /// closed hour may still be sealed into it).
    pub settle: Duration,
}

impl Default for CompactPolicy {
    fn default() -> Self {
        CompactPolicy {
            small_bytes: 4 << 20,
            target_bytes: 64 << 20,
            settle: Duration::from_secs(300),
        }
    }
}

/// One merge.
#[derive(Debug, Clone, Serialize)]
pub struct Compaction {
    /// The merged segment (in a dry run, the partition it would be written to).
    pub path: String,
    pub sources: Vec<String>,
    pub rows: u64,
    pub bytes_before: u64,
    /// 0 in a dry run.
    pub bytes_after: u64,
}

/// The run id written into merged segments' names (`<time>-c0c0c0c0-<seq>.parquet`), so a
/// merged segment is recognisable in a listing.
pub const COMPACTION_RUN_ID: u32 = 0xc0c0_c0c0;

impl Store {
    /// Merges small segments of closed hours (not held ones: held evidence keeps its files and
    /// hashes). With `dry_run`, only says what it would merge.
    pub fn compact(
        &self,
        policy: &CompactPolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Vec<Compaction>> {
        let manifest = Manifest::new(self.manifest_path());
        let log = manifest.read()?;
        let holds = self.holds()?;
        let live = self.live_segments(&log);
        let mut check = HoldCheck::new(self, &holds, &live);
        let settle = chrono::Duration::from_std(policy.settle).unwrap_or(chrono::Duration::MAX);
        let mut by_partition: BTreeMap<Partition, Vec<&EntryBody>> = BTreeMap::new();
        for l in &live {
            if l.partition.hour_end() + settle > now || l.body.bytes >= policy.small_bytes {
                continue;
            }
            if !check.covering(l).is_empty() {
                continue;
            }
            by_partition
                .entry(l.partition.clone())
                .or_default()
                .push(&l.body);
        }
        let mut out = Vec::new();
        let mut seq = 0u64;
        for (partition, segs) in by_partition {
            let mut groups: Vec<Vec<&EntryBody>> = vec![Vec::new()];
            let mut size = 0u64;
            for s in segs {
                if size + s.bytes > policy.target_bytes && !groups.last().unwrap().is_empty() {
                    groups.push(Vec::new());
                    size = 0;
                }
                size += s.bytes;
                groups.last_mut().unwrap().push(s);
            }
            for group in groups.into_iter().filter(|g| g.len() >= 2) {
                let plan = Compaction {
                    path: partition.relative_dir().to_string_lossy().into_owned(),
                    sources: group.iter().map(|b| b.path.clone()).collect(),
                    rows: group.iter().map(|b| b.rows).sum(),
                    bytes_before: group.iter().map(|b| b.bytes).sum(),
                    bytes_after: 0,
                };
                if dry_run {
                    out.push(plan);
                    continue;
                }
                match self.merge(&manifest, &partition, &group, now, seq)? {
                    Some(done) => out.push(done),
                    None => continue,
                }
                seq += 1;
            }
        }
        Ok(out)
    }

    /// Merges `group` (segments of `partition`) into one. None when a source changed under it
    /// (altered, or removed by someone else): nothing is done then.
    fn merge(
        &self,
        manifest: &Manifest,
        partition: &Partition,
        group: &[&EntryBody],
        now: DateTime<Utc>,
        seq: u64,
    ) -> Result<Option<Compaction>> {
        let mut batches: Vec<RecordBatch> = Vec::new();
        // Segments sealed before a column was added get it as nulls.
        let schema = crate::schema::schema_of(partition.table);
        for body in group {
            let path = self.resolve(&body.path)?;
            let data = match fs::read(&path) {
                Ok(d) => d,
                Err(_) => return Ok(None),
            };
            if hex::encode(Sha256::digest(&data)) != body.sha256 {
                log::warn!(
                    "not compacting {}: it does not match its manifest hash (`quarry verify` \
                     reports it)",
                    body.path
                );
                return Ok(None);
            }
            let parquet_err = |source| StoreError::Parquet {
                path: path.clone(),
                source,
            };
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(data))
                .map_err(parquet_err)?
                .build()
                .map_err(parquet_err)?;
            for b in reader {
                batches.push(crate::schema::upgrade_batch(b?, &schema)?);
            }
        }
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let expected: u64 = group.iter().map(|b| b.rows).sum();
        if rows != expected {
            log::warn!(
                "not compacting {}: its segments hold {rows} rows, the manifest says {expected}",
                partition.relative_dir().display()
            );
            return Ok(None);
        }
        let dir_rel = partition.relative_dir();
        let name = segment_file_name(now, COMPACTION_RUN_ID, seq);
        let rel = format!("{}/{name}", dir_rel.to_string_lossy());
        let staged = self.staging_path_for(&rel);
        layout::refuse_symlink(&self.staging_dir())?;
        layout::create_private_dirs(&self.staging_dir())
            .map_err(|e| StoreError::io(self.staging_dir(), e))?;
        let (bytes, sha256) = write_parquet_batches(&staged, partition.table, &batches)
            .inspect_err(|_| {
                let _ = fs::remove_file(&staged);
            })?;
        drop(batches);

        let guard = manifest.lock()?;
        let log = manifest.read()?;
        let live: BTreeSet<&str> = log
            .live()
            .into_iter()
            .map(|e| e.body.path.as_str())
            .collect();
        if group.iter().any(|b| !live.contains(b.path.as_str())) {
            let _ = fs::remove_file(&staged);
            return Ok(None);
        }
        let dir = layout::create_dir_durable(self.root(), &dir_rel)?;
        let final_path = dir.join(&name);
        manifest.append_locked(
            &guard,
            NewEntry {
                op: ManifestOp::Add,
                table: partition.table.name().to_string(),
                path: rel.clone(),
                rows,
                bytes,
                sha256,
                reason: Some(format!("compaction of {} segments", group.len())),
                replaces: group.iter().map(|b| b.path.clone()).collect(),
            },
        )?;
        fs::rename(&staged, &final_path).map_err(|e| StoreError::io(&final_path, e))?;
        layout::fsync_dir(&dir)?;
        let sources: Vec<(EntryBody, String)> = group
            .iter()
            .map(|b| ((*b).clone(), compacted_reason(&rel, false)))
            .collect();
        self.remove_segments_locked(&guard, manifest, &sources)?;
        Ok(Some(Compaction {
            path: rel,
            sources: group.iter().map(|b| b.path.clone()).collect(),
            rows,
            bytes_before: group.iter().map(|b| b.bytes).sum(),
            bytes_after: bytes,
        }))
    }

    /// Finishes compactions a crash interrupted: sources a live merged segment `replaces` that
    /// are still listed are removed. Called by [`Store::recover`] under the manifest lock.
    pub(crate) fn finish_compactions(
        &self,
        guard: &ManifestLock,
        manifest: &Manifest,
    ) -> Result<usize> {
        let log = manifest.read()?;
        let live = log.live();
        let by_path: BTreeMap<&str, &EntryBody> = live
            .iter()
            .map(|e| (e.body.path.as_str(), &e.body))
            .collect();
        let mut todo = Vec::new();
        for e in &live {
            for src in &e.body.replaces {
                if let Some(body) = by_path.get(src.as_str()) {
                    let merged_present = self
                        .resolve(&e.body.path)
                        .map(|p| p.is_file())
                        .unwrap_or(false);
                    if merged_present {
                        todo.push(((*body).clone(), e.body.path.clone()));
                    }
                }
            }
        }
        let todo: Vec<(EntryBody, String)> = todo
            .into_iter()
            .map(|(body, merged)| (body, compacted_reason(&merged, true)))
            .collect();
        let done = self.remove_segments_locked(guard, manifest, &todo)?;
        Ok(done.into_iter().filter(|d| *d).count())
    }
}

fn compacted_reason(merged: &str, after_crash: bool) -> String {
    format!(
        "compacted; rows now in {merged}{}",
        if after_crash {
            " (finished after an interruption)"
        } else {
            ""
        }
    )
}
