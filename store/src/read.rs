//! Reading segment files back. Evidence is read through [`crate::verified`], which takes the
//! segments from the manifest and checks their hashes; [`Store::segments`] and
//! [`read_segment`] see files, whatever put them there, and are for tests and tools that look
//! at the directory itself.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::layout::{SEGMENT_EXTENSION, Store, Table};
use crate::{Result, StoreError};

impl Store {
    /// Segment-like files of `table` on disk, sorted by path (and so by partition, then seal
    /// time), listed or not: not evidence (see [`crate::verified`]). Symlinks are skipped.
    pub fn segments(&self, table: Table) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        collect(&self.table_dir(table), &mut out)?;
        out.sort();
        Ok(out)
    }

    /// Every row of `table` from the segments the manifest vouches for (hash-checked), one
    /// batch per segment row group. Files left out are logged as warnings; callers that report
    /// them themselves use [`Store::read_table_verified`].
    pub fn read_table(&self, table: Table) -> Result<Vec<RecordBatch>> {
        let (batches, skipped) = self.read_table_verified(table)?;
        for s in skipped {
            log::warn!("{s}");
        }
        Ok(batches)
    }
}

/// All rows of one segment file.
pub fn read_segment(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let parquet_err = |source| StoreError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_err)?
        .build()
        .map_err(parquet_err)?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b?);
    }
    Ok(batches)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    for item in entries {
        let item = item.map_err(|e| StoreError::io(dir, e))?;
        let ft = item
            .file_type()
            .map_err(|e| StoreError::io(item.path(), e))?;
        let path = item.path();
        if ft.is_dir() {
            collect(&path, out)?;
        } else if ft.is_file() && path.extension().is_some_and(|e| e == SEGMENT_EXTENSION) {
            out.push(path);
        }
    }
    Ok(())
}

/// The distinct `container_id` values of one segment, reading only that column. Empty for a
/// table without the column (`gap`).
pub fn segment_container_ids(path: &Path) -> Result<std::collections::BTreeSet<String>> {
    use arrow::array::{Array, AsArray};
    use parquet::arrow::ProjectionMask;
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let parquet_err = |source| StoreError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
    let mut ids = std::collections::BTreeSet::new();
    let Some(index) = builder
        .schema()
        .fields()
        .iter()
        .position(|f| f.name() == "container_id")
    else {
        return Ok(ids);
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder.with_projection(mask).build().map_err(parquet_err)?;
    for batch in reader {
        let batch = batch?;
        let col = batch.column(0).as_string::<i32>();
        for i in 0..col.len() {
            if !col.is_null(i) && !ids.contains(col.value(i)) {
                ids.insert(col.value(i).to_string());
            }
        }
    }
    Ok(ids)
}
