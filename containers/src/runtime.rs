//! What the runtimes write down about their containers: runc's state files, OCI bundle
//! annotations (Kubernetes pod and container names), Docker's and Podman's container stores.
//! Everything is read from files; no daemon is asked.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Container;
use crate::pattern::{Runtime, parse_cgroup_path};

/// Where to look. The defaults are the real host locations.
#[derive(Debug, Clone)]
pub struct Sources {
    /// runc `--root` directories (one subdirectory per container with a state.json).
    pub runc_roots: Vec<PathBuf>,
    /// Podman's `containers.json`.
    pub podman_store: PathBuf,
    /// Docker's per-container directory (`<id>/config.v2.json`).
    pub docker_containers: PathBuf,
    pub proc_root: PathBuf,
    /// The cgroup2 mount, to turn runc's absolute cgroup paths into cgroup paths.
    pub cgroup_mount: Option<PathBuf>,
}

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            runc_roots: [
                "/run/runc",
                "/run/docker/runtime-runc/moby",
                "/run/containerd/runc/k8s.io",
                "/run/containerd/runc/default",
                "/run/containerd/runc/moby",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            podman_store: PathBuf::from(
                "/var/lib/containers/storage/overlay-containers/containers.json",
            ),
            docker_containers: PathBuf::from("/var/lib/docker/containers"),
            proc_root: PathBuf::from("/proc"),
            cgroup_mount: crate::CgroupFs::detect().map(|f| f.mount().to_path_buf()),
        }
    }
}

#[derive(Deserialize)]
struct RuncState {
    id: String,
    init_process_pid: i32,
    #[serde(default)]
    init_process_start: u64,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    config: RuncConfig,
    #[serde(default)]
    cgroup_paths: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
struct RuncConfig {
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    cgroups: Option<RuncCgroups>,
}

#[derive(Deserialize, Default)]
struct RuncCgroups {
    #[serde(default)]
    path: Option<String>,
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat): with the pid,
/// what identifies a process (a reused pid has another start time). The comm field may hold
/// spaces and parentheses, so fields are counted after its last ')'.
pub fn start_ticks(proc_root: &Path, pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Inode of a process's network namespace.
pub fn netns_inode(proc_root: &Path, pid: i32) -> Option<u64> {
    fs::metadata(proc_root.join(pid.to_string()).join("ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Inode of the host's network namespace (this process's; /proc/1/ns/net may be unreadable).
pub fn host_netns_inode() -> Option<u64> {
    fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

/// Running containers from runc state files. A state whose init process is gone (or whose pid
/// was reused by another process) is a stopped container and is skipped.
pub fn runc_states(sources: &Sources) -> Vec<Container> {
    let mut out = Vec::new();
    for root in &sources.runc_roots {
        let Ok(entries) = fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(text) = fs::read_to_string(entry.path().join("state.json")) else {
                continue;
            };
            let Ok(state) = serde_json::from_str::<RuncState>(&text) else {
                log::debug!("unreadable runc state {}", entry.path().display());
                continue;
            };
            let alive = start_ticks(&sources.proc_root, state.init_process_pid)
                .is_some_and(|t| state.init_process_start == 0 || t == state.init_process_start);
            if !alive {
                continue;
            }
            out.push(container_from_runc(state, sources));
        }
    }
    out
}

fn container_from_runc(state: RuncState, sources: &Sources) -> Container {
    // cgroup_paths[""] is the unified (v2) directory, absolute; config.cgroups.path is the
    // path as configured (relative to the hierarchy root).
    let cgroup_path = state
        .cgroup_paths
        .get("")
        .and_then(|abs| {
            let mount = sources.cgroup_mount.as_ref()?;
            Path::new(abs)
                .strip_prefix(mount)
                .ok()
                .map(|r| format!("/{}", r.display()))
        })
        .or_else(|| state.config.cgroups.as_ref().and_then(|c| c.path.clone()))
        .or_else(|| crate::cgroup::path_of_pid(&sources.proc_root, state.init_process_pid))
        .unwrap_or_default();
    let bundle = state
        .config
        .labels
        .iter()
        .find_map(|l| l.strip_prefix("bundle="))
        .map(PathBuf::from);
    let from_path = parse_cgroup_path(&cgroup_path);
    let mut c = Container {
        id: state.id.clone(),
        name: None,
        runtime: from_path.as_ref().map_or(Runtime::Runc, |m| m.runtime),
        image: None,
        init_pid: Some(state.init_process_pid),
        cgroup_id: None,
        cgroup_path,
        netns_inode: None,
        host_network: false,
        created: state.created,
        bundle: bundle.clone(),
        pod_uid: from_path.and_then(|m| m.pod_uid),
        pod_name: None,
        pod_namespace: None,
    };
    if let Some(annotations) = bundle.as_deref().and_then(bundle_annotations) {
        apply_annotations(&mut c, &annotations);
    }
    if let Some(docker) = docker_config(&sources.docker_containers, &c.id) {
        c.runtime = Runtime::Docker;
        c.name = c.name.or(docker.0);
        c.image = c.image.or(docker.1);
    }
    c
}

fn bundle_annotations(bundle: &Path) -> Option<HashMap<String, String>> {
    #[derive(Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    let text = fs::read_to_string(bundle.join("config.json")).ok()?;
    serde_json::from_str::<Spec>(&text)
        .ok()
        .map(|s| s.annotations)
}

/// Kubernetes runtimes (containerd's CRI plugin, CRI-O) leave pod and container names in the
/// OCI spec's annotations.
pub fn apply_annotations(c: &mut Container, a: &HashMap<String, String>) {
    let first = |keys: &[&str]| keys.iter().find_map(|k| a.get(*k).cloned());
    c.pod_name = c
        .pod_name
        .take()
        .or_else(|| first(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]));
    c.pod_namespace = c.pod_namespace.take().or_else(|| {
        first(&[
            "io.kubernetes.cri.sandbox-namespace",
            "io.kubernetes.pod.namespace",
        ])
    });
    c.pod_uid = c
        .pod_uid
        .take()
        .or_else(|| first(&["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"]));
    c.name = c.name.take().or_else(|| {
        first(&[
            "io.kubernetes.cri.container-name",
            "io.kubernetes.container.name",
        ])
    });
    c.image = c.image.take().or_else(|| {
        first(&[
            "io.kubernetes.cri.image-name",
            "io.kubernetes.cri-o.ImageName",
        ])
    });
    if a.keys().any(|k| k.starts_with("io.kubernetes.cri.")) && c.runtime == Runtime::Runc {
        c.runtime = Runtime::Containerd;
    }
    if a.keys().any(|k| k.starts_with("io.kubernetes.cri-o.")) && c.runtime == Runtime::Runc {
        c.runtime = Runtime::Crio;
    }
}

/// (name, image) from Docker's config.v2.json.
fn docker_config(dir: &Path, id: &str) -> Option<(Option<String>, Option<String>)> {
    #[derive(Deserialize)]
    struct V2 {
        #[serde(rename = "Name", default)]
        name: Option<String>,
        #[serde(rename = "Config", default)]
        config: Option<V2Config>,
    }
    #[derive(Deserialize)]
    struct V2Config {
        #[serde(rename = "Image", default)]
        image: Option<String>,
    }
    if id.contains('/') || id.starts_with('.') {
        return None;
    }
    let text = fs::read_to_string(dir.join(id).join("config.v2.json")).ok()?;
    let v: V2 = serde_json::from_str(&text).ok()?;
    Some((
        v.name.map(|n| n.trim_start_matches('/').to_string()),
        v.config.and_then(|c| c.image),
    ))
}

/// What Podman's store says about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodmanMeta {
    pub name: Option<String>,
    pub image: Option<String>,
    pub created: Option<String>,
}

/// Podman's containers.json, by container id.
pub fn podman_containers(sources: &Sources) -> HashMap<String, PodmanMeta> {
    #[derive(Deserialize)]
    struct Entry {
        id: String,
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        metadata: Option<String>,
        #[serde(default)]
        created: Option<String>,
    }
    #[derive(Deserialize, Default)]
    struct Meta {
        #[serde(rename = "image-name", default)]
        image_name: Option<String>,
        #[serde(default)]
        name: Option<String>,
    }
    let Ok(text) = fs::read_to_string(&sources.podman_store) else {
        return HashMap::new();
    };
    let entries: Vec<Entry> = serde_json::from_str(&text).unwrap_or_default();
    entries
        .into_iter()
        .map(|e| {
            let meta: Meta = e
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_default();
            let meta = PodmanMeta {
                name: meta.name.or_else(|| e.names.first().cloned()),
                image: meta.image_name,
                created: e.created,
            };
            (e.id, meta)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &Path) -> Sources {
        Sources {
            runc_roots: vec![dir.join("runc")],
            podman_store: dir.join("containers.json"),
            docker_containers: dir.join("docker"),
            proc_root: PathBuf::from("/proc"),
            cgroup_mount: Some(PathBuf::from("/sys/fs/cgroup/unified")),
        }
    }

    #[test]
    fn runc_state_of_a_live_process_is_a_container() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let ticks = start_ticks(Path::new("/proc"), me).unwrap();
        let bundle = dir.path().join("bundle");
        fs::create_dir_all(&bundle).unwrap();
        fs::write(
            bundle.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-name":"web-0","io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.container-name":"nginx","io.kubernetes.cri.image-name":"nginx:1.27"}}"#,
        )
        .unwrap();
        let write_state = |id: &str, pid: i32, start: u64| {
            let d = dir.path().join("runc").join(id);
            fs::create_dir_all(&d).unwrap();
            let state = serde_json::json!({
                "id": id, "init_process_pid": pid, "init_process_start": start,
                "created": "2026-11-28T10:00:00Z",
                "config": {"labels": [format!("bundle={}", bundle.display())], "cgroups": {"path": "/ignored"}},
                "cgroup_paths": {"": format!("/sys/fs/cgroup/unified/quarry/{id}")}
            });
            fs::write(d.join("state.json"), state.to_string()).unwrap();
        };
        write_state("live", me, ticks);
        write_state("reused-pid", me, ticks + 1);
        write_state("gone", i32::MAX, 1);
        let found = runc_states(&sources(dir.path()));
        assert_eq!(found.len(), 1, "{found:?}");
        let c = &found[0];
        assert_eq!(c.id, "live");
        assert_eq!(c.cgroup_path, "/quarry/live");
        assert_eq!(c.init_pid, Some(me));
        assert_eq!(c.runtime, Runtime::Containerd);
        assert_eq!(c.name.as_deref(), Some("nginx"));
        assert_eq!(c.pod_name.as_deref(), Some("web-0"));
        assert_eq!(c.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(c.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(c.bundle.as_deref(), Some(bundle.as_path()));
    }

    #[test]
    fn podman_store_names_and_images() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("containers.json"),
            r#"[{"id":"abc","names":["web"],"metadata":"{\"image-name\":\"localhost/busybox:latest\",\"name\":\"web\"}","created":"2026-11-28T10:00:00Z"}]"#,
        )
        .unwrap();
        let m = podman_containers(&sources(dir.path()));
        assert_eq!(m["abc"].name.as_deref(), Some("web"));
        assert_eq!(m["abc"].image.as_deref(), Some("localhost/busybox:latest"));
    }
}
