//! Sealing: turning a batch of rows into an immutable, hashed segment in its partition.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::Utc;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::layout::{self, Partition, Store, segment_file_name};
use crate::manifest::{Manifest, ManifestEntry, ManifestOp, NewEntry};
use crate::{Result, StoreError, Table};

/// A segment that is sealed: renamed into its partition and listed in the manifest.
#[derive(Debug, Clone)]
pub struct SealedSegment {
    pub path: PathBuf,
    pub entry: ManifestEntry,
}

/// Parquet settings for the segments of `table`: zstd, dictionaries, page statistics for
/// pruning, and a small bloom filter on `container_id` so a container's rows are found without
/// reading the row groups of the others.
pub fn writer_properties(table: Table) -> WriterProperties {
    let container = ColumnPath::from("container_id");
    let mut properties = WriterProperties::builder()
        .set_column_bloom_filter_enabled(container.clone(), true)
        // Containers per node are hundreds, not millions: a filter sized for that is ~1 KiB.
        .set_column_bloom_filter_max_ndv(container.clone(), 512)
        .set_column_bloom_filter_fpp(container, 0.01)
        // Small pages make page statistics selective once rows are grouped by container.
        .set_data_page_row_count_limit(8192)
        // Times only grow (within a container): deltas store them in a few bits each, where
        // a dictionary would fill up and be thrown away.
        .set_column_dictionary_enabled(ColumnPath::from("ktime_ns"), false)
        .set_column_encoding(ColumnPath::from("ktime_ns"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("time"), false)
        .set_column_encoding(ColumnPath::from("time"), Encoding::DELTA_BINARY_PACKED)
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("3 is a valid zstd level"),
        ))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_created_by(format!("quarry {}", env!("CARGO_PKG_VERSION")));
    if table == Table::Syscall {
        // The raw stream is sealed at millions of rows a second, and min/max per value is a
        // good part of that work. Keep statistics where they prune (time, container, process)
        // and drop them where a page's range says nothing: one host, syscalls, results, and
        // names and cgroups that follow the container and process columns.
        for column in RAW_STREAM_COLUMNS_WITHOUT_STATISTICS {
            properties = properties
                .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
        }
        // The slack repeats for a run of calls and changes from run to run: zstd squeezes the
        // repeats out of plain values, where a dictionary would intern every value first.
        properties = properties
            .set_column_dictionary_enabled(ColumnPath::from("ktime_slack_ns"), false)
            .set_column_encoding(ColumnPath::from("ktime_slack_ns"), Encoding::PLAIN);
    }
    properties.build()
}

/// Columns of the `syscall` table written without statistics (see [`writer_properties`]).
const RAW_STREAM_COLUMNS_WITHOUT_STATISTICS: [&str; 7] = [
    "host",
    "comm",
    "cgroup_id",
    "nr",
    "name",
    "ret",
    "ktime_slack_ns",
];

/// Columns of the `syscall` table whose chunks are built from the runs their values come in
/// ([`crate::runs`]): a thread's identity and, often, its calls repeat row after row.
/// `container_id` (nullable, with a bloom filter) and the times and slack (which change from
/// row to row) are left to Parquet's writer.
const RAW_STREAM_RUN_COLUMNS: [&str; 8] = [
    "host",
    "pid",
    "tid",
    "comm",
    "cgroup_id",
    "nr",
    "name",
    "ret",
];

/// The columns of `table` written through [`crate::runs`] where it applies.
fn run_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Syscall => &RAW_STREAM_RUN_COLUMNS,
        _ => &[],
    }
}

/// Groups an event batch by `container_id` (rows without one, the host's, first; then
/// containers in id order), so each container's rows sit together in a segment and the page
/// statistics on `container_id` let readers skip the others' pages. Within a container the
/// rows keep the order they came in, which is time order per source (the recorder's rows
/// arrive in time order per CPU). Batches without that column are unchanged.
///
/// This runs on every sealed segment of the raw syscall stream (millions of rows): see
/// [`grouped_order`]; a batch of a single container (or only the host) is not reordered.
fn cluster_by_container(batch: &RecordBatch) -> Result<RecordBatch> {
    let Some(container) = batch
        .column_by_name("container_id")
        .and_then(|c| c.as_string_opt::<i32>())
    else {
        return Ok(batch.clone());
    };
    if container.null_count() == container.len() {
        return Ok(batch.clone());
    }
    // None sorts first: the host's rows, then containers in id order.
    let keys: Vec<Option<&str>> = container.iter().collect();
    let Some(order) = grouped_order(&keys) else {
        return Ok(batch.clone());
    };
    take_record_batch(batch, &UInt32Array::from(order)).map_err(StoreError::Arrow)
}

/// The row order that brings equal keys together: groups in ascending key order, rows within
/// a group in the order they came. `None` when every row has the same key (nothing to move).
///
/// A stable counting sort for keys that are few (containers, CPUs) over millions of rows:
/// each row is looked up once (runs of one key once per run) and moved once, rows are never
/// compared with each other.
pub(crate) fn grouped_order<K: Ord + Copy>(keys: &[K]) -> Option<Vec<u32>> {
    let mut distinct = BTreeSet::new();
    let mut previous = None;
    for &key in keys {
        if previous != Some(key) {
            distinct.insert(key);
            previous = Some(key);
        }
    }
    if distinct.len() <= 1 {
        return None;
    }
    let distinct: Vec<K> = distinct.into_iter().collect();
    let mut last: Option<(K, usize)> = None;
    let groups: Vec<usize> = keys
        .iter()
        .map(|&key| match last {
            Some((prev, group)) if prev == key => group,
            _ => {
                let group = distinct
                    .binary_search(&key)
                    .expect("every key is among the distinct keys");
                last = Some((key, group));
                group
            }
        })
        .collect();
    let mut start = vec![0usize; distinct.len() + 1];
    groups.iter().for_each(|&g| start[g + 1] += 1);
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut order = vec![0u32; groups.len()];
    for (row, &g) in groups.iter().enumerate() {
        order[start[g]] = row as u32;
        start[g] += 1;
    }
    Some(order)
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

impl Store {
    /// Seals `batch` as a new segment of `partition` (a [`SegmentWriter`] given one batch).
    pub fn seal(
        &self,
        partition: &Partition,
        batch: &RecordBatch,
        run_id: u32,
        seq: u64,
    ) -> Result<SealedSegment> {
        let mut writer = self.open_segment(partition, run_id, seq)?;
        writer.write(batch)?;
        writer.seal()
    }

    /// Starts a new segment of `partition`, to be written a batch at a time
    /// ([`SegmentWriter::write`]) and then sealed ([`SegmentWriter::seal`]). Until it is
    /// sealed it is a file in `.staging/` that no reader lists, removed if the writer is
    /// dropped.
    pub fn open_segment(
        &self,
        partition: &Partition,
        run_id: u32,
        seq: u64,
    ) -> Result<SegmentWriter> {
        let table = partition.table;
        let dir_rel = partition.relative_dir();
        let name = segment_file_name(Utc::now(), run_id, seq);
        let rel = format!("{}/{name}", dir_rel.to_string_lossy());
        let staged = self.staging_path_for(&rel);
        layout::refuse_symlink(&self.staging_dir())?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(layout::FILE_MODE)
            .open(&staged)
            .map_err(|e| StoreError::io(&staged, e))?;
        let sink = HashingWriter::new(BufWriter::with_capacity(SEGMENT_WRITE_BUFFER, file));
        let groups = GroupWriter::new(
            sink,
            &crate::schema::schema_of(table),
            writer_properties(table),
            run_columns(table),
        )
        .map_err(|source| StoreError::Parquet {
            path: staged.clone(),
            source,
        })?;
        Ok(SegmentWriter {
            store: self.clone(),
            table,
            dir_rel,
            name,
            rel,
            staged,
            groups: Some(groups),
            rows: 0,
        })
    }

    /// Finishes seals a killed writer left behind: staged files the manifest already lists (with
    /// a matching hash) are moved into place; unlisted staged files older than ten minutes were
    /// never sealed, held no acknowledged rows, and are deleted; a compaction cut short is
    /// finished (see [`crate::compact`]; compaction always creates `.staging/`, so a store
    /// without one has none to finish). Returns (completed, discarded).
    pub fn recover(&self) -> Result<(usize, usize)> {
        let staging = self.staging_dir();
        let entries = match fs::read_dir(&staging) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(StoreError::io(&staging, e)),
        };
        // Under the manifest lock, so no seal appends while this decides what is unlisted.
        let manifest = Manifest::new(self.manifest_path());
        let guard = manifest.lock()?;
        let log = manifest.read()?;
        let mut listed = std::collections::HashMap::new();
        for (_, e) in &log.entries {
            match e.body.op {
                ManifestOp::Add => listed.insert(self.staging_path_for(&e.body.path), e),
                ManifestOp::Remove => listed.remove(&self.staging_path_for(&e.body.path)),
            };
        }
        let (mut completed, mut discarded) = (0, 0);
        for item in entries {
            let item = item.map_err(|e| StoreError::io(&staging, e))?;
            let staged = item.path();
            let is_file = item.file_type().map(|t| t.is_file()).unwrap_or(false);
            let target = listed.get(&staged).map(|e| (e, self.resolve(&e.body.path)));
            match target {
                Some((entry, Ok(final_path)))
                    if is_file
                        && !final_path.exists()
                        && sha256_file(&staged).ok().as_deref() == Some(&entry.body.sha256) =>
                {
                    let dir = final_path.parent().expect("segment paths have a partition");
                    let rel_dir = dir.strip_prefix(self.root()).unwrap_or(dir);
                    layout::create_dir_durable(self.root(), rel_dir)?;
                    fs::rename(&staged, &final_path).map_err(|e| StoreError::io(&final_path, e))?;
                    layout::fsync_dir(dir)?;
                    completed += 1;
                }
                // Unlisted: either a writer died before logging it, or another process (an
                // `isolate` recording its action, say) is writing it right now. Only files
                // older than any live write are removed.
                _ if is_file && older_than(&staged, STALE_STAGED) => {
                    fs::remove_file(&staged).map_err(|e| StoreError::io(&staged, e))?;
                    discarded += 1;
                }
                _ => {}
            }
        }
        // Merged segments whose sources were not all removed when a compaction was cut short.
        let finished = self.finish_compactions(&guard, &manifest)?;
        if finished > 0 {
            log::info!("finished an interrupted compaction: removed {finished} merged sources");
        }
        Ok((completed, discarded))
    }
}

/// A writer that hashes (SHA-256) and counts what passes through it, so evidence is hashed as
/// it is written instead of being read back: segments here, export bundles in quarry-evidence.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the hex SHA-256 of everything written, and its length.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes a segment being written buffers before they go to its staging file.
const SEGMENT_WRITE_BUFFER: usize = 256 << 10;

/// A segment being written: row groups go to its staging file as they are written, so a
/// writer holds one row group's encoding at a time, never the segment's rows.
///
/// The order of steps in [`SegmentWriter::seal`] is what keeps evidence whole: fsync the
/// staging file, hash (as written), log the segment in the manifest, rename into the partition,
/// fsync the directory. A crash before the manifest line leaves only a staging file (never
/// visible to readers); a crash after it leaves a staged file that [`Store::recover`] finishes
/// moving. A writer dropped unsealed (a failed write, say) removes its staging file: its rows
/// are not kept, and the caller counts them as lost.
pub struct SegmentWriter {
    store: Store,
    table: Table,
    dir_rel: PathBuf,
    name: String,
    rel: String,
    staged: PathBuf,
    /// `None` once sealed (or after a failure took it apart).
    groups: Option<GroupWriter<'static, HashingWriter<BufWriter<File>>>>,
    rows: u64,
}

impl SegmentWriter {
    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn table(&self) -> Table {
        self.table
    }

    /// Appends `batch` (of the table's schema) as row groups of at most [`max_row_group_rows`]
    /// rows, grouped by container within each (see [`cluster_by_container`]). After an error
    /// the writer can only be dropped.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let expected = crate::schema::schema_of(self.table);
        if batch.schema() != expected {
            return Err(StoreError::Arrow(arrow::error::ArrowError::SchemaError(
                format!("batch does not match the schema of table {}", self.table),
            )));
        }
        let Some(groups) = self.groups.as_mut() else {
            return Err(broken(&self.staged));
        };
        let max_rows = max_row_group_rows(self.table);
        let result = (|| {
            for group in row_groups(std::slice::from_ref(batch), max_rows) {
                let group: Vec<RecordBatch> = group
                    .iter()
                    .map(cluster_by_container)
                    .collect::<Result<_>>()?;
                groups
                    .write_group(&group)
                    .map_err(|source| StoreError::Parquet {
                        path: self.staged.clone(),
                        source,
                    })?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.rows += batch.num_rows() as u64;
                Ok(())
            }
            Err(e) => {
                self.groups = None;
                Err(e)
            }
        }
    }

    /// Writes the footer, fsyncs, logs the segment in the manifest and moves it into its
    /// partition.
    pub fn seal(mut self) -> Result<SealedSegment> {
        let groups = self.groups.take().ok_or_else(|| broken(&self.staged))?;
        let path = self.staged.clone();
        let mut sink = groups.finish().map_err(|source| StoreError::Parquet {
            path: path.clone(),
            source,
        })?;
        sink.flush().map_err(|e| StoreError::io(&path, e))?;
        let (buffered, sha256, bytes) = sink.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| StoreError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| StoreError::io(&path, e))?;
        drop(file);
        let dir = layout::create_dir_durable(self.store.root(), &self.dir_rel)?;
        let final_path = dir.join(&self.name);
        let entry = Manifest::new(self.store.manifest_path()).append(NewEntry {
            op: ManifestOp::Add,
            table: self.table.name().to_string(),
            path: self.rel.clone(),
            rows: self.rows,
            bytes,
            sha256,
            reason: None,
            replaces: Vec::new(),
        })?;
        // From here the segment is on the record: the staging file is no longer this writer's
        // to remove, and failing now must not make the caller write the rows again (they would
        // be sealed twice). A failed rename leaves a staged file the manifest lists, which
        // `recover` (or `verify`, as pending) accounts for.
        self.staged = PathBuf::new();
        if let Err(e) = fs::rename(&path, &final_path) {
            log::error!(
                "segment {} is logged but could not be moved into place ({e}); the next \
                 recorder start completes it",
                final_path.display()
            );
        } else if let Err(e) = layout::fsync_dir(&dir) {
            log::warn!(
                "{e}: the rename of {} may not be durable yet",
                final_path.display()
            );
        }
        Ok(SealedSegment {
            path: final_path,
            entry,
        })
    }
}

/// The error of a writer used after a failed write.
fn broken(staged: &Path) -> StoreError {
    StoreError::io(
        staged,
        io::Error::other("an earlier write to this segment failed"),
    )
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if !self.staged.as_os_str().is_empty() {
            // Nothing was logged: a partial file must not linger (e.g. on a full disk).
            self.groups = None;
            let _ = fs::remove_file(&self.staged);
        }
    }
}

/// An unlisted staged file older than this was abandoned by a writer that died.
const STALE_STAGED: std::time::Duration = std::time::Duration::from_secs(600);

fn older_than(path: &Path, age: std::time::Duration) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e > age)
}

/// Writes `batches` (all of `table`'s schema) to a new file at `path` as zstd Parquet with the
/// store's settings, fsyncs it and returns (size, sha256). The file must not exist yet.
/// Compaction writes through this so every segment Quarry makes is encoded the same way.
pub fn write_parquet_batches(
    path: &Path,
    table: Table,
    batches: &[RecordBatch],
) -> Result<(u64, String)> {
    write_parquet_groups(path, table, row_groups(batches, max_row_group_rows(table)))
}

/// The most rows a row group of `table`'s segments holds.
pub(crate) fn max_row_group_rows(table: Table) -> usize {
    writer_properties(table)
        .max_row_group_row_count()
        .unwrap_or(usize::MAX)
        .max(1)
}

/// [`write_parquet_batches`] with the row groups given one by one (each at most
/// [`max_row_group_rows`] rows), each written out before the next is asked for: a merge
/// holds one row group, not the segment.
pub(crate) fn write_parquet_groups(
    path: &Path,
    table: Table,
    groups: impl IntoIterator<Item = Vec<RecordBatch>>,
) -> Result<(u64, String)> {
    let schema = crate::schema::schema_of(table);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(layout::FILE_MODE)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    let parquet_err = |source| StoreError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut sink = write_groups(
        sink,
        &schema,
        writer_properties(table),
        groups,
        run_columns(table),
    )
    .map_err(parquet_err)?;
    sink.flush().map_err(|e| StoreError::io(path, e))?;
    let (buffered, sha256, bytes) = sink.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| StoreError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| StoreError::io(path, e))?;
    Ok((bytes, sha256))
}

/// Writes `batches` to `sink` as Parquet in row groups of at most the properties' row count
/// (see [`write_groups`]).
#[cfg(test)]
fn write_row_groups<W: Write + Send>(
    sink: W,
    schema: &SchemaRef,
    props: WriterProperties,
    batches: &[RecordBatch],
    run_columns: &[&str],
) -> parquet::errors::Result<W> {
    let max_rows = props.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
    write_groups(
        sink,
        schema,
        props,
        row_groups(batches, max_rows),
        run_columns,
    )
}

/// Writes `groups` to `sink` as Parquet, each as one row group, in order (see
/// [`GroupWriter`]). Returns the sink after the footer is written.
fn write_groups<W: Write + Send>(
    sink: W,
    schema: &SchemaRef,
    props: WriterProperties,
    groups: impl IntoIterator<Item = Vec<RecordBatch>>,
    run_columns: &[&str],
) -> parquet::errors::Result<W> {
    let mut writer = GroupWriter::new(sink, schema, props, run_columns)?;
    for group in groups {
        writer.write_group(&group)?;
    }
    writer.finish()
}

/// A Parquet file written a row group at a time: the columns named in `run_columns` encoded
/// by [`crate::runs`] where it applies and every other column (and any chunk it declines) by
/// Parquet's Arrow writer. Only the row group being written is held in memory.
struct GroupWriter<'c, W: Write + Send> {
    file: parquet::file::writer::SerializedFileWriter<W>,
    factory: parquet::arrow::arrow_writer::ArrowRowGroupWriterFactory,
    leaves: Vec<parquet::schema::types::ColumnDescPtr>,
    schema: SchemaRef,
    props: WriterProperties,
    run_columns: &'c [&'c str],
    index: usize,
}

impl<'c, W: Write + Send> GroupWriter<'c, W> {
    fn new(
        sink: W,
        schema: &SchemaRef,
        props: WriterProperties,
        run_columns: &'c [&'c str],
    ) -> parquet::errors::Result<Self> {
        // The embedded Arrow schema names plain text where the table holds a dictionary in
        // memory: some engines (Spark-compatible ones) refuse Dictionary(Int32, Utf8) in a
        // file's Arrow schema. The Parquet dictionary encoding stays; readers in this crate
        // get the dictionary back through [`crate::read::segment_reader`].
        let mut file_props = props.clone();
        parquet::arrow::add_encoded_arrow_schema_to_metadata(
            &portable_schema(schema),
            &mut file_props,
        );
        let options = ArrowWriterOptions::new()
            .with_properties(file_props)
            .with_skip_arrow_metadata(true);
        let (file, factory) = ArrowWriter::try_new_with_options(sink, schema.clone(), options)?
            .into_serialized_writer()?;
        let leaves = file.schema_descr().columns().to_vec();
        Ok(GroupWriter {
            file,
            factory,
            leaves,
            schema: schema.clone(),
            props,
            run_columns,
            index: 0,
        })
    }

    /// Writes `group` (batches of the schema) as the next row group.
    fn write_group(&mut self, group: &[RecordBatch]) -> parquet::errors::Result<()> {
        let mut writers = self.factory.create_column_writers(self.index)?.into_iter();
        self.index += 1;
        let mut row_group = self.file.next_row_group()?;
        let mut leaf = 0;
        for (at, field) in self.schema.fields().iter().enumerate() {
            let pieces: Vec<&ArrayRef> = group.iter().map(|batch| batch.column(at)).collect();
            if self.run_columns.contains(&field.name().as_str())
                && let Some(chunk) =
                    crate::runs::encode_chunk(&pieces, self.leaves[leaf].clone(), &self.props)?
            {
                // A run column is a single leaf; its Arrow writer goes unused.
                writers.next();
                row_group.append_column(&chunk.bytes, chunk.close)?;
                leaf += 1;
                continue;
            }
            let mut field_writers = Vec::new();
            for piece in &pieces {
                let piece_leaves = compute_leaves(field, piece)?;
                if field_writers.is_empty() {
                    field_writers = writers.by_ref().take(piece_leaves.len()).collect();
                }
                for (writer, piece_leaf) in field_writers.iter_mut().zip(&piece_leaves) {
                    writer.write(piece_leaf)?;
                }
            }
            leaf += field_writers.len();
            for writer in field_writers {
                writer.close()?.append_to_row_group(&mut row_group)?;
            }
        }
        row_group.close()?;
        Ok(())
    }

    /// Writes the footer; returns the sink.
    fn finish(self) -> parquet::errors::Result<W> {
        self.file.into_inner()
    }
}

/// `schema` as segments describe it to other engines: every dictionary column as its value
/// type (the Parquet column is the same either way: text, dictionary-encoded).
pub fn portable_schema(schema: &SchemaRef) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => f.as_ref().clone().with_data_type((**value).clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// `batches` cut into row groups of at most `max_rows` rows (zero-copy slices, in order).
fn row_groups(batches: &[RecordBatch], max_rows: usize) -> Vec<Vec<RecordBatch>> {
    let (mut groups, mut current, mut rows) = (Vec::new(), Vec::new(), 0);
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let take = (max_rows - rows).min(batch.num_rows() - offset);
            current.push(batch.slice(offset, take));
            offset += take;
            rows += take;
            if rows == max_rows {
                groups.push(std::mem::take(&mut current));
                rows = 0;
            }
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{SyscallBuilder, SyscallRow};
    use arrow::array::{Array, StringArray};
    use std::sync::Arc;

    /// A syscall batch with these (container, ktime, ret) rows, in this order.
    fn batch(rows: &[(Option<&str>, u64, i64)]) -> RecordBatch {
        let mut b = SyscallBuilder::default();
        let comm = b.intern_comm("sh");
        for &(_, ktime_ns, ret) in rows {
            b.append(SyscallRow {
                time_micros: ktime_ns as i64,
                ktime_ns,
                pid: 1,
                tid: 1,
                comm,
                cgroup_id: 1,
                nr: 39,
                ret,
                ktime_slack_ns: None,
                source: 0,
            });
        }
        let batch = b.finish("h", |_| Some("getpid"));
        let mut columns = batch.columns().to_vec();
        let at = batch.schema().index_of("container_id").unwrap();
        columns[at] = Arc::new(StringArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        ));
        RecordBatch::try_new(batch.schema(), columns).unwrap()
    }

    fn order(batch: &RecordBatch) -> Vec<(Option<String>, u64, i64)> {
        let c = batch
            .column_by_name("container_id")
            .unwrap()
            .as_string::<i32>();
        let k = batch
            .column_by_name("ktime_ns")
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt64Type>();
        let r = batch
            .column_by_name("ret")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        (0..batch.num_rows())
            .map(|i| {
                (
                    c.is_valid(i).then(|| c.value(i).to_string()),
                    k.value(i),
                    r.value(i),
                )
            })
            .collect()
    }

    #[test]
    fn raw_stream_segments_keep_statistics_only_where_they_prune() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let b = batch(&[(Some("aaa"), 5, 0), (None, 9, 1)]);
        write_parquet_batches(&path, Table::Syscall, &[b]).unwrap();
        let reader = SerializedFileReader::new(fs::File::open(&path).unwrap()).unwrap();
        let row_group = reader.metadata().row_group(0);
        let with_statistics: Vec<String> = row_group
            .columns()
            .iter()
            .filter(|c| c.statistics().is_some())
            .map(|c| c.column_path().string())
            .collect();
        assert_eq!(
            with_statistics,
            ["time", "ktime_ns", "pid", "tid", "container_id"]
        );
    }

    /// A raw-stream batch of `rows` rows: threads in runs, comms interned in an order that
    /// depends on `first_comm` (so two batches have different Arrow dictionaries), syscalls
    /// and results changing within runs; `ret_of` gives each row's result.
    fn stream(rows: usize, first_comm: usize, ret_of: impl Fn(usize) -> i64) -> RecordBatch {
        let comms = ["sh", "curl", "python3", "nginx"];
        let mut b = SyscallBuilder::default();
        for i in 0..rows {
            let thread = (i / 37) % 5;
            let comm = b.intern_comm(comms[(first_comm + thread) % comms.len()]);
            b.append(SyscallRow {
                time_micros: i as i64,
                ktime_ns: 1000 + i as u64,
                pid: 100 + thread as i32 + (i / 9000) as i32 * 10,
                tid: 100 + thread as i32 + (i / 9000 % 2) as i32 * 10,
                comm,
                cgroup_id: 7 + (thread as u64 % 2),
                nr: [0, 1, 39][(i / 5) % 3],
                ret: ret_of(i),
                ktime_slack_ns: (i % 4 != 0).then_some(16),
                source: (thread % 2) as u32,
            });
        }
        b.finish("node-1", |nr| ["read", "write"].get(nr as usize).copied())
    }

    fn read_back(path: &Path) -> RecordBatch {
        let file = fs::File::open(path).unwrap();
        let reader = crate::read::segment_reader(file, Table::Syscall)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        arrow::compute::concat_batches(&crate::schema::schema_of(Table::Syscall), &batches).unwrap()
    }

    /// Segments name no Arrow dictionary type (engines that refuse one read them) and keep
    /// Parquet's dictionary encoding; segments sealed before, with the dictionary type in their
    /// Arrow schema, read back the same.
    #[test]
    fn segments_are_portable_and_older_dictionary_typed_segments_still_read() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path().join("s")).unwrap();
        let written = stream(5000, 1, |i| i as i64 % 3);
        let p = Partition::for_time(Table::Syscall, Utc::now(), "node-1");
        let new = store.seal(&p, &written, 1, 0).unwrap().path;

        let reader = SerializedFileReader::new(fs::File::open(&new).unwrap()).unwrap();
        let meta = reader.metadata();
        let embedded = parquet::arrow::parquet_to_arrow_schema(
            meta.file_metadata().schema_descr(),
            meta.file_metadata().key_value_metadata(),
        )
        .unwrap();
        assert_eq!(
            embedded.field_with_name("comm").unwrap().data_type(),
            &DataType::Utf8
        );
        assert!(
            !embedded
                .fields()
                .iter()
                .any(|f| matches!(f.data_type(), DataType::Dictionary(..)))
        );
        let comm = embedded.index_of("comm").unwrap();
        let chunk = meta.row_group(0).column(comm);
        assert!(
            chunk.dictionary_page_offset().is_some(),
            "comm stays dictionary-encoded"
        );

        // As sealed before: Parquet's Arrow writer, the dictionary type in the Arrow schema.
        let old = dir.path().join("old.parquet");
        let mut w = ArrowWriter::try_new(
            fs::File::create(&old).unwrap(),
            written.schema(),
            Some(writer_properties(Table::Syscall)),
        )
        .unwrap();
        w.write(&written).unwrap();
        w.close().unwrap();

        let expected = cluster_by_container(&written).unwrap();
        assert_eq!(read_back(&new), expected);
        assert_eq!(read_back(&old), expected);
    }

    #[test]
    fn raw_stream_reads_back_as_written_from_run_encoded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let schema = crate::schema::schema_of(Table::Syscall);
        // Two batches with dictionaries of their own, as compaction writes them into one file.
        let batches = [
            stream(20_000, 0, |i| (i % 3) as i64 - 1),
            stream(15_000, 2, |i| (i / 100) as i64),
        ];
        let path = dir.path().join("runs.parquet");
        write_parquet_batches(&path, Table::Syscall, &batches).unwrap();
        let expected = arrow::compute::concat_batches(&schema, &batches).unwrap();
        assert_eq!(read_back(&path), expected);
        for batch in &batches {
            for column in RAW_STREAM_RUN_COLUMNS {
                let pieces = [batch.column_by_name(column).unwrap()];
                let leaf = parquet::arrow::ArrowSchemaConverter::new()
                    .convert(&schema)
                    .unwrap()
                    .columns()[schema.index_of(column).unwrap()]
                .clone();
                let props = writer_properties(Table::Syscall);
                assert!(
                    crate::runs::encode_chunk(&pieces, leaf, &props)
                        .unwrap()
                        .is_some(),
                    "{column} is encoded from its runs"
                );
            }
        }

        // More distinct results than a dictionary page holds: that chunk falls back to
        // Parquet's writer, and the file still reads back the same.
        let distinct = writer_properties(Table::Syscall).dictionary_page_size_limit() / 8 + 1000;
        let many = stream(distinct, 1, |i| i as i64 * 4096);
        let path = dir.path().join("fallback.parquet");
        write_parquet_batches(&path, Table::Syscall, std::slice::from_ref(&many)).unwrap();
        assert_eq!(read_back(&path), many);
    }

    #[test]
    fn run_encoded_chunks_carry_the_statistics_and_page_index_parquet_writes() {
        use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
        let schema = crate::schema::schema_of(Table::Syscall);
        // Several pages (8192 rows each) whose pids and tids rise, fall and repeat.
        let batches = [stream(30_000, 0, |i| i as i64 % 7)];
        let metadata = |run_columns: &[&str]| {
            let file = write_row_groups(
                Vec::new(),
                &schema,
                writer_properties(Table::Syscall),
                &batches,
                run_columns,
            )
            .unwrap();
            ParquetMetaDataReader::new()
                .with_page_index_policy(PageIndexPolicy::Required)
                .parse_and_finish(&bytes::Bytes::from(file))
                .unwrap()
        };
        let ours = metadata(&RAW_STREAM_RUN_COLUMNS);
        let parquets = metadata(&[]);
        for column in RAW_STREAM_RUN_COLUMNS {
            let at = schema.index_of(column).unwrap();
            let (a, b) = (
                ours.row_group(0).column(at),
                parquets.row_group(0).column(at),
            );
            assert_eq!(a.statistics(), b.statistics(), "{column}");
            assert_eq!(a.num_values(), b.num_values(), "{column}");
            let page_index = |m: &parquet::file::metadata::ParquetMetaData| {
                let offsets = &m.offset_index().unwrap()[0][at];
                let rows: Vec<i64> = offsets
                    .page_locations()
                    .iter()
                    .map(|p| p.first_row_index)
                    .collect();
                (m.column_index().unwrap()[0][at].clone(), rows)
            };
            assert_eq!(page_index(&ours), page_index(&parquets), "{column}");
        }
    }

    #[test]
    fn row_groups_are_cut_at_the_row_limit_across_batches() {
        let batches = [
            stream(5, 0, |_| 0),
            stream(9, 0, |_| 0),
            stream(2, 0, |_| 0),
        ];
        let sizes: Vec<Vec<usize>> = row_groups(&batches, 6)
            .iter()
            .map(|group| group.iter().map(|b| b.num_rows()).collect())
            .collect();
        assert_eq!(sizes, [vec![5, 1], vec![6], vec![2, 2]]);
        assert!(row_groups(&[], 6).is_empty());
    }

    #[test]
    fn a_streamed_segment_is_its_row_groups_and_appears_only_when_sealed() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let partition = Partition::for_time(Table::Syscall, Utc::now(), "h");
        let staged = || fs::read_dir(store.staging_dir()).map_or(0, |d| d.count());
        let mut writer = store.open_segment(&partition, 7, 1).unwrap();
        writer
            .write(&batch(&[(Some("b"), 1, 0), (None, 2, 1)]))
            .unwrap();
        writer.write(&batch(&[(Some("a"), 3, 2)])).unwrap();
        assert_eq!(writer.rows(), 3);
        assert_eq!(staged(), 1, "written so far: a staging file only");
        assert!(
            Manifest::new(store.manifest_path())
                .read()
                .unwrap()
                .entries
                .is_empty()
        );
        let sealed = writer.seal().unwrap();
        assert_eq!(sealed.entry.body.rows, 3);
        assert_eq!(staged(), 0);
        let reader = SerializedFileReader::new(File::open(&sealed.path).unwrap()).unwrap();
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, [2, 1], "one row group per write");

        // A writer given up unsealed leaves nothing behind, listed or not.
        let mut writer = store.open_segment(&partition, 7, 2).unwrap();
        writer.write(&batch(&[(None, 4, 0)])).unwrap();
        drop(writer);
        assert_eq!(staged(), 0);
        assert_eq!(
            Manifest::new(store.manifest_path())
                .read()
                .unwrap()
                .entries
                .len(),
            1
        );
    }

    #[test]
    fn grouped_order_is_stable_and_none_for_one_key() {
        assert_eq!(grouped_order(&[2, 0, 2, 1, 0]), Some(vec![1, 4, 3, 0, 2]));
        assert_eq!(grouped_order(&[7, 7, 7]), None);
        assert_eq!(grouped_order::<u32>(&[]), None);
    }

    #[test]
    fn rows_are_grouped_by_container_host_first_in_arrival_order() {
        let b = batch(&[
            (Some("bbb"), 5, 0),
            (None, 9, 1),
            (Some("aaa"), 7, 2),
            (Some("bbb"), 3, 3),
            (None, 2, 4),
            (Some("aaa"), 7, 5), // same time as ret 2: arrival order kept
            (Some("aaa"), 1, 6),
        ]);
        let grouped = cluster_by_container(&b).unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            order(&grouped),
            vec![
                (None, 9, 1),
                (None, 2, 4),
                (s("aaa"), 7, 2),
                (s("aaa"), 7, 5),
                (s("aaa"), 1, 6),
                (s("bbb"), 5, 0),
                (s("bbb"), 3, 3),
            ]
        );
        // Grouping what is grouped changes nothing.
        assert_eq!(
            order(&cluster_by_container(&grouped).unwrap()),
            order(&grouped)
        );
        assert_eq!(grouped.schema(), b.schema());
        // One container (or only the host): nothing to move.
        let single = batch(&[(Some("aaa"), 5, 0), (Some("aaa"), 1, 1)]);
        assert_eq!(
            order(&cluster_by_container(&single).unwrap()),
            order(&single)
        );
    }
}
