//! `quarry baseline` and `quarry drift`: a container's filesystem against its image, and the
//! recorder's automatic baselines of the containers it sees.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use anyhow::Context;
use quarry_containers::{Container, Inventory};
use quarry_snapshot::drift::{self, Drift, Rootfs};
use quarry_store::Store;
use quarry_store::schema::BaselineRow;

use crate::action::{self, Outcome};
use crate::cli::{BaselineArgs, DriftArgs, Format};
use crate::exit;
use crate::output::print_table;

fn running(inventory: &Inventory, query: &str) -> anyhow::Result<(Container, i32)> {
    let c = inventory
        .resolve(query)
        .with_context(|| format!("container {query:?}"))?
        .clone();
    let pid = c.init_pid.with_context(|| {
        format!(
            "container {query:?} has no running init process; drift and baselines need it running"
        )
    })?;
    Ok((c, pid))
}

pub fn baseline(args: BaselineArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let inventory = Inventory::discover();
    let (c, pid) = running(&inventory, &args.container)?;
    let rootfs = drift::rootfs_of(std::path::Path::new("/proc"), pid)
        .with_context(|| format!("finding the root filesystem of {}", c.display_name()))?;
    if rootfs.overlay.is_some() {
        anyhow::bail!(
            "{} has an overlay root: its image layers are the baseline already; run `quarry drift {}`",
            crate::output::shown(c.display_name()),
            crate::output::shown(&args.container)
        );
    }
    let Taken { id, entries, notes } = take(&store_dir, &c, &rootfs)?;
    let recorded = action::record_on(
        &store_dir,
        "baseline",
        &c.id,
        c.name.as_deref(),
        None,
        Outcome {
            result: "ok",
            error: None,
            detail: Some(serde_json::json!({
                "baseline_id": id, "entries": entries, "rootfs": rootfs.host_path, "notes": notes,
            })),
        },
    );
    match args.out.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"baseline_id": id, "container": c.id, "entries": entries, "notes": notes})
        ),
        Format::Table => {
            println!(
                "baseline {} of {}: {entries} entries",
                crate::output::shown(&id),
                crate::output::shown(c.display_name())
            );
            for n in &notes {
                println!("note: {}", crate::output::shown(n));
            }
        }
    }
    Ok(recorded.exit_code())
}

pub fn drift(args: DriftArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let inventory = Inventory::discover();
    let (c, pid) = running(&inventory, &args.container)?;
    let rootfs = drift::rootfs_of(std::path::Path::new("/proc"), pid)
        .with_context(|| format!("finding the root filesystem of {}", c.display_name()))?;
    let mut result = if rootfs.overlay.is_some() {
        drift::overlay_drift(
            &rootfs,
            drift::started_ns(std::path::Path::new("/proc"), pid),
        )
    } else {
        let rows = stored_baseline(&store_dir, &c.id)?;
        drift::baseline_drift(&c.id, &rootfs, &rows)
    }
    .with_context(|| format!("working out the drift of {}", c.display_name()))?;
    mark_executed(&store_dir, &c.id, &mut result);
    print(&result, args.out.format)?;
    Ok(if result.entries.is_empty() {
        exit::OK
    } else {
        exit::FINDINGS
    })
}

/// The container's baseline rows, from verified segments only.
fn stored_baseline(
    store: &std::path::Path,
    container_id: &str,
) -> anyhow::Result<Vec<BaselineRow>> {
    let (rows, skipped) = Store::at(store)
        .baseline_of(container_id)
        .with_context(|| format!("reading baselines from {}", store.display()))?;
    for s in &skipped {
        eprintln!("warning: skipped baseline segment {s:?} (run `quarry verify`)");
    }
    Ok(rows)
}

/// Marks entries the recorder saw executed in this container (by the path it resolved).
fn mark_executed(store: &std::path::Path, container_id: &str, drift: &mut Drift) {
    if drift.entries.is_empty() || !store.is_dir() {
        return;
    }
    let executed = match executed_paths(store, container_id) {
        Ok(paths) => paths,
        Err(note) => {
            drift.notes.push(note.into());
            return;
        }
    };
    for e in &mut drift.entries {
        e.executed = executed.contains(&e.path);
    }
}

/// The paths the recorder saw executed in this container; a note when the store cannot say.
#[cfg(feature = "responder")]
fn executed_paths(
    store: &std::path::Path,
    container_id: &str,
) -> Result<std::collections::BTreeSet<String>, &'static str> {
    // The configured query memory limit applies, as to every query of the store.
    let budget = crate::cli::QueryBudget { memory_limit: None };
    crate::runtime()
        .ok()
        .and_then(|rt| {
            rt.block_on(async {
                let mut catalog = crate::query::open(store, &budget).await.ok()?;
                catalog.executed_paths(container_id).await.ok()
            })
        })
        .ok_or("the store could not be queried: `executed` is unknown")
}

#[cfg(not(feature = "responder"))]
fn executed_paths(
    _store: &std::path::Path,
    _container_id: &str,
) -> Result<std::collections::BTreeSet<String>, &'static str> {
    Err("this binary has no query engine: `executed` is unknown (a full build fills it in)")
}

fn print(drift: &Drift, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(drift)?),
        Format::Table => {
            let rows: Vec<Vec<String>> = drift
                .entries
                .iter()
                .map(|e| {
                    let exec = [
                        e.made_executable
                            .then_some("+x")
                            .or(e.executable.then_some("x")),
                        e.executed.then_some("ran"),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(",");
                    vec![
                        e.change.to_string(),
                        e.kind.clone(),
                        e.path.clone(),
                        e.size.map(|s| s.to_string()).unwrap_or_default(),
                        e.mode.clone().unwrap_or_default(),
                        e.sha256
                            .as_deref()
                            .map(|s| s[..s.len().min(16)].to_string())
                            .unwrap_or_default(),
                        exec,
                    ]
                })
                .collect();
            print_table(
                &["CHANGE", "TYPE", "PATH", "SIZE", "MODE", "SHA256", "EXEC"],
                &rows,
            );
            if !drift.before_start.is_empty() {
                eprintln!(
                    "note: {} changes made by the runtime before the container started are not listed (see --format json, before_start)",
                    drift.before_start.len()
                );
            }
            for n in &drift.notes {
                eprintln!("note: {}", crate::output::shown(n));
            }
        }
    }
    Ok(())
}

/// A baseline taken and sealed.
struct Taken {
    id: String,
    entries: usize,
    notes: Vec<String>,
}

/// Hashes the plain rootfs of `c` and seals it into the store at `store_dir`: the one way a
/// baseline is taken, by `quarry baseline` and by the recorder's automatic baselines.
fn take(store_dir: &Path, c: &Container, rootfs: &Rootfs) -> anyhow::Result<Taken> {
    let now = chrono::Utc::now();
    let rows = drift::baseline(&c.id, rootfs, now)
        .with_context(|| format!("hashing the rootfs of {}", c.display_name()))?;
    Store::create(store_dir)
        .with_context(|| format!("opening the store {}", store_dir.display()))?
        .seal_baseline(&rows, &quarry_store::action::local_hostname(), now)
        .context("sealing the baseline into the store")?;
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
) -> std::io::Result<std::thread::JoinHandle<()>> {
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
            log::warn!("automatic baseline of {}: {e:#}", c.display_name());
            ("error", Some(format!("{e:#}")), None)
        }
    };
    let row = quarry_store::schema::ActionRow {
        time: chrono::Utc::now(),
        action: "baseline".into(),
        actor,
        container_id: Some(c.id.clone()),
        container_name: c.name.clone(),
        reason: Some("automatic: the recorder saw the container for the first time".into()),
        detail: detail.map(|d| d.to_string()),
        result: result.into(),
        error,
        command: quarry_store::action::command_line(),
    };
    if let Err(e) = Store::record_action(store_dir, &row) {
        log::error!("{}", quarry_store::action::unrecorded(store_dir, &row, &e));
    }
}
