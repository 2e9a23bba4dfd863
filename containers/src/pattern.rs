//! Container ids in cgroup v2 paths.
//!
//! Each engine names a container's cgroup its own way, with the systemd driver (`.scope` units
//! under slices) or the cgroupfs driver (plain directories):
//!
//! | engine | systemd driver | cgroupfs driver |
//! |---|---|---|
//! | Docker | `/system.slice/docker-<id>.scope` | `/docker/<id>` |
//! | containerd / Kubernetes | `.../kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope` | `/kubepods/<qos>/pod<uid>/<id>` |
//! | CRI-O | `.../crio-<id>.scope` | `/kubepods/.../pod<uid>/<id>` |
//! | Podman | `/machine.slice/libpod-<id>.scope` | `/libpod_parent/libpod-<id>` |
//!
//! Monitor processes (`*-conmon-<id>`) are not the container and are not matched.

use serde::Serialize;

/// Which engine runs a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    Podman,
    Runc,
    Unknown,
}

impl Runtime {
    /// The runtime [`Runtime::name`] names; any other name (a newer recorder's) is `Unknown`.
    pub fn from_name(name: &str) -> Runtime {
        [
            Runtime::Docker,
            Runtime::Containerd,
            Runtime::Crio,
            Runtime::Podman,
            Runtime::Runc,
        ]
        .into_iter()
        .find(|r| r.name() == name)
        .unwrap_or(Runtime::Unknown)
    }

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Runc => "runc",
            Runtime::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a cgroup path says about the container in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMatch {
    pub runtime: Runtime,
    pub id: String,
    /// Kubernetes pod UID (with dashes), when the path is under a pod's cgroup.
    pub pod_uid: Option<String>,
    /// The path up to and including the container's own component.
    pub container_path: String,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Reads `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(component: &str) -> Option<String> {
    let rest = component.strip_suffix(".slice").unwrap_or(component);
    let idx = rest.rfind("pod")?;
    let uid = &rest[idx + 3..];
    let plausible = uid.len() >= 32
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    plausible.then(|| uid.replace('_', "-"))
}

impl PathMatch {
    /// What the path alone says about the container; runtimes' records add the rest.
    pub fn into_container(self, fs: Option<&crate::CgroupFs>) -> crate::Container {
        crate::Container {
            id: self.id,
            name: None,
            runtime: self.runtime,
            image: None,
            init_pid: None,
            cgroup_id: fs.and_then(|fs| fs.cgroup_id(&self.container_path)),
            cgroup_path: self.container_path,
            netns_inode: None,
            host_network: false,
            created: None,
            bundle: None,
            pod_uid: self.pod_uid,
            pod_name: None,
            pod_namespace: None,
        }
    }
}

/// Finds the container a cgroup path belongs to, if its shape says so.
pub fn parse_cgroup_path(path: &str) -> Option<PathMatch> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let in_kubepods = components.iter().any(|c| c.starts_with("kubepods"));
    let mut pod = None;
    for (i, comp) in components.iter().enumerate() {
        if in_kubepods && pod.is_none() {
            pod = pod_uid(comp);
        }
        let scoped = |prefix: &str| {
            comp.strip_prefix(prefix)
                .map(|r| r.strip_suffix(".scope").unwrap_or(r))
                .filter(|id| is_container_id(id))
        };
        let parent = if i > 0 { components[i - 1] } else { "" };
        let found = if let Some(id) = scoped("docker-") {
            Some((Runtime::Docker, id))
        } else if let Some(id) = scoped("cri-containerd-") {
            Some((Runtime::Containerd, id))
        } else if let Some(id) = scoped("crio-") {
            Some((Runtime::Crio, id))
        } else if let Some(id) = scoped("libpod-") {
            Some((Runtime::Podman, id))
        } else if is_container_id(comp) && parent == "docker" {
            Some((Runtime::Docker, *comp))
        } else if is_container_id(comp) && in_kubepods {
            // cgroupfs driver under a pod: the engine is not in the path.
            Some((Runtime::Unknown, *comp))
        } else {
            None
        };
        if let Some((runtime, id)) = found {
            return Some(PathMatch {
                runtime,
                id: id.to_string(),
                pod_uid: pod,
                container_path: format!("/{}", components[..=i].join("/")),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";

    fn m(path: &str) -> Option<(Runtime, String, Option<String>)> {
        parse_cgroup_path(path).map(|m| (m.runtime, m.id, m.pod_uid))
    }

    #[test]
    fn docker_both_drivers() {
        assert_eq!(
            m(&format!("/system.slice/docker-{ID}.scope")),
            Some((Runtime::Docker, ID.into(), None))
        );
        assert_eq!(
            m(&format!("/docker/{ID}")),
            Some((Runtime::Docker, ID.into(), None))
        );
        // A nested cgroup inside the container still belongs to it.
        let pm = parse_cgroup_path(&format!("/docker/{ID}/init.scope")).unwrap();
        assert_eq!(pm.container_path, format!("/docker/{ID}"));
    }

    #[test]
    fn kubernetes_containerd_systemd() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            m(&p),
            Some((
                Runtime::Containerd,
                ID.into(),
                Some("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d".into())
            ))
        );
    }

    #[test]
    fn kubernetes_cgroupfs() {
        let p = format!("/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/{ID}");
        assert_eq!(
            m(&p),
            Some((
                Runtime::Unknown,
                ID.into(),
                Some("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d".into())
            ))
        );
    }

    #[test]
    fn crio() {
        let p = format!(
            "/kubepods.slice/kubepods-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/crio-{ID}.scope"
        );
        assert_eq!(m(&p).map(|x| x.0), Some(Runtime::Crio));
        assert_eq!(m(&format!("/machine.slice/crio-conmon-{ID}.scope")), None);
    }

    #[test]
    fn podman_both_drivers() {
        assert_eq!(
            m(&format!("/libpod_parent/libpod-{ID}")).map(|x| x.0),
            Some(Runtime::Podman)
        );
        assert_eq!(
            m(&format!("/machine.slice/libpod-{ID}.scope")).map(|x| x.1),
            Some(ID.into())
        );
        assert_eq!(m(&format!("/machine.slice/libpod-conmon-{ID}.scope")), None);
    }

    #[test]
    fn host_paths_are_not_containers() {
        for p in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/sshd.service",
            "/docker",
            "/quarry-test/c1",
        ] {
            assert_eq!(m(p), None, "{p}");
        }
        // Not 64 hex digits.
        assert_eq!(m("/docker/abc"), None);
        assert_eq!(
            m(&format!("/system.slice/docker-{}.scope", ID.to_uppercase())),
            None
        );
    }
}
