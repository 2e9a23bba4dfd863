//! The `container` table read back as the store's memory of containers: what
//! [`quarry_containers::resolve`] resolves among and `quarry ps --all` lists.
//!
//! Only segments the manifest vouches for are read ([`Store::read_table`]); batches of an
//! unexpected schema are skipped with a warning rather than misread. Merging and resolution
//! belong to quarry-containers; this module only converts rows and hands them to its resolver
//! ([`Store::find_container`]).

use arrow::array::{Array, AsArray, RecordBatch};
use quarry_containers::resolve::{Among, Named, resolve_in_order};
use quarry_containers::{Container, Recorded, ResolveError, Runtime, history};

use crate::schema::{ContainerRow, container_rows, schema_of};
use crate::{Result, Store, Table};

impl Store {
    /// Every container the store recorded, one entry per id (see [`history::merge`]).
    pub fn container_history(&self) -> Result<Vec<Recorded>> {
        let batches = self.read_table(Table::Container)?;
        let expected = schema_of(Table::Container);
        let (good, foreign): (Vec<_>, Vec<_>) =
            batches.iter().partition(|b| b.schema() == expected);
        if !foreign.is_empty() {
            log::warn!(
                "skipped {} batches of the container table with an unexpected schema (run `quarry verify`)",
                foreign.len()
            );
        }
        Ok(history::merge(good.into_iter().flat_map(recorded)))
    }
}

/// Why the container a command names was not found.
#[derive(Debug, thiserror::Error)]
pub enum FindContainerError {
    /// The store's `container` table could not be read.
    #[error("reading the containers of {}", store.display())]
    History {
        store: std::path::PathBuf,
        #[source]
        source: crate::StoreError,
    },
    /// No container, or more than one, is known by what was given.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

impl Store {
    /// The container `query` names (id, unique id prefix or name): first among those the
    /// store recorded (so containers long gone are found), then among the running ones.
    pub fn find_container(&self, query: &str) -> Result<Named, FindContainerError> {
        let recorded = self
            .container_history()
            .map_err(|source| FindContainerError::History {
                store: self.root().to_path_buf(),
                source,
            })?;
        let live = quarry_containers::Inventory::discover();
        Ok(resolve_in_order(
            query,
            &recorded,
            &live.containers,
            Among::StoreOrRunning,
        )?)
    }
}

/// The entries of one `container` batch (of the expected schema).
fn recorded(batch: &RecordBatch) -> Vec<Recorded> {
    let hosts = batch
        .column_by_name("host")
        .map(|c| c.as_string::<i32>().clone());
    container_rows(batch)
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let host = hosts
                .as_ref()
                .and_then(|h| (!h.is_null(i)).then(|| h.value(i).to_string()));
            entry(row, host)
        })
        .collect()
}

fn entry(row: ContainerRow, host: Option<String>) -> Recorded {
    Recorded {
        container: Container {
            id: row.container_id,
            name: row.name,
            runtime: Runtime::from_name(&row.runtime),
            image: row.image,
            init_pid: row.init_pid,
            cgroup_path: row.cgroup_path,
            cgroup_id: row.cgroup_id,
            netns_inode: row.netns_inode,
            host_network: row.host_network,
            created: row.created,
            bundle: None,
            pod_uid: row.pod_uid,
            pod_name: row.pod_name,
            pod_namespace: row.pod_namespace,
        },
        host,
        first_seen: row.first_seen,
        last_seen: row.last_seen,
    }
}
