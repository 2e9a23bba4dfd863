//! Plain-text tables for people; `--format json` is the machine form of every command.
//!
//! Everything printed for people passes through [`shown`]: names, images, paths and ids come
//! from containers, stores and bundles, and are attacker-chosen.

use std::io::Write;

use quarry_store::text::{TableStyle, TextTable};

/// Untrusted text made safe for the terminal (see [`quarry_store::text`]).
pub fn shown(text: &str) -> String {
    quarry_store::text::printable(text)
}

/// Prints rows under a header, columns padded to their widest cell; every cell is escaped
/// with [`shown`].
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut out = std::io::stdout().lock();
    let mut table = Columns::new(header, usize::MAX);
    for row in rows {
        // A closed stdout (a pipe into `head`) ends the listing; nothing else is lost.
        if table.push(row.clone(), &mut out).is_err() {
            return;
        }
    }
    let _ = table.finish(&mut out);
}

/// A listing printed as its rows come (see [`TextTable`]), every cell escaped with [`shown`].
pub struct Columns(TextTable);

impl Columns {
    pub fn new(header: &[&str], chunk: usize) -> Columns {
        let header = header.iter().map(|h| h.to_string()).collect();
        Columns(TextTable::styled(TableStyle::Plain, header, chunk))
    }

    /// Adds a row; its cells are escaped with [`shown`].
    pub fn push(&mut self, row: Vec<String>, out: &mut dyn Write) -> std::io::Result<()> {
        self.0.push(row.iter().map(|c| shown(c)).collect(), out)
    }

    /// Prints the header and what is held (the header alone for a listing without rows).
    pub fn finish(self, out: &mut dyn Write) -> std::io::Result<()> {
        self.0.finish(out)
    }
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
