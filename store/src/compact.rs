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
//!
//! Memory: a merge is bounded by the rows it decodes ([`CompactPolicy::max_rows`], from the
//! manifest's row counts: raw-stream segments hold millions of rows in a few MiB, so bytes
//! alone say little) and streams: sources are read a batch at a time and the merged segment
//! is written a row group at a time, so a merge holds one row group plus one batch per
//! source. The merged segment keeps the store's clustering: rows grouped by container (the
//! host's first, then containers in id order), each container's rows in sealing order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::layout::{self, Partition, Store, segment_file_name};
use crate::manifest::{EntryBody, Manifest, ManifestOp, NewEntry};
use crate::removal::{HoldCheck, compacted_reason};
use crate::segment::{max_row_group_rows, write_parquet_groups};
use crate::{Result, StoreError};

/// Which segments to merge.
#[derive(Debug, Clone)]
pub struct CompactPolicy {
    /// Segments smaller than this are merged.
    pub small_bytes: u64,
    /// A merged segment is built from at most this many bytes of sources.
    pub target_bytes: u64,
    /// ... and holds at most this many rows (what a merge decodes).
    pub max_rows: u64,
    /// An hour is compacted only once it ended at least this long ago (late rows of a just
    /// closed hour may still be sealed into it).
    pub settle: Duration,
}

impl Default for CompactPolicy {
    fn default() -> Self {
        CompactPolicy {
            small_bytes: 4 << 20,
            target_bytes: 64 << 20,
            max_rows: 2_000_000,
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
            let mut groups: Vec<Vec<&EntryBody>> = Vec::new();
            let mut current: Vec<&EntryBody> = Vec::new();
            let (mut size, mut rows) = (0u64, 0u64);
            for s in segs {
                let over = size + s.bytes > policy.target_bytes || rows + s.rows > policy.max_rows;
                if over && !current.is_empty() {
                    groups.push(std::mem::take(&mut current));
                    (size, rows) = (0, 0);
                }
                size += s.bytes;
                rows += s.rows;
                current.push(s);
            }
            groups.push(current);
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
        // The sources' bytes are read and hashed first and decoded from those same bytes:
        // nothing the manifest does not vouch for is merged. Compressed, they are at most the
        // policy's target bytes.
        let mut sources = Vec::with_capacity(group.len());
        let expected: u64 = group.iter().map(|b| b.rows).sum();
        let batch_rows = (MERGE_ROWS_IN_FLIGHT / group.len().max(1)).clamp(1024, 8192);
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
            let builder = crate::read::segment_reader(bytes::Bytes::from(data), partition.table)
                .map_err(parquet_err)?;
            let rows = builder.metadata().file_metadata().num_rows();
            if u64::try_from(rows).ok() != Some(body.rows) {
                log::warn!(
                    "not compacting {}: {} holds {rows} rows, the manifest says {}",
                    partition.relative_dir().display(),
                    body.path,
                    body.rows
                );
                return Ok(None);
            }
            let reader = builder
                .with_batch_size(batch_rows)
                .build()
                .map_err(parquet_err)?;
            sources.push(Source::new(path, reader));
        }
        let dir_rel = partition.relative_dir();
        let name = segment_file_name(now, COMPACTION_RUN_ID, seq);
        let rel = format!("{}/{name}", dir_rel.to_string_lossy());
        let staged = self.staging_path_for(&rel);
        layout::refuse_symlink(&self.staging_dir())?;
        layout::create_private_dirs(&self.staging_dir())
            .map_err(|e| StoreError::io(self.staging_dir(), e))?;
        let mut merged = Merge::new(
            sources,
            crate::schema::schema_of(partition.table),
            max_row_group_rows(partition.table),
        );
        let written = write_parquet_groups(&staged, partition.table, &mut merged);
        let (bytes, sha256) = match (written, merged.error.take()) {
            (Ok(done), None) => done,
            (Err(e), _) | (_, Some(e)) => {
                let _ = fs::remove_file(&staged);
                return Err(e);
            }
        };
        let rows = merged.rows;
        if rows != expected {
            // The footers agreed with the manifest; the rows did not decode to them.
            let _ = fs::remove_file(&staged);
            log::warn!(
                "not compacting {}: its segments hold {rows} rows, the manifest says {expected}",
                partition.relative_dir().display()
            );
            return Ok(None);
        }
        drop(merged);

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
}

/// Rows a merge decodes ahead across all its sources (a batch of each), on top of the row
/// group being built.
const MERGE_ROWS_IN_FLIGHT: usize = 256 * 1024;

/// One source segment being read: its current batch and how far into it the merge is.
struct Source {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    offset: usize,
}

impl Source {
    fn new(path: PathBuf, reader: ParquetRecordBatchReader) -> Source {
        Source {
            path,
            reader,
            batch: None,
            offset: 0,
        }
    }

    /// Makes sure a row is ready; false at the end of the segment.
    fn ready(&mut self, schema: &SchemaRef) -> Result<bool> {
        while self
            .batch
            .as_ref()
            .is_none_or(|b| self.offset >= b.num_rows())
        {
            match self.reader.next() {
                None => {
                    self.batch = None;
                    return Ok(false);
                }
                Some(b) => {
                    let b = b.map_err(|e| StoreError::Parquet {
                        path: self.path.clone(),
                        source: e.into(),
                    })?;
                    // Segments sealed before a column was added get it as nulls.
                    self.batch = Some(crate::schema::upgrade_batch(b, schema)?);
                    self.offset = 0;
                }
            }
        }
        Ok(true)
    }

    fn containers(&self) -> Option<&StringArray> {
        self.batch
            .as_ref()?
            .column_by_name("container_id")?
            .as_string_opt::<i32>()
    }

    /// The container of the next row (None: the host's, or a table without containers).
    fn key(&self) -> Option<&str> {
        let c = self.containers()?;
        (!c.is_null(self.offset)).then(|| c.value(self.offset))
    }

    /// Takes the rows from the current one on that share its container, up to `limit`,
    /// without leaving the current batch.
    fn take_run(&mut self, limit: usize) -> RecordBatch {
        let batch = self.batch.as_ref().expect("ready was called");
        let end = (self.offset + limit).min(batch.num_rows());
        let len = match self.containers() {
            None => end - self.offset,
            Some(c) => {
                let key = (!c.is_null(self.offset)).then(|| c.value(self.offset));
                (self.offset..end)
                    .take_while(|&i| (!c.is_null(i)).then(|| c.value(i)) == key)
                    .count()
            }
        };
        let run = batch.slice(self.offset, len);
        self.offset += len;
        run
    }
}

/// The merged rows as row groups: container by container in key order (the host's rows
/// first), each container's rows source by source (sealing order). Sources are sorted that
/// way already, so this streams; a source that is not (an older merge) still gives every
/// row once, only less tightly grouped. A read error ends the groups and is kept in `error`.
struct Merge {
    sources: Vec<Source>,
    schema: SchemaRef,
    group_rows: usize,
    rows: u64,
    error: Option<StoreError>,
}

impl Merge {
    fn new(sources: Vec<Source>, schema: SchemaRef, group_rows: usize) -> Merge {
        Merge {
            sources,
            schema,
            group_rows: group_rows.max(1),
            rows: 0,
            error: None,
        }
    }

    fn next_group(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        let mut group = Vec::new();
        let mut rows = 0;
        while rows < self.group_rows {
            // The smallest next container among the sources (the host's, None, first).
            let mut key: Option<Option<String>> = None;
            for s in &mut self.sources {
                if s.ready(&self.schema)? {
                    let k = s.key();
                    if key.as_ref().is_none_or(|best| k < best.as_deref()) {
                        key = Some(k.map(str::to_string));
                    }
                }
            }
            let Some(key) = key else { break };
            for s in &mut self.sources {
                while rows < self.group_rows && s.ready(&self.schema)? && s.key() == key.as_deref()
                {
                    let run = s.take_run(self.group_rows - rows);
                    rows += run.num_rows();
                    group.push(run);
                }
            }
        }
        self.rows += rows as u64;
        Ok((!group.is_empty()).then_some(group))
    }
}

impl Iterator for Merge {
    type Item = Vec<RecordBatch>;

    fn next(&mut self) -> Option<Vec<RecordBatch>> {
        if self.error.is_some() {
            return None;
        }
        match self.next_group() {
            Ok(group) => group,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}
