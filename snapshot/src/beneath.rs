//! Path operations that stay beneath a directory fd and never follow a symlink.
//!
//! Everything a container can write is hostile: a name in its root filesystem can become a
//! symlink to a host file between two system calls, and a case's JSON can name any path. So
//! snapshot and restore never hand such a path to a path-resolving call. They open a directory
//! fd they trust (a host path they chose: the case, the restore root, the overlay's upper
//! directory) and resolve everything else relative to it with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: a symlink anywhere on the way, `..`, or an
//! absolute path fails with an error instead of leading elsewhere. Single names found by
//! reading a directory are used with `*at` calls on that directory's fd with `O_NOFOLLOW` /
//! `AT_SYMLINK_NOFOLLOW`.
//!
//! This module must not be given paths to follow: it has no call that resolves a symlink.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// The resolve flags every lookup below a trusted fd uses.
fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Opens `rel` below `dir` (no symlink, no `..`, nothing absolute on the way).
pub fn open(dir: impl AsFd, rel: &Path, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(resolve());
    nix::fcntl::openat2(dir, rel, how).map_err(io::Error::from)
}

/// Opens the directory `rel` below `dir` for reading its entries (`rel` may be `.`).
pub fn open_dir(dir: impl AsFd, rel: &Path) -> io::Result<OwnedFd> {
    open(dir, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
}

/// Opens a directory the caller trusts by its host path (the case, the restore root, an
/// overlay's upper directory): the anchor everything else is resolved from.
pub fn open_trusted_dir(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// A path from a case's JSON or a container, checked to be relative and plain: every
/// component a name (a leading `/` is dropped: container paths are absolute inside it), no
/// `.`, `..` or empty component, not empty. None when it is anything else.
pub fn plain_relative(s: &str) -> Option<PathBuf> {
    let trimmed = s.trim_start_matches('/');
    if trimmed.is_empty() || s.contains('\0') {
        return None;
    }
    let p = Path::new(trimmed);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    // Path::components folds "a//b" and "a/./b": refuse what it would have hidden.
    if trimmed
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    Some(out)
}

/// The directory and the last name of a plain relative path.
pub fn split(rel: &Path) -> (&Path, &OsStr) {
    let parent = rel
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    (parent, rel.file_name().unwrap_or(OsStr::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn plain_relative_refuses_escapes() {
        assert_eq!(
            plain_relative("/etc/passwd"),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(
            plain_relative("fs/changes"),
            Some(PathBuf::from("fs/changes"))
        );
        for bad in [
            "",
            "/",
            "..",
            "a/../b",
            "a/./b",
            "a//b",
            "../../etc",
            "./a",
            "a/..",
        ] {
            assert_eq!(plain_relative(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn never_follows_a_symlink_on_the_way() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::fs::write(d.path().join("real/f"), "in").unwrap();
        symlink(outside.path(), d.path().join("link")).unwrap();
        symlink(outside.path().join("secret"), d.path().join("real/l")).unwrap();
        let root = open_trusted_dir(d.path()).unwrap();
        assert!(open(&root, Path::new("real/f"), OFlag::O_RDONLY, 0).is_ok());
        for bad in ["link/secret", "real/l", "../x", "/etc/passwd"] {
            assert!(
                open(&root, Path::new(bad), OFlag::O_RDONLY, 0).is_err(),
                "{bad} opened"
            );
        }
        assert!(open_dir(&root, Path::new("link")).is_err());
        assert_eq!(
            split(Path::new("a/b/c")),
            (Path::new("a/b"), OsStr::new("c"))
        );
        assert_eq!(split(Path::new("c")), (Path::new("."), OsStr::new("c")));
    }
}
