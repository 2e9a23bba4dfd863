//! Showing untrusted text on a terminal: the one escaping function every human-readable output
//! goes through.
//!
//! Recorded argv, paths, comm, container names and images, file names in a store or a bundle,
//! and the fields of a bundle's manifest are chosen by whoever controls the container or the
//! file. Sent to a terminal as they are, control characters and ANSI escape sequences can
//! rewrite the screen, retitle the window or fake a line of output, and zero-width and
//! bidirectional-override characters make a string read differently from what it is
//! (`/tmp/` U+202E `gpj.sh` shows as `/tmp/hs.jpg`). [`printable`] shows each of them as a visible
//! escape instead. Machine formats (JSON, CSV, Parquet written to a file) keep the raw value:
//! they are data, not display.
//!
//! What it must not do: change printable text (including non-ASCII letters), or be applied
//! twice with a different result (escapes are plain ASCII, so a second pass leaves them).
//! [`TextTable`] lays out cells already made printable.

use std::io::Write;

/// `text` safe to print on a terminal: control characters (C0, DEL, C1, so every escape
/// sequence), and zero-width, bidirectional-control and line-separator characters are shown as
/// `\n`, `\t`, `\u{1b}`, `\u{202e}` and the like; everything else is kept.
pub fn printable(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that change what a terminal shows, or hide or reorder text.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}'                // Arabic letter mark (bidi)
            | '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
            | '\u{2028}'..='\u{202E}' // line/paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, bidi isolates
            | '\u{FEFF}'              // zero-width no-break space (BOM)
        )
}

/// How a [`TextTable`] draws its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStyle {
    /// `+---+` rules and `| cell |` rows (query results); nothing at all without rows.
    Boxed,
    /// Columns two spaces apart, no rules (listings such as `ps`); the header alone without rows.
    Plain,
}

/// A text table printed as its rows come: the first `chunk` rows are held to size the
/// columns (a result that fits is printed exactly sized), later rows are printed at once in
/// those columns (a wider cell widens only its own row).
pub struct TextTable {
    style: TableStyle,
    header: Vec<String>,
    widths: Vec<usize>,
    held: Vec<Vec<String>>,
    chunk: usize,
    started: bool,
}

impl TextTable {
    /// A table with these column names.
    pub fn new(header: Vec<String>, chunk: usize) -> TextTable {
        TextTable::styled(TableStyle::Boxed, header, chunk)
    }

    /// A table with these column names, drawn in `style`.
    pub fn styled(style: TableStyle, header: Vec<String>, chunk: usize) -> TextTable {
        TextTable {
            style,
            widths: header.iter().map(|h| h.chars().count()).collect(),
            header,
            held: Vec::new(),
            chunk: chunk.max(1),
            started: false,
        }
    }

    /// Adds a row (cells already made printable).
    pub fn push(&mut self, row: Vec<String>, out: &mut dyn Write) -> std::io::Result<()> {
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

    /// Prints what is held and, boxed, the closing rule.
    pub fn finish(mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.style == TableStyle::Boxed && !self.started && self.held.is_empty() {
            return Ok(());
        }
        if !self.started {
            self.start(out)?;
        }
        if self.style == TableStyle::Boxed {
            self.rule(out)?;
        }
        out.flush()
    }

    fn start(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        self.started = true;
        let boxed = self.style == TableStyle::Boxed;
        if boxed {
            self.rule(out)?;
        }
        let header = std::mem::take(&mut self.header);
        self.line(&header, out)?;
        if boxed {
            self.rule(out)?;
        }
        for row in std::mem::take(&mut self.held) {
            self.line(&row, out)?;
        }
        Ok(())
    }

    fn rule(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut text = String::from("+");
        for w in &self.widths {
            text.push_str(&"-".repeat(w + 2));
            text.push('+');
        }
        writeln!(out, "{text}")
    }

    fn line(&self, row: &[String], out: &mut dyn Write) -> std::io::Result<()> {
        match self.style {
            TableStyle::Boxed => {
                let mut text = String::from("|");
                for (cell, w) in row.iter().zip(&self.widths) {
                    text.push_str(&format!(" {cell:<w$} |"));
                }
                writeln!(out, "{text}")
            }
            TableStyle::Plain => {
                let text: Vec<String> = row
                    .iter()
                    .zip(&self.widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                writeln!(out, "{}", text.join("  ").trim_end())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_kept() {
        for s in [
            "",
            "/usr/bin/wget http://198.18.0.1/p",
            "café ünïcode 日本",
            "a\\b 'q' \"d\"",
        ] {
            assert_eq!(printable(s), s);
        }
    }

    #[test]
    fn control_characters_and_escape_sequences_are_shown() {
        assert_eq!(printable("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(printable("\u{1b}]0;owned\u{7}"), "\\u{1b}]0;owned\\u{7}");
        assert_eq!(printable("\u{1b}[2J\u{1b}[H"), "\\u{1b}[2J\\u{1b}[H");
        assert_eq!(printable("x\u{7f}\u{9b}31m"), "x\\u{7f}\\u{9b}31m");
        assert_eq!(printable("nul\0"), "nul\\u{0}");
    }

    #[test]
    fn zero_width_and_bidi_characters_are_shown() {
        assert_eq!(printable("/tmp/\u{202e}gpj.sh"), "/tmp/\\u{202e}gpj.sh");
        for c in [
            '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}',
            '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
            '\u{FEFF}', '\u{2028}', '\u{2029}', '\u{061C}', '\u{2060}',
        ] {
            let shown = printable(&format!("a{c}b"));
            assert_eq!(shown, format!("a\\u{{{:x}}}b", c as u32), "{:x}", c as u32);
        }
    }

    #[test]
    fn escaping_twice_changes_nothing_more() {
        let s = "\u{1b}[31mred\u{202e}\n";
        assert_eq!(printable(&printable(s)), printable(s));
    }
}
