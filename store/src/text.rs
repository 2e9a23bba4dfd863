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
