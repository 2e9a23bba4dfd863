//! Plain-text tables for people; `--format json` is the machine form of every command.
//!
//! Everything printed for people passes through [`shown`]: names, images, paths and ids come
//! from containers, stores and bundles, and are attacker-chosen.

use std::io::Write;

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

/// A table printed as its rows come: the first `chunk` rows are held to size the columns,
/// later rows are printed at once in those columns (a wider cell widens only its row).
pub struct Columns {
    header: Vec<String>,
    widths: Vec<usize>,
    held: Vec<Vec<String>>,
    chunk: usize,
    started: bool,
}

impl Columns {
    pub fn new(header: &[&str], chunk: usize) -> Columns {
        Columns {
            header: header.iter().map(|h| h.to_string()).collect(),
            widths: header.iter().map(|h| h.chars().count()).collect(),
            held: Vec::new(),
            chunk: chunk.max(1),
            started: false,
        }
    }

    /// Adds a row; its cells are escaped with [`shown`].
    pub fn push(&mut self, row: Vec<String>, out: &mut dyn Write) -> std::io::Result<()> {
        let row: Vec<String> = row.iter().map(|c| shown(c)).collect();
        if self.started {
            return self.line(&row, out);
        }
        for (w, cell) in self.widths.iter_mut().zip(&row) {
            *w = (*w).max(cell.chars().count());
        }
        self.held.push(row);
        if self.held.len() >= self.chunk {
            self.start(out)?;
        }
        Ok(())
    }

    /// Prints the header and what is held (the header alone for a table without rows).
    pub fn finish(mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if !self.started {
            self.start(out)?;
        }
        out.flush()
    }

    fn start(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        self.started = true;
        let header = std::mem::take(&mut self.header);
        self.line(&header, out)?;
        for row in std::mem::take(&mut self.held) {
            self.line(&row, out)?;
        }
        Ok(())
    }

    fn line(&self, row: &[String], out: &mut dyn Write) -> std::io::Result<()> {
        let text: Vec<String> = row
            .iter()
            .zip(&self.widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", text.join("  ").trim_end())
    }
}
