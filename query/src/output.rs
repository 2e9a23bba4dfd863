//! Result formats: a table for people (every value escaped for the terminal), CSV and JSON for
//! tools and Parquet for other engines (raw values: they are data, not display).
//!
//! Every format is written as batches arrive ([`Writer`]): a result of any size goes out
//! with the memory of a few batches. A table's column widths come from its first
//! [`TABLE_CHUNK_ROWS`] rows; a later, wider cell widens only its own row (nothing is cut).

use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::{QueryError, Result};

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

/// Creates the file a result is written to: a new file (never an existing one: evidence and
/// earlier results are not overwritten), and never inside the store at `store` (a Parquet
/// file there would be read as evidence).
pub fn create_result_file(path: &Path, store: &Path) -> Result<std::fs::File> {
    let parent = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let (Ok(dir), Ok(store)) = (parent.canonicalize(), store.canonicalize())
        && dir.starts_with(&store)
    {
        return Err(QueryError::ResultInStore {
            path: path.to_path_buf(),
            store,
        });
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| QueryError::ResultFile {
            path: path.to_path_buf(),
            source,
        })
}

/// Where a result goes: standard output (buffered: a timeline is hundreds of thousands of
/// lines), or a new file made by [`create_result_file`]. A file is removed again unless
/// [`Destination::finish`] is reached: a partial result must not pass for a whole one.
pub struct Destination {
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    file: Option<PathBuf>,
    finished: bool,
}

impl Destination {
    /// Standard output when `path` is None, else the new file `path` outside `store`.
    pub fn open(path: Option<&Path>, store: &Path) -> Result<Destination> {
        let (out, file): (Box<dyn Write + Send>, _) = match path {
            None => (Box::new(std::io::stdout()), None),
            Some(p) => (
                Box::new(create_result_file(p, store)?),
                Some(p.to_path_buf()),
            ),
        };
        Ok(Destination {
            out: std::io::BufWriter::with_capacity(1 << 16, out),
            file,
            finished: false,
        })
    }

    /// What the result is written to.
    pub fn writer(&mut self) -> &mut (dyn Write + Send) {
        &mut self.out
    }

    /// The result is whole: flushes it and keeps the file.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        if let (false, Some(path)) = (self.finished, &self.file) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Rows a table holds back to size its columns before printing.
pub const TABLE_CHUNK_ROWS: usize = 1000;

/// Rows per row group of a Parquet result: what the writer holds before writing it out.
const PARQUET_ROW_GROUP_ROWS: usize = 64 * 1024;

type Out<'a> = &'a mut (dyn Write + Send);

/// Writes a result batch by batch in one [`Format`].
pub struct Writer<'a> {
    inner: Inner<'a>,
    schema: SchemaRef,
    rows: u64,
}

enum Inner<'a> {
    Table(Out<'a>, TextTable),
    Csv(arrow::csv::Writer<Out<'a>>),
    Json(arrow::json::ArrayWriter<Out<'a>>),
    Parquet(ArrowWriter<Out<'a>>),
}

impl<'a> Writer<'a> {
    /// A writer of results with columns `schema` to `out`.
    pub fn new(format: Format, schema: SchemaRef, out: Out<'a>) -> Result<Writer<'a>> {
        let inner = match format {
            Format::Table => {
                let header = schema
                    .fields()
                    .iter()
                    .map(|f| printable(f.name()))
                    .collect();
                Inner::Table(out, TextTable::new(header, TABLE_CHUNK_ROWS))
            }
            Format::Csv => Inner::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out),
            ),
            Format::Json => Inner::Json(arrow::json::ArrayWriter::new(out)),
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
                    .build();
                Inner::Parquet(ArrowWriter::try_new(out, schema.clone(), Some(props))?)
            }
        };
        Ok(Writer {
            inner,
            schema,
            rows: 0,
        })
    }

    /// Writes one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        match &mut self.inner {
            Inner::Table(out, table) => {
                let options = FormatOptions::default();
                let formatters = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                for row in 0..batch.num_rows() {
                    let cells = formatters
                        .iter()
                        .map(|f| printable(&f.value(row).to_string()))
                        .collect();
                    table.push(cells, &mut **out).map_err(io)?;
                }
            }
            Inner::Csv(w) => w.write(batch)?,
            Inner::Json(w) => w.write(batch)?,
            Inner::Parquet(w) => {
                w.write(batch)?;
                // Hand full pages to the file instead of holding a row group's worth.
                if w.in_progress_size() > 64 << 20 {
                    w.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Ends the result (table footer and row count, JSON's closing bracket, Parquet's footer).
    /// Returns the number of rows written.
    pub fn finish(self) -> Result<u64> {
        let rows = self.rows;
        match self.inner {
            Inner::Table(out, table) => {
                table.finish(&mut *out).map_err(io)?;
                writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" }).map_err(io)?;
            }
            Inner::Csv(mut w) => {
                if rows == 0 {
                    // The header alone: the columns of an empty answer.
                    w.write(&RecordBatch::new_empty(self.schema))?;
                }
            }
            Inner::Json(mut w) => {
                w.finish()?;
                let out = w.into_inner();
                writeln!(out).map_err(io)?;
            }
            Inner::Parquet(w) => {
                w.close()?;
            }
        }
        Ok(rows)
    }
}

/// Writes `batches` to `out` in `format` (a result already in memory; see [`Writer`] for one
/// that is not).
pub fn write(batches: &[RecordBatch], format: Format, out: Out<'_>) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let mut writer = Writer::new(format, first.schema(), out)?;
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    Ok(())
}

/// Writes a result as its batches arrive. An error of the engine's planning that the SQL
/// caused is [`QueryError::explained`] (it says what to do next).
pub async fn write_stream(
    mut stream: crate::ResultStream,
    format: Format,
    out: Out<'_>,
) -> Result<()> {
    let mut writer = Writer::new(format, stream.schema(), out)?;
    while let Some(batch) = stream.next().await {
        writer.write(&batch.map_err(QueryError::explained)?)?;
    }
    writer.finish()?;
    Ok(())
}

/// Text tables for people (in the store crate: commands without the query engine print them
/// too).
pub use quarry_store::text::{TableStyle, TextTable};

/// The one escaping of untrusted text for terminals (controls, ANSI, zero-width, bidi).
pub use quarry_store::text::printable;

fn io(e: std::io::Error) -> crate::QueryError {
    crate::QueryError::io("output", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(from: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let ns: Vec<i64> = (from..from + n).collect();
        let ss: Vec<Option<String>> = ns
            .iter()
            .map(|i| (i % 3 != 0).then(|| format!("v\x1b{i}")))
            .collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ns)),
                Arc::new(StringArray::from(ss)),
            ],
        )
        .unwrap()
    }

    fn written(format: Format, batches: &[RecordBatch]) -> String {
        let mut out: Vec<u8> = Vec::new();
        let mut w = Writer::new(format, batches[0].schema(), &mut out).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tables_are_sized_by_their_first_rows_and_escape_control_characters() {
        let text = written(Format::Table, &[batch(1, 2), batch(3, 1)]);
        assert_eq!(
            text,
            "+---+----------+\n| n | s        |\n+---+----------+\n| 1 | v\\u{1b}1 |\n\
             | 2 | v\\u{1b}2 |\n| 3 |          |\n+---+----------+\n(3 rows)\n"
        );
        // Past the first chunk, rows go out as they come, in the columns the chunk sized; a
        // wider cell (1000 and up) widens its own row and is never cut.
        let many: Vec<RecordBatch> = (0..3).map(|i| batch(i * 700, 700)).collect();
        let text = written(Format::Table, &many);
        assert_eq!(text.lines().count(), 2100 + 5);
        assert!(text.ends_with("(2100 rows)\n"));
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
        assert!(lines.iter().all(|l| l.matches('|').count() == 3));
        let sized = lines[0].chars().count();
        assert!(
            lines[..=TABLE_CHUNK_ROWS]
                .iter()
                .all(|l| l.chars().count() == sized)
        );
        assert!(lines.last().unwrap().starts_with("| 2099 | v\\u{1b}2099 |"));
    }

    #[test]
    fn empty_results_keep_their_columns() {
        let empty = batch(0, 0);
        assert_eq!(
            written(Format::Table, std::slice::from_ref(&empty)),
            "(0 rows)\n"
        );
        assert_eq!(written(Format::Csv, std::slice::from_ref(&empty)), "n,s\n");
        assert_eq!(written(Format::Json, &[empty]), "[]\n");
    }

    #[test]
    fn csv_and_json_stream_every_batch() {
        let csv = written(Format::Csv, &[batch(1, 2), batch(3, 2)]);
        assert_eq!(csv.lines().count(), 5);
        assert!(csv.starts_with("n,s\n"));
        let json = written(Format::Json, &[batch(1, 2), batch(3, 2)]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[3]["n"], 4);
    }
}
