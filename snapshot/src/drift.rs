//! Drift: what changed in a running container's filesystem relative to its image.
//!
//! Two ways to know the image:
//! - an overlay root (Podman, Docker, containerd): the upper directory holds every change, and
//!   the lower directories are the image. An upper entry whose path exists in a lower layer
//!   was modified; one that does not was added; a whiteout is a deletion.
//! - a plain directory rootfs (a runc bundle): there is no pristine copy, so a baseline (every
//!   entry with its SHA-256, see [`baseline`]) is taken into the store first and later walks
//!   are compared with it.
//!
//! Every tree walked here is the container's and hostile; the walks are those of
//! [`crate::fschanges`] (no symlink followed, specials never opened, files checked to be the
//! inode listed). Lower layers are looked up the same way, beneath a descriptor of the layer.
//! This module must not write anywhere: callers store baselines and print drift.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::AtFlags;
use quarry_containers::mountinfo::{self, Mount};
use quarry_store::schema::BaselineRow;
use serde::Serialize;

use crate::beneath;
use crate::fschanges::{self, Change, Source};

/// A baseline of more entries than this is not taken: a note row says so.
pub const MAX_BASELINE_ENTRIES: usize = 500_000;
/// A baseline of more bytes of regular files than this is not taken.
pub const MAX_BASELINE_BYTES: u64 = 4 << 30;

/// Why drift or a baseline could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// The container's mount table has no root mount.
    #[error("process {pid} has no root mount in its mountinfo")]
    NoRoot { pid: i32 },
    /// The root's filesystem is not visible on the host.
    #[error("the root filesystem of process {pid} is not mounted on the host; cannot walk it")]
    RootNotOnHost { pid: i32 },
    /// A plain rootfs without a baseline has nothing to be compared with.
    #[error(
        "container {container} has a plain rootfs and no baseline in the store; take one with `quarry baseline {container}` (drift is relative to it)"
    )]
    NoBaseline { container: String },
    /// The tree or the mount table could not be read.
    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: io::Error },
}

/// Where a container's root filesystem is, as the host sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Rootfs {
    /// The root's host path (an overlay's merged view is not used: the layers are).
    pub host_path: PathBuf,
    pub overlay: Option<Overlay>,
    /// Mount points inside the container (other than `/`): entries there are the mounts', and
    /// a runtime creates their empty mount-point files in the upper directory.
    pub mount_points: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overlay {
    pub upper: PathBuf,
    /// Lower layers, top first.
    pub lowers: Vec<PathBuf>,
}

/// Finds the root filesystem of process `pid` from its mount table and the host's.
pub fn rootfs_of(proc_root: &Path, pid: i32) -> Result<Rootfs, DriftError> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).map_err(|source| DriftError::Read { path: p, source })
    };
    let mounts = mountinfo::parse_mountinfo(&read(proc_root.join(format!("{pid}/mountinfo")))?);
    let host = mountinfo::parse_mountinfo(&read(proc_root.join("self/mountinfo"))?);
    let root = mountinfo::root_mount(&mounts).ok_or(DriftError::NoRoot { pid })?;
    let overlay = overlay_of(root);
    let host_path = match &overlay {
        Some(o) => o.upper.clone(),
        None => mountinfo::host_path_of(root, &host).ok_or(DriftError::RootNotOnHost { pid })?,
    };
    Ok(Rootfs {
        host_path,
        overlay,
        mount_points: mounts
            .iter()
            .filter(|m| m.mount_point != "/")
            .map(|m| m.mount_point.clone())
            .collect(),
    })
}

fn overlay_of(root: &Mount) -> Option<Overlay> {
    if root.fstype != "overlay" {
        return None;
    }
    let option = |key: &str| {
        split_unescaped(&root.super_options, ',')
            .into_iter()
            .find_map(|o| o.strip_prefix(key).map(str::to_string))
    };
    let upper = option("upperdir=")?;
    let lowers = option("lowerdir=")
        .map(|l| {
            split_unescaped(&l, ':')
                .into_iter()
                .map(|p| PathBuf::from(p.replace("\\:", ":").replace("\\,", ",")))
                .collect()
        })
        .unwrap_or_default();
    Some(Overlay {
        upper: PathBuf::from(upper),
        lowers,
    })
}

/// Splits on `sep` except where it is escaped with a backslash (overlayfs escapes `:` and `,`
/// in layer paths).
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            c if c == sep && !escaped => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
    }
    out.push(&s[start..]);
    out
}

/// One changed entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DriftEntry {
    /// Path inside the container.
    pub path: String,
    /// added | modified | deleted
    pub change: &'static str,
    /// file | directory | symlink | fifo | socket | char_device | block_device (what it is
    /// now; for a deletion, what it was when known)
    pub kind: String,
    pub size: Option<u64>,
    /// st_mode in octal, file type bits included.
    pub mode: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<DateTime<Utc>>,
    pub sha256: Option<String>,
    /// The image's (or baseline's) hash of a modified file, when known.
    pub previous_sha256: Option<String>,
    pub symlink_target: Option<String>,
    /// An execute bit is set now.
    pub executable: bool,
    /// An execute bit is set now and was not in the image (or it is new and executable).
    pub made_executable: bool,
    /// The recorder saw it executed in this container (filled by the caller from the store).
    pub executed: bool,
}

/// The drift of one container.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    /// overlay_upper | baseline
    pub method: &'static str,
    pub baseline_id: Option<String>,
    pub entries: Vec<DriftEntry>,
    /// Changes to the image made before the container's first process started: the runtime's
    /// set-up (Podman's /etc/mtab, mount-point files), listed apart so they do not hide or
    /// pose as the workload's drift.
    pub before_start: Vec<DriftEntry>,
    /// What the walk could not take, and why.
    pub notes: Vec<String>,
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "char_device",
        _ => "block_device",
    }
}

fn parse_mode(octal: &str) -> u32 {
    u32::from_str_radix(octal, 8).unwrap_or(0)
}

fn is_exec(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFREG && mode & 0o111 != 0
}

fn under_mount_point(path: &str, mount_points: &[String]) -> bool {
    mount_points.iter().any(|m| mountinfo::is_under(path, m))
}

/// When process `pid` started, in nanoseconds since the epoch (to the kernel's clock tick):
/// its start in ticks since boot, plus when the machine booted by the real-time clock.
pub fn started_ns(proc_root: &Path, pid: i32) -> Option<i64> {
    let ticks = i64::try_from(quarry_containers::runtime::start_ticks(proc_root, pid)?).ok()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    let now = |clock| {
        nix::time::clock_gettime(clock)
            .ok()
            .map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec())
    };
    let boot = now(nix::time::ClockId::CLOCK_REALTIME)? - now(nix::time::ClockId::CLOCK_BOOTTIME)?;
    Some(boot + ticks * (1_000_000_000 / hz))
}

/// The drift of an overlay-rooted container: its upper directory against its lower layers.
/// Entries changed before `started_ns` (the init's start) are the runtime's set-up.
pub fn overlay_drift(rootfs: &Rootfs, started_ns: Option<i64>) -> Result<Drift, DriftError> {
    let Some(overlay) = &rootfs.overlay else {
        return Err(DriftError::RootNotOnHost { pid: 0 });
    };
    let read_err = |source| DriftError::Read {
        path: overlay.upper.clone(),
        source,
    };
    let set = fschanges::scan_hashed(&Source::new(
        &overlay.upper,
        "overlay",
        &format!("upperdir={}", overlay.upper.display()),
        i64::MIN,
    ))
    .map_err(read_err)?;
    let lowers: Vec<std::os::fd::OwnedFd> = overlay
        .lowers
        .iter()
        .filter_map(|l| beneath::open_trusted_dir(l).ok())
        .collect();
    let mut notes = set.notes;
    if lowers.len() != overlay.lowers.len() {
        notes.push(format!(
            "{} of {} lower layers could not be opened: added and modified may be confused",
            overlay.lowers.len() - lowers.len(),
            overlay.lowers.len()
        ));
    }
    let mut entries = Vec::new();
    let mut before_start = Vec::new();
    let mut buf = vec![0; 1 << 16];
    for c in set.changes {
        let list = if started_ns.is_some_and(|s| c.ctime_ns < s) {
            &mut before_start
        } else {
            &mut entries
        };
        // Directories change whenever something inside does; the entries say what.
        if c.kind == "directory" || under_mount_point(&c.path, &rootfs.mount_points) {
            continue;
        }
        let in_image = lookup_lower(&lowers, &c.path, &mut buf);
        if c.kind == "deleted" {
            list.push(DriftEntry {
                path: c.path.clone(),
                change: "deleted",
                kind: in_image
                    .as_ref()
                    .map(|(st, _)| kind_of(st.st_mode).to_string())
                    .unwrap_or_else(|| "unknown".into()),
                size: in_image.as_ref().map(|(st, _)| st.st_size as u64),
                mode: in_image.as_ref().map(|(st, _)| format!("{:o}", st.st_mode)),
                uid: None,
                gid: None,
                mtime: None,
                sha256: None,
                previous_sha256: in_image.and_then(|(_, sha)| sha),
                symlink_target: None,
                executable: false,
                made_executable: false,
                executed: false,
            });
            continue;
        }
        let mode = parse_mode(&c.mode);
        let was_exec = in_image.as_ref().is_some_and(|(st, _)| is_exec(st.st_mode));
        let change = if in_image.is_some() {
            "modified"
        } else {
            "added"
        };
        list.push(entry_of(
            &c,
            change,
            mode,
            was_exec,
            in_image.and_then(|(_, s)| s),
        ));
    }
    Ok(Drift {
        method: "overlay_upper",
        baseline_id: None,
        entries,
        before_start,
        notes,
    })
}

fn entry_of(
    c: &Change,
    change: &'static str,
    mode: u32,
    was_exec: bool,
    previous_sha256: Option<String>,
) -> DriftEntry {
    DriftEntry {
        path: c.path.clone(),
        change,
        kind: kind_of(mode).to_string(),
        size: Some(c.size),
        mode: Some(c.mode.clone()),
        uid: Some(c.uid),
        gid: Some(c.gid),
        mtime: DateTime::from_timestamp(c.mtime, 0),
        sha256: c.sha256.clone(),
        previous_sha256,
        symlink_target: c.symlink_target.clone(),
        executable: is_exec(mode),
        made_executable: is_exec(mode) && !was_exec,
        executed: false,
    }
}

/// The entry at container path `path` in the top-most lower layer that has it, with its
/// SHA-256 when it is a regular file.
fn lookup_lower(
    lowers: &[std::os::fd::OwnedFd],
    path: &str,
    buf: &mut [u8],
) -> Option<(nix::sys::stat::FileStat, Option<String>)> {
    let rel = beneath::plain_relative(path)?;
    let (parent, name) = beneath::split(&rel);
    for layer in lowers {
        let Ok(dir) = beneath::open_dir(layer, parent) else {
            continue;
        };
        let Ok(st) = nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        // A whiteout in a lower layer hides what is below it: not in the image.
        if st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0 {
            return None;
        }
        let sha = (st.st_mode & libc::S_IFMT == libc::S_IFREG)
            .then(|| fschanges::copy_file(&dir, OsStr::new(name), &st, None, buf).ok())
            .flatten()
            .map(|(_, sha)| sha);
        return Some((st, sha));
    }
    None
}

/// A baseline of the plain rootfs at `rootfs`: one row per entry (mount points excluded),
/// or one `note` row when the tree is over the limits.
pub fn baseline(
    container_id: &str,
    rootfs: &Rootfs,
    now: DateTime<Utc>,
) -> Result<Vec<BaselineRow>, DriftError> {
    let baseline_id = format!(
        "{container_id}@{}",
        now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    let read_err = |source| DriftError::Read {
        path: rootfs.host_path.clone(),
        source,
    };
    let source = Source::whole_tree(&rootfs.host_path);
    let row = |path: String, kind: String| BaselineRow {
        time: now,
        baseline_id: baseline_id.clone(),
        container_id: container_id.to_string(),
        path,
        kind,
        size: None,
        mode: None,
        uid: None,
        gid: None,
        mtime: None,
        sha256: None,
        symlink_target: None,
        note: None,
    };
    // Sized first, without reading a byte, so a huge tree is refused before it is hashed.
    let sized = fschanges::scan(&source).map_err(read_err)?;
    if sized.changes.len() > MAX_BASELINE_ENTRIES || sized.bytes > MAX_BASELINE_BYTES {
        let mut note = row(String::new(), "note".into());
        note.note = Some(format!(
            "not taken: {} entries and {} bytes of files exceed the limits of {MAX_BASELINE_ENTRIES} entries and {MAX_BASELINE_BYTES} bytes",
            sized.changes.len(),
            sized.bytes
        ));
        return Ok(vec![note]);
    }
    let set = fschanges::scan_hashed(&source).map_err(read_err)?;
    let mut rows: Vec<BaselineRow> = set
        .changes
        .iter()
        .filter(|c| !under_mount_point(&c.path, &rootfs.mount_points))
        .map(|c| {
            let mode = parse_mode(&c.mode);
            BaselineRow {
                size: Some(c.size),
                mode: Some(mode),
                uid: Some(c.uid),
                gid: Some(c.gid),
                mtime: Some(c.mtime),
                sha256: c.sha256.clone(),
                symlink_target: c.symlink_target.clone(),
                ..row(c.path.clone(), kind_of(mode).to_string())
            }
        })
        .collect();
    rows.extend(set.notes.into_iter().map(|n| BaselineRow {
        note: Some(n),
        ..row(String::new(), "note".into())
    }));
    Ok(rows)
}

/// The drift of a plain rootfs against the latest baseline among `rows` (all of one
/// container's baseline rows from the store).
pub fn baseline_drift(
    container_id: &str,
    rootfs: &Rootfs,
    rows: &[BaselineRow],
) -> Result<Drift, DriftError> {
    let latest = rows
        .iter()
        .filter(|r| r.container_id == container_id)
        .max_by_key(|r| r.time)
        .map(|r| r.baseline_id.clone())
        .ok_or_else(|| DriftError::NoBaseline {
            container: container_id.to_string(),
        })?;
    let mut notes: Vec<String> = Vec::new();
    let mut before: BTreeMap<&str, &BaselineRow> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.baseline_id == latest) {
        match r.kind.as_str() {
            "note" => notes.extend(r.note.iter().map(|n| format!("baseline: {n}"))),
            _ => {
                before.insert(r.path.as_str(), r);
            }
        }
    }
    let set = fschanges::scan_hashed(&Source::whole_tree(&rootfs.host_path)).map_err(|source| {
        DriftError::Read {
            path: rootfs.host_path.clone(),
            source,
        }
    })?;
    notes.extend(set.notes);
    let mut entries = Vec::new();
    let mut now_paths = std::collections::BTreeSet::new();
    for c in &set.changes {
        if under_mount_point(&c.path, &rootfs.mount_points) {
            continue;
        }
        now_paths.insert(c.path.as_str());
        let mode = parse_mode(&c.mode);
        match before.get(c.path.as_str()) {
            None => {
                if kind_of(mode) != "directory" {
                    entries.push(entry_of(c, "added", mode, false, None));
                }
            }
            Some(b) => {
                let differs = b.mode != Some(mode)
                    || b.uid != Some(c.uid)
                    || b.gid != Some(c.gid)
                    || b.sha256 != c.sha256
                    || b.symlink_target != c.symlink_target;
                if differs && kind_of(mode) != "directory" {
                    let was_exec = b.mode.is_some_and(is_exec);
                    entries.push(entry_of(c, "modified", mode, was_exec, b.sha256.clone()));
                }
            }
        }
    }
    for (path, b) in &before {
        if !now_paths.contains(path) && b.kind != "directory" {
            entries.push(DriftEntry {
                path: path.to_string(),
                change: "deleted",
                kind: b.kind.clone(),
                size: b.size,
                mode: b.mode.map(|m| format!("{m:o}")),
                uid: b.uid,
                gid: b.gid,
                mtime: None,
                sha256: None,
                previous_sha256: b.sha256.clone(),
                symlink_target: None,
                executable: false,
                made_executable: false,
                executed: false,
            });
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Drift {
        method: "baseline",
        baseline_id: Some(latest),
        entries,
        before_start: Vec::new(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn plain(dir: &Path) -> Rootfs {
        Rootfs {
            host_path: dir.to_path_buf(),
            overlay: None,
            mount_points: vec!["/proc".into()],
        }
    }

    #[test]
    fn baseline_drift_finds_added_modified_deleted_and_made_executable() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        fs::create_dir_all(dir.path().join("proc")).unwrap();
        fs::write(dir.path().join("bin/tool"), "v1").unwrap();
        fs::write(dir.path().join("bin/gone"), "x").unwrap();
        fs::write(dir.path().join("keep"), "same").unwrap();
        let rootfs = plain(dir.path());
        let rows = baseline("c1", &rootfs, Utc::now()).unwrap();
        assert!(
            rows.iter()
                .any(|r| r.path == "/bin/tool" && r.sha256.is_some())
        );

        fs::write(dir.path().join("bin/tool"), "v2").unwrap();
        fs::remove_file(dir.path().join("bin/gone")).unwrap();
        fs::write(dir.path().join("dropper"), "#!/bin/sh").unwrap();
        fs::set_permissions(
            dir.path().join("dropper"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // Below a mount point: the mount's, not the rootfs's.
        fs::write(dir.path().join("proc/x"), "y").unwrap();

        let drift = baseline_drift("c1", &rootfs, &rows).unwrap();
        let got: Vec<(&str, &str)> = drift
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.change))
            .collect();
        assert_eq!(
            got,
            [
                ("/bin/gone", "deleted"),
                ("/bin/tool", "modified"),
                ("/dropper", "added")
            ]
        );
        let tool = &drift.entries[1];
        use sha2::{Digest, Sha256};
        assert_eq!(tool.sha256, Some(hex::encode(Sha256::digest(b"v2"))));
        assert_eq!(
            tool.previous_sha256,
            Some(hex::encode(Sha256::digest(b"v1")))
        );
        assert!(drift.entries[2].made_executable);
    }

    #[test]
    fn no_baseline_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = baseline_drift("c9", &plain(dir.path()), &[]).unwrap_err();
        assert!(err.to_string().contains("quarry baseline c9"), "{err}");
    }

    #[test]
    fn overlay_options_split_on_unescaped_separators() {
        let root = mountinfo::parse_mountinfo(
            "1 0 0:50 / / rw - overlay overlay rw,lowerdir=/l/a\\:b:/l/c,upperdir=/u/diff,workdir=/u/work\n",
        );
        let o = overlay_of(&root[0]).unwrap();
        assert_eq!(o.upper, PathBuf::from("/u/diff"));
        assert_eq!(o.lowers, [PathBuf::from("/l/a:b"), PathBuf::from("/l/c")]);
    }
}
