//! Plain-text tables for people; `--format json` is the machine form of every command.
//!
//! Everything printed for people passes through [`shown`]: names, images, paths and ids come
//! from containers, stores and bundles, and are attacker-chosen.

/// Untrusted text made safe for the terminal (see [`quarry_store::text`]).
pub fn shown(text: &str) -> String {
    quarry_store::text::printable(text)
}

/// Prints rows under a header, columns padded to their widest cell; every cell is escaped
/// with [`shown`].
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| shown(c)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}
