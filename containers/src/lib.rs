//! Container discovery: the one place that knows how containers look from the host.
//!
//! A responder names a container by id, id prefix or name; the kernel knows only cgroups and
//! pids. This crate connects the two from the kernel's and the runtimes' own records, with no
//! daemon connection required:
//!
//! - [`cgroup`]: where cgroup v2 is mounted (from /proc/self/mountinfo, hybrid or pure v2
//!   hosts), a process's cgroup, a cgroup's id (the inode `bpf_get_current_cgroup_id` returns);
//! - [`mountinfo`]: the kernel's mount table of a process, and where each mount comes from
//!   on the host;
//! - [`pattern`]: container ids in cgroup paths, for Docker, containerd/Kubernetes, CRI-O and
//!   Podman;
//! - [`runtime`]: runc's state files (any cgroup path) and Podman's container store, for names,
//!   images, init pids and bundles;
//! - [`Inventory`]: everything running now;
//! - [`resolve`]: id, id prefix or name -> one container, over running containers, the store's
//!   history or quarantines, with one error type;
//! - [`history`]: the store's `container` rows merged per container, joined with what runs.

pub mod cgroup;
pub mod history;
pub mod mountinfo;
pub mod pattern;
pub mod resolve;
pub mod runtime;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use cgroup::CgroupFs;
pub use history::{Listed, Recorded};
pub use pattern::Runtime;
pub use resolve::{Among, Candidate, Named, ResolveError};

/// A container as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// The runtime's id (64 hex digits for most engines; any string for plain runc).
    pub id: String,
    /// Human name, when the runtime keeps one.
    pub name: Option<String>,
    pub runtime: Runtime,
    pub image: Option<String>,
    /// Pid of the container's first process, in the host's pid namespace.
    pub init_pid: Option<i32>,
    /// cgroup v2 path relative to the cgroup2 mount, e.g. `/system.slice/docker-<id>.scope`.
    pub cgroup_path: String,
    /// Inode of that cgroup directory: what the recorder's events carry as `cgroup_id`.
    pub cgroup_id: Option<u64>,
    /// Inode of the init process's network namespace.
    pub netns_inode: Option<u64>,
    /// True when the container shares the host's network namespace.
    pub host_network: bool,
    /// When the container was created, RFC 3339.
    pub created: Option<String>,
    /// OCI bundle directory (runc) when known.
    pub bundle: Option<PathBuf>,
    /// Kubernetes pod UID, pod name and namespace, where the runtime's files tell them.
    pub pod_uid: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

impl Container {
    /// The id as container tools print it; see [`short_id`].
    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }

    /// The name when there is one, else the short id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.short_id())
    }

    fn merge(&mut self, other: Container) {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = other.$f; } )* };
        }
        fill!(
            name,
            image,
            init_pid,
            cgroup_id,
            netns_inode,
            created,
            bundle,
            pod_uid,
            pod_name,
            pod_namespace
        );
        if self.runtime == Runtime::Unknown {
            self.runtime = other.runtime;
        }
        if self.cgroup_path.is_empty() {
            self.cgroup_path = other.cgroup_path;
        }
        self.host_network |= other.host_network;
    }
}

/// Engine-generated ids (64 hex digits) shortened to 12 characters, as container tools print
/// them; ids a person chose (plain runc) are kept whole, since cutting them misleads.
pub fn short_id(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..12]
    } else {
        id
    }
}

/// The containers running on this host right now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    pub containers: Vec<Container>,
}

impl Inventory {
    /// Discovers running containers from runc state directories, Podman's store and the
    /// cgroups of running processes.
    pub fn discover() -> Inventory {
        let fs = CgroupFs::detect();
        Inventory::discover_with(fs.as_ref(), &runtime::Sources::default())
    }

    /// Discovery against explicit roots (tests point these at fixtures).
    pub fn discover_with(fs: Option<&CgroupFs>, sources: &runtime::Sources) -> Inventory {
        let mut by_id: BTreeMap<String, Container> = BTreeMap::new();
        let mut add = |c: Container| match by_id.get_mut(&c.id) {
            Some(existing) => existing.merge(c),
            None => {
                by_id.insert(c.id.clone(), c);
            }
        };
        for c in runtime::runc_states(sources) {
            add(c);
        }
        if let Some(fs) = fs {
            for c in cgroup::containers_from_procs(fs, &sources.proc_root) {
                add(c);
            }
        }
        let podman = runtime::podman_containers(sources);
        let mut containers: Vec<Container> = by_id.into_values().collect();
        for c in &mut containers {
            if let Some(meta) = podman.get(&c.id) {
                c.runtime = Runtime::Podman;
                c.name = c.name.take().or_else(|| meta.name.clone());
                c.image = c.image.take().or_else(|| meta.image.clone());
                c.created = c.created.take().or_else(|| meta.created.clone());
            }
            if let (Some(fs), None) = (fs, c.cgroup_id) {
                c.cgroup_id = fs.cgroup_id(&c.cgroup_path);
            }
            if let Some(pid) = c.init_pid {
                let netns = runtime::netns_inode(&sources.proc_root, pid);
                c.netns_inode = c.netns_inode.or(netns);
                c.host_network = netns.is_some() && netns == runtime::host_netns_inode();
            }
        }
        containers.sort_by(|a, b| a.display_name().cmp(b.display_name()));
        Inventory { containers }
    }

    /// Finds one running container by full id, unique id prefix or name (see [`resolve`]).
    pub fn resolve(&self, query: &str) -> Result<&Container, ResolveError> {
        resolve::resolve(query, Among::Running, &self.containers)
    }

    /// The container whose cgroup is `cgroup_id` or an ancestor of it.
    pub fn by_cgroup_id(&self, cgroup_id: u64) -> Option<&Container> {
        self.containers
            .iter()
            .find(|c| c.cgroup_id == Some(cgroup_id))
    }

    /// The other containers in `container`'s network namespace, by display name: a quarantine
    /// of the namespace cuts them too. None for a container on the host's network.
    pub fn sharing_netns(&self, container: &Container) -> Vec<String> {
        match container.netns_inode {
            Some(ino) if !container.host_network => self
                .containers
                .iter()
                .filter(|c| c.id != container.id && c.netns_inode == Some(ino))
                .map(|c| c.display_name().to_string())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The container owning the cgroup at `path` (itself or a parent directory of it).
    pub fn by_cgroup_path(&self, path: &str) -> Option<&Container> {
        self.containers
            .iter()
            .filter(|c| !c.cgroup_path.is_empty() && cgroup::is_within(path, &c.cgroup_path))
            .max_by_key(|c| c.cgroup_path.len())
    }
}

impl Candidate for Container {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// The short id, with the name when there is one: `3f2a9c1b0d4e (web)`.
impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{} ({n})", self.short_id()),
            None => f.write_str(self.short_id()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn c(id: &str, name: Option<&str>) -> Container {
        Container {
            id: id.into(),
            name: name.map(Into::into),
            runtime: Runtime::Runc,
            image: None,
            init_pid: None,
            cgroup_path: format!("/x/{id}"),
            cgroup_id: None,
            netns_inode: None,
            host_network: false,
            created: None,
            bundle: None,
            pod_uid: None,
            pod_name: None,
            pod_namespace: None,
        }
    }

    fn inv() -> Inventory {
        Inventory {
            containers: vec![
                c("abc123def456aaaa", Some("web")),
                c("abc999", Some("db")),
                c("ffff00", None),
            ],
        }
    }

    #[test]
    fn resolves_id_prefix_and_name() {
        let i = inv();
        assert_eq!(
            i.resolve("abc123def456aaaa").unwrap().id,
            "abc123def456aaaa"
        );
        assert_eq!(i.resolve("abc1").unwrap().id, "abc123def456aaaa");
        assert_eq!(i.resolve("db").unwrap().id, "abc999");
        assert_eq!(i.resolve("ff").unwrap().id, "ffff00");
    }

    #[test]
    fn ambiguous_and_unknown_list_candidates() {
        let i = inv();
        let e = i.resolve("abc").unwrap_err().to_string();
        assert!(
            e.contains("ambiguous") && e.contains("web") && e.contains("db"),
            "{e}"
        );
        let e = i.resolve("nope").unwrap_err().to_string();
        assert!(
            e.contains("no running container matches 'nope'") && e.contains("ffff00"),
            "{e}"
        );
        let e = Inventory::default().resolve("x").unwrap_err().to_string();
        assert!(e.contains("quarry ps"), "{e}");
    }

    #[test]
    fn name_beats_prefix() {
        let mut i = inv();
        i.containers.push(c("web000", None));
        assert_eq!(i.resolve("web").unwrap().id, "abc123def456aaaa");
    }

    #[test]
    fn cgroup_path_lookup_prefers_deepest() {
        let i = inv();
        assert_eq!(i.by_cgroup_path("/x/abc999/sub").unwrap().id, "abc999");
        assert!(i.by_cgroup_path("/x/abc9990").is_none());
        assert!(i.by_cgroup_path("/y").is_none());
    }
}
