//! Taking a container's baseline: its plain root filesystem hashed ([`drift::baseline`]) and
//! sealed into a store, the one way a baseline is taken, by `quarry baseline` and by the
//! recorder's automatic baselines ([`auto_baselines`]).
//!
//! It must not take a baseline of a container whose root it is not sure of (a pid that left
//! the container's cgroup, an overlay root: its image layers are its baseline already), and it
//! writes only through the store (sealed segments and `action` rows).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use quarry_containers::Container;
use quarry_store::action::Outcome;
use quarry_store::schema::ActionRow;
use quarry_store::{Store, StoreError};

use crate::drift::{self, DriftError, Rootfs};

/// A baseline taken and sealed.
#[derive(Debug, Clone)]
pub struct Taken {
    pub id: String,
    /// Entries hashed (the `note` rows not counted).
    pub entries: usize,
    /// What the walk could not take, and why.
    pub notes: Vec<String>,
}

/// Why a baseline could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// Walking or hashing the root filesystem failed.
    #[error("hashing the rootfs of {container}")]
    Hash {
        container: String,
        #[source]
        source: DriftError,
    },
    /// The store could not be opened or the baseline sealed into it.
    #[error("sealing the baseline into the store {}", store.display())]
    Seal {
        store: PathBuf,
        #[source]
        source: StoreError,
    },
}

/// Hashes the plain rootfs of `c` and seals it into the store at `store_dir`.
pub fn take(store_dir: &Path, c: &Container, rootfs: &Rootfs) -> Result<Taken, BaselineError> {
    let now = chrono::Utc::now();
    let rows = drift::baseline(&c.id, rootfs, now).map_err(|source| BaselineError::Hash {
        container: c.display_name().to_string(),
        source,
    })?;
    Store::create(store_dir)
        .and_then(|s| s.seal_baseline(&rows, &quarry_store::action::local_hostname(), now))
        .map_err(|source| BaselineError::Seal {
            store: store_dir.to_path_buf(),
            source,
        })?;
    Ok(Taken {
        id: rows
            .first()
            .map(|r| r.baseline_id.clone())
            .unwrap_or_default(),
        entries: rows.iter().filter(|r| r.kind != "note").count(),
        notes: rows.iter().filter_map(|r| r.note.clone()).collect(),
    })
}

/// The recorder's automatic baselines: each container `quarry record` announces (the first
/// time it attributes rows to it) that has a plain rootfs and no baseline in the store yet gets
/// one, on this thread at nice 19 (the drain loop only offers containers, never waits). The
/// walk is bounded like `quarry baseline`'s (a tree over the limits is one `note` row), and
/// each baseline is an `action` row whose actor is the recorder. Overlay roots need none: their
/// image layers are their baseline.
pub fn auto_baselines(
    store_dir: PathBuf,
    containers: Receiver<Arc<Container>>,
) -> std::io::Result<AutoBaselines> {
    std::thread::Builder::new()
        .name("quarry-baseline".into())
        .spawn(move || {
            // SAFETY: setpriority on this thread (who 0 = the caller) changes only its own
            // scheduling priority.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
            for c in containers {
                auto_baseline(&store_dir, &c);
            }
        })
        .map(AutoBaselines)
}

/// The thread of [`auto_baselines`].
pub struct AutoBaselines(std::thread::JoinHandle<()>);

impl AutoBaselines {
    /// Once the recorder is gone (and with it the queue's sender), waits at most `limit` for
    /// what was offered to be finished; false when a baseline was still being taken (it is
    /// left out: a baseline cut short is never a visible segment).
    pub fn finish_within(self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while !self.0.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.0.is_finished()
    }
}

fn auto_baseline(store_dir: &Path, c: &Container) {
    let Some(pid) = c.init_pid else { return };
    // A container that exited, or a pid no longer its own, is skipped: its rootfs is not
    // known for certain.
    let rootfs = match drift::rootfs_of(Path::new("/proc"), pid) {
        Ok(r) if r.overlay.is_none() => r,
        Ok(_) => return,
        Err(e) => {
            log::debug!("no automatic baseline of {}: {e}", c.id);
            return;
        }
    };
    let in_container = quarry_containers::cgroup::path_of_pid(Path::new("/proc"), pid)
        .is_some_and(|p| p == c.cgroup_path);
    if !in_container {
        return;
    }
    match Store::at(store_dir).baseline_of(&c.id) {
        Ok((rows, _)) if !rows.is_empty() => return,
        Ok(_) => {}
        Err(e) => {
            log::warn!(
                "no automatic baseline of {}: {}",
                c.id,
                quarry_store::human::with_causes(&e)
            );
            return;
        }
    }
    let actor = quarry_store::action::recorder_actor();
    let taken = take(store_dir, c, &rootfs);
    let (result, error, detail) = match &taken {
        Ok(t) => {
            log::info!(
                "baseline {} of {}: {} entries",
                t.id,
                c.display_name(),
                t.entries
            );
            (
                "ok",
                None,
                Some(serde_json::json!({
                    "baseline_id": t.id, "entries": t.entries,
                    "rootfs": rootfs.host_path, "notes": t.notes, "automatic": true,
                })),
            )
        }
        Err(e) => {
            let e = quarry_store::human::with_causes(e);
            log::warn!("automatic baseline of {}: {e}", c.display_name());
            ("error", Some(e), None)
        }
    };
    let row = ActionRow::new(
        "baseline",
        actor,
        Some((&c.id, c.name.as_deref())),
        Some("automatic: the recorder saw the container for the first time"),
        Outcome {
            result,
            error,
            detail,
        },
    );
    if let Err(e) = Store::record_action(store_dir, &row) {
        log::error!("{}", quarry_store::action::unrecorded(store_dir, &row, &e));
    }
}
