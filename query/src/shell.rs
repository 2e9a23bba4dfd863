//! The SQL shell (`quarry sql` without a query): read a statement over as many lines as it
//! takes (up to the `;`), run it, write its result as a table, and take the backslash commands
//! `\d` (the tables and views), `\d NAME` (its columns) and `\q`. History is kept in
//! `~/.quarry_history`.
//!
//! A failing statement is reported and the shell goes on; only the line editor failing ends
//! it. It runs statements through the same [`Catalog`] (and so the same guard) as every other
//! query, and must not do anything a one-shot `quarry sql` could not.

use std::path::PathBuf;

use rustyline::error::ReadlineError;

use crate::output::{self, Format};
use crate::{Catalog, QueryError, Result};

/// Runs the shell over `catalog` until `\q`, end of input or a failing line editor. Results
/// are written in `format` (a table where the format is a file's, Parquet).
pub async fn run(catalog: &mut Catalog, format: Format) -> Result<()> {
    let editor_error = |what| move |source| QueryError::LineEditor { what, source };
    let mut editor =
        rustyline::DefaultEditor::new().map_err(editor_error("starting the line editor"))?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".quarry_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let format = match format {
        Format::Parquet => Format::Table,
        f => f,
    };
    println!(
        "quarry sql on {} (read-only). End a query with ';'. \\d lists tables and views, \
         \\d NAME its columns, \\q quits.",
        output::printable(&catalog.location())
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "quarry> "
        } else {
            "   ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && trimmed.starts_with('\\') {
                    let _ = editor.add_history_entry(trimmed);
                    if !meta_command(catalog, trimmed).await? {
                        break;
                    }
                    continue;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if !trimmed.ends_with(';') {
                    continue;
                }
                let query = std::mem::take(&mut buffer);
                let _ = editor.add_history_entry(query.trim());
                statement(catalog, query.trim().trim_end_matches(';'), format).await;
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(editor_error("reading a line")(e)),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// Runs one statement and writes its result and the time it took; an error is reported.
async fn statement(catalog: &mut Catalog, sql: &str, format: Format) {
    let reported = catalog.skipped().len();
    let started = std::time::Instant::now();
    match catalog.sql_stream(sql).await {
        Ok(stream) => {
            for s in catalog.skipped_since(reported) {
                eprintln!("warning: {s}");
            }
            match output::write_stream(stream, format, &mut std::io::stdout()).await {
                Ok(()) => println!("{:.3}s", started.elapsed().as_secs_f64()),
                Err(e) => eprintln!("error: {}", quarry_store::human::with_causes(&e)),
            }
        }
        Err(e) => eprintln!("error: {}", quarry_store::human::with_causes(&e)),
    }
}

/// Runs a backslash command; false means quit.
async fn meta_command(catalog: &mut Catalog, command: &str) -> Result<bool> {
    let mut words = command.split_whitespace();
    let described = match (words.next(), words.next()) {
        (Some("\\q"), _) => return Ok(false),
        (Some("\\d"), name) => catalog.describe(name).await,
        _ => {
            eprintln!("unknown command {command}: \\d, \\d NAME, \\q");
            return Ok(true);
        }
    };
    match described {
        Ok(batches) => output::write(&batches, Format::Table, &mut std::io::stdout())?,
        Err(e) => eprintln!("error: {}", quarry_store::human::with_causes(&e)),
    }
    Ok(true)
}
