//! `/proc/<pid>/mountinfo` parsed into the facts posture needs.
//!
//! The kernel writes this file, but the paths in it are the container's choice (a directory
//! can be named anything, including spaces and newlines, which the kernel escapes as octal).
//! The parser never guesses: a line it cannot read is skipped and counted, not half-used.

use serde::Serialize;

/// One mount as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// `major:minor` of the filesystem's device.
    pub device: String,
    /// The path inside that filesystem that is mounted here (`/` for a whole filesystem; a
    /// bind mount shows the directory or file it came from).
    pub root: String,
    /// Where it is mounted, in the process's view.
    pub mount_point: String,
    /// Per-mount options (`rw`/`ro`, nosuid, ...).
    pub options: Vec<String>,
    /// Propagation tags (`shared:N`, `master:N`, `propagate_from:N`, `unbindable`).
    pub propagation: Vec<String>,
    pub fs_type: String,
    pub source: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    pub fn shared(&self) -> bool {
        self.propagation.iter().any(|p| p.starts_with("shared:"))
    }
}

/// Parses a whole mountinfo file; returns the mounts and the number of lines it skipped.
pub fn parse(text: &str) -> (Vec<Mount>, usize) {
    let mut mounts = Vec::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Some(m) => mounts.push(m),
            None => skipped += 1,
        }
    }
    (mounts, skipped)
}

fn parse_line(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    if fields.len() < 6 {
        return None;
    }
    let mut tail = after.split(' ');
    let fs_type = unescape(tail.next()?)?;
    let source = unescape(tail.next()?)?;
    Some(Mount {
        device: fields[2].to_string(),
        root: unescape(fields[3])?,
        mount_point: unescape(fields[4])?,
        options: fields[5].split(',').map(str::to_string).collect(),
        propagation: fields[6..].iter().map(|s| s.to_string()).collect(),
        fs_type,
        source,
    })
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash.
fn unescape(field: &str) -> Option<String> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = bytes.get(i + 1..i + 4)?;
            let text = std::str::from_utf8(digits).ok()?;
            out.push(u8::from_str_radix(text, 8).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Non-UTF-8 names stay visible rather than dropped: a finding must not vanish because
    // the attacker chose odd bytes.
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bind_mount_with_escapes() {
        let text = "36 35 98:0 /run/docker.sock /var/run/my\\040dir/docker.sock rw,nosuid shared:4 master:1 - tmpfs tmpfs rw\n\
                    bogus line\n";
        let (mounts, skipped) = parse(text);
        assert_eq!(skipped, 1);
        let m = &mounts[0];
        assert_eq!(m.root, "/run/docker.sock");
        assert_eq!(m.mount_point, "/var/run/my dir/docker.sock");
        assert!(m.shared() && !m.read_only());
        assert_eq!(m.fs_type, "tmpfs");
        assert_eq!(m.device, "98:0");
    }

    #[test]
    fn refuses_truncated_escape() {
        assert_eq!(unescape("a\\04"), None);
        assert_eq!(unescape("a\\134b").as_deref(), Some("a\\b"));
    }
}
