//! The container's filesystem changes against what it started from, as they were at checkpoint
//! time.
//!
//! On an overlay root (Podman, Docker, containerd) the upper directory *is* the change set:
//! every entry there was added or modified, and whiteouts (0/0 character devices) are deletions.
//! A plain directory rootfs (a runc bundle) has no pristine copy to compare with; there, what
//! changed is what was modified (mtime) or had its inode changed (ctime) after the container's
//! first process started. Changed regular files are copied into the case; everything is listed.
//!
//! The container controls every name in that tree, so the walk never follows a symlink: it
//! holds a directory fd of the base it was given and opens each entry relative to its parent's
//! fd with `O_NOFOLLOW` (see [`crate::beneath`]). A symlink is recorded as a symlink with its
//! target as data; fifos, sockets and devices are described (type, device numbers), never
//! opened; a file is opened non-blocking and checked to be the regular file the walk saw before
//! a byte is copied. [`capture`] is called while CRIU has the tasks stopped (its `post-dump`
//! notification, before it resumes them), so what is copied is what was there at checkpoint
//! time; [`scan`] (the same walk without copying) sizes the change set for the disk-space
//! check before anything is frozen.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::FileStat;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::beneath;

/// Directory depth the walk goes to; deeper entries are noted, not walked (a container can
/// nest directories to exhaust fds or the stack of whoever walks them).
const MAX_DEPTH: usize = 200;

/// How the change set was found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The overlay upper directory at this host path.
    OverlayUpper(PathBuf),
    /// Entries of the rootfs at this host path changed after the container started.
    ChangedSinceStart { rootfs: PathBuf, since_unix: i64 },
    /// Every entry of the tree at this host path (a baseline).
    WholeTree(PathBuf),
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Path inside the container.
    pub path: String,
    /// added_or_modified | deleted | directory | symlink | fifo | socket | char_device |
    /// block_device
    pub kind: &'static str,
    pub size: u64,
    /// st_mode in octal, file type bits included.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub ctime: i64,
    /// The inode change time in nanoseconds since the epoch (no one can set it to the past
    /// without changing the clock).
    pub ctime_ns: i64,
    /// A symlink's target, as data (never followed).
    pub symlink_target: Option<String>,
    /// A device's numbers, `major:minor`.
    pub device: Option<String>,
    /// Filled when the file was copied into the case.
    pub sha256: Option<String>,
}

/// Mode and owner of the root directory itself (CRIU checks the mode of the tree's root).
#[derive(Debug, Clone, Serialize)]
pub struct RootDir {
    /// st_mode in octal, file type bits included.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeSet {
    pub method: Method,
    /// The root directory's own mode and owner (an overlay's root takes its upper directory's).
    pub root: Option<RootDir>,
    pub changes: Vec<Change>,
    /// Bytes of regular files to copy.
    pub bytes: u64,
    /// Entries not taken, and why (too deep, vanished, not what the walk saw).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Where the change set is and how it is found.
#[derive(Debug, Clone)]
pub struct Source {
    pub method: Method,
    base: PathBuf,
    all: bool,
    since: i64,
}

impl Source {
    /// `root_super_options` are the overlay options of the root mount, if it is one; `rootfs`
    /// is the root's host path; `since_unix` the container's start.
    pub fn new(
        rootfs: &Path,
        root_fstype: &str,
        root_super_options: &str,
        since_unix: i64,
    ) -> Source {
        let upper = (root_fstype == "overlay")
            .then(|| {
                root_super_options
                    .split(',')
                    .find_map(|o| o.strip_prefix("upperdir="))
                    .map(PathBuf::from)
            })
            .flatten();
        match upper {
            Some(u) => Source {
                method: Method::OverlayUpper(u.clone()),
                base: u,
                all: true,
                since: since_unix,
            },
            None => Source {
                method: Method::ChangedSinceStart {
                    rootfs: rootfs.to_path_buf(),
                    since_unix,
                },
                base: rootfs.to_path_buf(),
                all: false,
                since: since_unix,
            },
        }
    }
}

impl Source {
    /// Every entry under `root` (a host path), for a baseline of a plain rootfs.
    pub fn whole_tree(root: &Path) -> Source {
        Source {
            method: Method::WholeTree(root.to_path_buf()),
            base: root.to_path_buf(),
            all: true,
            since: i64::MIN,
        }
    }
}

/// Lists the change set without copying (sizes it before the checkpoint).
pub fn scan(src: &Source) -> io::Result<ChangeSet> {
    walk_base(src, None, false)
}

/// Lists the change set with the SHA-256 of every regular file, copying nothing (drift and
/// baselines).
pub fn scan_hashed(src: &Source) -> io::Result<ChangeSet> {
    walk_base(src, None, true)
}

/// Lists the change set and copies every changed regular file under `dest` (same relative
/// paths, files 0600 in directories 0700), with its SHA-256. Call it while the tasks are
/// stopped.
pub fn capture(src: &Source, dest: &Path) -> io::Result<ChangeSet> {
    make_dir(dest)?;
    walk_base(src, Some(dest), true)
}

fn walk_base(src: &Source, dest: Option<&Path>, hash: bool) -> io::Result<ChangeSet> {
    let base = beneath::open_trusted_dir(&src.base)?;
    let st = nix::sys::stat::fstat(&base).map_err(io::Error::from)?;
    let dev = st.st_dev;
    let mut set = ChangeSet {
        method: src.method.clone(),
        root: Some(RootDir {
            mode: format!("{:o}", st.st_mode),
            uid: st.st_uid,
            gid: st.st_gid,
        }),
        changes: Vec::new(),
        bytes: 0,
        notes: Vec::new(),
    };
    let mut w = Walk {
        all: src.all,
        hash,
        since: src.since,
        dev,
        set: &mut set,
        buf: vec![0; 1 << 16],
    };
    w.dir(&base, Path::new(""), dest, 0)?;
    Ok(set)
}

struct Walk<'a> {
    all: bool,
    /// Hash regular files (always when copying).
    hash: bool,
    since: i64,
    dev: u64,
    set: &'a mut ChangeSet,
    /// One copy buffer for every file.
    buf: Vec<u8>,
}

impl Walk<'_> {
    fn dir(
        &mut self,
        fd: &OwnedFd,
        rel: &Path,
        dest: Option<&Path>,
        depth: usize,
    ) -> io::Result<()> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut d = nix::dir::Dir::from_fd(fd.try_clone()?).map_err(io::Error::from)?;
        for e in d.iter() {
            let Ok(e) = e else { continue };
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        names.sort();
        for n in names {
            let name = OsStr::from_bytes(&n);
            let path = rel.join(name);
            // Vanished since the listing: nothing to take.
            let Ok(st) = nix::sys::stat::fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            let changed = self.all || st.st_mtime >= self.since || st.st_ctime >= self.since;
            let ft = st.st_mode & libc::S_IFMT;
            if changed {
                self.entry(fd, name, &path, &st, ft, dest);
            }
            // Mount points below the rootfs on the host (another filesystem) are not the
            // container's.
            if ft == libc::S_IFDIR && st.st_dev == self.dev {
                if depth >= MAX_DEPTH {
                    self.set.notes.push(format!(
                        "/{}: deeper than {MAX_DEPTH} directories, not walked",
                        path.display()
                    ));
                    continue;
                }
                let Ok(sub) = beneath::open_dir(fd, Path::new(name)) else {
                    continue;
                };
                if !same_inode(&sub, &st) {
                    self.set.notes.push(format!(
                        "/{}: replaced while being walked, not walked",
                        path.display()
                    ));
                    continue;
                }
                let sub_dest = dest.map(|d| d.join(name));
                self.dir(&sub, &path, sub_dest.as_deref(), depth + 1)?;
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        path: &Path,
        st: &FileStat,
        ft: libc::mode_t,
        dest: Option<&Path>,
    ) {
        let rdev = st.st_rdev;
        let kind = match ft {
            libc::S_IFCHR if rdev == 0 => "deleted",
            libc::S_IFREG => "added_or_modified",
            libc::S_IFDIR => "directory",
            libc::S_IFLNK => "symlink",
            libc::S_IFIFO => "fifo",
            libc::S_IFSOCK => "socket",
            libc::S_IFCHR => "char_device",
            _ => "block_device",
        };
        let mut c = Change {
            path: format!("/{}", path.display()),
            kind,
            size: st.st_size as u64,
            mode: format!("{:o}", st.st_mode),
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            ctime: st.st_ctime,
            ctime_ns: st.st_ctime.saturating_mul(1_000_000_000) + st.st_ctime_nsec,
            symlink_target: (ft == libc::S_IFLNK)
                .then(|| nix::fcntl::readlinkat(dir, name).ok())
                .flatten()
                .map(|t| t.to_string_lossy().into_owned()),
            device: matches!(kind, "char_device" | "block_device")
                .then(|| format!("{}:{}", libc::major(rdev), libc::minor(rdev))),
            sha256: None,
        };
        if kind == "added_or_modified" {
            self.set.bytes += c.size;
            if dest.is_some() || self.hash {
                match copy_file(dir, name, st, dest, &mut self.buf) {
                    Ok((size, sha)) => {
                        c.size = size;
                        c.sha256 = Some(sha);
                    }
                    Err(e) => self.set.notes.push(format!("{}: not read: {e}", c.path)),
                }
            }
        }
        self.set.changes.push(c);
    }
}

fn same_inode(fd: &OwnedFd, st: &FileStat) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|s| s.st_ino == st.st_ino && s.st_dev == st.st_dev)
}

/// Copies the regular file `name` of `dir` into the directory `dest` (when given); returns its
/// size and SHA-256. Opened without following a symlink and without blocking (a fifo swapped
/// in would block a plain open), then checked to be the inode the walk saw.
pub(crate) fn copy_file(
    dir: &OwnedFd,
    name: &OsStr,
    st: &FileStat,
    dest: Option<&Path>,
    buf: &mut [u8],
) -> io::Result<(u64, String)> {
    let fd = beneath::open(
        dir,
        Path::new(name),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        0,
    )?;
    let now = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?;
    if now.st_ino != st.st_ino
        || now.st_dev != st.st_dev
        || now.st_mode & libc::S_IFMT != libc::S_IFREG
    {
        return Err(io::Error::other("replaced since it was listed"));
    }
    let mut from = fs::File::from(fd);
    // The directory is made with its first file: the walk does not know in advance.
    let mut to = match dest {
        None => None,
        Some(dest) => Some(match new_file(&dest.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                make_dir(dest)?;
                new_file(&dest.join(name))?
            }
            r => r?,
        }),
    };
    let mut h = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match from.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        if let Some(to) = to.as_mut() {
            to.write_all(&buf[..n])?;
        }
        size += n as u64;
    }
    Ok((size, hex::encode(h.finalize())))
}

/// A new file of the case copy, 0600.
fn new_file(p: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
}

/// Creates a directory of the case copy (0700), and its parents, if missing.
fn make_dir(p: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;
    use std::os::unix::fs::symlink;

    #[test]
    fn plain_rootfs_lists_files_changed_after_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/old"), "x").unwrap();
        let since = chrono::Utc::now().timestamp() + 1;
        let set = scan(&Source::new(dir.path(), "ext4", "", since)).unwrap();
        assert!(set.changes.is_empty());
        let src = Source::new(dir.path(), "ext4", "", since - 10);
        let set2 = scan(&src).unwrap();
        assert!(set2.changes.iter().any(|c| c.path == "/etc/old"));
        let out = tempfile::tempdir().unwrap();
        let got = capture(&src, &out.path().join("c")).unwrap();
        let old = got.changes.iter().find(|c| c.path == "/etc/old").unwrap();
        assert_eq!(
            old.sha256.as_deref(),
            Some(hex::encode(Sha256::digest(b"x")).as_str())
        );
        assert_eq!(
            fs::read_to_string(out.path().join("c/etc/old")).unwrap(),
            "x"
        );
    }

    #[test]
    fn symlinks_are_recorded_never_followed_and_specials_described() {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("secret"), "host secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        fs::write(root.path().join("d/ok"), "ok").unwrap();
        symlink(host.path().join("secret"), root.path().join("d/link")).unwrap();
        symlink(host.path(), root.path().join("dirlink")).unwrap();
        nix::unistd::mkfifo(&root.path().join("d/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let src = Source::new(root.path(), "ext4", "", 0);
        let set = capture(&src, &out.path().join("c")).unwrap();
        let by = |p: &str| set.changes.iter().find(|c| c.path == p).unwrap();
        assert_eq!(by("/d/link").kind, "symlink");
        assert_eq!(
            by("/d/link").symlink_target.as_deref(),
            Some(host.path().join("secret").to_str().unwrap())
        );
        assert_eq!(by("/dirlink").kind, "symlink");
        assert_eq!(by("/d/fifo").kind, "fifo");
        assert!(!set.changes.iter().any(|c| c.path.starts_with("/dirlink/")));
        // Nothing of the host's file came into the copy.
        let mut stack = vec![out.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let ft = e.file_type().unwrap();
                assert!(!ft.is_symlink(), "{:?}", e.path());
                if ft.is_dir() {
                    stack.push(e.path());
                } else {
                    assert_ne!(fs::read_to_string(e.path()).unwrap(), "host secret");
                }
            }
        }
        assert_eq!(fs::read_to_string(out.path().join("c/d/ok")).unwrap(), "ok");
    }
}
