//! Printing results: a result's own text (its crate's `render_text`) or its JSON (`--format
//! json` is the machine form of every command), listings as plain-text tables, and progress
//! bars. The words are the crates'; this module only picks the form and the stream.
//!
//! Everything printed for people passes through [`shown`]: names, images, paths and ids come
//! from containers, stores and bundles, and are attacker-chosen.

use std::io::Write;

use quarry_store::text::{TableStyle, TextTable};
use serde::Serialize;

use crate::cli::Format;

/// Untrusted text made safe for the terminal (see [`quarry_store::text`]).
pub fn shown(text: &str) -> String {
    quarry_store::text::printable(text)
}

/// Prints a command's result on stdout: pretty JSON with `--format json`, else the text
/// `text` writes (the library's `render_text`). A closed stdout (a pipe into `head`) ends the
/// output quietly; nothing else is lost.
pub fn emit<T: Serialize + ?Sized>(
    format: Format,
    value: &T,
    text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map_err(std::io::Error::other)
            .and_then(|json| writeln!(out, "{json}")),
        Format::Table => text(&mut out),
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Prints items as a table under `columns`, a row each (see [`print_table`]).
pub fn print_rows<T>(
    columns: &[&str],
    items: impl IntoIterator<Item = T>,
    row: impl Fn(T) -> Vec<String>,
) {
    let rows: Vec<Vec<String>> = items.into_iter().map(row).collect();
    print_table(columns, &rows);
}

/// Prints rows under a header, columns padded to their widest cell; every cell is escaped
/// with [`shown`].
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut out = std::io::stdout().lock();
    let header = header.iter().map(|h| h.to_string()).collect();
    let mut table = TextTable::styled(TableStyle::Plain, header, usize::MAX);
    for row in rows {
        // A closed stdout (a pipe into `head`) ends the listing; nothing else is lost.
        if table
            .push(row.iter().map(|c| shown(c)).collect(), &mut out)
            .is_err()
        {
            return;
        }
    }
    let _ = table.finish(&mut out);
}

/// A byte progress bar on stderr (`VERB [====>   ] 1.2 MiB/4 MiB 3 MiB/s eta 1s`), hidden when
/// asked or when stderr is not a terminal.
pub fn byte_progress(verb: &str, hidden: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if hidden || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{verb} [{{bar:40}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}
