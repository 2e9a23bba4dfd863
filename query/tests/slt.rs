//! The `.slt` files in `tests/sql/`, run by the sqllogictest crate (the format DataFusion's own
//! query tests use) against a [`Catalog`] over the fixture store (tests/common/mod.rs): the
//! named views, the partition columns and the read-only guard.
//!
//! Column types are checked (`query ITR`: integer, text, floating point), `rowsort` sorts
//! rows where a query has no order, `statement error <regex>` matches the error's message.
//! Cells render NULL as `NULL` and the empty string as `(empty)`.
//!
//! To write the actual results into the files after an intended change (then review the diff):
//! `QUARRY_SLT_COMPLETE=1 cargo nextest run -E 'binary(slt)'`.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use quarry_query::{Catalog, QueryError};
use sqllogictest::{DBOutput, DefaultColumnType};

/// One sqllogictest connection: a catalog over the fixture store.
struct StoreDb {
    catalog: Catalog,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for StoreDb {
    type Error = QueryError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, QueryError> {
        let batches = self.catalog.sql(sql).await?;
        let Some(first) = batches.first() else {
            return Ok(DBOutput::StatementComplete(0));
        };
        let types = first
            .schema()
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        Ok(DBOutput::Rows {
            types,
            rows: rows(&batches),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "quarry"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    match data_type {
        DataType::Dictionary(_, value) => column_type(value),
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating()
            || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
        {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable column"))
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, column)| match f.value(row).to_string() {
                        // An empty cell would vanish in the whitespace-separated row.
                        s if s.is_empty() && !column.is_null(row) => "(empty)".to_string(),
                        s => s,
                    })
                    .collect(),
            );
        }
    }
    rows
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

#[test]
fn slt_files_pass() {
    let dir = tempfile::tempdir().unwrap();
    common::build(dir.path());
    let store = dir.path().to_path_buf();
    let complete = std::env::var_os("QUARRY_SLT_COMPLETE").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failures = Vec::new();
    for file in slt_files() {
        let store = store.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let store = store.clone();
            async move {
                let catalog = Catalog::open(&store).await?;
                assert!(catalog.skipped().is_empty(), "{:?}", catalog.skipped());
                Ok(StoreDb { catalog })
            }
        });
        runner.with_column_validator(sqllogictest::strict_column_validator);
        let outcome = rt.block_on(async {
            if complete {
                runner
                    .update_test_file(
                        &file,
                        " ",
                        sqllogictest::default_validator,
                        sqllogictest::default_normalizer,
                        sqllogictest::strict_column_validator,
                    )
                    .await
                    .map_err(|e| e.to_string())
            } else {
                runner
                    .run_file_async(&file)
                    .await
                    .map_err(|e| e.display(false).to_string())
            }
        });
        if let Err(e) = outcome {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
