//! A running container's filesystem against its image: what `quarry baseline` and `quarry
//! drift` do once they are given a container. [`Running::find`] picks the container and its
//! root filesystem; [`Running::take_baseline`] seals a plain root's baseline;
//! [`Running::drift`] compares the root with its image layers (an overlay) or with the
//! baseline in the store (a plain root).
//!
//! It writes only through [`crate::baseline::take`] (sealed segments), reads the store only
//! through its verified reader, and prints nothing: warnings go to the callback given.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use quarry_containers::{Container, Inventory, ResolveError};
use quarry_store::text::printable as shown;
use quarry_store::verified::Skipped;
use quarry_store::{Store, StoreError};
use serde::Serialize;

use crate::baseline::{self, BaselineError, Taken};
use crate::drift::{self, Drift, DriftError, Rootfs};

/// Why a container's drift or baseline could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum RunningError {
    /// No running container, or more than one, is known by what was given.
    #[error("container {query:?}")]
    Resolve {
        query: String,
        #[source]
        source: ResolveError,
    },
    /// The container has no init process to look at the root of.
    #[error("container {query:?} has no running init process; drift and baselines need it running")]
    NotRunning { query: String },
    /// Its root filesystem could not be found.
    #[error("finding the root filesystem of {container}")]
    Rootfs {
        container: String,
        #[source]
        source: DriftError,
    },
    /// A baseline was asked for a container whose image layers are its baseline already.
    #[error(
        "{} has an overlay root: its image layers are the baseline already; run `quarry drift {}`",
        shown(container),
        shown(query)
    )]
    OverlayRoot { container: String, query: String },
    /// The baseline could not be taken or sealed.
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    /// The store's baselines could not be read.
    #[error("reading baselines from {}", store.display())]
    ReadBaselines {
        store: PathBuf,
        #[source]
        source: StoreError,
    },
    /// Walking or comparing the root filesystem failed.
    #[error("working out the drift of {container}")]
    Drift {
        container: String,
        #[source]
        source: DriftError,
    },
}

/// A running container and its root filesystem, as the host sees it.
pub struct Running<'a> {
    pub container: &'a Container,
    /// Its init process.
    pub pid: i32,
    pub rootfs: Rootfs,
    /// How the container was named (for the advice in errors).
    query: String,
}

/// A baseline [`Running::take_baseline`] took, and of what.
#[derive(Debug, Serialize)]
pub struct TakenOf {
    pub baseline_id: String,
    pub container: String,
    pub entries: usize,
    pub notes: Vec<String>,
    /// The root filesystem walked (in the action row, not the JSON result).
    #[serde(skip)]
    pub rootfs: PathBuf,
    /// The container's name as it is shown.
    #[serde(skip)]
    pub shown_as: String,
}

impl<'a> Running<'a> {
    /// The running container `query` names (id, unique id prefix or name) and its root.
    pub fn find(inventory: &'a Inventory, query: &str) -> Result<Running<'a>, RunningError> {
        let container = inventory
            .resolve(query)
            .map_err(|source| RunningError::Resolve {
                query: query.to_string(),
                source,
            })?;
        let pid = container.init_pid.ok_or_else(|| RunningError::NotRunning {
            query: query.to_string(),
        })?;
        let rootfs =
            drift::rootfs_of(Path::new("/proc"), pid).map_err(|source| RunningError::Rootfs {
                container: container.display_name().to_string(),
                source,
            })?;
        Ok(Running {
            container,
            pid,
            rootfs,
            query: query.to_string(),
        })
    }

    /// `quarry baseline`: hashes the plain root and seals it into the store at `store`
    /// (refused for an overlay root: its image layers are its baseline).
    pub fn take_baseline(&self, store: &Path) -> Result<TakenOf, RunningError> {
        let c = self.container;
        if self.rootfs.overlay.is_some() {
            return Err(RunningError::OverlayRoot {
                container: c.display_name().to_string(),
                query: self.query.clone(),
            });
        }
        let Taken { id, entries, notes } = baseline::take(store, c, &self.rootfs)?;
        Ok(TakenOf {
            baseline_id: id,
            container: c.id.clone(),
            entries,
            notes,
            rootfs: self.rootfs.host_path.clone(),
            shown_as: c.display_name().to_string(),
        })
    }

    /// `quarry drift`: the changes against the image layers (an overlay root) or against the
    /// latest baseline in the store at `store` (a plain root; each baseline segment the store
    /// does not vouch for goes to `skipped` and is not read). Entries the recorder saw
    /// executed are marked by `executed` (asked only when there are entries and a store).
    pub fn drift(
        &self,
        store: &Path,
        skipped: impl Fn(&Skipped),
        executed: impl FnOnce() -> Result<BTreeSet<String>, &'static str>,
    ) -> Result<Drift, RunningError> {
        let c = self.container;
        let drift = if self.rootfs.overlay.is_some() {
            drift::overlay_drift(
                &self.rootfs,
                drift::started_ns(Path::new("/proc"), self.pid),
            )
        } else {
            let (rows, left_out) = Store::at(store).baseline_of(&c.id).map_err(|source| {
                RunningError::ReadBaselines {
                    store: store.to_path_buf(),
                    source,
                }
            })?;
            left_out.iter().for_each(skipped);
            drift::baseline_drift(&c.id, &self.rootfs, &rows)
        };
        let mut drift = drift.map_err(|source| RunningError::Drift {
            container: c.display_name().to_string(),
            source,
        })?;
        if !drift.entries.is_empty() && store.is_dir() {
            match executed() {
                Ok(paths) => {
                    for e in &mut drift.entries {
                        e.executed = paths.contains(&e.path);
                    }
                }
                Err(note) => drift.notes.push(note.into()),
            }
        }
        Ok(drift)
    }
}

impl TakenOf {
    /// The detail of the baseline's `action` row.
    pub fn action_detail(&self) -> serde_json::Value {
        serde_json::json!({
            "baseline_id": self.baseline_id, "entries": self.entries, "rootfs": self.rootfs,
            "notes": self.notes,
        })
    }

    /// What `quarry baseline` says it took.
    pub fn render_text(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(
            w,
            "baseline {} of {}: {} entries",
            shown(&self.baseline_id),
            shown(&self.shown_as),
            self.entries
        )?;
        for n in &self.notes {
            writeln!(w, "note: {}", shown(n))?;
        }
        Ok(())
    }
}
