//! `quarry baseline` and `quarry drift`: a container's filesystem against its image (the
//! recorder's automatic baselines are quarry-snapshot's `baseline::auto_baselines`).

use anyhow::Context;
use quarry_containers::{Container, Inventory};
use quarry_snapshot::baseline::{self, Taken};
use quarry_snapshot::drift::{self, Drift, DriftEntry};
use quarry_store::Store;
use quarry_store::schema::BaselineRow;

use crate::action::{self, Outcome};
use crate::cli::{BaselineArgs, DriftArgs, Format};
use crate::exit;
use crate::output::print_rows;

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
    let Taken { id, entries, notes } = baseline::take(&store_dir, &c, &rootfs)?;
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
            print_rows(&DriftEntry::COLUMNS, &drift.entries, DriftEntry::row);
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
