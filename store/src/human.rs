//! Sizes, durations and errors for people, as every command prints them and as retention caps
//! are written (`1.5 GiB`, `7d`). Display only: nothing parses these back.

use std::time::Duration;

/// Human size, e.g. `1.5 GiB`.
pub fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Human duration as retention caps are written, e.g. `7d`, `36h`, `90m`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// An error and every cause below it on one line (`what failed: why: why`), for logs and
/// status lines. Errors' own Display says only what failed; the causes are their sources.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("sealing failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_error_once() {
        let e = Outer(std::io::Error::other("no space"));
        assert_eq!(with_causes(&e), "sealing failed: no space");
    }
}
