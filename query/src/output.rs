//! Result formats: a table for people (every value escaped for the terminal), CSV and JSON for
//! tools and Parquet for other engines (raw values: they are data, not display).

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
                    arrow::util::pretty::pretty_format_batches(&printable_batches(batches)?)?
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

pub use quarry_store::text::printable;

/// `batches` with every value rendered as text and escaped with [`printable`], for the table
/// a person reads: recorded argv, paths and names are attacker-chosen, also inside lists.
/// Nulls stay null (the table shows them empty).
fn printable_batches(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    use arrow::array::{Array, ArrayRef, StringArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| Field::new(printable(f.name()), arrow::datatypes::DataType::Utf8, true))
            .collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(b.num_columns());
        for column in b.columns() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let cells: StringArray = (0..column.len())
                .map(|i| (!column.is_null(i)).then(|| printable(&formatter.value(i).to_string())))
                .collect();
            columns.push(std::sync::Arc::new(cells));
        }
        out.push(RecordBatch::try_new(
            std::sync::Arc::new(Schema::new(fields)),
            columns,
        )?);
    }
    Ok(out)
}

fn io(e: std::io::Error) -> crate::QueryError {
    crate::QueryError::io("output", e)
}
