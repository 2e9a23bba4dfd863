//! Result formats: a table for people, CSV and JSON for tools, Parquet for other engines.

use std::io::Write;

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::Result;

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

/// Writes `batches` to `out` in `format`. Parquet needs a seekable file only in the sense that
/// it is written whole; any writer works.
pub fn write(batches: &[RecordBatch], format: Format, out: &mut (dyn Write + Send)) -> Result<()> {
    match format {
        Format::Table => {
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if rows > 0 {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )
                .map_err(io)?;
            }
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" }).map_err(io)?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            for b in batches {
                writer.write(b)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut *out);
            for b in batches {
                writer.write(b)?;
            }
            writer.finish()?;
            drop(writer);
            writeln!(out).map_err(io)?;
        }
        Format::Parquet => {
            let Some(first) = batches.first() else {
                return Ok(());
            };
            let mut writer = ArrowWriter::try_new(out, first.schema(), None)?;
            for b in batches {
                writer.write(b)?;
            }
            writer.close()?;
        }
    }
    Ok(())
}

/// `text` safe to print on a terminal: recorded argv, paths and names are attacker-chosen, so
/// control characters (escape sequences that could rewrite the screen or the clipboard) are
/// shown as `\x..` instead of being sent.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn io(e: std::io::Error) -> crate::QueryError {
    crate::QueryError::io("output", e)
}
