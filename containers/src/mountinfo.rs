//! `/proc/<pid>/mountinfo`: the one parser of the kernel's mount table, and where a
//! container's mounts come from on the host.
//!
//! The kernel writes the file, but the paths in it are the container's choice (a directory can
//! be named anything, including spaces and newlines, which the kernel escapes as octal). A line
//! that cannot be read is skipped, never half-used. What a mount *means* (for CRIU, for
//! posture) is decided by the crates that ask; this module only describes.

use std::path::PathBuf;

use serde::Serialize;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub id: u32,
    pub parent: u32,
    /// `major:minor` of the filesystem's device.
    pub dev: String,
    /// The path inside its filesystem that is mounted here (`/` for a whole filesystem; a bind
    /// mount shows the directory or file it came from).
    pub root: String,
    pub mount_point: String,
    /// Per-mount options (`rw`/`ro`, nosuid, ...).
    pub options: Vec<String>,
    /// Propagation tags (`shared:N`, `master:N`, `propagate_from:N`, `unbindable`).
    pub propagation: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// Mounts made under it propagate to peers (the host's, for a host mount).
    pub fn shared(&self) -> bool {
        self.propagation.iter().any(|p| p.starts_with("shared:"))
    }
}

/// Parses mountinfo text; unreadable lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    Some(Mount {
        id: l.first()?.parse().ok()?,
        parent: l.get(1)?.parse().ok()?,
        dev: l.get(2)?.to_string(),
        root: unescape(l.get(3)?),
        mount_point: unescape(l.get(4)?),
        options: l.get(5)?.split(',').map(str::to_string).collect(),
        propagation: l
            .get(6..)
            .unwrap_or(&[])
            .iter()
            .map(|s| s.to_string())
            .collect(),
        fstype: r.first()?.to_string(),
        source: unescape(r.get(1).unwrap_or(&"")),
        super_options: r.get(2).unwrap_or(&"").to_string(),
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal. Non-UTF-8 names stay visible
/// (lossily) rather than dropped: a mount must not vanish because the attacker chose odd bytes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The root mount: the last one mounted at `/` (the visible one).
pub fn root_mount(mounts: &[Mount]) -> Option<&Mount> {
    mounts.iter().rev().find(|m| m.mount_point == "/")
}

/// Where the filesystem subtree mounted at `m` is visible on the host (`host` is the host's
/// mountinfo): the host mount of the same device whose root contains `m`'s root.
pub fn host_path_of(m: &Mount, host: &[Mount]) -> Option<PathBuf> {
    host.iter()
        .filter(|h| h.dev == m.dev && is_under(&m.root, &h.root))
        .max_by_key(|h| h.root.len())
        .map(|h| {
            let rest = m.root[h.root.len()..].trim_start_matches('/');
            let base = PathBuf::from(&h.mount_point);
            if rest.is_empty() {
                base
            } else {
                base.join(rest)
            }
        })
}

/// `path` is `dir` or below it (component-wise, not by string prefix).
pub fn is_under(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options_propagation_and_escapes() {
        let m = parse_mountinfo(
            "36 35 98:0 /run/docker.sock /var/run/my\\040dir/docker.sock rw,nosuid shared:4 master:1 - tmpfs tmpfs rw\nbogus\n",
        );
        assert_eq!(m.len(), 1);
        let m = &m[0];
        assert_eq!(m.mount_point, "/var/run/my dir/docker.sock");
        assert!(m.shared() && !m.read_only());
        assert_eq!(m.propagation, ["shared:4", "master:1"]);
        assert_eq!((m.fstype.as_str(), m.dev.as_str()), ("tmpfs", "98:0"));
    }

    #[test]
    fn host_path_is_found_by_device_and_root() {
        let host = parse_mountinfo(
            "22 1 254:0 / / rw - ext4 /dev/vda rw\n30 22 254:0 /srv /srv rw - ext4 /dev/vda rw\n",
        );
        let c = parse_mountinfo("90 71 254:0 /srv/volume /data rw - ext4 /dev/vda rw\n");
        assert_eq!(
            host_path_of(&c[0], &host),
            Some(PathBuf::from("/srv/volume"))
        );
        assert!(is_under("/a/b", "/a") && !is_under("/ab", "/a"));
    }
}
