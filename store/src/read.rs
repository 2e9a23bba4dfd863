//! Reading segment files back. Evidence is read through [`crate::verified`], which takes the
//! segments from the manifest and checks their hashes; [`Store::segments`] and
//! [`read_segment`] see files, whatever put them there, and are for tests and tools that look
//! at the directory itself.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::reader::ChunkReader;

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

/// Opens a segment of `table` for reading with the table's in-memory types: a text column the
/// table holds as a dictionary (the raw stream's `comm` and `name`) reads as one, whether the
/// segment's embedded Arrow schema says dictionary (segments sealed before they were written
/// for every engine, see [`crate::segment::portable_schema`]) or plain text. Columns the file
/// has are read as they are otherwise, so older schemas still read (and are upgraded by
/// [`crate::schema::upgrade_batch`] where a caller needs today's).
pub fn segment_reader<T: ChunkReader + 'static>(
    input: T,
    table: Table,
) -> parquet::errors::Result<ParquetRecordBatchReaderBuilder<T>> {
    let metadata = ArrowReaderMetadata::load(&input, ArrowReaderOptions::new())?;
    let want = crate::schema::schema_of(table);
    let found = metadata.schema().clone();
    let mut hinted = false;
    let fields: Vec<Field> = found
        .fields()
        .iter()
        .map(
            |f| match want.field_with_name(f.name()).map(|w| w.data_type()) {
                Ok(dict @ DataType::Dictionary(_, value)) if **value == *f.data_type() => {
                    hinted = true;
                    f.as_ref().clone().with_data_type(dict.clone())
                }
                _ => f.as_ref().clone(),
            },
        )
        .collect();
    if !hinted {
        return Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(
            input, metadata,
        ));
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, found.metadata().clone()));
    let metadata = ArrowReaderMetadata::try_new(
        metadata.metadata().clone(),
        ArrowReaderOptions::new().with_schema(schema),
    )?;
    Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(
        input, metadata,
    ))
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
