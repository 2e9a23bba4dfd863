//! Which running container a quarantine is for, as the host sees it now: the container the
//! inventory resolves, its cgroup v2 directory (where the programs attach) and the other
//! containers in its network namespace (which the namespace-level layers cut too, and the
//! outcome names). `quarry isolate` and the recorder's `--respond` both start here.
//!
//! It resolves among running containers only, by id, unique id prefix or name (a shared name is
//! an error listing ids): a quarantine is never put on a container chosen by a guess.

use std::path::PathBuf;

use quarry_containers::{CgroupFs, Container, Inventory};

use crate::IsolateError;

/// A running container to quarantine.
#[derive(Debug, Clone)]
pub struct Target {
    pub container: Container,
    /// Its cgroup v2 directory.
    pub cgroup_dir: PathBuf,
    /// The other containers in its network namespace, by display name.
    pub others_in_netns: Vec<String>,
}

impl Target {
    /// The running container `query` names (id, unique id prefix or name).
    pub fn find(query: &str) -> Result<Target, IsolateError> {
        let inventory = Inventory::discover();
        let container = inventory.resolve(query)?;
        let fs = CgroupFs::detect().ok_or(IsolateError::NoCgroup2)?;
        Ok(Target {
            cgroup_dir: fs.dir(&container.cgroup_path),
            others_in_netns: inventory.sharing_netns(container),
            container: container.clone(),
        })
    }
}
