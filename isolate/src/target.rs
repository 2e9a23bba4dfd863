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

/// The container `quarry release` is for (id, unique id prefix or name): among the
/// quarantines first (a quarantined container may have exited since), then among the running
/// containers.
pub fn release_target(
    query: &str,
) -> Result<quarry_containers::resolve::Named, quarry_containers::ResolveError> {
    use quarry_containers::resolve::{Among, Named, resolve_in_order};
    let isolated: Vec<Named> = crate::list()
        .into_iter()
        .map(|i| Named {
            id: i.container_id,
            name: i.container_name,
        })
        .collect();
    let live = Inventory::discover();
    resolve_in_order(query, &isolated, &live.containers, Among::IsolatedOrRunning)
}
