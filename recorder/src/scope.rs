//! What a recording covers: `quarry record --container` and `--cgroup` turned into the cgroup
//! ids the eBPF filter keeps ([`crate::RecorderConfig::cgroup_filter`]) and the words the
//! recorder and its status file say it with.
//!
//! A container is found by quarry-containers' resolver (a shared name is an error listing
//! ids), never by a name alone; a cgroup directory is identified by its inode, as the kernel
//! names it.

use std::path::PathBuf;

use quarry_containers::{CgroupFs, Inventory, ResolveError};

/// The cgroups a recording keeps, and how to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Cgroup ids to filter on; empty: every process.
    pub cgroup_ids: Vec<u64>,
    /// `all processes`, `containers web (1a2b3c4d5e6f)`, `cgroups /sys/fs/...`.
    pub description: String,
}

/// Why a recording's scope could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// No running container answers to the name or id (or several do).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The container has no cgroup v2 directory (cgroup v1 only): the filter cannot keep it.
    #[error("container {container} has no cgroup v2 directory to filter on ({cgroup_path})")]
    NoCgroupDir {
        container: String,
        cgroup_path: String,
    },
    /// `--cgroup` was given but no cgroup v2 hierarchy is mounted.
    #[error("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")]
    NoCgroup2,
    /// A `--cgroup` path is not a directory of the cgroup v2 hierarchy.
    #[error("{} is not a cgroup v2 directory under {}", path.display(), mount.display())]
    NotCgroup {
        path: PathBuf,
        mount: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Scope {
    /// The running containers `containers` (ids, id prefixes or names) and the cgroup v2
    /// directories `cgroup_paths`; both empty: every process.
    pub fn resolve(containers: &[String], cgroup_paths: &[PathBuf]) -> Result<Scope, ScopeError> {
        let mut cgroup_ids = Vec::new();
        let mut parts = Vec::new();
        if !containers.is_empty() {
            let inventory = Inventory::discover();
            let mut names = Vec::new();
            for query in containers {
                let c = inventory.resolve(query)?;
                let id = c.cgroup_id.ok_or_else(|| ScopeError::NoCgroupDir {
                    container: c.to_string(),
                    cgroup_path: c.cgroup_path.clone(),
                })?;
                cgroup_ids.push(id);
                names.push(c.to_string());
            }
            parts.push(format!("containers {}", names.join(", ")));
        }
        if !cgroup_paths.is_empty() {
            let fs = CgroupFs::detect().ok_or(ScopeError::NoCgroup2)?;
            for path in cgroup_paths {
                let id = fs.id_of_dir(path).map_err(|source| ScopeError::NotCgroup {
                    path: path.clone(),
                    mount: fs.mount().to_path_buf(),
                    source,
                })?;
                cgroup_ids.push(id);
            }
            let paths: Vec<String> = cgroup_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            parts.push(format!("cgroups {}", paths.join(", ")));
        }
        let description = if parts.is_empty() {
            "all processes".to_string()
        } else {
            parts.join(" and ")
        };
        Ok(Scope {
            cgroup_ids,
            description,
        })
    }
}
