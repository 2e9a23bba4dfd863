//! cgroup v2 on this host: where it is mounted, which cgroup a process is in, and the ids the
//! kernel gives cgroups.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Container;
use crate::pattern::parse_cgroup_path;

/// The cgroup v2 hierarchy of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFs {
    mount: PathBuf,
}

impl CgroupFs {
    /// Finds the cgroup2 mount in /proc/self/mountinfo (`/sys/fs/cgroup` on pure v2 hosts,
    /// often `/sys/fs/cgroup/unified` on hybrid ones).
    pub fn detect() -> Option<CgroupFs> {
        CgroupFs::from_mountinfo(&fs::read_to_string("/proc/self/mountinfo").ok()?)
    }

    /// Parses mountinfo text; the first cgroup2 mount wins.
    pub fn from_mountinfo(mountinfo: &str) -> Option<CgroupFs> {
        mountinfo.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount = left.split_whitespace().nth(4)?;
            (fstype == "cgroup2").then(|| CgroupFs {
                mount: PathBuf::from(unescape_mountinfo(mount)),
            })
        })
    }

    /// A hierarchy mounted at `mount` (tests).
    pub fn at(mount: impl Into<PathBuf>) -> CgroupFs {
        CgroupFs {
            mount: mount.into(),
        }
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The directory of cgroup `path` (as written in /proc/PID/cgroup).
    pub fn dir(&self, path: &str) -> PathBuf {
        self.mount.join(path.trim_start_matches('/'))
    }

    /// The cgroup id of `path`: the inode of its directory.
    pub fn cgroup_id(&self, path: &str) -> Option<u64> {
        fs::metadata(self.dir(path)).ok().map(|m| m.ino())
    }

    /// The cgroup id of the directory `path` names: a cgroup path relative to the mount
    /// (`/system.slice/nginx.service`) or a directory under it; the error when it has none.
    pub fn id_of_dir(&self, path: &Path) -> std::io::Result<u64> {
        let dir = if path.starts_with(&self.mount) {
            path.to_path_buf()
        } else {
            self.dir(&path.to_string_lossy())
        };
        fs::metadata(dir).map(|m| m.ino())
    }

    /// Finds the path of the cgroup whose id is `id` by walking the hierarchy. Costs a
    /// directory walk, so callers cache the answer.
    pub fn path_of_id(&self, id: u64) -> Option<String> {
        fn walk(dir: &Path, id: u64, depth: usize) -> Option<PathBuf> {
            if depth > 32 {
                return None;
            }
            for entry in fs::read_dir(dir).ok()?.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                if !ft.is_dir() {
                    continue;
                }
                let path = entry.path();
                if entry.metadata().map(|m| m.ino()).ok() == Some(id) {
                    return Some(path);
                }
                if let Some(found) = walk(&path, id, depth + 1) {
                    return Some(found);
                }
            }
            None
        }
        if fs::metadata(&self.mount).ok()?.ino() == id {
            return Some("/".into());
        }
        let found = walk(&self.mount, id, 0)?;
        let rel = found.strip_prefix(&self.mount).ok()?;
        Some(format!("/{}", rel.display()))
    }
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as octal.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let octal = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = octal.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// The cgroup v2 path of a process, from `<proc_root>/<pid>/cgroup` (the `0::` line).
pub fn path_of_pid(proc_root: &Path, pid: i32) -> Option<String> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// True when cgroup `path` is `ancestor` or lies below it.
pub fn is_within(path: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    ancestor.is_empty()
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn parent_pid(proc_root: &Path, pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // The comm field may contain spaces and parentheses: fields resume after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Containers found by reading every process's cgroup and matching engine patterns.
pub fn containers_from_procs(fs: &CgroupFs, proc_root: &Path) -> Vec<Container> {
    let mut members: BTreeMap<String, (crate::pattern::PathMatch, Vec<i32>)> = BTreeMap::new();
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(path) = path_of_pid(proc_root, pid) else {
            continue;
        };
        if let Some(m) = parse_cgroup_path(&path) {
            members
                .entry(m.id.clone())
                .or_insert_with(|| (m, Vec::new()))
                .1
                .push(pid);
        }
    }
    members
        .into_values()
        .map(|(m, pids)| {
            // The init process is the member whose parent is outside the container.
            let init = pids
                .iter()
                .copied()
                .filter(|&p| parent_pid(proc_root, p).is_none_or(|pp| !pids.contains(&pp)))
                .min()
                .or_else(|| pids.iter().copied().min());
            let mut c = m.into_container(Some(fs));
            c.init_pid = init;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_on_hybrid_and_pure_hosts() {
        let hybrid = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            CgroupFs::from_mountinfo(hybrid).unwrap().mount(),
            Path::new("/sys/fs/cgroup/unified")
        );
        let pure =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            CgroupFs::from_mountinfo(pure).unwrap().mount(),
            Path::new("/sys/fs/cgroup")
        );
        let v1 = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(CgroupFs::from_mountinfo(v1), None);
        let spaced = "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            CgroupFs::from_mountinfo(spaced).unwrap().mount(),
            Path::new("/mnt/cg two")
        );
    }

    #[test]
    fn within() {
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/anything", "/"));
    }

    #[test]
    fn procs_are_grouped_into_containers() {
        let dir = tempfile::tempdir().unwrap();
        let id = "a".repeat(64);
        let write = |pid: i32, ppid: i32, cg: &str| {
            let p = dir.path().join(pid.to_string());
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("cgroup"), format!("0::{cg}\n")).unwrap();
            fs::write(p.join("stat"), format!("{pid} (sh (x)) S {ppid} 1 1\n")).unwrap();
        };
        write(100, 1, &format!("/docker/{id}"));
        write(150, 100, &format!("/docker/{id}"));
        write(90, 1, "/system.slice/containerd.service");
        let fs = CgroupFs::at(dir.path().join("nocg"));
        let found = containers_from_procs(&fs, dir.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, id);
        assert_eq!(found[0].runtime, crate::Runtime::Docker);
        assert_eq!(found[0].init_pid, Some(100));
    }

    #[test]
    fn path_of_id_walks_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
        let fs_ = CgroupFs::at(dir.path());
        let id = fs_.cgroup_id("/a/b/c").unwrap();
        assert_eq!(fs_.path_of_id(id).as_deref(), Some("/a/b/c"));
        assert_eq!(fs_.path_of_id(u64::MAX), None);
    }
}
