//! Which of a container's mounts CRIU can rebuild by itself and which come from the host.
//!
//! CRIU recreates a mount namespace from what it finds inside it: fresh pseudo filesystems
//! (proc, sysfs, devpts, mqueue), tmpfs (whose contents go into the images) and bind mounts of
//! those. A bind mount of a host file or directory (volumes, /etc/resolv.conf, cgroup v1
//! directories) cannot be rebuilt from inside: it is declared external by its mount point and
//! mapped back to a host path at restore.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use quarry_containers::mountinfo::{
    Mount, host_path_of, is_under, parse_mountinfo, root_mount,
};

/// Filesystems CRIU recreates (or, for tmpfs, saves and refills) when mounted fresh.
const REBUILT: &[&str] = &[
    "proc",
    "sysfs",
    "devpts",
    "mqueue",
    "tmpfs",
    "devtmpfs",
    "cgroup2",
    "binfmt_misc",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "fusectl",
    "pstore",
    "hugetlbfs",
    "nsfs",
];

/// A mount CRIU must be told about, with the host path it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalMount {
    /// Mount point inside the container: the key CRIU knows it by (runc uses the same).
    pub mount_point: String,
    /// Where it comes from on the host, when that can be told: what restore binds there.
    pub host_path: Option<PathBuf>,
    pub fstype: String,
    pub is_dir: bool,
    /// A copy in the case (relative path), for small files such as /etc/hosts: restore binds the
    /// copy, not the host's file.
    #[serde(default)]
    pub copy: Option<String>,
}

/// The mounts of a container (its init's mountinfo) that CRIU must treat as external.
/// `host` is the host's mountinfo, to say where each comes from.
pub fn externals(container: &[Mount], host: &[Mount], proc_root: &Path) -> Vec<ExternalMount> {
    let Some(root) = root_mount(container) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in container {
        if m.id == root.id {
            continue;
        }
        let fresh_rebuilt = REBUILT.contains(&m.fstype.as_str()) && m.root == "/";
        // Reachable through another mount of the same filesystem that CRIU can see.
        let reachable = container.iter().any(|o| {
            o.id != m.id
                && o.dev == m.dev
                && (o.id == root.id || (REBUILT.contains(&o.fstype.as_str()) && o.root == "/"))
                && is_under(&m.root, &o.root)
        });
        if fresh_rebuilt || reachable {
            continue;
        }
        let is_dir = std::fs::metadata(proc_root.join(m.mount_point.trim_start_matches('/')))
            .map(|md| md.is_dir())
            .unwrap_or(true);
        out.push(ExternalMount {
            mount_point: m.mount_point.clone(),
            host_path: host_path_of(m, host),
            fstype: m.fstype.clone(),
            is_dir,
            copy: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINER: &str = "\
71 46 254:0 /tmp/b/rootfs / ro,relatime - ext4 /dev/vda rw
72 71 0:41 / /proc rw,relatime - proc proc rw
73 71 0:42 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
78 77 0:46 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
84 78 0:34 /quarry/c1 /sys/fs/cgroup/freezer ro - cgroup cgroup rw,freezer
90 71 254:0 /srv/volume /data rw - ext4 /dev/vda rw
91 71 254:0 /tmp/b/rootfs/etc/x /etc/x rw - ext4 /dev/vda rw
52 72 0:42 /null /proc/keys rw,nosuid - tmpfs tmpfs rw
88 71 0:47 / /my\\040tmp rw - tmpfs tmpfs rw";

    const HOST: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 25 0:34 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer";

    #[test]
    fn host_binds_and_cgroup_v1_are_external() {
        let c = parse_mountinfo(CONTAINER);
        let h = parse_mountinfo(HOST);
        assert_eq!(c.last().unwrap().mount_point, "/my tmp");
        let ext = externals(&c, &h, Path::new("/nonexistent"));
        let points: Vec<&str> = ext.iter().map(|e| e.mount_point.as_str()).collect();
        assert_eq!(points, ["/sys/fs/cgroup/freezer", "/data"]);
        assert_eq!(
            ext[0].host_path.as_deref(),
            Some(Path::new("/sys/fs/cgroup/freezer/quarry/c1"))
        );
        assert_eq!(ext[1].host_path.as_deref(), Some(Path::new("/srv/volume")));
        assert_eq!(root_mount(&c).unwrap().root, "/tmp/b/rootfs");
    }
}
