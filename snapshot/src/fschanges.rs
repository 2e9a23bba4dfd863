//! The container's filesystem changes against what it started from.
//!
//! On an overlay root (Podman, Docker, containerd) the upper directory *is* the change set:
//! every entry there was added or modified, and whiteouts (0/0 character devices) are deletions.
//! A plain directory rootfs (a runc bundle) has no pristine copy to compare with; there, what
//! changed is what was modified (mtime) or had its inode changed (ctime) after the container's
//! first process started. Changed regular files are copied into the case; everything is listed.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How the change set was found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The overlay upper directory at this host path.
    OverlayUpper(PathBuf),
    /// Entries of the rootfs at this host path changed after the container started.
    ChangedSinceStart { rootfs: PathBuf, since_unix: i64 },
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Path inside the container.
    pub path: String,
    /// added_or_modified | deleted | directory | symlink | special
    pub kind: &'static str,
    pub size: u64,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub ctime: i64,
    pub symlink_target: Option<String>,
    /// Filled when the file was copied into the case.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeSet {
    pub method: Method,
    pub changes: Vec<Change>,
    /// Bytes of regular files to copy.
    pub bytes: u64,
}

/// Finds the change set. `root_super_options` are the overlay options of the root mount, if it is
/// one; `rootfs` is the root's host path; `since_unix` the container's start.
pub fn scan(
    rootfs: &Path,
    root_fstype: &str,
    root_super_options: &str,
    since_unix: i64,
) -> io::Result<ChangeSet> {
    let upper = (root_fstype == "overlay")
        .then(|| {
            root_super_options
                .split(',')
                .find_map(|o| o.strip_prefix("upperdir="))
                .map(PathBuf::from)
        })
        .flatten();
    let (base, method, all) = match upper {
        Some(u) => (u.clone(), Method::OverlayUpper(u), true),
        None => (
            rootfs.to_path_buf(),
            Method::ChangedSinceStart {
                rootfs: rootfs.to_path_buf(),
                since_unix,
            },
            false,
        ),
    };
    let dev = fs::symlink_metadata(&base)?.dev();
    let mut set = ChangeSet {
        method,
        changes: Vec::new(),
        bytes: 0,
    };
    walk(&base, &base, dev, all, since_unix, &mut set)?;
    Ok(set)
}

fn walk(
    base: &Path,
    dir: &Path,
    dev: u64,
    all: bool,
    since: i64,
    set: &mut ChangeSet,
) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(m) = fs::symlink_metadata(&path) else {
            continue;
        };
        let changed = all || m.mtime() >= since || m.ctime() >= since;
        let ft = m.file_type();
        let inside = format!("/{}", path.strip_prefix(base).unwrap_or(&path).display());
        if changed {
            let kind = if ft.is_char_device() && m.rdev() == 0 {
                "deleted"
            } else if ft.is_file() {
                "added_or_modified"
            } else if ft.is_dir() {
                "directory"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "special"
            };
            if kind == "added_or_modified" {
                set.bytes += m.len();
            }
            set.changes.push(Change {
                path: inside,
                kind,
                size: m.len(),
                mode: format!("{:o}", m.mode()),
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                ctime: m.ctime(),
                symlink_target: ft
                    .is_symlink()
                    .then(|| fs::read_link(&path).ok().map(|t| t.display().to_string()))
                    .flatten(),
                sha256: None,
            });
        }
        // Mount points below the rootfs on the host (another filesystem) are not the container's.
        if ft.is_dir() && m.dev() == dev {
            walk(base, &path, dev, all, since, set)?;
        }
    }
    Ok(())
}

/// Copies the changed regular files under `dest` (same relative paths) and fills their hashes.
pub fn copy(set: &mut ChangeSet, dest: &Path) -> io::Result<u64> {
    let base = match &set.method {
        Method::OverlayUpper(u) => u.clone(),
        Method::ChangedSinceStart { rootfs, .. } => rootfs.clone(),
    };
    let mut copied = 0;
    for c in &mut set.changes {
        if c.kind != "added_or_modified" {
            continue;
        }
        let rel = c.path.trim_start_matches('/');
        let to = dest.join(rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        // The file may have gone since the scan: it stays listed, without a copy.
        if fs::copy(base.join(rel), &to).is_ok() {
            copied += fs::metadata(&to)?.len();
            c.size = fs::metadata(&to)?.len();
            c.sha256 = quarry_store::segment::sha256_file(&to).ok();
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_rootfs_lists_files_changed_after_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/old"), "x").unwrap();
        let since = chrono::Utc::now().timestamp() + 1;
        let mut set = scan(dir.path(), "ext4", "", since).unwrap();
        assert!(set.changes.is_empty());
        let mut set2 = scan(dir.path(), "ext4", "", since - 10).unwrap();
        assert!(set2.changes.iter().any(|c| c.path == "/etc/old"));
        let out = tempfile::tempdir().unwrap();
        assert_eq!(copy(&mut set2, out.path()).unwrap(), 1);
        assert_eq!(fs::read_to_string(out.path().join("etc/old")).unwrap(), "x");
        assert!(copy(&mut set, out.path()).unwrap() == 0);
    }
}
